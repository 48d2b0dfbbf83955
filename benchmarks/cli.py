"""cli: the wall time of a ``godel`` command, from exec to exit, beside Python starting and doing next to nothing.

A real ``godel serve`` (SQLite on tmpfs, its own ``GODEL_HOME``, authentication on, 20 agents) answers
``godel agent list``; ``godel --help`` and ``godel --version`` need no server. Every command is started the same
way, ``python -m godel …`` with the interpreter of this run, from bytecode (as installed), its output to a pipe,
and timed from start to exit. The baselines are started the same way in the same rounds: ``python -c pass``
(the interpreter alone) and ``python -c 'import httpx'`` (the HTTP client the CLI talks through). One more, the
floor of this CLI's libraries, is recorded in the notes: Typer, httpx and httpcore (which httpx imports on its first
request), with httpx's own command line left out as ``godel`` leaves it out. Each round runs every command once, in
an order rotated from round to round, so that all sides see the same machine.

Target (issue 11): ``godel --help`` and ``godel agent list`` in at most 300 ms at p50.

Run alone: ``python benchmarks/cli.py [--quick]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

from tests.e2e.serverproc import ServerProcess  # noqa: E402

from benchmarks.common import Config, Figure, make_repo, ms_since, workdir  # noqa: E402

NAME = "cli"
TARGET_MS = 300.0
AGENTS = 20

SIDES: dict[str, list[str]] = {
    "help": ["-m", "godel", "--help"],
    "version": ["-m", "godel", "--version"],
    "list": ["-m", "godel", "agent", "list"],
    "pass": ["-c", "pass"],
    "httpx": ["-c", "import httpx"],
    "floor": ["-c", "import sys; sys.modules['httpx._main'] = None; import typer, httpx, httpcore"],
}


def run(cfg: Config) -> list[Figure]:
    with workdir(cfg, NAME) as root:
        server = ServerProcess(root / "home", cwd=root, GODEL_LOG_LEVEL="warning")
        try:
            server.start()
            repo = root / "repo"
            make_repo(repo, files=3, dirs=1)
            for i in range(AGENTS):
                server.api("POST", "/api/v1/agents", json={"task": f"t{i}", "repo": str(repo), "command": "true"})
            return _measure(cfg, root, server)
        finally:
            server.stop()


def _time(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True)
    elapsed = ms_since(t0)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


def _measure(cfg: Config, root: Path, server: ServerProcess) -> list[Figure]:
    # The checkout's sources first, absolute, as the tests run them (a relative PYTHONPATH breaks with cwd=root).
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "GODEL_URL": server.url, "GODEL_HOME": str(server.home)}
    env.pop("GODEL_CONFIG", None)
    # As an installed Godel runs: from bytecode. This machine sets PYTHONDONTWRITEBYTECODE, which would have
    # every start compile the checkout's modules again; the bytecode goes to the work directory, for every side.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    listed = subprocess.run([sys.executable, "-m", "godel", "agent", "list"], cwd=root, env=env,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert len(listed.splitlines()) == AGENTS + 1, listed  # the header and every agent: the real work is done
    names = list(SIDES)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm the page cache and the .pyc files once, unmeasured
        _time(SIDES[name], root, env)
    rounds = cfg.pick(30, 15)
    cfg.log(f"cli: {rounds} rounds of {len(names)} commands")
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            samples[name].append(_time(SIDES[name], root, env))
    figures = []
    for side, label, baseline in (
        ("help", "godel --help", "pass"),
        ("version", "godel --version", "pass"),
        ("list", f"godel agent list ({AGENTS} agents, real server)", "httpx"),
    ):
        fig = Figure(
            bench=NAME, name=label, unit="ms", godel=samples[side], baseline=samples[baseline],
            baseline_label=f"python {' '.join(SIDES[baseline])}", target=f"≤{TARGET_MS:.0f} ms at p50",
        )  # fmt: skip
        fig.met = fig.godel_stats.p50 <= TARGET_MS if side != "version" else None
        floor = Figure(bench=NAME, name="floor", unit="ms", godel=samples["floor"]).godel_stats
        fig.notes.append(f"libraries' floor (import typer, httpx, httpcore; not httpx._main): p50 {floor.p50:.0f} ms, "
                         f"p95 {floor.p95:.0f} ms")  # fmt: skip
        fig.extra["samples_floor"] = samples["floor"]
        figures.append(fig)
    return figures


def main() -> None:
    from rich.console import Console

    cfg = Config(quick="--quick" in sys.argv, console=Console(stderr=True))
    for fig in run(cfg):
        g, b = fig.godel_stats, fig.baseline_stats
        assert b is not None
        print(f"{fig.name:45s} p50 {g.p50:6.0f} ms  p95 {g.p95:6.0f} ms  | {fig.baseline_label:28s} "
              f"p50 {b.p50:5.0f} p95 {b.p95:5.0f} | ratio p50 {fig.ratio('p50'):.2f} p95 {fig.ratio('p95'):.2f} "
              f"| target {fig.target} {'met' if fig.met else ('-' if fig.met is None else 'MISSED')}")  # fmt: skip
        for note in fig.notes:
            print(f"    {note}")


if __name__ == "__main__":
    main()
