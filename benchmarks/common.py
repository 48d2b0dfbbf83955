"""What every benchmark shares: percentiles, the ``Figure`` record, tmpfs work directories that clean up after
themselves (processes included), a repository generator, a description of the machine, and the means to time things
side by side (``interleaved`` rounds, their ``Parts``, no-op agents on several runtimes). Setting up Godel behind its
API is in ``benchmarks/rigs.py``.

Conventions:
- Every directory a benchmark creates lives under ``/dev/shm/godel-bench-*`` (tmpfs) and is removed at the
  end, after every process whose command line or working directory points into it has been killed (by pid).
- Latencies are in milliseconds. Percentiles interpolate linearly between the two nearest ranks.
- For a rate (higher is better) the "p95" column holds the rate 95% of the samples met or beat (the 5th
  percentile), so that p95/p99 always mean "the slow tail".
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

TMPFS = Path("/dev/shm")
PREFIX = "godel-bench-"

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Godel Bench",
    "GIT_AUTHOR_EMAIL": "bench@godel.invalid",
    "GIT_COMMITTER_NAME": "Godel Bench",
    "GIT_COMMITTER_EMAIL": "bench@godel.invalid",
}

# ---------------------------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no samples."""
    if not samples:
        return math.nan
    s = sorted(samples)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float], *, higher_is_better: bool = False) -> Stats:
        if not samples:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        tail = (lambda q: 100.0 - q) if higher_is_better else (lambda q: q)
        return cls(
            n=len(samples),
            p50=percentile(samples, 50),
            p95=percentile(samples, tail(95)),
            p99=percentile(samples, tail(99)),
            mean=sum(samples) / len(samples),
            min=min(samples),
            max=max(samples),
        )

    def at(self, q: str) -> float:
        return float(getattr(self, q))


@dataclass
class Figure:
    """One measured figure beside its baseline (both measured in the same run)."""

    bench: str
    name: str
    unit: str
    godel: list[float]
    baseline: list[float] | None = None
    baseline_label: str = ""
    target: str = ""
    met: bool | None = None  # None: no target for this figure
    higher_is_better: bool = False
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def godel_stats(self) -> Stats:
        return Stats.of(self.godel, higher_is_better=self.higher_is_better)

    @property
    def baseline_stats(self) -> Stats | None:
        if self.baseline is None:
            return None
        return Stats.of(self.baseline, higher_is_better=self.higher_is_better)

    def ratio(self, q: str = "p95") -> float | None:
        """Godel / baseline at the same percentile (for rates too: <1 means Godel is slower there)."""
        base = self.baseline_stats
        if base is None:
            return None
        b = base.at(q)
        return self.godel_stats.at(q) / b if b else math.nan

    def judge_ratio(self, limit: float, q: str = "p95") -> None:
        """Set ``met`` for a target "≤ ``limit``x baseline at ``q``"; no baseline, or a NaN ratio, misses it."""
        ratio = self.ratio(q)
        self.met = ratio is not None and ratio <= limit

    def to_json(self) -> dict[str, Any]:
        def stats(s: Stats | None) -> dict[str, float | None] | None:
            return None if s is None else {k: _round(v) for k, v in s.__dict__.items()}

        return {
            "bench": self.bench,
            "name": self.name,
            "unit": self.unit,
            "higherIsBetter": self.higher_is_better,
            "godel": stats(self.godel_stats),
            "baseline": stats(self.baseline_stats),
            "baselineLabel": self.baseline_label,
            "ratio": {q: _round(self.ratio(q)) for q in ("p50", "p95", "p99")} if self.baseline else None,
            "target": self.target,
            "met": self.met,
            "notes": self.notes,
            "extra": self.extra,
            "samples": {
                "godel": [_round(v) for v in self.godel],
                "baseline": [_round(v) for v in self.baseline] if self.baseline is not None else None,
            },
        }


def _round(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(v, 4)


# ------------------------------------------------------------------------------------------------- config


@dataclass
class Config:
    quick: bool
    console: Console
    run_id: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(3)}")

    def log(self, message: str) -> None:
        self.console.log(message)

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# -------------------------------------------------------------------------------------- directories, procs


def owned_dirs(run_id: str | None = None) -> list[Path]:
    pattern = f"{PREFIX}{run_id}-*" if run_id else f"{PREFIX}*"
    return sorted(TMPFS.glob(pattern))


