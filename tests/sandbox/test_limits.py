"""Resource limits, the freezer and accounting of sandboxed agents, on the machine's real cgroups (issue 12 item 4).

Every test runs real processes in real cgroups under ``/sys/fs/cgroup`` (v1 on this project's machines) and
removes them afterwards, whatever happened: the fixture terminates each agent, then kills and removes any cgroup
still named after one. Only the detection test uses a made-up layout in a temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from godel.core.ids import new_id
from godel.core.limits import ResourceLimits
from godel.core.ports import LaunchSpec, ProcessState, RuntimeHandle, WorkspaceSpec
from godel.errors import AgentSpawnError
from godel.runtimes.cgroup_runs import record_file, usage_file
from godel.runtimes.cgroups import MOUNT, AgentCgroup, Cgroups, Layout, read_record
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime
from tests.conftest import make_repo, remove_tree
from tests.sandbox.conftest import DONE, _scratch, require_sandbox

MiB = 1 << 20


def require_cgroups() -> Cgroups:
    """The machine's cgroups with every controller the limits need, or a skip (a failure under CI) saying why."""
    require_sandbox()
    cgroups = Cgroups.detect()
    missing = sorted({"memory", "cpu", "cpuacct", "pids", "freezer"} - set(cgroups.controllers if cgroups else ()))
    if missing:
        why = f"writable cgroups with {', '.join(missing)} are needed (run as root on a machine with cgroups)"
        if os.environ.get("GODEL_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"GODEL_REQUIRE_SANDBOX=1 but {why}")
        pytest.skip(why)
    assert cgroups is not None
    return cgroups


@dataclass
class Limits:
    base: Path
    repo: Path
    cgroups: Cgroups
    runtime: SandboxRuntime
    handles: list[RuntimeHandle] = field(default_factory=list)

    async def start(self, script: str, limits: ResourceLimits | None = None) -> RuntimeHandle:
        handle = await self.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=self.repo))
        self.handles.append(handle)
        handle = await self.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", script], limits=limits))
        self.handles[-1] = handle
        return handle

    def cgroup(self, handle: RuntimeHandle) -> AgentCgroup:
        found = self.cgroups.find(handle.agent_id, read_record(record_file(handle)))
        assert found is not None, "the agent has no cgroup"
        return found

    async def ended(self, handle: RuntimeHandle, within: float = 60) -> tuple[int | None, str]:
        await self.runtime.wait_for_state(handle, DONE, timeout=within)
        lines, _ = await self.runtime.read_output(handle, {}, final=True)
        return (await self.runtime.status(handle)).exit_code, "\n".join(x.text for x in lines)


@pytest.fixture
async def lim() -> AsyncIterator[Limits]:
    cgroups = require_cgroups()
    base = _scratch()
    rig = Limits(base, make_repo(base / "repo"), cgroups, SandboxRuntime(base / "worktrees", base / "logs"))
    try:
        yield rig
    finally:
        for handle in rig.handles:
            await rig.runtime.terminate(handle, grace=0.0)
            left = cgroups.find(handle.agent_id, read_record(record_file(handle)))
            if left is not None:  # whatever the test did, no cgroup and no task of it outlives it
                await left.kill()
                await left.remove()
        remove_tree(base)


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# A daemon that leaves the agent's session and process group (setsid) and its tree (the middle process exits, so
# it is re-parented), then appends to ``counter`` in the workspace forever: what a pause or a kill must still reach.
DAEMON = (
    'setsid sh -c \'sh -c "trap \\"\\" TERM; while :; do echo x >> counter; sleep 0.01; done" & exit 0\'; '
    "echo started; sleep 300"
)


# ------------------------------------------------------------------------------------------------ memory


async def test_a_memory_hog_is_killed_at_its_memory_limit(lim: Limits) -> None:
    hog = 'python3 -c \'b = b"x" * (256 << 20); print("survived", len(b))\''
    limited = await lim.start(hog, ResourceLimits(memory_mb=96))
    code, out = await lim.ended(limited)
    status = await lim.runtime.status(limited)
    assert code == 137 and "survived" not in out, out  # SIGKILL from the kernel's OOM killer
    assert status.usage is not None and status.usage.memory_limit_hit, status
    assert status.usage.peak_memory_bytes is not None and status.usage.peak_memory_bytes <= 96 * MiB
    # The control: the same program without the limit completes, so the kill above was the limit's doing.
    control = await lim.start(hog)
    code, out = await lim.ended(control)
    assert code == 0 and "survived" in out, out
    usage = (await lim.runtime.status(control)).usage
    assert usage is not None and not usage.memory_limit_hit and (usage.peak_memory_bytes or 0) > 256 * MiB


# --------------------------------------------------------------------------------------------------- pids


