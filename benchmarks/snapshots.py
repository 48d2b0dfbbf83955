"""snapshots: taking and restoring a snapshot of a 1,000-file workspace, in the sandbox and local runtimes, beside a raw
``tar`` of the same files.

A 1,000-file repository on tmpfs; one workspace per runtime (``prepare``: an overlay of the cached checkout, a private
git directory). Each round, in each workspace: the agent's work is imitated (20 tracked files rewritten with new
content, one deleted, 5 untracked files added), then ``Runtime.snapshot`` is timed (the branch brought back, the
whole working tree hashed into the repository's store through Godel's stat cache, a commit, a ref); then more work
(20 other files rewritten, 5 other files added, one deleted) and ``Runtime.restore`` of that snapshot is timed (the
branch reset, the files added since removed, the snapshot's tree laid back). After the restore the workspace is
checked against the snapshot (the files written before it are back, those written after are gone).

Raw baseline, on a plain copy of the same 1,000 files (a directory on the same tmpfs) with the same edits:
``tar -cf`` of the whole tree (snapshot), and removal of the tree's contents + ``tar -xf`` (restore). The series
alternate round by round. The sandbox and local runtimes share this code (the sandbox confines the agent's processes,
not Godel's snapshot); both are measured since each has its own workspace.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.common import Config, Figure, git_env, interleaved, make_repo, ms_since, time_run, versus, workdir
from godel.core.ports import RuntimeHandle, WorkspaceSpec
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime, missing_tools

NAME = "snapshots"
TARGET_MS = 1000.0


def _edit(tree: Path, round_: int, phase: str) -> list[Path]:
    """Imitate an agent's work: rewrite 20 tracked files, delete one, add 5; returns the files written."""
    offset = 0 if phase == "before" else 500
    written = []
    for k in range(20):
        i = (round_ * 20 + k) % 500 + offset
        path = tree / f"pkg{i % 50:03d}" / f"mod{i:05d}.py"
        path.write_text(f"# {phase} round {round_}\nVALUE = {round_ * 1000 + k}\n")
        written.append(path)
    j = (round_ * 20 + 20) % 500 + offset  # one the 20 above do not include
    gone = tree / f"pkg{j % 50:03d}" / f"mod{j:05d}.py"
    gone.unlink(missing_ok=True)
    for k in range(5):
        path = tree / "notes" / f"{phase}-{round_}-{k}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{phase} {round_} {k}\n")
        written.append(path)
    return written


def run(cfg: Config) -> list[Figure]:
    if missing_tools():
        cfg.log(f"{NAME}: skipped, {', '.join(missing_tools())} not installed (apt-get install bubblewrap socat)")
        return []
    with workdir(cfg, NAME) as root:
        make_repo(root / "repo", files=1000, dirs=50)
        plain = root / "plain" / "tree"
        plain.mkdir(parents=True)
        subprocess.run(["git", f"--work-tree={plain}", "checkout", "-f", "main", "--", "."], cwd=root / "repo",
                       check=True, env={**git_env(), "GIT_INDEX_FILE": str(root / "plain" / "index")})  # fmt: skip
        return asyncio.run(_run(cfg, root))


async def _run(cfg: Config, root: Path) -> list[Figure]:
    repo = root / "repo"
    runtimes: dict[str, LocalRuntime] = {
        "local": LocalRuntime(root / "local" / "worktrees", root / "local" / "logs"),
        "sandbox": SandboxRuntime(root / "sandbox" / "worktrees", root / "sandbox" / "logs"),
    }
    handles = {
        name: await rt.prepare(WorkspaceSpec(agent_id=f"bench-{cfg.run_id}-{name}", repo=repo))
        for name, rt in runtimes.items()
    }
    plain = root / "plain" / "tree"
    tarball = root / "plain" / "snap.tar"
    rounds = {name: 0 for name in (*runtimes, "tar")}
    times: dict[str, list[float]] = {}

    def godel(name: str) -> Callable[[], Awaitable[float]]:
        async def once() -> float:
            rt, handle = runtimes[name], handles[name]
            i = rounds[name] = rounds[name] + 1
            kept = _edit(handle.workspace, i, "before")
            snap = await _timed(rt.snapshot(handle, f"{name}-{i}"))
            extra = _edit(handle.workspace, i, "after")
            back = await _timed(rt.restore(handle, f"{name}-{i}"))
            _check(handle, kept, extra)
            times.setdefault(f"{name} restore", []).append(back)
            return snap

        return once

    async def tar() -> float:
        i = rounds["tar"] = rounds["tar"] + 1
        _edit(plain, i, "before")
        snap = time_run(["tar", "-cf", str(tarball), "-C", str(plain), "."])
        _edit(plain, i, "after")
        back = time_run(["sh", "-c", 'find "$1" -mindepth 1 -delete && tar -xf "$2" -C "$1"', "-", str(plain),
                         str(tarball)])  # fmt: skip
        times.setdefault("tar restore", []).append(back)
        return snap

    samples, warmup = cfg.pick(40, 5), cfg.pick(3, 1)
    series = {"local": godel("local"), "sandbox": godel("sandbox"), "tar": tar}
    snaps = await interleaved(cfg, NAME, series, samples=samples, warmup=warmup)
    for key in ("local restore", "sandbox restore", "tar restore"):
        times[key] = times[key][warmup:]
    times.update(snaps)
    figures = versus(
        NAME, times,
        [
            ("snapshot of a 1,000-file workspace, sandbox (30 files changed)", "sandbox", "tar",
             "tar -cf of the same 1,000 files"),
            ("restore of that snapshot, sandbox (30 files changed since)", "sandbox restore", "tar restore",
             "rm of the tree + tar -xf"),
            ("snapshot of a 1,000-file workspace, local", "local", "tar", "tar -cf of the same 1,000 files"),
            ("restore of that snapshot, local", "local restore", "tar restore", "rm of the tree + tar -xf"),
        ],
        note="workspace on tmpfs (overlay over the cached checkout); repository on tmpfs",
    )  # fmt: skip
    for fig in figures:
        fig.target = f"< {TARGET_MS:g} ms (p95)"
        fig.met = fig.godel_stats.p95 < TARGET_MS
    for name, rt in runtimes.items():
        await rt.cleanup(handles[name])
    shutil.rmtree(root / "plain", ignore_errors=True)
    return figures


async def _timed(step: Awaitable[object]) -> float:
    t0 = time.perf_counter()
    await step
    return ms_since(t0)


def _check(handle: RuntimeHandle, kept: list[Path], extra: list[Path]) -> None:
    """The restore must bring back what the snapshot held and drop what came after (untracked files added since)."""
    missing = [str(p) for p in kept if not p.is_file()]
    stale = [str(p) for p in extra if p.is_file() and "notes" in p.parts]
    if missing or stale:
        raise RuntimeError(f"restore of {handle.agent_id} is wrong: missing {missing[:3]}, left over {stale[:3]}")
