"""Escape attempts from inside a container (podman + runc): each test makes the attacker's move and fails if it
works. Where the move succeeds on the local runtime, the test shows that first (``local_rig``), so a pass means the
container stopped it. Also: the image's failure modes, the cgroup limits and the freezer."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from godel.core.ids import new_id
from godel.core.limits import ResourceLimits
from godel.core.ports import LaunchSpec, ProcessState, RuntimeHandle, WorkspaceSpec
from godel.errors import RuntimeUnavailableError, ValidationError
from godel.runtimes import get_runtime
from godel.runtimes.container import ContainerRuntime, Limits
from tests.conftest import make_repo, remove_tree, run_git
from tests.sandbox.conftest import DONE, Rig, _scratch
from tests.sandbox.containers import container_pid, container_runtime, require_container

# Only the secrets' lines: every process's whole environment on a busy machine is more output than is read back.
SNOOP = (
    'for f in /proc/[0-9]*/environ; do cat "$f" 2>/dev/null | tr "\\0" "\\n"; done | grep -a "^GODEL_SECRET=" || true'
)


@pytest.fixture
async def crig() -> AsyncIterator[Rig]:
    require_container()
    base = _scratch()
    r = Rig(base, make_repo(base / "repo"), container_runtime(base))
    try:
        yield r
    finally:
        for handle in r.handles:  # never leak a container, whatever the test did
            await r.runtime.cleanup(handle)
        remove_tree(base)


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


async def _poll(check: object, within: float = 10.0) -> bool:
    """Whether ``check()`` (sync or async) holds before the deadline."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(0.05)
    return False


async def _start(
    rig: Rig, script: str, sandbox: dict[str, object], limits: ResourceLimits | None = None
) -> RuntimeHandle:
    """Start ``script`` with an agent's ``config.sandbox`` and resource limits (as the scheduler passes them)."""
    handle = await rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=rig.repo))
    handle.extra["sandbox"] = sandbox
    rig.handles.append(handle)
    handle = await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", script], limits=limits))
    rig.handles[-1] = handle
    return handle


async def _finish(rig: Rig, handle: RuntimeHandle, timeout: float = 60) -> tuple[int, str]:
    status = await rig.runtime.wait_for_state(handle, DONE, timeout=timeout)
    lines, _ = await rig.runtime.read_output(handle, {}, final=True)
    return status.exit_code if status.exit_code is not None else -1, "\n".join(x.text for x in lines)


# ------------------------------------------------------------------------------------------------- the runtime


def test_the_registry_builds_it_and_it_says_what_it_confines(tmp_path: Path) -> None:
    require_container()
    rt = get_runtime("container", worktrees_root=tmp_path / "w", logs_root=tmp_path / "l")
    caps = rt.capabilities()
    assert (caps.name, caps.isolation, caps.network_isolation, caps.pause) == ("container", "container", True, True)
    assert set(caps.resource_limits) == {"memory", "cpu", "pids"}


async def test_a_missing_default_image_fails_closed_naming_the_build_script(tmp_path: Path) -> None:
    require_container()
    rt = ContainerRuntime(tmp_path / "w", tmp_path / "l", storage=tmp_path / "empty-storage")
    handle = await rt.prepare(WorkspaceSpec(agent_id=new_id(), repo=make_repo(tmp_path / "repo")))
    with pytest.raises(RuntimeUnavailableError, match="scripts/build-agent-image"):
        await rt.start(handle, LaunchSpec(["true"]))
    assert handle.pid is None and not (handle.log_dir / "pid").exists()  # nothing ran


async def test_an_agents_image_must_exist_and_be_a_plain_reference(crig: Rig) -> None:
    with pytest.raises(RuntimeUnavailableError, match="localhost/no-such-image:1 is not in Godel's podman storage"):
        await _start(crig, "true", {"image": "localhost/no-such-image:1"})
    for bad in ("--privileged", "Upper/case", "image name", "localhost/x:tag;rm"):
        with pytest.raises(ValidationError) as info:
            await _start(crig, "true", {"image": bad})
        assert info.value.status_code == 400


async def test_an_agent_runs_in_the_image_it_names(crig: Rig) -> None:
    tag = require_container()
    code, out = await _finish(crig, await _start(crig, "cat /etc/godel-image", {"image": tag}))
    assert (code, out) == (0, tag)


# --------------------------------------------------------------------------------------------- the attacks


