"""Third review: the jail of Godel's own git (``workspaces/jail.py``) shows the host's /proc, and git in it runs as
root with every capability: ``/proc/<pid>/root`` of any process outside the jail is that process's root folder,
the host's. A folder the agent swaps for a symlink to ``/proc/<pid>/root$GODEL_HOME`` while Godel's git reads the
work tree names the server's home again, as before the jail (the second review's race, one symlink changed). The
pid: the agent's own, which ``GET /agents/<self>`` gives it (its sandbox's outer process, in the host's mounts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.gateway.conftest import stack  # noqa: F401 (the fixture)
from tests.sandbox.conftest import require_sandbox
from tests.sandbox.test_review2_reads import RACER, race

# The second review's racer, its symlink aimed through /proc at the host's root instead of at the home directly.
_PROC_RACER = RACER.replace(
    'os.symlink(str(home), ws / "z0")',
    "me = json.loads(urllib.request.urlopen(urllib.request.Request("
    "f\"{os.environ['GODEL_URL']}/api/v1/agents/{os.environ['GODEL_AGENT_ID']}\", "
    "headers={'Authorization': 'Bearer ' + os.environ['GODEL_API_KEY']})).read())['data']\n"
    "print('PID', me.get('pid'), flush=True)\n"
    'os.symlink(f"/proc/{me[\'pid\']}/root{home}", ws / "z0")',
)


async def test_a_sandboxed_agent_reads_the_servers_secrets_through_proc_in_the_jail(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    require_sandbox()
    assert _PROC_RACER != RACER
    done, out, secrets = await race(stack, fast_tmp, _PROC_RACER, tries_for=15)
    assert done.runtime_name == "sandbox" and "NO-EXCHANGE" not in out and "PID " in out, (done.last_error, out)
    leaked = [name for name, text in secrets.items() if text in out]
    assert not leaked, f"JAIL ESCAPE through /proc/<pid>/root: the agent read the server's {leaked}: {out[-600:]}"
