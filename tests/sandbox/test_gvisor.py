"""Escape attempts from inside the gvisor runtime: each test makes the attacker's move and fails if it works.

Where the same move works on the local runtime, a control shows it (the attack is real). The agent's processes
live in gVisor's kernel, not the host's: what must not outlive the sandbox is looked for among the host processes
named after its container, and a daemon's effect (a file it keeps writing) shows whether it still runs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from godel.core.ids import new_id
from godel.core.ports import RuntimeHandle, WorkspaceSpec
from godel.errors import RuntimeFailure
from godel.merging import BranchStatus, MergeQueue, make_plan
from godel.runtimes import get_runtime
from godel.runtimes.gvisor import GVisorRuntime
from godel.runtimes.gvisor.runtime import container_id
from tests.api.conftest import spawn, wait_state
from tests.conftest import make_repo, run_git
from tests.merging.conftest import build_five
from tests.sandbox.conftest import Rig, require_gvisor
from tests.sandbox.test_confinement import SNOOP, secret_holder  # noqa: F401 (the fixture)
from tests.sandbox.test_merge_gate import _hostile_gate, _listener
from tests.sandbox.test_selection import _output, _server


def _host_processes(handle: RuntimeHandle) -> list[psutil.Process]:
    """The host processes of the agent's sandbox: runsc, its gofer and its kernel name the container."""
    name = container_id(handle.agent_id)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if name in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# A daemon that leaves the agent's session and keeps writing to the workspace: its effect shows whether it runs.
DAEMON = "(setsid sh -c 'while :; do echo t >> ticks; sleep 0.02; done' &)"