async def test_a_fork_bomb_is_contained_by_the_pids_limit(lim: Limits) -> None:
    # Hundreds of forks, each a process that stays; a refused fork is counted and the loop goes on (a shell would
    # give up at the first one). The limit lets 32 tasks exist at once.
    bomb = (
        "python3 -c 'import os, time\nrefused = 0\nfor i in range(400):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        refused += 1\n        continue\n    if pid == 0:\n        time.sleep(300)\n"
        '        os._exit(0)\nprint("forked", refused, flush=True)\ntime.sleep(300)\''
    )
    handle = await lim.start(bomb, ResourceLimits(pids=32))
    try:
        await until(lambda: "forked" in (handle.log_dir / "stdout.log").read_text(), within=60)
        cgroup = lim.cgroup(handle)
        assert len(cgroup.pids()) <= 32
        refused = int((handle.log_dir / "stdout.log").read_text().split()[1])
        assert refused >= 400 - 32
        assert cgroup.usage().pids_refused > 0  # the kernel refused forks at the limit
        # The rest of the machine keeps working: another process forks freely meanwhile.
        outside = await asyncio.create_subprocess_exec(
            "sh", "-c", "for i in $(seq 50); do true & done; wait; echo ok", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(outside.communicate(), 30)
        assert outside.returncode == 0 and out.decode().strip() == "ok"
    finally:
        await lim.runtime.terminate(handle, grace=0.0)  # the test's deadline: nothing of the bomb survives it
    assert not lim.cgroups.find(handle.agent_id, read_record(record_file(handle)))


# ---------------------------------------------------------------------------------------------------- cpu


async def test_a_cpu_quota_shows_in_the_accounting(lim: Limits) -> None:
    busy = "python3 -c 'import time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass'"
    started = time.monotonic()
    handle = await lim.start(busy, ResourceLimits(cpus=0.2))
    code, out = await lim.ended(handle)
    wall = time.monotonic() - started
    assert code == 0, out
    usage = (await lim.runtime.status(handle)).usage
    assert usage is not None and usage.cpu_seconds is not None
    # 20 % of a core for the ~2 s the loop spins (the interpreter's start adds a little wall time, at 20 % too).
    assert 0.2 <= usage.cpu_seconds <= 0.2 * wall + 0.15, (usage.cpu_seconds, wall)


# ---------------------------------------------------------------------------------------------- the freezer


async def test_pause_freezes_a_double_forked_setsid_daemon_and_resume_continues_it(lim: Limits) -> None:
    handle = await lim.start(DAEMON)
    counter = handle.workspace / "counter"
    await until(lambda: _size(counter) > 0)
    cgroup = lim.cgroup(handle)
    assert handle.pid is not None
    session = os.getsid(handle.pid)
    escaped = [pid for pid in cgroup.pids() if _other_session(pid, session)]
    assert escaped, "the daemon should have left the agent's session"
    await lim.runtime.pause(handle)
    assert (await lim.runtime.wait_for_state(handle, {ProcessState.STOPPED}, timeout=5)).state is ProcessState.STOPPED
    assert cgroup.is_frozen()
    size = _size(counter)
    await asyncio.sleep(0.3)  # a window in which the running daemon would append ~30 lines
    assert _size(counter) == size
    await lim.runtime.resume(handle)
    await lim.runtime.wait_for_state(handle, {ProcessState.RUNNING}, timeout=5)
    await until(lambda: _size(counter) > size)


def _other_session(pid: int, session: int) -> bool:
    try:
        return os.getsid(pid) != session
    except ProcessLookupError:
        return False


async def test_kill_leaves_no_task_in_the_cgroup(lim: Limits) -> None:
    handle = await lim.start(DAEMON)  # the daemon ignores TERM: only the kill after the grace ends it
    await until(lambda: _size(handle.workspace / "counter") > 0)
    cgroup = lim.cgroup(handle)
    procs = [psutil.Process(pid) for pid in cgroup.pids()]
    assert len(procs) >= 4
    await lim.runtime.terminate(handle, grace=0.3)
    assert not cgroup.pids() and not cgroup.exists()  # emptied, then removed
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)


async def test_a_restarted_server_adopts_the_agent_and_still_pauses_it_by_the_freezer(lim: Limits) -> None:
    handle = await lim.start(DAEMON)
    counter = handle.workspace / "counter"
    await until(lambda: _size(counter) > 0)
    fresh = SandboxRuntime(lim.base / "worktrees", lim.base / "logs")  # knows nothing of the launch
    assert await fresh.adopt(handle)
    await fresh.pause(handle)
    await fresh.wait_for_state(handle, {ProcessState.STOPPED}, timeout=5)
    assert lim.cgroup(handle).is_frozen()
    size = _size(counter)
    await asyncio.sleep(0.3)  # as above: the daemon would append ~30 lines were it not frozen
    assert _size(counter) == size
    await fresh.resume(handle)
    await until(lambda: _size(counter) > size)
    await fresh.terminate(handle, grace=0.2)
    assert (await fresh.status(handle)).state in DONE
    assert lim.cgroups.find(handle.agent_id, read_record(record_file(handle))) is None


