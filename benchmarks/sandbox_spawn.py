"""sandbox-spawn: POST /api/v1/agents → ``executing`` for a no-op command agent in the ``sandbox`` runtime, beside the
same bubblewrap command and the same kind of workspace made by hand.

Godel: as ``benchmarks/spawn.py`` (an in-process ``ControlPlane`` behind ``create_app`` and ``httpx.ASGITransport``,
SQLite on tmpfs, a 1,000-file repository), with ``runtime = "sandbox"``; the figure is from just before the POST to
the ``at`` of the transition into ``executing`` (committed once the wrapper's ``Popen`` returned).

Baseline, interleaved sample by sample (order alternating), what a person would type to get the same thing:

* the workspace Godel makes, by hand (``godel.runtimes.workspaces``): the branch created in the user's repository
  (``git update-ref``), an overlayfs mount (``mount(2)``) over a checkout of the commit made once beforehand (Godel
  keeps such a cached checkout too; its first workspace, which makes it, is in the warm-up), a private git directory
  written file by file (``HEAD``, the branch, ``config``, alternates naming the repository's objects, the index of
  the checkout), the workspace's ``.git`` file, the agent's private directory and home;
* then fork/exec of **the runtime's own bubblewrap argv**: the argv Godel's wrapper ran for a warm-up agent, recorded
  at ``godel.runtimes.processes._popen`` (bwrap with every bind, the entry shell with its gateway relay, the agent's
  command), its paths moved to the baseline's own workspace; timed until ``Popen`` returns, in its own session.

What Godel does on top and the baseline does not: the API (validation, auth), the store's transactions, the
admission, its cgroups (memory, cpu, pids, freezer, made per agent), the wrapper shell, the ``.worktreeinclude``
and identity look-ups.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Config,
    Figure,
    Parts,
    git,
    git_env,
    interleaved,
    make_repo,
    ms_since,
    sandbox_missing,
    workdir,
)
from benchmarks.rigs import in_process_api
from benchmarks.spawn import PARTS, spawn_once
from godel.runtimes import processes
from godel.runtimes.processes import agent_env
from godel.runtimes.workspaces import overlay

NAME = "sandbox-spawn"
TARGET = 1.3
_BINDS = ("--bind", "--ro-bind")


def run(cfg: Config) -> list[Figure]:
    if sandbox_missing(cfg, NAME):
        return []
    with workdir(cfg, NAME) as root:
        return asyncio.run(_run(cfg, root))


class Recorder:
    """Keeps the launch of the last agent Godel's processes started (its argv is the sandbox's whole command)."""

    def __init__(self) -> None:
        self.launch: dict[str, Any] | None = None
        self._original = processes._popen

    def __enter__(self) -> Recorder:
        def recording(handle: Any, launch: Any, cgroup: Any) -> subprocess.Popen[bytes]:
            self.launch = {"agent": handle.agent_id, "argv": list(launch.argv), "env": dict(launch.env)}
            return self._original(handle, launch, cgroup)

        processes._popen = recording
        return self

    def __exit__(self, *exc: object) -> None:
        processes._popen = self._original


class ByHand:
    """The baseline: Godel's kind of workspace made by hand, then the recorded bwrap argv started."""

    def __init__(self, root: Path, repo: Path, base: str, home: Path, launch: dict[str, Any]) -> None:
        self.root, self.repo, self.base, self.home, self.launch = root, repo, base, home, launch
        self.lower = root / "lower"
        self.git_common = repo / ".git"
        # Made once, as Godel's cached checkout is: the tree of the commit and its index.
        (self.lower / "tree").mkdir(parents=True)
        subprocess.run(
            ["git", f"--work-tree={self.lower / 'tree'}", "read-tree", "-u", "--reset", base],
            cwd=repo, check=True, env={**git_env(), "GIT_INDEX_FILE": str(self.lower / "index")},
        )  # fmt: skip
        # What every sandbox of the runtime shares (the generated /etc, the gateway's folder) exists once.
        shared = [a for a in launch["argv"] if launch["agent"] not in a]
        for path in self._bind_sources(self._moved(shared, "")):
            if not path.exists():
                src = Path(str(path).replace(str(root), str(home), 1))
                if src.is_dir():
                    shutil.copytree(src, path)
                else:
                    path.mkdir(parents=True)

    def _moved(self, items: list[str], agent: str) -> list[str]:
        return [s.replace(str(self.home), str(self.root)).replace(self.launch["agent"], agent) for s in items]

    @staticmethod
    def _bind_sources(argv: list[str]) -> list[Path]:
        return [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg in _BINDS]

    def once(self, *, worktree: bool = False) -> float:
        """One sample; ``worktree``: the workspace as a person makes one without Godel (``git worktree add``), the
        private directories the argv binds made empty."""
        agent = str(uuid.uuid4())
        branch = f"hand/{agent}"
        ws = self.root / "worktrees" / agent
        state = self.root / "workspaces" / agent
        gitdir = state / "git"
        private = self.root / "run" / agent
        argv = self._moved(self.launch["argv"], agent)
        env = dict(zip(self.launch["env"], self._moved(list(self.launch["env"].values()), agent), strict=True))
        t0 = time.perf_counter()
        if worktree:
            ws.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "worktree", "add", "-q", "-b", branch, str(ws), self.base],
                cwd=self.repo, check=True, capture_output=True, env=git_env(),
            )  # fmt: skip
            for sub in ("objects/pack", "objects/info", "refs/heads/hand", "refs/tags", "info", "hooks", "logs"):
                (gitdir / sub).mkdir(parents=True)
            for name in ("config", "commondir"):  # bound read-only by the argv: they must exist
                (gitdir / name).touch()
        else:
            subprocess.run(
                ["git", "update-ref", f"refs/heads/{branch}", self.base, "0" * 40],
                cwd=self.repo, check=True, capture_output=True, env=git_env(),
            )  # fmt: skip
            for path in (state / "upper", state / "work", ws):
                path.mkdir(parents=True)
            overlay.mount(self.lower / "tree", state / "upper", state / "work", ws)
            for sub in ("objects/pack", "objects/info", "refs/heads/hand", "refs/tags", "info", "hooks", "logs"):
                (gitdir / sub).mkdir(parents=True)
            (gitdir / "objects/info/alternates").write_text(f"{self.git_common / 'objects'}\n")
            (gitdir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n")
            (gitdir / "commondir").write_text(".\n")
            (gitdir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
            (gitdir / "refs/heads" / branch).write_text(f"{self.base}\n")
            shutil.copyfile(self.lower / "index", gitdir / "index")
            (ws / ".git").write_text(f"gitdir: {gitdir}\n")
        (private / "home").mkdir(parents=True)
        (private / "home" / ".gitconfig").write_text("[user]\n\tname = Bench\n\temail = bench@godel.invalid\n")
        proc = subprocess.Popen(
            argv, cwd=ws, env=agent_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        )  # fmt: skip
        ms = ms_since(t0)
        code = proc.wait()
        missing = [str(p) for p in self._bind_sources(argv) if not p.exists()]
        if code != 0 or missing:
            raise RuntimeError(f"the by-hand sandbox exited {code}; bind sources missing: {missing}")
        if worktree:
            git(self.repo, "worktree", "remove", "--force", str(ws))
        else:
            overlay.unmount(ws)
            shutil.rmtree(ws)
        for path in (state, private):
            shutil.rmtree(path)
        git(self.repo, "update-ref", "-d", f"refs/heads/{branch}")
        return ms


async def _run(cfg: Config, root: Path) -> list[Figure]:
    repo = root / "repo"
    base = make_repo(repo, files=1000, dirs=50)
    home = root / "home"
    samples, warmup = cfg.pick(60, 6), cfg.pick(4, 1)
    parts = Parts(PARTS, warmup)
    try:
        async with in_process_api(home, max_concurrent_agents=64, runtime="sandbox") as (plane, client):
            with Recorder() as recorder:
                await spawn_once(plane, client, repo)
            if recorder.launch is None or "bwrap" not in recorder.launch["argv"]:
                raise RuntimeError(f"the agent did not run in bubblewrap: {recorder.launch}")
            by_hand = ByHand(root / "hand", repo, base, home, recorder.launch)

            async def godel() -> float:
                total, breakdown = await spawn_once(plane, client, repo)
                parts.add(breakdown)
                return total

            async def hand() -> float:
                return await asyncio.to_thread(by_hand.once)

            async def worktree() -> float:
                return await asyncio.to_thread(by_hand.once, worktree=True)

            series = {"godel": godel, "hand": hand, "worktree": worktree}
            times = await interleaved(cfg, NAME, series, samples=samples, warmup=warmup)
    finally:
        overlay.unmount_under(root / "hand")
    fig = Figure(
        bench=NAME,
        name="POST → executing, sandbox runtime (1,000-file repo, in-process API)",
        unit="ms",
        godel=times["godel"],
        baseline=times["hand"],
        baseline_label="the workspace made by hand (update-ref, overlay mount, private git dir) + the runtime's "
        "bwrap argv, fork/exec (setsid)",
        target=f"≤ {TARGET:g}x baseline at p95",
        extra={"bwrapArgv": recorder.launch["argv"]},
    )
    fig.judge_ratio(TARGET)
    fig.notes.append("the baseline's bwrap argv is the one Godel's wrapper ran (recorded), paths moved")
    plain = Figure(
        bench=NAME,
        name="POST → executing, sandbox runtime, beside the usual way by hand",
        unit="ms",
        godel=times["godel"],
        baseline=times["worktree"],
        baseline_label="git worktree add -b + the runtime's bwrap argv, fork/exec (setsid)",
        target=f"≤ {TARGET:g}x baseline at p95",
    )
    plain.judge_ratio(TARGET)
    labels = {
        "post": "↳ POST → 201 (validate, insert + admit)",
        "queued": "↳ spawnedAt → admitted (in the creating transaction)",
        "worktree": "↳ admitted → workspace ready (initializing→spawning)",
        "launch": "↳ workspace ready → executing (cgroups, sandbox dirs, fork/exec, record)",
        "toCompleted": "↳ executing → completed (exit seen, diff, cleanup)",
    }
    return [fig, plain, *parts.figures(NAME, labels)]
