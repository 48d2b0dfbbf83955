"""Run Godel's benchmarks: ``python benchmarks/run.py [--quick] [--only NAME ...] [--out PATH]``.

Each benchmark measures its figures beside a raw baseline in the same run, prints them in one table and
writes everything (machine, percentiles, ratios, raw samples) as JSON to ``--out`` (default
``benchmarks/results/<UTC timestamp>.json``, git-ignored). ``--quick`` is a smoke run with few samples and
small sizes: its numbers are not results. All data lives on tmpfs (``/dev/shm/godel-bench-*``) and is
removed, with every process started for it, when the run ends.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import shutil
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` (and `tests`, for ServerProcess) importable
    sys.path.insert(0, str(ROOT))

MODULES = {
    "spawn": "benchmarks.spawn",
    "transition": "benchmarks.transition",
    "list": "benchmarks.listing",
    "events": "benchmarks.events",
    "load": "benchmarks.load",
    "agents": "benchmarks.agents",
    "gateway": "benchmarks.gateway",
    "teams": "benchmarks.teams",
    "workflow": "benchmarks.workflow",
    "auth": "benchmarks.auth",
    "cli": "benchmarks.cli",
    "sandbox": "benchmarks.sandbox",
    "gvisor": "benchmarks.gvisor",
    "container": "benchmarks.container",
    "workspaces": "benchmarks.workspaces",
    "sandbox-spawn": "benchmarks.sandbox_spawn",
    "sandbox-load": "benchmarks.sandbox_load",
    "snapshots": "benchmarks.snapshots",
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(MODULES),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(MODULES)}",
    )
    p.add_argument("--quick", action="store_true", help="a fast smoke run (few samples, small sizes)")
    p.add_argument("--out", type=Path, help="JSON output path (default: benchmarks/results/<UTC time>.json)")
    return p.parse_args(argv)


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or math.isnan(v):
        return "-"
    if abs(v) >= 10_000:
        text = f"{v:,.0f}"
    elif abs(v) >= 100:
        text = f"{v:.0f}"
    elif abs(v) >= 10:
        text = f"{v:.1f}"
    else:
        text = f"{v:.2f}"
    return f"{text}{unit}"


def _table(figures: list[Any]) -> Any:
    from rich.table import Table

    t = Table(title="Godel benchmarks (Godel beside its raw baseline, same run)", show_lines=False)
    for col in ("bench", "figure", "unit", "n"):
        t.add_column(col, overflow="fold")
    for col in ("Godel p50", "p95", "p99", "base p50", "p95", "p99", "ratio p50", "ratio p95"):
        t.add_column(col, justify="right")
    t.add_column("target", overflow="fold")
    t.add_column("met")
    for f in figures:
        g = f.godel_stats
        b = f.baseline_stats
        met = "-" if f.met is None else ("[green]yes" if f.met else "[red]NO")
        t.add_row(
            f.bench,
            f.name,
            f.unit,
            str(g.n),
            _fmt(g.p50),
            _fmt(g.p95),
            _fmt(g.p99),
            _fmt(b.p50 if b else None),
            _fmt(b.p95 if b else None),
            _fmt(b.p99 if b else None),
            _fmt(f.ratio("p50"), "x"),
            _fmt(f.ratio("p95"), "x"),
            f.target or "-",
            met,
        )
    return t


def _on_term(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every benchmark's cleanup


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from rich.console import Console

    common = _module("benchmarks.common")
    # The in-process benchmarks run Godel's own loops; keep their info logs out of the report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = Console(width=None if sys.stdout.isatty() else 220)
    cfg = common.Config(quick=args.quick, console=console)
    names = [n for n in MODULES if not args.only or n in args.only]
    started = datetime.now(UTC)
    out = args.out or ROOT / "benchmarks" / "results" / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    signal.signal(signal.SIGTERM, _on_term)
    machine = common.machine_info()
    code = common.code_version(ROOT)
    console.log(f"machine: {machine}")
    console.log(f"code: {code}")
    console.log(f"running {', '.join(names)}{' (quick smoke run)' if args.quick else ''}; run id {cfg.run_id}")

    figures: list[Any] = []
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    try:
        for name in names:
            t0 = time.perf_counter()
            console.rule(name)
            try:
                figures.extend(_module(MODULES[name]).run(cfg))
            except Exception:
                errors[name] = traceback.format_exc()
                console.print(f"[red]{name} failed:\n{errors[name]}")
            durations[name] = round(time.perf_counter() - t0, 1)
            console.log(f"{name} took {durations[name]} s")
    finally:
        for path in common.owned_dirs(cfg.run_id):  # a safety net: each benchmark cleans up its own
            common.kill_processes_under(path)
            shutil.rmtree(path, ignore_errors=True)

    console.print(_table(figures))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "startedAt": started.isoformat(),
        "finishedAt": datetime.now(UTC).isoformat(),
        "machine": {**machine, "loadavgAtEnd": common.machine_info()["loadavg"]},
        "code": {"atStart": code, "atEnd": common.code_version(ROOT)},
        "durationsSeconds": durations,
        "figures": [f.to_json() for f in figures],
        "errors": errors,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    console.log(f"wrote {out}")
    if report["code"]["atStart"]["srcDigest"] != report["code"]["atEnd"]["srcDigest"]:
        console.log("[yellow]the source tree changed during the run: the figures mix two versions of Godel")
    missed = [f"{f.bench}: {f.name}" for f in figures if f.met is False]
    if missed:
        console.log(f"[yellow]targets missed: {missed}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
