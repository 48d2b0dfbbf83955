"""Escape attempts from inside the sandbox: each test makes the attacker's move and fails if it works.

Where the same move succeeds on the local runtime, a control test shows it, so a passing sandbox test means the
sandbox stopped it, not that the attack was broken.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from godel.core.ids import new_id
from godel.core.ports import ProcessState
from godel.runtimes import get_runtime
from tests.conftest import run_git
from tests.sandbox.conftest import DONE, Rig, require_sandbox

# Only the secrets' lines: every process's whole environment on a busy machine is more output than is read back.
SNOOP = (
    'for f in /proc/[0-9]*/environ; do cat "$f" 2>/dev/null | tr "\\0" "\\n"; done | grep -a "^GODEL_SECRET=" || true'
)


@pytest.fixture
def secret_holder() -> Iterator[str]:
    """A process of the server's user holding a secret in its environment, as the server holds provider keys."""
    secret = f"sk-{secrets.token_hex(12)}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env={"GODEL_SECRET": secret})
    try:
        yield secret
    finally:
        proc.kill()
        proc.wait()


def _alive_with(marker: str) -> bool:
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def test_the_registry_builds_a_sandbox_and_it_says_what_it_confines(tmp_path: Path) -> None:
    require_sandbox()
    rt = get_runtime("sandbox", worktrees_root=tmp_path / "w", logs_root=tmp_path / "l")
    caps = rt.capabilities()
    assert (caps.name, caps.isolation, caps.network_isolation, caps.pause) == ("sandbox", "namespace", True, True)


async def test_environment_of_other_processes_is_unreadable(rig: Rig, local_rig: Rig, secret_holder: str) -> None:
    _, seen = await local_rig.run(SNOOP)
    assert secret_holder in seen  # the control: outside a sandbox any process of the user can read it
    code, seen = await rig.run(SNOOP)
    assert code == 0
    assert secret_holder not in seen


async def test_only_the_sandbox_processes_are_visible(rig: Rig) -> None:
    code, out = await rig.run('ls /proc | grep -c "^[0-9]"; cat /proc/[0-9]*/cmdline | tr "\\0" " "')
    count, cmdlines = out.split("\n", 1)
    assert code == 0
    assert int(count) <= 6  # bwrap's init, the shell, its pipeline
    assert "pytest" not in cmdlines and "python" not in cmdlines


async def test_capabilities_are_gone_and_mknod_mount_fail(rig: Rig) -> None:
    script = (
        "grep CapEff /proc/self/status; id -u; "
        "mknod /tmp/disk b 8 0 2>/dev/null; echo mknod=$?; "
        "mkdir /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null; echo mount=$?; "
        "unshare -r true 2>/dev/null; echo userns=$?"
    )
    _, out = await rig.run(script)
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert out.splitlines()[0].split() == ["CapEff:", "0000000000000000"]
    assert out.splitlines()[1] != "0"  # not root inside either
    assert lines["mknod"] != "0" and lines["mount"] != "0" and lines["userns"] != "0", out


async def test_writes_outside_the_workspace_do_not_land(rig: Rig) -> None:
    home = Path(os.environ.get("HOME", "/root"))
    marker = f"godel-escape-{new_id()}"
    readme = (rig.repo / "README.md").read_text()
    config = (rig.repo / ".git" / "config").read_text()
    targets = [
        Path("/usr") / marker,
        Path("/etc") / marker,
        Path("/") / marker,
        home / marker,
        rig.repo / marker,
        rig.repo / ".git" / "hooks" / "pre-commit",
        rig.base / marker,
    ]
    script = "; ".join(f"echo pwned > {t} 2>/dev/null" for t in targets)
    script += f"; echo pwned >> {rig.repo / 'README.md'}; echo '[core] hooksPath=/tmp' >> {rig.repo / '.git/config'}"
    script += "; echo mine > in-workspace.txt; echo mine > $HOME/in-home.txt; echo mine > /tmp/in-tmp.txt; echo done"
    _, out = await rig.run(script)
    assert "done" in out.splitlines(), out
    for target in targets:
        assert not target.exists(), target
    assert (rig.repo / "README.md").read_text() == readme
    assert (rig.repo / ".git" / "config").read_text() == config
    handle = rig.handles[0]
    assert (handle.workspace / "in-workspace.txt").read_text() == "mine\n"  # what is its own stays writable
    assert (rig.base / "run" / handle.agent_id / "home" / "in-home.txt").read_text() == "mine\n"


