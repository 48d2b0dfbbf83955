"""Runtime conformance: every back-end passes the same assertions with real git and real processes.

A back-end joins by adding a factory to ``RUNTIMES``; one that cannot run on this machine should skip with its
reason from the factory (``pytest.skip``), never pass vacuously. Repositories and worktrees live on tmpfs
(``/dev/shm``) because creating files on the root disk here costs about a millisecond each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from godel.core.ids import new_id
from godel.core.limits import ResourceLimits
from godel.core.ports import (
    RUN_KEY,
    FileAccess,
    LaunchSpec,
    OutputStreaming,
    ProcessState,
    Runtime,
    RuntimeHandle,
    SnapshotCatalog,
    WorkspaceSpec,
)
from godel.errors import (
    AgentSpawnError,
    ConflictError,
    NotAGitRepositoryError,
    NotFoundError,
    PathOutsideWorkspaceError,
    RefNotFoundError,
    SnapshotNotFoundError,
    ValidationError,
)
from godel.runtimes import get_runtime, runtime_names
from godel.runtimes.gvisor import GVisorRuntime
from godel.runtimes.local import LocalRuntime
from godel.runtimes.processes import WRAPPER
from godel.runtimes.sandbox import SandboxRuntime
from tests.conftest import remove_tree
from tests.sandbox.conftest import require_gvisor, require_sandbox


def _sandbox(base: Path) -> Runtime:
    require_sandbox()
    return SandboxRuntime(worktrees_root=base / "worktrees", logs_root=base / "logs")


def _gvisor(base: Path) -> Runtime:
    require_gvisor()
    return GVisorRuntime(worktrees_root=base / "worktrees", logs_root=base / "logs")


def _container(base: Path) -> Runtime:
    from tests.sandbox.containers import container_runtime  # skips without podman and runc; builds the image

    return container_runtime(base)


def _container_roots(handle: RuntimeHandle) -> list[int]:
    from tests.sandbox.containers import container_pid

    pid = container_pid(handle)
    return [pid] if pid else []


def _kubernetes(base: Path) -> Runtime:
    from tests.remote.conftest import kubernetes_runtime  # the fake API server starts on first use

    return kubernetes_runtime(base)


def _e2b(base: Path) -> Runtime:
    from tests.remote.conftest import e2b_runtime

    return e2b_runtime(base)


RUNTIMES: dict[str, Callable[[Path], Runtime]] = {
    "local": lambda base: LocalRuntime(worktrees_root=base / "worktrees", logs_root=base / "logs"),
    "sandbox": _sandbox,
    "gvisor": _gvisor,
    "container": _container,
    "kubernetes": _kubernetes,  # against a fake API server at the HTTP edge (tests/remote)
    "e2b": _e2b,  # against a fake E2B at the HTTP edge (tests/remote)
}
# Runtimes whose agents run on another machine: a test that watches an agent from this one (its processes, its log
# files filling while nothing reads them, the workspace changing under it) skips for them (tests/remote covers them).
REMOTE = {"kubernetes", "e2b"}
# Runtimes whose agent processes run in a kernel of their own (gVisor's): on the host they are not processes, and
# the tests that look for them there look at the sandbox's host processes instead.
GUEST_KERNEL = {"gvisor"}


def local_only(bench: Bench, why: str) -> None:
    if bench.name in REMOTE:
        pytest.skip(f"{bench.name} runs agents elsewhere: {why}")


DONE = {ProcessState.EXITED, ProcessState.GONE}
_GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


def g(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def branch_exists(repo: Path, branch: str) -> bool:
    return bool(g(repo, "branch", "--list", branch))


def worktree_listed(repo: Path, path: Path) -> bool:
    return str(path) in g(repo, "worktree", "list", "--porcelain")


def real(path: str | Path) -> str:
    return os.path.realpath(path)


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``check`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


@dataclass
class Bench:
    name: str
    base: Path
    repo: Path
    runtime: Runtime
    handles: list[RuntimeHandle] = field(default_factory=list)

    def fresh_runtime(self) -> Runtime:
        """Another instance over the same directories: what a restarted server builds."""
        return RUNTIMES[self.name](self.base)

    def spec(self, agent_id: str | None = None, **kwargs: object) -> WorkspaceSpec:
        return WorkspaceSpec(agent_id=agent_id or new_id(), repo=self.repo, **kwargs)

    async def prepare(self, agent_id: str | None = None, **kwargs: object) -> RuntimeHandle:
        return await self.runtime.prepare(self.spec(agent_id, **kwargs))

    async def run(
        self,
        script: str,
        handle: RuntimeHandle | None = None,
        env: dict[str, str] | None = None,
        files: dict[Path, str] | None = None,
        limits: ResourceLimits | None = None,
    ) -> RuntimeHandle:
        handle = handle or await self.prepare()
        argv = ["/bin/sh", "-c", script, "godel-agent", "the task"]
        launch = LaunchSpec(argv, env or {}, files=files or {}, limits=limits)
        handle = await self.runtime.start(handle, launch)
        self.handles.append(handle)
        return handle

    async def output(self, handle: RuntimeHandle, *, final: bool = True) -> tuple[list[str], list[str]]:
        lines, _ = await self.runtime.read_output(handle, {}, final=final)
        return [x.text for x in lines if x.stream == "stdout"], [x.text for x in lines if x.stream == "stderr"]


def _scratch() -> Path:
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="godel-rt-", dir=where))


@pytest.fixture(params=sorted(RUNTIMES))
async def bench(request: pytest.FixtureRequest) -> AsyncIterator[Bench]:
    base = _scratch()
    repo = base / "repo"
    repo.mkdir()
    g(repo, "init", "-q", "-b", "main")
    g(repo, "config", "user.name", "Test")
    g(repo, "config", "user.email", "test@example.com")
    (repo / "README.md").write_text("hello\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('v1')\n")
    (repo / ".gitignore").write_text("*.log\nbuild/\n.env\nconfig/\n")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", "first")
    (repo / "src" / "app.py").write_text("print('v2')\n")
    g(repo, "commit", "-q", "-am", "second")
    b = Bench(request.param, base, repo, RUNTIMES[request.param](base))
    try:
        yield b
    finally:
        for handle in b.handles:  # never leak a process, whatever the test did
            await b.runtime.terminate(handle, grace=0.0)
        remove_tree(base)


# ------------------------------------------------------------------------------------ registry, caps


def test_registry_knows_every_conformance_runtime() -> None:
    assert set(RUNTIMES) <= set(runtime_names())
    with pytest.raises(ValidationError, match="local"):
        get_runtime("no-such-runtime")


def test_get_runtime_builds_a_runtime(tmp_path: Path) -> None:
    rt = get_runtime("local", worktrees_root=tmp_path / "w", logs_root=tmp_path / "l")
    assert isinstance(rt, Runtime)
    # The local runtime also has every optional capability of the contract.
    assert isinstance(rt, FileAccess) and isinstance(rt, OutputStreaming) and isinstance(rt, SnapshotCatalog)
    caps = rt.capabilities()
    assert (caps.name, caps.isolation, caps.pause, caps.snapshot) == ("local", "worktree", True, "git-ref")


# ----------------------------------------------------------------------------------------- prepare


async def test_prepare_creates_a_workspace_on_its_branch_at_the_base_commit(bench: Bench) -> None:
    agent_id = new_id()
    handle = await bench.prepare(agent_id)
    assert handle.workspace.is_dir()
    assert handle.branch == f"godel/{agent_id}"
    assert handle.runtime == bench.name
    assert g(handle.workspace, "rev-parse", "--abbrev-ref", "HEAD") == handle.branch
    assert handle.base_commit == g(bench.repo, "rev-parse", "HEAD") == g(handle.workspace, "rev-parse", "HEAD")
    # The branch exists in the user's repository (Godel made it), but the workspace's git directory is the agent's
    # own: not the repository's, nor a worktree of it.
    assert g(bench.repo, "rev-parse", f"refs/heads/{handle.branch}") == handle.base_commit
    own = Path(g(handle.workspace, "rev-parse", "--absolute-git-dir"))
    assert not own.is_relative_to(bench.repo) and not worktree_listed(bench.repo, handle.workspace)
    assert g(handle.workspace, "status", "--porcelain") == ""
    assert (handle.workspace / "src" / "app.py").read_text() == "print('v2')\n"


async def test_prepare_honours_the_base_ref(bench: Bench) -> None:
    handle = await bench.prepare(base_ref="HEAD~1")
    assert handle.base_commit == g(bench.repo, "rev-parse", "HEAD~1")
    assert (handle.workspace / "src" / "app.py").read_text() == "print('v1')\n"


async def test_worktreeinclude_copies_listed_untracked_files(bench: Bench) -> None:
    repo = bench.repo
    (repo / ".worktreeinclude").write_text(
        "# local secrets and config\n.env\n\nconfig/*.json\n/cache\n../outside.txt\n/etc/passwd\nREADME.md\n"
    )
    (repo / ".env").write_text("TOKEN=1\n")
    (repo / "config").mkdir()
    (repo / "config" / "local.json").write_text("{}\n")
    (repo / "config" / "notes.txt").write_text("not matched\n")
    (repo / "cache" / "deep").mkdir(parents=True)
    (repo / "cache" / "deep" / "blob").write_text("c\n")
    (repo / "README.md").write_text("changed in the main checkout\n")
    (bench.base / "outside.txt").write_text("never copied\n")
    handle = await bench.prepare()
    ws = handle.workspace
    assert (ws / ".env").read_text() == "TOKEN=1\n"
    assert (ws / "config" / "local.json").read_text() == "{}\n"
    assert (ws / "cache" / "deep" / "blob").read_text() == "c\n"
    assert not (ws / "config" / "notes.txt").exists()
    assert not (bench.base / "worktrees" / "outside.txt").exists()
    assert not (ws / "etc").exists()
    assert (ws / "README.md").read_text() == "hello\n"  # checked-out files are never overwritten


async def test_setup_command_runs_in_the_workspace(bench: Bench) -> None:
    handle = await bench.prepare(setup='pwd > setup-ran.txt; echo "$GODEL_WORKSPACE" >> setup-ran.txt')
    lines = (handle.workspace / "setup-ran.txt").read_text().split()
    assert [real(x) for x in lines] == [real(handle.workspace)] * 2


async def test_failed_setup_leaves_nothing_behind(bench: Bench) -> None:
    agent_id = new_id()
    with pytest.raises(AgentSpawnError) as info:
        await bench.prepare(agent_id, setup="echo installing; echo boom >&2; exit 7")
    assert info.value.details["exitCode"] == 7
    assert "boom" in info.value.details["output"] and "installing" in info.value.details["output"]
    path = bench.base / "worktrees" / agent_id
    assert not path.exists()
    assert not branch_exists(bench.repo, f"godel/{agent_id}")
    assert not worktree_listed(bench.repo, path)


async def test_setup_timeout_fails_and_cleans_up(bench: Bench) -> None:
    agent_id = new_id()
    started = time.monotonic()
    with pytest.raises(AgentSpawnError) as info:
        await bench.prepare(agent_id, setup="sleep 30", setup_timeout=0.3)
    assert time.monotonic() - started < 5
    assert info.value.details["timedOut"] is True
    assert not (bench.base / "worktrees" / agent_id).exists()
    assert not branch_exists(bench.repo, f"godel/{agent_id}")


async def test_missing_base_ref_fails_cleanly(bench: Bench) -> None:
    agent_id = new_id()
    with pytest.raises(RefNotFoundError) as info:
        await bench.prepare(agent_id, base_ref="no-such-branch")
    assert info.value.status_code == 400
    assert not (bench.base / "worktrees" / agent_id).exists()
    assert not branch_exists(bench.repo, f"godel/{agent_id}")


async def test_not_a_repository(bench: Bench) -> None:
    plain = bench.base / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepositoryError):
        await bench.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=plain))
    with pytest.raises(NotAGitRepositoryError):
        await bench.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=bench.base / "missing"))


async def test_a_retry_checks_out_the_kept_branch_as_it_is(bench: Bench) -> None:
    first = await bench.prepare()
    (first.workspace / "work.txt").write_text("attempt 1\n")
    g(first.workspace, "add", "work.txt")
    g(first.workspace, "commit", "-q", "-m", "attempt 1")
    tip = g(first.workspace, "rev-parse", "HEAD")
    await bench.runtime.cleanup(first)
    # A failing retry must not take the kept branch (or its commits) down with it.
    with pytest.raises(AgentSpawnError):
        await bench.prepare(first.agent_id, base_ref=first.base_commit, setup="exit 1")
    assert g(bench.repo, "rev-parse", first.branch) == tip
    retry = await bench.prepare(first.agent_id, base_ref=first.base_commit)
    assert retry.branch == first.branch and retry.base_commit == first.base_commit
    assert g(retry.workspace, "rev-parse", "HEAD") == tip
    assert g(retry.workspace, "rev-parse", "--abbrev-ref", "HEAD") == first.branch
    assert await bench.runtime.commits(retry) == [tip]


async def test_a_branch_checked_out_elsewhere_is_refused(bench: Bench) -> None:
    with pytest.raises(ConflictError):
        await bench.prepare(branch="main")  # the main worktree has it
    first = await bench.prepare()
    await bench.runtime.snapshot(first, "snap")
    await bench.runtime.cleanup(first)
    with pytest.raises(ConflictError):
        await bench.prepare(first.agent_id, from_snapshot="snap")  # a fork needs a branch of its own
    assert branch_exists(bench.repo, "main") and branch_exists(bench.repo, first.branch)


# ------------------------------------------------------------------------------------ start, output


async def test_start_runs_the_command_with_task_env_and_files(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-secret")  # must never reach an agent
    handle = await bench.prepare()
    config = bench.base / "config" / handle.agent_id / "settings.json"
    script = 'echo "arg=$1"; echo "task=$GODEL_TASK"; echo "key=${OPENAI_API_KEY:-unset}"; pwd; cat "$CFG"'
    handle = await bench.run(
        script, handle, env={"GODEL_TASK": "the task", "CFG": str(config)}, files={config: '{"a": 1}\n'}
    )
    assert handle.pid is not None and handle.pid_started is not None
    status = await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    assert (status.state, status.exit_code) == (ProcessState.EXITED, 0)
    out, _ = await bench.output(handle)
    assert out[:3] == ["arg=the task", "task=the task", "key=unset"]
    assert real(out[3]) == real(handle.workspace)
    assert out[4] == '{"a": 1}'
    assert config.stat().st_mode & 0o777 == 0o600


async def test_output_is_read_incrementally_with_partial_lines(bench: Bench) -> None:
    local_only(bench, "the test unblocks the agent through the server's copy of the workspace")
    script = (
        "printf 'one\\ntwo\\npar'; printf 'e1\\n' >&2; "
        "while [ ! -e go ]; do sleep 0.01; done; printf 'tial\\nthree\\n'; printf 'e2\\n' >&2"
    )
    handle = await bench.run(script)
    seen: list[tuple[str, str]] = []
    offsets: dict[str, int] = {}

    async def got(n: int) -> bool:
        nonlocal offsets
        lines, offsets = await bench.runtime.read_output(handle, offsets)
        seen.extend((x.stream, x.text) for x in lines)
        return len(seen) >= n

    await until(lambda: got(3))
    assert sorted(seen) == [("stderr", "e1"), ("stdout", "one"), ("stdout", "two")]
    assert offsets == {"stdout": len(b"one\ntwo\n"), "stderr": len(b"e1\n")}  # "par" is not consumed
    assert (await bench.runtime.read_output(handle, offsets))[0] == []  # nothing new, nothing returned
    (handle.workspace / "go").touch()
    await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    lines, offsets = await bench.runtime.read_output(handle, offsets)
    assert [(x.stream, x.text) for x in lines] == [
        ("stdout", "partial"),
        ("stdout", "three"),
        ("stderr", "e2"),
    ]
    assert (handle.log_dir / "stdout.log").read_bytes() == b"one\ntwo\npartial\nthree\n"


async def test_final_read_returns_the_last_unterminated_line(bench: Bench) -> None:
    handle = await bench.run("printf 'done\\nno newline'")
    await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    lines, offsets = await bench.runtime.read_output(handle, {})
    assert [x.text for x in lines] == ["done"]
    lines, offsets = await bench.runtime.read_output(handle, offsets, final=True)
    assert [x.text for x in lines] == ["no newline"]
    assert offsets["stdout"] == len(b"done\nno newline")


async def test_long_lines_are_split_and_bad_bytes_replaced(bench: Bench) -> None:
    handle = await bench.run("head -c 150000 /dev/zero | tr '\\0' x; echo; printf 'bad \\377 byte\\n'")
    await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    out, _ = await bench.output(handle)
    assert [len(x) for x in out[:3]] == [65536, 65536, 150000 - 2 * 65536]
    assert out[3] == "bad \ufffd byte"


async def test_exit_code_is_recorded(bench: Bench) -> None:
    handle = await bench.run("echo bye; exit 3")
    status = await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    assert (status.state, status.exit_code) == (ProcessState.EXITED, 3)
    assert (await bench.runtime.status(handle)).exit_code == 3  # stable on re-reading


async def test_processes_left_behind_by_a_finished_run_are_killed(bench: Bench) -> None:
    marker = f"left-behind-{new_id()}"
    handle = await bench.run(f"sh -c 'sleep 100' {marker} &")
    await bench.runtime.wait_for_state(handle, DONE, timeout=5)

    async def gone() -> bool:
        await bench.runtime.status(handle)  # the supervisor keeps polling; the runtime tidies up as it goes
        return not _alive_with(marker)

    await until(gone)


async def test_missing_program_exits_127(bench: Bench) -> None:
    handle = await bench.run("no-such-program-godel")
    status = await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    assert status.exit_code == 127
    _, err = await bench.output(handle)
    assert any("no-such-program-godel" in line for line in err)


async def test_a_second_start_keeps_the_previous_runs_logs(bench: Bench) -> None:
    handle = await bench.run("echo first; exit 1")
    await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    handle = await bench.run("echo second", handle)
    status = await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    assert status.exit_code == 0  # the first run's exit file did not end the second at once
    assert (await bench.output(handle))[0] == ["second"]
    assert (handle.log_dir / "run-1" / "stdout.log").read_text() == "first\n"


async def test_wait_for_state_times_out(bench: Bench) -> None:
    handle = await bench.run("sleep 100")
    with pytest.raises(TimeoutError):
        await bench.runtime.wait_for_state(handle, DONE, timeout=0.1)


# ---------------------------------------------------------------------------------- signals, adoption


def _alive_with(marker: str) -> bool:
    """Whether a live process has ``marker`` among its arguments. By marker, not pid: a pid the command reports
    from inside a sandbox is its own pid namespace's, not the host's."""
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


# Where a runtime's agent processes live beyond the wrapper's own tree: a container's are children of podman's
# conmon, not of the wrapper. Each gives the host pids of further roots (the container's init).
ROOTS: dict[str, Callable[[RuntimeHandle], list[int]]] = {"container": _container_roots}


def _run_tree(bench: Bench, handle: RuntimeHandle) -> list[psutil.Process]:
    """Every process of the agent's run: the wrapper's tree and the runtime's further roots' trees."""
    assert handle.pid is not None
    procs = _tree(handle.pid)
    for pid in ROOTS.get(bench.name, lambda _: [])(handle):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs += _tree(pid)
    return procs


def _agent_tree(bench: Bench, handle: RuntimeHandle) -> list[psutil.Process]:
    """The agent's own processes, without the host-side wrapper's: the runtime's further roots' trees."""
    procs: list[psutil.Process] = []
    for pid in ROOTS[bench.name](handle):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs += _tree(pid)
    return procs


def _count(procs: list[psutil.Process], name: str) -> int:
    """How many of ``procs`` run ``name`` (one that has just exited counts for none)."""
    found = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            found += p.name() == name
    return found


def _all_gone(procs: list[psutil.Process]) -> bool:
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


async def test_pause_and_resume(bench: Bench) -> None:
    local_only(bench, "the test watches the agent's processes on this machine")
    if not bench.runtime.capabilities().pause:
        pytest.skip(f"{bench.name} cannot pause")
    handle = await bench.run("while :; do echo tick; sleep 0.01; done")
    log = handle.log_dir / "stdout.log"
    await until(lambda: log.exists() and log.stat().st_size > 0)
    await bench.runtime.pause(handle)
    status = await bench.runtime.wait_for_state(handle, {ProcessState.STOPPED}, timeout=5)
    assert status.state is ProcessState.STOPPED
    assert handle.pid is not None
    # A child that exited as its parent stopped stays a zombie until the parent runs again; a shell whose
    # vfork child was stopped before exec waits for it uninterruptibly ("disk-sleep"); gVisor's ptrace stubs, whose
    # tracer (the sandbox's kernel) is stopped, wait in a tracing stop: frozen all the same.
    # A container's agent is the container's processes: the host-side wrapper and `podman run` keep running (a
    # stopped `podman run` could hold a lock of podman's storage for as long as the pause).
    procs = _agent_tree(bench, handle) if bench.name in ROOTS else _run_tree(bench, handle)
    states = {p.status() for p in procs}
    frozen = {psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DISK_SLEEP, psutil.STATUS_TRACING_STOP}
    assert states <= frozen, states
    size = log.stat().st_size
    await asyncio.sleep(0.2)  # a window in which a running loop would print ~20 lines
    assert log.stat().st_size == size
    await bench.runtime.resume(handle)
    await bench.runtime.wait_for_state(handle, {ProcessState.RUNNING}, timeout=5)
    await until(lambda: log.stat().st_size > size)


async def test_terminate_kills_the_whole_tree(bench: Bench) -> None:
    local_only(bench, "the test watches the agent's processes on this machine")
    # A background grandchild, a foreground one, and one that left the process group with setsid.
    handle = await bench.run("setsid sleep 101 & sleep 102 & echo up; sleep 103")
    assert handle.pid is not None
    if bench.name in GUEST_KERNEL:  # the sleeps are not host processes: the sandbox's host processes must all end
        await until(lambda: (handle.log_dir / "stdout.log").read_text() == "up\n" and len(_run_tree(bench, handle)) > 2)
    else:
        await until(lambda: _count(_run_tree(bench, handle), "sleep") == 3)
    procs = _run_tree(bench, handle)
    await bench.runtime.terminate(handle, grace=5)
    assert _all_gone(procs)
    status = await bench.runtime.status(handle)
    assert status.state is ProcessState.EXITED and status.exit_code == 128 + signal.SIGTERM


async def test_terminate_escalates_to_sigkill_after_the_grace(bench: Bench) -> None:
    local_only(bench, "the test watches the agent's processes on this machine")
    handle = await bench.run("trap '' TERM; echo ready; sleep 100")
    await until(lambda: (handle.log_dir / "stdout.log").read_text() == "ready\n")
    assert handle.pid is not None
    procs = _run_tree(bench, handle)
    started = time.monotonic()
    await bench.runtime.terminate(handle, grace=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert _all_gone(procs)
    status = await bench.runtime.status(handle)
    assert status.state in DONE
    if status.state is ProcessState.EXITED:
        assert status.exit_code == 128 + signal.SIGKILL


async def test_terminate_a_paused_agent(bench: Bench) -> None:
    local_only(bench, "the test reads the log files without the runtime")
    handle = await bench.run("echo ready; sleep 100")
    await until(lambda: (handle.log_dir / "stdout.log").read_text() == "ready\n")
    await bench.runtime.pause(handle)
    await bench.runtime.wait_for_state(handle, {ProcessState.STOPPED}, timeout=5)
    started = time.monotonic()
    await bench.runtime.terminate(handle, grace=5)
    assert time.monotonic() - started < 2  # TERM took effect, no wait for the grace
    assert (await bench.runtime.status(handle)).state in DONE


async def test_pause_right_after_start(bench: Bench) -> None:
    local_only(bench, "pausing is the back-end's (tests/remote)")
    # Paused within its first milliseconds the wrapper may still be handing over to the agent (vfork before
    # exec): it must still count as paused, and terminate must still end it (by SIGKILL after the grace).
    handle = await bench.run("sleep 100")
    await bench.runtime.pause(handle)
    await bench.runtime.wait_for_state(handle, {ProcessState.STOPPED}, timeout=5)
    await bench.runtime.terminate(handle, grace=0.2)
    assert (await bench.runtime.status(handle)).state in DONE


# A daemon that leaves the agent's session and its process tree (its parent exits, so it is re-parented) and then
# appends to ``counter`` in the workspace: what a pause or a kill must still reach.
_DAEMON = "setsid sh -c 'sh -c \"while :; do echo x >> counter; sleep 0.01; done\" & exit 0'; echo started; sleep 100"


async def test_pause_freezes_a_daemon_that_left_the_tree(bench: Bench) -> None:
    if not bench.runtime.capabilities().pause_freezes:
        pytest.skip(f"{bench.name} pauses by SIGSTOP to the agent's process tree, which a double-forked daemon leaves")
    handle = await bench.run(_DAEMON)
    counter = handle.workspace / "counter"
    await until(lambda: counter.exists() and counter.stat().st_size > 0)
    await bench.runtime.pause(handle)
    await bench.runtime.wait_for_state(handle, {ProcessState.STOPPED}, timeout=5)
    size = counter.stat().st_size
    await asyncio.sleep(0.2)  # a window in which the running daemon would append ~20 lines
    assert counter.stat().st_size == size
    await bench.runtime.resume(handle)
    await until(lambda: counter.stat().st_size > size)
    await bench.runtime.terminate(handle, grace=1)
    size = counter.stat().st_size
    await asyncio.sleep(0.2)  # and after the kill, nothing of it writes any more
    assert counter.stat().st_size == size


async def test_limits_are_enforced_or_refused(bench: Bench) -> None:
    local_only(bench, "its cluster or service enforces the limits; the fake at the HTTP edge only records them")
    hog = "exec python3 -c 'b = b\"x\" * (256 << 20); print(len(b))'"
    if "memory" not in bench.runtime.capabilities().resource_limits:
        # Fail closed: a runtime that cannot enforce a limit refuses the launch; it never runs the agent without it.
        handle = await bench.prepare()
        with pytest.raises(AgentSpawnError, match="memory"):
            await bench.run(hog, handle, limits=ResourceLimits(memory_mb=64))
        assert not (handle.log_dir / "pid").exists()
        return
    handle = await bench.run(hog, limits=ResourceLimits(memory_mb=64))
    await bench.runtime.wait_for_state(handle, DONE, timeout=30)
    status = await bench.runtime.status(handle)
    assert status.exit_code == 128 + signal.SIGKILL
    if bench.runtime.capabilities().accounting:  # and it says why
        assert status.usage is not None and status.usage.memory_limit_hit


async def test_accounting_after_a_run(bench: Bench) -> None:
    if not bench.runtime.capabilities().accounting:
        pytest.skip(f"{bench.name} reads no accounting of an agent's processes back (no cgroups of its own)")
    handle = await bench.run("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    await bench.runtime.wait_for_state(handle, DONE, timeout=30)
    usage = (await bench.runtime.status(handle)).usage
    assert usage is not None and usage.cpu_seconds is not None and usage.cpu_seconds > 0
    assert usage.peak_memory_bytes is not None and usage.peak_memory_bytes > 0


async def test_signals_to_a_finished_agent_are_no_ops(bench: Bench) -> None:
    handle = await bench.run("exit 0")
    await bench.runtime.wait_for_state(handle, DONE, timeout=5)
    await bench.runtime.pause(handle)
    await bench.runtime.resume(handle)
    await bench.runtime.terminate(handle, grace=0.1)
    assert (await bench.runtime.status(handle)).exit_code == 0


async def test_a_restarted_server_adopts_a_running_agent(bench: Bench) -> None:
    handle = await bench.run("sleep 100")
    fresh = bench.fresh_runtime()
    assert await fresh.adopt(handle)
    assert (await fresh.status(handle)).state is ProcessState.RUNNING
    await fresh.terminate(handle, grace=5)
    assert (await fresh.status(handle)).state in DONE


async def test_adopt_refuses_a_reused_pid(bench: Bench) -> None:
    handle = await bench.run("sleep 100")
    assert handle.pid_started is not None
    impostor = RuntimeHandle(**{**handle.__dict__, "pid_started": handle.pid_started - 1000})
    fresh = bench.fresh_runtime()
    assert not await fresh.adopt(impostor)
    assert (await fresh.status(impostor)).state is ProcessState.GONE
    await fresh.terminate(impostor, grace=0)  # must not touch the process it does not own
    assert (await bench.runtime.status(handle)).state is ProcessState.RUNNING


async def test_a_run_that_ended_while_no_server_watched_is_adopted_as_exited(bench: Bench) -> None:
    local_only(bench, "the test waits on the local wrapper's exit file")
    handle = await bench.run("echo finished; exit 4")
    await until(lambda: (handle.log_dir / "exit").exists())  # the old server never looked
    fresh = bench.fresh_runtime()
    assert await fresh.adopt(handle)
    status = await fresh.status(handle)
    assert (status.state, status.exit_code) == (ProcessState.EXITED, 4)
    lines, _ = await fresh.read_output(handle, {}, final=True)
    assert [x.text for x in lines] == ["finished"]


async def test_adopt_of_a_never_started_or_vanished_agent_is_false(bench: Bench) -> None:
    handle = await bench.prepare()
    fresh = bench.fresh_runtime()
    assert not await fresh.adopt(handle)
    assert (await fresh.status(handle)).state is ProcessState.GONE


def _unrecorded(handle: RuntimeHandle, run: str) -> RuntimeHandle:
    """The handle a restarted server has when it died after launching ``run`` and before recording its pid."""
    return RuntimeHandle(**{**handle.__dict__, "pid": None, "pid_started": None, "extra": {RUN_KEY: run}})


async def test_adopt_finds_an_unrecorded_launch_by_its_id(bench: Bench) -> None:
    local_only(bench, "the test waits on the local wrapper's pid file")
    handle = await bench.prepare()
    handle.extra[RUN_KEY] = "launch-1"
    handle = await bench.run("sleep 100", handle)
    await until(lambda: (handle.log_dir / "pid").exists())  # the wrapper records itself first thing
    found = _unrecorded(handle, "launch-1")
    assert await bench.fresh_runtime().adopt(found)
    assert (found.pid, found.pid_started) == (handle.pid, pytest.approx(handle.pid_started, abs=0.05))


async def test_adopt_finds_a_launch_whose_pid_file_is_not_written_yet(bench: Bench) -> None:
    local_only(bench, "the test waits on the local wrapper's pid file")
    handle = await bench.prepare()
    handle.extra[RUN_KEY] = "launch-2"
    handle = await bench.run("sleep 100", handle)
    await until(lambda: (handle.log_dir / "pid").exists())
    (handle.log_dir / "pid").unlink()  # as if the server died between the fork and the wrapper's first line
    found = _unrecorded(handle, "launch-2")
    assert await bench.fresh_runtime().adopt(found)
    assert found.pid == handle.pid


async def test_adopt_ignores_an_earlier_launchs_files(bench: Bench) -> None:
    local_only(bench, "the test waits on the local wrapper's exit file")
    handle = await bench.prepare()
    handle.extra[RUN_KEY] = "attempt-1"
    handle = await bench.run("exit 3", handle)
    await until(lambda: (handle.log_dir / "exit").exists())
    # The next attempt's session was committed, then the server died before starting it: the exit status and
    # pid file on disk are the first attempt's and must not be taken for the second's.
    assert not await bench.fresh_runtime().adopt(_unrecorded(handle, "attempt-2"))


async def test_a_pid_without_its_start_time_is_never_acted_on(bench: Bench) -> None:
    other = await bench.run("sleep 100")  # another agent, a child of this very runtime
    stale = RuntimeHandle(**{**other.__dict__, "agent_id": "someone-else", "pid_started": None})
    assert (await bench.runtime.status(stale)).state is ProcessState.GONE  # not taken for the other's process
    await bench.runtime.terminate(stale, grace=0)
    assert (await bench.runtime.status(other)).state is ProcessState.RUNNING  # and not killed through it


async def test_a_look_alike_of_the_wrapper_is_not_adopted(bench: Bench) -> None:
    local_only(bench, "there is no local wrapper to imitate")
    handle = await bench.prepare()
    handle.extra[RUN_KEY] = "launch-3"
    exit_path, pid_path = handle.log_dir / "exit", handle.log_dir / "pid"
    handle.log_dir.mkdir(parents=True, exist_ok=True)
    # What an agent could start to be adopted in a launch's place: the same arguments, but not leading a session.
    fake = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", WRAPPER, "godel-run", str(exit_path), str(pid_path), "launch-3", "-", "sleep", "100"
    )
    try:
        await until(lambda: pid_path.exists())
        pid_path.unlink()
        assert not await bench.fresh_runtime().adopt(_unrecorded(handle, "launch-3"))
    finally:
        fake.kill()
        await fake.wait()


_SERVER = """
import asyncio, json, sys
from pathlib import Path
from godel.core.ports import LaunchSpec, RuntimeHandle
from godel.runtimes import get_runtime