async def test_a_server_in_another_cgroup_finds_the_agents_by_their_record(lim: Limits) -> None:
    handle = await lim.start("sleep 300")
    await until(lambda: handle.pid in lim.cgroup(handle).pids())
    # A server restarted from another memory cgroup computes another parent there; the launch's record still
    # leads it to the agent's memory cgroup, and only to one named after the agent.
    elsewhere = Layout(1, MOUNT, {**lim.cgroups.layout.parents, "memory": MOUNT / "memory" / "elsewhere" / "godel"})
    found = Cgroups(elsewhere).find(handle.agent_id, read_record(record_file(handle)))
    assert found is not None and found.dirs["memory"] == lim.cgroup(handle).dirs["memory"]
    assert Cgroups(elsewhere).find(new_id(), read_record(record_file(handle))) is None


# --------------------------------------------------------------------------------------------- accounting


async def test_accounting_is_kept_with_the_run_once_its_cgroup_is_gone(lim: Limits) -> None:
    work = "python3 -c 'b = b\"y\" * (48 << 20)\ns = 0\nfor i in range(2_000_000): s += i\nprint(len(b))'"
    handle = await lim.start(work)
    code, out = await lim.ended(handle)
    assert code == 0, out
    usage = (await lim.runtime.status(handle)).usage
    assert usage is not None and usage.cpu_seconds is not None and usage.cpu_seconds > 0.05
    assert usage.peak_memory_bytes is not None and usage.peak_memory_bytes >= 48 * MiB
    assert usage.oom_kills == 0
    assert usage_file(handle).is_file()
    assert lim.cgroups.find(handle.agent_id, read_record(record_file(handle))) is None  # removed once settled
    fresh = SandboxRuntime(lim.base / "worktrees", lim.base / "logs")  # a restarted server reads it back
    assert await fresh.adopt(handle)
    assert (await fresh.status(handle)).usage == usage


# ------------------------------------------------------------------------------------- refused, not dropped


def _fake_v1(root: Path, controllers: list[str]) -> str:
    """A v1-looking layout under ``root`` with only ``controllers``; returns a matching /proc/self/cgroup."""
    for name in controllers:
        (root / name).mkdir(parents=True)
        (root / name / "cgroup.procs").write_text("")
    names = ["memory", "cpu", "cpuacct", "pids", "freezer"]
    return "".join(f"{i}:{name}:/\n" for i, name in enumerate(names, 1))


def test_detection_reports_only_the_controllers_that_are_there(tmp_path: Path) -> None:
    own = _fake_v1(tmp_path / "v1", ["cpu", "cpuacct", "pids", "freezer"])  # no memory hierarchy
    cgroups = Cgroups.detect(tmp_path / "v1", own)
    assert cgroups is not None and cgroups.version == 1
    assert cgroups.enforces() == ("cpu", "pids")
    assert cgroups.missing(ResourceLimits(memory_mb=64, pids=10)) == ["memory"]
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpuset cpu io pids\n")  # v2, without memory
    v2 = Cgroups.detect(tmp_path / "v2", "0::/\n")
    assert v2 is not None and v2.version == 2 and v2.enforces() == ("cpu", "pids")
    (tmp_path / "none").mkdir()
    assert Cgroups.detect(tmp_path / "none", own) is None


async def test_limits_are_refused_where_they_cannot_be_enforced(tmp_path: Path) -> None:
    require_sandbox()
    own = _fake_v1(tmp_path / "cg", ["cpu", "cpuacct", "pids", "freezer"])
    repo = make_repo(tmp_path / "repo")
    no_memory = SandboxRuntime(tmp_path / "w", tmp_path / "l", cgroups=Cgroups.detect(tmp_path / "cg", own))
    assert no_memory.capabilities().resource_limits == ("cpu", "pids")
    for runtime in (no_memory, LocalRuntime(tmp_path / "w2", tmp_path / "l2")):
        handle = await runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=repo))
        launch = LaunchSpec(["/bin/sh", "-c", "echo ran > ran.txt"], limits=ResourceLimits(memory_mb=64))
        with pytest.raises(AgentSpawnError, match="memory"):
            await runtime.start(handle, launch)
        assert not (handle.log_dir / "pid").exists() and not (handle.workspace / "ran.txt").exists()
        await runtime.discard(handle)


async def test_agents_started_and_ended_at_once_each_get_and_give_back_their_own_cgroups(lim: Limits) -> None:
    # Each cgroup's removal also tries the shared ``godel`` parent, while others are being made under it.
    handles = await asyncio.gather(*(lim.start("echo hi", ResourceLimits(pids=16)) for _ in range(12)))
    for handle in handles:
        code, out = await lim.ended(handle)
        assert (code, out) == (0, "hi")
    assert all(lim.cgroups.find(h.agent_id, read_record(record_file(h))) is None for h in handles)