async def test_commits_inside_the_sandbox_land_on_the_agents_branch(rig: Rig) -> None:
    script = "echo hi > made.txt && git add made.txt && git -c user.name=A -c user.email=a@x commit -qm made && echo ok"
    code, out = await rig.run(script)
    assert (code, out.splitlines()[-1]) == (0, "ok"), out
    handle = rig.handles[0]
    # The commit is in the agent's own git directory: the user's repository moves only when Godel brings the
    # branch back, which collecting the run's commits does.
    assert run_git(rig.repo, "rev-parse", handle.branch) == handle.base_commit
    commits = await rig.runtime.commits(handle)
    assert len(commits) == 1 and run_git(rig.repo, "rev-parse", handle.branch) == commits[0]
    assert run_git(rig.repo, "show", f"{handle.branch}:made.txt") == "hi"


async def test_no_tcp_to_the_hosts_loopback(rig: Rig) -> None:
    accepted = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')"
        _, out = await rig.run(f'/usr/bin/python3 -c "{probe}"; echo links; ip -o link | cut -d: -f2')
        assert "CONNECTED" not in out.splitlines()
        stdout = out.split("links\n", 1)[1].split("\n")
        assert stdout[0].strip() == "lo" and not stdout[1].startswith(" "), out  # the only interface
        # The control: from here the same connect works.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        await asyncio.sleep(0.05)
        assert accepted == 1  # only ours
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_double_forked_daemon_dies_with_the_agent(rig: Rig) -> None:
    script = "(setsid sh -c 'sleep 300' {marker} &) ; exit 0"
    # The control: run as a plain process, the daemon outlives its parent (the move is real). Not on the local
    # runtime: that one kills the strays it happens to see, so whether one escapes it depends on timing.
    escaped = f"plain-daemon-{new_id()}"
    plain = await asyncio.create_subprocess_exec("/bin/sh", "-c", script.format(marker=escaped))
    assert await plain.wait() == 0
    try:
        for _ in range(250):
            if _alive_with(escaped):
                break
            await asyncio.sleep(0.02)
        assert _alive_with(escaped)
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            if escaped in (proc.info["cmdline"] or []):
                proc.kill()
    marker = f"sandbox-daemon-{new_id()}"
    code, _ = await rig.run(script.format(marker=marker))
    assert code == 0
    for _ in range(100):
        if not _alive_with(marker):
            break
        await asyncio.sleep(0.02)
    assert not _alive_with(marker)


async def test_kill_of_a_running_agent_takes_its_daemons(rig: Rig) -> None:
    marker = f"daemon-{new_id()}"
    handle = await rig.start(f"(setsid sh -c 'sleep 300' {marker} &); echo up; sleep 300")
    for _ in range(250):
        if _alive_with(marker):
            break
        await asyncio.sleep(0.02)
    assert _alive_with(marker)
    assert handle.pid is not None
    os.killpg(handle.pid, signal.SIGKILL)  # the agent's whole group, the wrapper included, at once
    for _ in range(250):
        if not _alive_with(marker):
            break
        await asyncio.sleep(0.02)
    assert not _alive_with(marker)
    assert (await rig.runtime.wait_for_state(handle, DONE, timeout=5)).state in (ProcessState.EXITED, ProcessState.GONE)