async def test_environment_of_other_processes_is_unreadable(crig: Rig, local_rig: Rig, secret_holder: str) -> None:
    _, seen = await local_rig.run(SNOOP)
    assert secret_holder in seen  # the control: outside a container any process of the user can read it
    code, seen = await crig.run(SNOOP)
    assert code == 0
    assert secret_holder not in seen


async def test_only_the_containers_processes_are_visible(crig: Rig) -> None:
    code, out = await crig.run('ls /proc | grep -c "^[0-9]"; cat /proc/[0-9]*/cmdline | tr "\\0" " "')
    count, cmdlines = out.split("\n", 1)
    assert code == 0
    assert int(count) <= 8  # the init, the entry shell, the agent's shell and its pipeline
    assert "pytest" not in cmdlines and "python" not in cmdlines and "conmon" not in cmdlines


async def test_no_capabilities_no_root_no_mount(crig: Rig) -> None:
    script = (
        "grep CapEff /proc/self/status; id -u; "
        "mknod /tmp/disk b 8 0 2>/dev/null; echo mknod=$?; "
        "mkdir /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null; echo mount=$?; "
        "unshare -r true 2>/dev/null; echo userns=$?; "
        "grep NoNewPrivs /proc/self/status"
    )
    _, out = await crig.run(script)
    lines = out.splitlines()
    assert lines[0].split() == ["CapEff:", "0000000000000000"]
    assert lines[1] == "1000"  # the image's agent user, not root
    fields = dict(line.split("=", 1) for line in lines if "=" in line)
    assert fields["mknod"] != "0" and fields["mount"] != "0" and fields["userns"] != "0", out
    assert lines[-1].split() == ["NoNewPrivs:", "1"]


async def test_writes_outside_the_workspace_do_not_land(crig: Rig, local_rig: Rig) -> None:
    home = Path(os.environ.get("HOME", "/root"))
    marker = f"godel-escape-{new_id()}"
    config = (crig.repo / ".git" / "config").read_text()
    targets = [Path("/usr") / marker, Path("/etc") / marker, Path("/") / marker, home / marker,
               crig.repo / marker, crig.repo / ".git" / "hooks" / "pre-commit", crig.base / marker]  # fmt: skip
    script = "; ".join(f"echo pwned > {t} 2>/dev/null" for t in targets)
    script += f"; echo '[core] hooksPath=/tmp' >> {crig.repo / '.git/config'} 2>/dev/null"
    script += "; echo mine > in-workspace.txt; echo mine > $HOME/in-home.txt; ln -s / rootlink; echo done"
    control = str(local_rig.base / marker)
    _, out = await local_rig.run(f"echo pwned > {control}")
    assert Path(control).exists()  # the control: a plain process writes wherever its user may
    _, out = await crig.run(script)
    assert "done" in out.splitlines(), out
    for target in targets:
        assert not target.exists(), target
    assert (crig.repo / ".git" / "config").read_text() == config
    handle = crig.handles[0]
    assert (handle.workspace / "in-workspace.txt").read_text() == "mine\n"
    assert (handle.workspace / "in-workspace.txt").stat().st_uid == os.getuid()  # the server's user owns it
    assert (crig.base / "run" / handle.agent_id / "home" / "in-home.txt").read_text() == "mine\n"


async def test_commits_inside_land_on_the_agents_branch(crig: Rig) -> None:
    script = "echo hi > made.txt && git add made.txt && git -c user.name=A -c user.email=a@x commit -qm made && echo ok"
    code, out = await crig.run(script)
    assert (code, out.splitlines()[-1]) == (0, "ok"), out
    handle = crig.handles[0]
    # The commit is in the agent's private git directory: the user's branch moves only when Godel collects it.
    assert run_git(crig.repo, "rev-parse", handle.branch) == handle.base_commit
    assert len(await crig.runtime.commits(handle)) == 1
    assert run_git(crig.repo, "show", f"{handle.branch}:made.txt") == "hi"