def processes_under(root: Path) -> list[psutil.Process]:
    """Processes (other than this one) whose command line or working directory points into ``root``."""
    me = os.getpid()
    needle = str(root)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.info["pid"] == me:
            continue
        cmdline = " ".join(proc.info.get("cmdline") or [])
        cwd = proc.info.get("cwd") or ""
        if needle in cmdline or cwd.startswith(needle):
            found.append(proc)
    return found


def kill_processes_under(root: Path) -> int:
    """SIGKILL, one pid at a time, every process started for a work directory; returns how many."""
    procs = processes_under(root)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


@contextlib.contextmanager
def workdir(cfg: Config, name: str) -> Iterator[Path]:
    """A fresh directory on tmpfs; on exit its processes are killed and it is removed."""
    path = TMPFS / f"{PREFIX}{cfg.run_id}-{name}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        killed = kill_processes_under(path)
        if killed:
            cfg.log(f"[yellow]{name}: killed {killed} leftover process(es) under {path}")
        from godel.runtimes.workspaces.overlay import unmount_under

        unmount_under(path)  # workspaces the run left mounted (an overlay outlives its folder's removal)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- git


def git_env() -> dict[str, str]:
    return {**os.environ, **GIT_IDENTITY}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=git_env())
    return out.stdout.strip()


def make_repo(path: Path, *, files: int, dirs: int) -> str:
    """A repository of ``files`` small text files spread over ``dirs`` directories, one commit on ``main``;
    returns the commit."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=git_env())
    for i in range(files):
        d = path / f"pkg{i % dirs:03d}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i:05d}.py").write_text(
            f'"""Module {i}."""\n\n\ndef f{i}(x: int) -> int:\n    return x * {i} + {i % 7}\n'
        )
    (path / "README.md").write_text("# bench repo\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return git(path, "rev-parse", "HEAD")


# -------------------------------------------------------------------------------------------------- time


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    """An API timestamp ("…Z" or "+00:00") as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ms_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1000.0


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


# ------------------------------------------------------------------------------------------------- code