@pytest.fixture
def tcp_listener() -> Iterator[tuple[int, list[int]]]:
    """A TCP listener on the host's loopback counting what it accepts (as PostgreSQL or the control API would)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()


# ------------------------------------------------------------------------------------------ the runtime


def test_the_registry_builds_gvisor_and_it_says_what_it_confines(tmp_path: Path) -> None:
    require_gvisor()
    rt = get_runtime("gvisor", worktrees_root=tmp_path / "w", logs_root=tmp_path / "l")
    caps = rt.capabilities()
    assert (caps.name, caps.isolation, caps.network_isolation, caps.pause) == ("gvisor", "user-kernel", True, True)


def test_without_runsc_the_runtime_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no runsc (nor socat) on it
    with pytest.raises(RuntimeFailure, match=r"runsc \(gVisor\) is not installed.*apt-get install runsc socat"):
        GVisorRuntime(tmp_path / "w", tmp_path / "l")


async def test_the_kernel_is_gvisors(gvisor_rig: Rig) -> None:
    code, out = await gvisor_rig.run("uname -r; dmesg | head -1")
    release, first = out.splitlines()[:2]
    assert code == 0
    assert release != os.uname().release  # the host's kernel is not the one answering
    assert "gVisor" in first, out


async def test_an_agents_private_tmpdir_does_not_keep_its_sandbox_from_starting(gvisor_rig: Rig) -> None:
    # runsc reads TMPDIR to place its sandbox's chroot; an agent's own TMPDIR (an adapter sets one in its private
    # directory, as gemini's does) is out of that process's reach, and the sandbox then failed to start.
    private = gvisor_rig.base / "private"
    (private / "tmp").mkdir(parents=True)
    private.chmod(0o700)
    code, out = await gvisor_rig.run('echo "tmp=$TMPDIR"', env={"TMPDIR": str(private / "tmp")})
    assert (code, out) == (0, f"tmp={private / 'tmp'}")


# ------------------------------------------------------------------------------------------ processes


async def test_environment_of_other_processes_is_unreadable(
    gvisor_rig: Rig,
    local_rig: Rig,
    secret_holder: str,  # noqa: F811
) -> None:
    _, seen = await local_rig.run(SNOOP)
    assert secret_holder in seen  # the control: outside a sandbox any process of the user can read it
    code, seen = await gvisor_rig.run(SNOOP)
    assert code == 0
    assert secret_holder not in seen


async def test_only_the_sandbox_processes_are_visible(gvisor_rig: Rig) -> None:
    code, out = await gvisor_rig.run('ls /proc | grep -c "^[0-9]"; cat /proc/[0-9]*/cmdline | tr "\\0" " "')
    count, cmdlines = out.split("\n", 1)
    assert code == 0
    assert int(count) <= 5  # the shell and its pipeline
    assert "pytest" not in cmdlines and "python" not in cmdlines and "runsc" not in cmdlines


async def test_no_capability_and_privileged_moves_fail(gvisor_rig: Rig) -> None:
    # The host's disk, as a device node: gVisor lets the node be made in its own /tmp, but its kernel has no driver
    # behind it (the read is what must fail). The other moves need capabilities the agent has none of.
    disk = os.stat("/").st_dev
    script = (
        "grep -E 'Cap(Inh|Prm|Eff|Bnd)' /proc/self/status; "
        "/usr/bin/python3 -c 'import ctypes; print(\"NoNewPrivs:\", ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'; "
        f"mknod /tmp/disk b {os.major(disk)} {os.minor(disk)} 2>/dev/null; head -c 512 /tmp/disk >/dev/null 2>&1; "
        "echo read-disk=$?; "
        "mkdir /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null; echo mount=$?; "
        "touch /tmp/f; chown 4242 /tmp/f 2>/dev/null; echo chown=$?; "
        "mount -o remount,rw /usr 2>/dev/null; echo remount=$?"
    )
    code, out = await gvisor_rig.run(script)
    lines = out.splitlines()
    assert code == 0
    assert [line.split()[1] for line in lines[:4]] == ["0000000000000000"] * 4, out
    assert lines[4].split() == ["NoNewPrivs:", "1"]
    results = dict(line.split("=", 1) for line in lines[5:])
    assert all(value != "0" for value in results.values()), out


async def test_a_double_forked_daemon_dies_with_the_agent(gvisor_rig: Rig) -> None:
    # The control: run as a plain process, the daemon outlives its parent (the move is real). Not on the local
    # runtime: that one kills the strays it happens to see, so whether one escapes it depends on timing.
    marker = f"plain-daemon-{new_id()}"
    plain_dir = gvisor_rig.base / "plain"
    plain_dir.mkdir()
    daemon = DAEMON.replace("' &)", f"' {marker} &)")
    plain = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"{daemon}; exit 0", cwd=plain_dir)
    try:
        assert await plain.wait() == 0
        grown = _size(plain_dir / "ticks")
        await _until(lambda: _size(plain_dir / "ticks") > grown)
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            if marker in (proc.info["cmdline"] or []):
                proc.kill()

    code, _ = await gvisor_rig.run(f"{DAEMON}; while [ ! -s ticks ]; do sleep 0.01; done; exit 0")
    handle = gvisor_rig.handles[0]
    assert code == 0
    ticks = handle.workspace / "ticks"
    await _until(lambda: not _host_processes(handle))  # the sandbox is gone on the host
    size = _size(ticks)
    await asyncio.sleep(0.3)  # a window in which a live daemon would write ~15 lines
    assert _size(ticks) == size


async def test_kill_of_the_wrapper_group_takes_the_whole_sandbox(gvisor_rig: Rig) -> None:
    handle = await gvisor_rig.start(f"{DAEMON}; echo up; sleep 300")
    ticks = handle.workspace / "ticks"
    await _until(lambda: _size(ticks) > 0)
    assert handle.pid is not None and _host_processes(handle)
    os.killpg(handle.pid, signal.SIGKILL)  # the wrapper's group: the wrapper, runsc, its gofer; not the sandbox kernel
    await _until(lambda: not _host_processes(handle))
    size = _size(ticks)
    await asyncio.sleep(0.3)
    assert _size(ticks) == size
    await gvisor_rig.runtime.terminate(handle, grace=0)
    runtime = gvisor_rig.runtime
    assert isinstance(runtime, GVisorRuntime)
    assert not (runtime.sandbox_dir(handle.agent_id) / "run" / "state").exists()  # runsc's state, cleaned
    assert not [p for p in Path("/tmp").iterdir() if p.name.startswith("runsc")]


async def test_pause_freezes_daemons_and_busy_loops(gvisor_rig: Rig) -> None:
    handle = await gvisor_rig.start(f"{DAEMON}; while :; do :; done")
    ticks = handle.workspace / "ticks"
    await _until(lambda: _size(ticks) > 0)
    await gvisor_rig.runtime.pause(handle)
    size = _size(ticks)

    def cpu() -> float:
        total = 0.0
        for proc in _host_processes(handle):
            for p in (proc, *proc.children(recursive=True)):  # the kernel's ptrace stubs run the guest's code
                try:
                    times = p.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    pass
        return total

    before = cpu()
    await asyncio.sleep(0.5)  # a window in which the busy loop would use 0.5 s of CPU and the daemon write ~25 lines
    assert _size(ticks) == size
    assert cpu() - before < 0.05
    await gvisor_rig.runtime.resume(handle)
    await _until(lambda: _size(ticks) > size)


# ------------------------------------------------------------------------------------------ files


async def test_writes_outside_the_workspace_do_not_land(gvisor_rig: Rig) -> None:
    rig = gvisor_rig
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
    # Through a symlink in the workspace, and through .. from it.
    script += f"; ln -s {rig.base / 'via-link'} link; echo pwned > link 2>/dev/null"
    script += f"; echo pwned > ../../{marker}-dots 2>/dev/null"
    script += "; echo mine > in-workspace.txt; echo mine > $HOME/in-home.txt; echo done"
    _, out = await rig.run(script)
    assert "done" in out.splitlines(), out
    for target in [*targets, rig.base / "via-link", rig.base / f"{marker}-dots"]:
        assert not target.exists(), target
    assert (rig.repo / "README.md").read_text() == readme
    assert (rig.repo / ".git" / "config").read_text() == config
    handle = rig.handles[0]
    assert (handle.workspace / "in-workspace.txt").read_text() == "mine\n"  # what is its own stays writable
    assert (rig.base / "run" / handle.agent_id / "home" / "in-home.txt").read_text() == "mine\n"


async def test_its_own_bundle_is_out_of_reach(gvisor_rig: Rig) -> None:
    """The bundle holds the agent's environment (its gateway key) and the sandbox's mounts: a sandbox that could
    rewrite it would choose its own binds at the next start."""
    handle = await gvisor_rig.start("sleep 300")
    runtime = gvisor_rig.runtime
    assert isinstance(runtime, GVisorRuntime)
    config = runtime.sandbox_dir(handle.agent_id) / "run" / "bundle" / "config.json"
    await _until(config.exists)
    before = config.read_text()
    code, out = await gvisor_rig.run(f"cat {config}; echo '{{}}' > {config}; echo tried")
    assert code == 0 and "tried" in out.splitlines(), out
    assert '"mounts"' not in out
    assert config.read_text() == before
    assert config.stat().st_mode & 0o777 == 0o600


async def test_commits_inside_the_sandbox_land_on_the_agents_branch(gvisor_rig: Rig) -> None:
    script = "echo hi > made.txt && git add made.txt && git -c user.name=A -c user.email=a@x commit -qm made && echo ok"
    code, out = await gvisor_rig.run(script)
    assert (code, out.splitlines()[-1]) == (0, "ok"), out
    handle = gvisor_rig.handles[0]
    # The commit is in the agent's private git directory: the user's branch moves only when Godel collects it.
    assert run_git(gvisor_rig.repo, "rev-parse", handle.branch) == handle.base_commit
    assert len(await gvisor_rig.runtime.commits(handle)) == 1
    assert run_git(gvisor_rig.repo, "show", f"{handle.branch}:made.txt") == "hi"


# ------------------------------------------------------------------------------------------ network

PROBE = (
    "import socket, sys\n"
    "for port in sys.argv[1:]:\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', int(port)), timeout=2).close(); print(port, 'CONNECTED')\n"
    "    except OSError as exc:\n"
    "        print(port, type(exc).__name__)\n"
)


async def test_no_tcp_to_the_hosts_loopback_or_anywhere(gvisor_rig: Rig, tcp_listener: tuple[int, list[int]]) -> None:
    port, accepted = tcp_listener
    ports = [port, 5432, 6379]  # a listener of this test, PostgreSQL, Redis
    reachable = []
    for p in ports:  # the control: from the host, what listens there accepts
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", p)) == 0:
                reachable.append(p)
    assert port in reachable
    await _until(lambda: accepted == [1])  # the control's connection, counted before the sandbox's turn
    accepted.clear()
    script = f"/usr/bin/python3 - {' '.join(map(str, ports))} <<'EOF'\n{PROBE}EOF\n"
    script += "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)\" 2>&1 | tail -1"
    script += "; ip -o link | cut -d: -f2"
    code, out = await gvisor_rig.run(script)
    assert code == 0 and "CONNECTED" not in out, out
    assert [line.split()[0] for line in out.splitlines()[:3]] == [str(p) for p in ports]
    assert out.splitlines()[3].startswith("OSError"), out  # no route out (gVisor says "No route to host")
    assert [line.strip() for line in out.splitlines()[4:]] == ["lo"], out  # the only interface
    assert accepted == []


async def test_the_gateway_socket_is_the_only_way_out(fast_tmp: Path) -> None:
    """The relay inside reaches the server's Unix socket: a Unix socket server stands in for the gateway (the
    end-to-end test with a real server, where the control API on the same port is not reachable, is test_gateway)."""
    require_gvisor()
    base = fast_tmp
    gateway_dir = base / "gateway"
    gateway_dir.mkdir(mode=0o700)
    sock = gateway_dir / "proxy.sock"
    token = secrets.token_hex(8)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(f"gateway {token}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(sock))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # a free port number: the gateway port the agent is given
    runtime = GVisorRuntime(base / "worktrees", base / "logs", gateway_socket=sock, gateway_port=port)
    rig = Rig(base, make_repo(base / "repo"), runtime)
    try:
        talk = (
            "import socket, sys\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5); s.sendall(b'hi\\n')\n"
            "print(s.makefile().readline().strip())\n"
        )
        code, out = await rig.run(f'/usr/bin/python3 -c "{talk}"; echo /run/godel/*; touch /run/godel/x; echo rc=$?')
        assert code == 0, out
        assert out.splitlines()[0] == f"gateway {token}"
        assert out.splitlines()[1] == "/run/godel/proxy.sock"
        assert out.splitlines()[-1] != "rc=0"  # the socket's directory is read-only inside
    finally:
        for handle in rig.handles:
            await runtime.terminate(handle, grace=0.0)
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------------------------------ Godel's own commands


async def test_a_setup_command_runs_inside_gvisor(gvisor_rig: Rig) -> None:
    """The spawn's setup is its caller's code (possibly an agent's, through its API credential): it runs in a
    sandbox of its own, gVisor's kernel answering, with the caller's environment, and cannot write outside."""
    outside = gvisor_rig.base / f"setup-escape-{new_id()}"
    setup = f'uname -r > kernel.txt; echo "$GODEL_WORKSPACE" > ws.txt; echo pwned > {outside}; echo ok > done.txt'
    handle = await gvisor_rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=gvisor_rig.repo, setup=setup))
    assert (handle.workspace / "done.txt").read_text() == "ok\n"
    assert (handle.workspace / "kernel.txt").read_text().strip() != os.uname().release
    assert (handle.workspace / "ws.txt").read_text().strip() == str(handle.workspace)
    assert not outside.exists()
    runtime = gvisor_rig.runtime
    assert isinstance(runtime, GVisorRuntime)
    assert not list((runtime.run_root / ".gvisor" / ".commands").iterdir())  # its one-off bundle is gone
    await runtime.cleanup(handle)


async def test_a_merge_gate_runs_as_confined_as_an_agent(fast_tmp: Path) -> None:
    """With gvisor as the default runtime, a merge gate (what a branch's test suite runs) reads no secret of the
    server's, writes nothing outside its tree and reaches nothing on loopback; the gate itself still passes. The
    unconfined control is test_merge_gate's, with the same gate."""
    require_gvisor()
    five = build_five(fast_tmp / "repo")
    secret = fast_tmp / "home" / "secret.key"
    secret.parent.mkdir()
    secret.write_text("the-server-secret\n")
    server, port = await _listener()
    try:
        runtime = GVisorRuntime(fast_tmp / "w", fast_tmp / "l", run_root=fast_tmp / "run")
        gate = _hostile_gate(secret, fast_tmp / "outside.txt", port)
        plan = await make_plan(five.repo, "integration", ["feature/one"], verify=gate, verify_timeout=60)
        (result,) = await MergeQueue(plan, workdir=fast_tmp / "m", runtime=runtime).run()
        assert result.status is BranchStatus.MERGED, (result.reason, result.output)  # no escape worked
        assert not (fast_tmp / "outside.txt").exists()
    finally:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------------------------------ chosen per agent


async def test_an_agent_that_names_gvisor_runs_there_and_shows_it(fast_tmp: Path, git_repo: Path) -> None:
    require_gvisor()
    async with _server(fast_tmp / "home", runtimes=["gvisor"]) as client:
        boxed = await spawn(client, git_repo, "uname -r", config={"sandbox": {"runtime": "gvisor"}})
        assert boxed["isolation"] == {"runtime": "gvisor", "level": "user-kernel"}
        assert (await wait_state(client, boxed["id"], "completed", timeout=60))["exitCode"] == 0
        assert (await _output(client, boxed["id"])).strip() not in ("", os.uname().release)  # gVisor's kernel
        caps = (await client.get("/capabilities")).json()["data"]
        assert sorted(caps["enabledRuntimes"]) == ["gvisor", "local"]