@pytest.mark.parametrize("port", [5432, 6379])
async def test_no_tcp_to_the_hosts_services(crig: Rig, port: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    except OSError:
        pytest.skip(f"nothing listens on 127.0.0.1:{port} here, so the control cannot show the move is real")
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')"
    _, out = await crig.run(f'python3 -c "{probe}" 2>&1')
    assert "CONNECTED" not in out and "refused" in out, out


async def test_no_tcp_to_a_listener_on_the_hosts_loopback(crig: Rig) -> None:
    accepted = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')"
        _, out = await crig.run(f'python3 -c "{probe}" 2>&1; echo devices; tail -n +3 /proc/net/dev | cut -d: -f1')
        assert "CONNECTED" not in out.splitlines(), out
        assert [d.strip() for d in out.split("devices\n", 1)[1].splitlines()] == ["lo"]  # the only interface
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # the control: from here it works
            pass
        assert await _poll(lambda: accepted == 1)
        assert accepted == 1  # only ours
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_double_forked_daemon_dies_with_the_agent(crig: Rig) -> None:
    marker = f"container-daemon-{new_id()}"
    code, _ = await crig.run(f"(setsid sh -c 'sleep 300' {marker} &) ; exit 0")
    assert code == 0
    assert await _poll(lambda: not _alive_with(marker))


async def test_a_killed_wrapper_does_not_leave_its_container_running(crig: Rig) -> None:
    """SIGKILL to the agent's host-side group ends ``podman run`` but not conmon's container: the runtime removes
    the container when it sees the run ended (the supervisor looks at every agent's status ten times a second)."""
    marker = f"daemon-{new_id()}"
    handle = await crig.start(f"(setsid sh -c 'sleep 300' {marker} &); echo up; sleep 300")
    assert await _poll(lambda: _alive_with(marker))
    assert handle.pid is not None
    os.killpg(handle.pid, signal.SIGKILL)

    async def gone() -> bool:
        await crig.runtime.status(handle)
        return not _alive_with(marker)

    assert await _poll(gone)
    assert container_pid(handle) is None


async def test_pause_freezes_a_double_forked_daemon(crig: Rig) -> None:
    handle = await crig.start("(setsid sh -c 'while :; do date +%s%N >> $HOME/ticks; sleep 0.01; done' &); sleep 300")
    ticks = crig.base / "run" / handle.agent_id / "home" / "ticks"
    assert await _poll(lambda: ticks.exists() and ticks.stat().st_size > 0)
    await crig.runtime.pause(handle)
    assert (await crig.runtime.status(handle)).state is ProcessState.STOPPED
    assert isinstance(crig.runtime, ContainerRuntime)
    assert await crig.runtime.podman.state(ContainerRuntime.container_name(handle)) == "paused"  # the freezer
    size = ticks.stat().st_size
    await asyncio.sleep(0.3)  # a window in which a running daemon would tick about thirty times
    assert ticks.stat().st_size == size
    await crig.runtime.resume(handle)
    assert (await crig.runtime.status(handle)).state is ProcessState.RUNNING
    assert await _poll(lambda: ticks.stat().st_size > size)


async def test_memory_limit_kills_a_memory_hog(crig: Rig) -> None:
    hog = "python3 -c 'b = bytearray(300 << 20); print(\"allocated\")'"
    code, out = await _finish(crig, await _start(crig, hog, {}, ResourceLimits(memory_mb=64)))
    assert code == 128 + signal.SIGKILL and "allocated" not in out, out
    code, out = await _finish(crig, await _start(crig, hog, {}))  # the control: without the limit it works
    assert (code, out) == (0, "allocated")


async def test_pids_limit_contains_a_fork_bomb(crig: Rig) -> None:
    # The bomb forks until it cannot (dash then gives up on the subshell); the count is done with builtins only,
    # as nothing can fork while the bomb's sleeps hold every pid; kill -1 (a builtin) then ends them.
    bomb = (
        "(while :; do sleep 30 & done) 2>/dev/null; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; "
        "kill -9 -1; echo count=$n"
    )
    code, out = await _finish(crig, await _start(crig, bomb, {}, ResourceLimits(pids=32)))
    assert code == 0, out
    count = int(out.splitlines()[-1].removeprefix("count="))
    assert 20 <= count <= 32, out  # it did fork a lot, and the container never held more than its limit
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0  # the rest of the machine still forks


async def test_the_runtimes_default_limits_apply(tmp_path: Path) -> None:
    require_container()
    base = _scratch()
    try:
        rig = Rig(base, make_repo(base / "repo"), container_runtime(base, limits=Limits(pids=40, cpus=0.5)))
        handle = await _start(rig, "sleep 30", {})
        assert await _poll(lambda: container_pid(handle) is not None)
        pid = container_pid(handle)
        groups = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
        pids_max = Path("/sys/fs/cgroup/pids") / groups["pids"].lstrip("/") / "pids.max"
        quota = Path("/sys/fs/cgroup/cpu") / groups["cpu"].lstrip("/") / "cpu.cfs_quota_us"
        assert pids_max.read_text().strip() == "40"
        assert quota.read_text().strip() == "50000"
        await rig.runtime.cleanup(handle)
        assert container_pid(handle) is None
    finally:
        remove_tree(base)