async def main():
    data = json.loads(sys.argv[1])
    for key in ("workspace", "repo", "log_dir"):
        data[key] = Path(data[key])
    handle = RuntimeHandle(**data)
    rt = get_runtime(sys.argv[4], worktrees_root=Path(sys.argv[2]), logs_root=Path(sys.argv[3]))
    script = "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.01; done"
    handle = await rt.start(handle, LaunchSpec(["/bin/sh", "-c", script]))
    print(json.dumps({"pid": handle.pid, "pid_started": handle.pid_started}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_agent_survives_kill_9_of_the_server_and_is_adopted(bench: Bench) -> None:
    local_only(bench, "the server subprocess builds the runtime without the fake's address")
    handle = await bench.prepare()
    data = {k: str(v) if isinstance(v, Path) else v for k, v in handle.__dict__.items()}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVER,
        json.dumps(data),
        str(bench.base / "worktrees"),
        str(bench.base / "logs"),
        bench.name,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        started = json.loads(await asyncio.wait_for(server.stdout.readline(), 30))
    finally:
        server.kill()  # SIGKILL: no cleanup, no goodbye
        await server.wait()
    adopted = RuntimeHandle(**{**handle.__dict__, **started})
    bench.handles.append(adopted)
    assert await bench.runtime.adopt(adopted)
    assert (await bench.runtime.status(adopted)).state is ProcessState.RUNNING
    log = adopted.log_dir / "stdout.log"
    size = log.stat().st_size
    await until(lambda: log.stat().st_size > size + 100)  # still writing: no SIGPIPE, no lost output
    await bench.runtime.terminate(adopted, grace=5)
    assert (await bench.runtime.status(adopted)).state in DONE
    lines, _ = await bench.runtime.read_output(adopted, {})
    assert lines[0].text == "line 1"


# ----------------------------------------------------------------------------------------- snapshots


def _status(ws: Path) -> list[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ws,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.splitlines())


async def _dirty_workspace(bench: Bench) -> RuntimeHandle:
    """A workspace with a staged, a modified, an untracked, a deleted and an ignored file."""
    handle = await bench.prepare()
    ws = handle.workspace
    (ws / "staged.txt").write_text("staged\n")
    g(ws, "add", "staged.txt")
    (ws / "README.md").write_text("hello, modified\n")
    (ws / "notes").mkdir()
    (ws / "notes" / "new.txt").write_text("untracked\n")
    (ws / "src" / "app.py").unlink()
    (ws / "build").mkdir()
    (ws / "build" / "out.o").write_text("ignored\n")
    return handle


async def test_snapshot_changes_neither_head_nor_index_nor_files(bench: Bench) -> None:
    handle = await _dirty_workspace(bench)
    ws = handle.workspace
    head, staged, status = g(ws, "rev-parse", "HEAD"), g(ws, "diff", "--cached", "--name-only"), _status(ws)
    info = await bench.runtime.snapshot(handle, "s1")
    assert (g(ws, "rev-parse", "HEAD"), g(ws, "diff", "--cached", "--name-only"), _status(ws)) == (
        head,
        staged,
        status,
    )
    assert g(ws, "rev-parse", "--abbrev-ref", "HEAD") == handle.branch
    assert info.id == "s1" and info.ref == "refs/godel/snapshots/s1"
    assert info.parent_commit == head
    assert g(bench.repo, "rev-parse", info.ref) == info.commit
    files = set(g(bench.repo, "ls-tree", "-r", "--name-only", info.commit).splitlines())
    assert {"README.md", "staged.txt", "notes/new.txt"} <= files
    assert "src/app.py" not in files and "build/out.o" not in files  # deleted and ignored
    with pytest.raises(ConflictError):
        await bench.runtime.snapshot(handle, "s1")
    with pytest.raises(ValidationError):
        await bench.runtime.snapshot(handle, "../escape")


async def test_snapshot_restore_round_trip(bench: Bench) -> None:
    handle = await _dirty_workspace(bench)
    ws = handle.workspace
    head = g(ws, "rev-parse", "HEAD")
    await bench.runtime.snapshot(handle, "s1")
    # Wander off: commit, re-create the deleted file, delete the untracked one, add another.
    (ws / "README.md").write_text("something else\n")
    (ws / "src" / "app.py").write_text("print('v3')\n")
    (ws / "notes" / "new.txt").unlink()
    (ws / "later.txt").write_text("added after the snapshot\n")
    g(ws, "add", "-A")
    g(ws, "commit", "-q", "-m", "after the snapshot")
    (ws / "more.txt").write_text("untracked, after\n")

    await bench.runtime.restore(handle, "s1")
    assert g(ws, "rev-parse", "HEAD") == head
    assert (ws / "README.md").read_text() == "hello, modified\n"
    assert (ws / "notes" / "new.txt").read_text() == "untracked\n"
    assert (ws / "staged.txt").read_text() == "staged\n"
    assert not (ws / "src" / "app.py").exists()
    assert not (ws / "later.txt").exists() and not (ws / "more.txt").exists()
    assert (ws / "build" / "out.o").exists()  # ignored files are left alone
    assert g(ws, "diff", "--cached", "--name-only") == ""  # restored changes are uncommitted, unstaged
    assert _status(ws) == [" D src/app.py", " M README.md", "?? notes/new.txt", "?? staged.txt"]


async def test_list_and_delete_snapshots(bench: Bench) -> None:
    handle = await _dirty_workspace(bench)
    other = await bench.prepare()
    first = await bench.runtime.snapshot(handle, "a-first")
    second = await bench.runtime.snapshot(handle, "b-second")
    await bench.runtime.snapshot(other, "c-other")
    listed = await bench.runtime.list_snapshots(handle)
    assert [s.id for s in listed] == ["a-first", "b-second"]  # only this agent's
    assert listed[0] == first and listed[1] == second
    with pytest.raises(SnapshotNotFoundError):
        await bench.runtime.restore(handle, "c-other")  # another agent's snapshot is not ours to restore
    with pytest.raises(SnapshotNotFoundError):
        await bench.runtime.restore(handle, "nope")
    await bench.runtime.delete_snapshot(handle, "a-first")
    assert [s.id for s in await bench.runtime.list_snapshots(handle)] == ["b-second"]
    assert g(bench.repo, "for-each-ref", "refs/godel/snapshots/a-first") == ""
    with pytest.raises(SnapshotNotFoundError):
        await bench.runtime.delete_snapshot(handle, "a-first")


async def test_fork_starts_from_the_snapshot_as_uncommitted_changes(bench: Bench) -> None:
    source = await _dirty_workspace(bench)
    info = await bench.runtime.snapshot(source, "fork-me")
    fork = await bench.prepare(from_snapshot="fork-me")
    ws = fork.workspace
    assert fork.base_commit == info.parent_commit == g(ws, "rev-parse", "HEAD")
    assert g(ws, "rev-parse", "--abbrev-ref", "HEAD") == fork.branch != source.branch
    assert (ws / "README.md").read_text() == "hello, modified\n"
    assert (ws / "notes" / "new.txt").read_text() == "untracked\n"
    assert not (ws / "src" / "app.py").exists()
    assert g(ws, "diff", "--cached", "--name-only") == ""
    assert _status(ws) == [" D src/app.py", " M README.md", "?? notes/new.txt", "?? staged.txt"]
    with pytest.raises(SnapshotNotFoundError):
        await bench.prepare(from_snapshot="no-such-snapshot")


async def test_diff_and_commits(bench: Bench) -> None:
    handle = await bench.prepare()
    ws = handle.workspace
    (ws / "committed.txt").write_text("committed\n")
    g(ws, "add", "committed.txt")
    g(ws, "commit", "-q", "-m", "agent work")
    (ws / "README.md").write_text("hello, modified\n")
    (ws / "untracked.txt").write_text("brand new\n")
    diff = await bench.runtime.diff(handle)
    for name in ("committed.txt", "README.md", "untracked.txt"):
        assert f"b/{name}" in diff
    assert "+brand new" in diff
    assert await bench.runtime.commits(handle) == [g(ws, "rev-parse", "HEAD")]
    await bench.runtime.cleanup(handle)
    after = await bench.runtime.diff(handle)  # the workspace is gone: the branch is what is left
    assert "b/committed.txt" in after and "untracked.txt" not in after


# ----------------------------------------------------------------------------------------- cleanup


async def test_cleanup_of_a_dirty_workspace_keeps_a_final_snapshot_and_the_branch(bench: Bench) -> None:
    handle = await _dirty_workspace(bench)
    g(bench.repo, "update-ref", f"refs/godel/snapshots/final-{handle.agent_id}", "HEAD")  # name taken
    await bench.runtime.cleanup(handle)
    assert not handle.workspace.exists()
    assert not worktree_listed(bench.repo, handle.workspace)
    assert branch_exists(bench.repo, handle.branch)
    final = f"final-{handle.agent_id}-2"
    assert handle.extra["final_snapshot"] == final
    assert final in [s.id for s in await bench.runtime.list_snapshots(handle)]
    assert g(bench.repo, "show", f"refs/godel/snapshots/{final}:README.md") == "hello, modified"


async def test_cleanup_of_a_clean_workspace_takes_no_snapshot(bench: Bench) -> None:
    handle = await bench.prepare()
    await bench.runtime.cleanup(handle)
    assert not handle.workspace.exists()
    assert branch_exists(bench.repo, handle.branch)
    assert await bench.runtime.list_snapshots(handle) == []
    await bench.runtime.cleanup(handle)  # twice is fine


async def test_cleanup_stops_a_running_agent_first(bench: Bench) -> None:
    handle = await bench.run("sleep 100")
    await bench.runtime.cleanup(handle)
    assert (await bench.runtime.status(handle)).state in DONE
    assert not handle.workspace.exists()


# -------------------------------------------------------------------------------------------- files


async def test_file_read_and_write(bench: Bench) -> None:
    handle = await bench.prepare()
    await bench.runtime.write_file(handle, "deep/dir/new.bin", b"\x00\x01data")
    assert (handle.workspace / "deep" / "dir" / "new.bin").read_bytes() == b"\x00\x01data"
    assert await bench.runtime.read_file(handle, "deep/dir/new.bin") == b"\x00\x01data"
    assert await bench.runtime.read_file(handle, "README.md") == b"hello\n"
    with pytest.raises(NotFoundError):
        await bench.runtime.read_file(handle, "missing.txt")
    with pytest.raises(ValidationError):
        await bench.runtime.read_file(handle, "src")


async def test_file_operations_are_confined_to_the_workspace(bench: Bench) -> None:
    handle = await bench.prepare()
    ws = handle.workspace
    outside = bench.base / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret\n")
    (ws / "etc-link").symlink_to("/etc/hostname")
    (ws / "out").symlink_to(outside, target_is_directory=True)
    for path in ("../outside/secret", "/etc/hostname", "etc-link", "out/secret"):
        with pytest.raises(PathOutsideWorkspaceError):
            await bench.runtime.read_file(handle, path)
    for path in ("../escape.txt", "/tmp/escape.txt", "out/escape.txt"):
        with pytest.raises(PathOutsideWorkspaceError):
            await bench.runtime.write_file(handle, path, b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    with pytest.raises(PathOutsideWorkspaceError):
        await bench.runtime.download_dir(handle, "out", bench.base / "dl")
    local = bench.base / "up"
    (local / "out").mkdir(parents=True)
    (local / "out" / "planted.txt").write_text("x\n")
    with pytest.raises(PathOutsideWorkspaceError):
        await bench.runtime.upload_dir(handle, local, ".")  # would write through the workspace's "out" link
    assert not (outside / "planted.txt").exists()


async def test_upload_and_download_directories(bench: Bench) -> None:
    handle = await bench.prepare()
    local = bench.base / "up"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("a\n")
    (local / "sub" / "b.txt").write_text("b\n")
    (local / "link").symlink_to("a.txt")
    await bench.runtime.upload_dir(handle, local, "uploaded")
    ws = handle.workspace
    assert (ws / "uploaded" / "a.txt").read_text() == "a\n"
    assert (ws / "uploaded" / "sub" / "b.txt").read_text() == "b\n"
    assert os.readlink(ws / "uploaded" / "link") == "a.txt"
    (ws / "uploaded" / "etc").symlink_to("/etc", target_is_directory=True)
    down = bench.base / "down"
    await bench.runtime.download_dir(handle, "uploaded", down)
    assert (down / "sub" / "b.txt").read_text() == "b\n"
    assert os.readlink(down / "etc") == "/etc"  # copied as a link, never followed
    with pytest.raises(NotFoundError):
        await bench.runtime.download_dir(handle, "missing", down)


# --------------------------------------------------------------------------------------------- exec


async def test_exec_runs_in_the_workspace(bench: Bench) -> None:
    handle = await bench.prepare()
    result = await bench.runtime.exec(handle, ["sh", "-c", "pwd; echo err >&2; exit 2"])
    assert result.exit_code == 2
    assert real(result.stdout.strip()) == real(handle.workspace)
    assert result.stderr == "err\n"
    missing = await bench.runtime.exec(handle, ["no-such-program-godel"])
    assert missing.exit_code == 127
    with pytest.raises(ValidationError):
        async for _ in bench.runtime.exec_stream(handle, ["no-such-program-godel"]):
            pass


async def test_exec_timeout_kills_the_command(bench: Bench) -> None:
    handle = await bench.prepare()
    marker = f"timed-out-{new_id()}"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await bench.runtime.exec(handle, ["sh", "-c", "touch started; sleep 100", marker], timeout=1.0)
    assert time.monotonic() - started < 5
    assert (handle.workspace / "started").exists()
    await until(lambda: not _alive_with(marker))


async def test_exec_stream_yields_lines_as_they_come(bench: Bench) -> None:
    handle = await bench.prepare()
    script = "echo one; echo two >&2; while [ ! -e go ]; do sleep 0.01; done; printf 'three'"
    stream = bench.runtime.exec_stream(handle, ["sh", "-c", script])
    got = []
    async for line in stream:
        got.append((line.stream, line.text))
        if len(got) == 2:
            (handle.workspace / "go").touch()  # only possible if the first lines arrived before the end
    assert sorted(got[:2]) == [("stderr", "two"), ("stdout", "one")]
    assert got[2:] == [("stdout", "three")]


async def test_closing_exec_stream_early_kills_the_command(bench: Bench) -> None:
    handle = await bench.prepare()
    marker = f"streamed-{new_id()}"
    stream = bench.runtime.exec_stream(handle, ["sh", "-c", "while :; do echo x; sleep 0.01; done", marker])
    async for _ in stream:
        break
    await stream.aclose()
    await until(lambda: not _alive_with(marker))