def code_version(root: Path) -> dict[str, Any]:
    """Which Godel was measured: the commit, whether ``src/`` differs from it, and a digest of the source
    files themselves (others may be editing the tree while a run goes on; compare start and end)."""

    def out(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    digest = hashlib.sha256()
    for path in sorted((root / "src").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return {
        "commit": out("rev-parse", "--short", "HEAD"),
        "srcDirty": bool(out("status", "--porcelain", "--", "src")),
        "srcDigest": digest.hexdigest()[:16],
    }


# ------------------------------------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        git_version = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ramGiB": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "git": git_version,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def scripted_upstream(root: Path, text: str, output_tokens: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start the scripted model (``godel dev model``) answering every request with ``text``, in its own session on a
    free port; returns the process and its OpenAI base URL once it answers. The caller terminates it."""
    import httpx
    from tests.e2e.serverproc import free_port

    port = free_port()
    script = root / "script.yaml"
    script.write_text(f"turns:\n  - text: {text}\n    output_tokens: {output_tokens}\n")
    model = subprocess.Popen(
        [sys.executable, "-m", "godel", "dev", "model", "--script", str(script), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return model, base
        time.sleep(0.05)  # waiting for the upstream to listen
    model.terminate()
    raise RuntimeError(f"the scripted model did not answer at {base}")


# ------------------------------------------------------------------------------- runtimes, side by side


async def start_to_exit(runtime: Any, handle: Any, launch: Any) -> float:
    """ms from ``runtime.start(handle, launch)`` until the wrapper's exit file exists (the run is over and its status
    recorded), polled every 0.5 ms; the run is reaped afterwards, outside the figure."""
    import asyncio

    from godel.runtimes.processes import exit_file

    t0 = time.perf_counter()
    handle = await runtime.start(handle, launch)
    done = exit_file(handle)
    while not done.exists():  # noqa: ASYNC110 (the exit file is the signal; no event to wait on)
        await asyncio.sleep(0.0005)
    ms = ms_since(t0)
    await runtime.status(handle)  # reap it
    return ms


NOOP_ARGV = ("/bin/sh", "-c", "true")


def sandbox_missing(cfg: Config, bench: str) -> bool:
    """Whether bubblewrap or socat is missing, logged as the reason ``bench`` is skipped."""
    from godel.runtimes.sandbox import missing_tools

    missing = missing_tools()
    if missing:
        cfg.log(f"{bench}: skipped, {', '.join(missing)} not installed (apt-get install bubblewrap socat)")
    return bool(missing)


@dataclass(frozen=True)
class NoopAgents:
    """What ``noop_agents`` prepared, by runtime name, so the benchmark can reach a runtime's workspace too."""

    runtimes: dict[str, Any]
    handles: dict[str, Any]

    def series(self, name: str) -> Callable[[], Awaitable[float]]:
        """A series for ``interleaved``: another ``start`` of runtime ``name``'s agent (as a retry is), to exit."""
        from godel.core.ports import LaunchSpec

        noop = LaunchSpec(list(NOOP_ARGV))
        return lambda: start_to_exit(self.runtimes[name], self.handles[name], noop)


@contextlib.asynccontextmanager
async def noop_agents(
    cfg: Config, root: Path, kinds: Mapping[str, Callable[[Path, Path], Any]]
) -> AsyncIterator[NoopAgents]:
    """Per runtime (``kinds``: name → class), a ``/bin/sh -c true`` agent in a worktree of one 100-file repository,
    prepared once so that a sample is only a start; ids of this run, as an agent's cgroups are named by its id
    machine-wide; cleaned up, cgroups too, on exit."""
    from godel.core.ports import WorkspaceSpec

    make_repo(root / "repo", files=100, dirs=10)
    runtimes = {name: kind(root / name / "worktrees", root / name / "logs") for name, kind in kinds.items()}
    handles: dict[str, Any] = {}
    try:
        for name, runtime in runtimes.items():
            handles[name] = await runtime.prepare(
                WorkspaceSpec(agent_id=f"bench-{cfg.run_id}-{name}", repo=root / "repo")
            )
        yield NoopAgents(runtimes, handles)
    finally:
        for name, handle in handles.items():
            await runtimes[name].cleanup(handle)


def time_run(argv: Sequence[str], **kwargs: Any) -> float:
    """ms of ``subprocess.run(argv, check=True, **kwargs)`` (its output discarded unless ``kwargs`` says otherwise)."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    t0 = time.perf_counter()
    subprocess.run(list(argv), check=True, **kwargs)
    return ms_since(t0)


async def interleaved(
    cfg: Config, bench: str, series: Mapping[str, Callable[[], Awaitable[float]]], *, samples: int, warmup: int,
    every: int = 10,
) -> dict[str, list[float]]:  # fmt: skip
    """Run every series once per round, ``warmup`` rounds left out then ``samples`` kept, the order rotated round by
    round (so no series always goes first, right after another's cleanup); the samples of each series by name."""
    names = list(series)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + samples):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            ms = await series[name]()
            if i >= warmup:
                times[name].append(ms)
        kept = i - warmup + 1
        if kept > 0 and kept % every == 0:
            cfg.log(f"{bench}: {kept}/{samples} rounds")
    return times


class Parts:
    """The breakdown of one ``interleaved`` series' samples (a series returns a single figure, the parts go here),
    its first ``warmup`` samples left out as ``interleaved`` leaves them out."""

    def __init__(self, keys: Sequence[str], warmup: int) -> None:
        self.samples: dict[str, list[float]] = {key: [] for key in keys}
        self._skip = warmup

    def add(self, values: Mapping[str, float]) -> None:
        """Keep one sample's parts, unless it is a warm-up one (the series is called once a round, warm-up first)."""
        if self._skip > 0:
            self._skip -= 1
            return
        for key, samples in self.samples.items():
            samples.append(values[key])

    def figures(self, bench: str, labels: Mapping[str, str]) -> list[Figure]:
        """One figure (ms, no baseline) per ``key: name`` of ``labels``, in that order."""
        return [Figure(bench=bench, name=name, unit="ms", godel=self.samples[key]) for key, name in labels.items()]


def versus(
    bench: str, times: dict[str, list[float]], rows: Sequence[tuple[str, str, str, str]], *, unit: str = "ms",
    note: str = "",
) -> list[Figure]:  # fmt: skip
    """One figure per ``(name, series, baseline series, baseline label)`` row over the samples of ``interleaved``;
    ``note`` goes on the first."""
    figures = [
        Figure(bench=bench, name=name, unit=unit, godel=times[a], baseline=times[b], baseline_label=label)
        for name, a, b, label in rows
    ]
    if note and figures:
        figures[0].notes.append(note)
    return figures
