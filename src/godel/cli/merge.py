"""``godel merge``: the merge queue, from the command line.

The server does the merging (``POST /api/v1/merges``); this command asks for a run, follows it (polling
``GET /api/v1/merges/{id}``) and prints the result of each branch. In a terminal each branch gets a progress
bar; piped, one line per branch goes to stderr as it is decided, so stdout holds only the final table (or,
with ``--json``, the list of per-branch results).

Exit codes: 0 every branch merged (or was already in the integration branch), 1 a branch did not merge
(conflict, gate failed, git error), the run itself failed, or the server refused the request, 2 bad usage,
3 no server reachable, 130 interrupted (the run goes on on the server).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from godel.cli import output
from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.ids import resolve_optional
from godel.cli.output import SHORT_ID, Column, print_json, print_line, print_table
from godel.client import GodelClient

EXIT_NOT_MERGED = 1
POLL_INTERVAL = 0.2  # seconds between two looks at a running merge
ENDED = frozenset({"completed", "failed"})
NOT_MERGED = frozenset({"conflict", "gate-failed", "error"})
STYLE = {"merged": "green", "conflict": "red", "gate-failed": "red", "error": "red", "skipped": "yellow"}
OUTPUT_LINES = 15  # lines of a failed gate's output shown in a terminal


def merge(
    ctx: typer.Context,
    into: Annotated[str, typer.Option("--into", metavar="BRANCH", help="The integration branch to merge into.")],
    branches: Annotated[
        list[str] | None, typer.Argument(metavar="BRANCH", help="Branches to merge, in this order.")
    ] = None,
    repo: Annotated[Path, typer.Option("--repo", help="The git repository (default: the current directory).")] = Path(
        "."
    ),
    team: Annotated[
        str | None, typer.Option("--team", metavar="ID", help="Merge the branches of this team's agents.")
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", metavar="ID", help="Merge the branches of this workflow's agents.")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", metavar="REF", help="Where a new integration branch starts (default: HEAD)."),
    ] = None,
    verify: Annotated[
        str | None,
        typer.Option("--verify", metavar="CMD", help="The gate: a shell command run after each merge (the tests)."),
    ] = None,
    verify_timeout: Annotated[
        float | None, typer.Option("--verify-timeout", metavar="SECONDS", help="Limit per gate run (default 600).")
    ] = None,
    batch: Annotated[
        bool, typer.Option("--batch", help="Merge all, verify once, bisect to the culprit when the gate fails.")
    ] = False,
    resolve: Annotated[
        str | None,
        typer.Option("--resolve", metavar="CMD", help="Resolve conflicts with this command on a refinery branch."),
    ] = None,
    refinery_agent: Annotated[
        str | None,
        typer.Option("--refinery-agent", metavar="KIND", help="Hand conflicts to an agent (pi, claude, …) instead."),
    ] = None,
    refinery_model: Annotated[
        str | None, typer.Option("--refinery-model", metavar="PROVIDER/MODEL", help="The refinery agent's model.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Merge BRANCHes (or --team's, or --workflow's) into --into, one by one, each behind the --verify gate.

    A branch that conflicts or fails the gate is left out and reported; the rest go on. Exits 1 if any did not merge.
    """
    given = [name for name, value in (("BRANCH", branches), ("--team", team), ("--workflow", workflow)) if value]
    if not given:
        raise typer.BadParameter("give the branches to merge, --team ID or --workflow ID", param_hint="BRANCH")
    if len(given) > 1:
        raise typer.BadParameter(f"{' and '.join(given)} exclude each other: give one", param_hint=given[-1])
    if verify_timeout is not None and not verify_timeout > 0:
        raise typer.BadParameter("must be more than 0", param_hint="--verify-timeout")
    godel = client(ctx)
    job = godel.merge(
        str(repo.expanduser().resolve()), into, branches, team_id=resolve_optional(ctx, "team", team),
        workflow_id=resolve_optional(ctx, "workflow", workflow), base=base,
        verify=verify, verify_timeout=verify_timeout, batch=batch or None, resolve=resolve,
        refinery_agent=refinery_agent, refinery_model=refinery_model,
    )  # fmt: skip
    as_json = wants_json(ctx, json_out)
    try:
        report = follow_tty(godel, job) if output.is_tty() and not as_json else follow_plain(godel, job)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; the merge {job['id']} goes on on the server", err=True)
        raise
    results = list(report.get("results", []))
    if as_json:
        print_json(results)
    else:
        print_report(report)
    if report.get("error"):
        error = report["error"]
        typer.echo(f"error: the merge stopped: {error.get('message')} ({error.get('code')})", err=True)
    if report.get("status") != "completed" or any(r.get("status") in NOT_MERGED for r in results):
        raise typer.Exit(EXIT_NOT_MERGED)


# Following a run


def follow_plain(godel: GodelClient, job: Mapping[str, Any]) -> dict[str, Any]:
    """Poll until the run ends; each branch's result goes to stderr once, as it is decided."""
    typer.echo(f"merge {job['id']}: {len(job.get('branches', []))} branches into {job.get('into')}", err=True)
    told: set[int] = set()
    while True:
        report = godel.get_merge(str(job["id"]))
        for i, result in enumerate(report.get("results", [])):
            if result.get("status") != "pending" and i not in told:
                told.add(i)
                typer.echo(f"{result.get('status')}\t{result.get('branch')}\t{detail(result)}", err=True)
        if report.get("status") in ENDED:
            return report
        time.sleep(POLL_INTERVAL)  # polling the server's job: the CLI has no other way to wait on it


def follow_tty(godel: GodelClient, job: Mapping[str, Any]) -> dict[str, Any]:
    """Poll until the run ends, with one progress bar per branch (merge, then the gate) and one for the run."""
    steps = 2 if job.get("verify") else 1
    names = list(job.get("branches", []))
    label = f"into {job.get('into')}"
    width = min(max((len(n) for n in [*names, label]), default=10), 48)
    with Progress(
        SpinnerColumn(),
        TextColumn(f"{{task.description:<{width}}}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[state]}"),
        console=output.console(),
    ) as progress:
        overall = progress.add_task(label[:width], total=len(names), state="starting")
        bars = [progress.add_task(name[:width], total=steps, state="pending") for name in names]
        while True:
            report = godel.get_merge(str(job["id"]))
            show(progress, overall, bars, report, steps)
            if report.get("status") in ENDED:
                return report
            time.sleep(POLL_INTERVAL)  # polling the server's job: the CLI has no other way to wait on it


def show(progress: Progress, overall: TaskID, bars: list[TaskID], report: Mapping[str, Any], steps: int) -> None:
    current = report.get("current") or {}
    results = list(report.get("results", []))
    for bar, result in zip(bars, results, strict=False):
        status = str(result.get("status"))
        if status != "pending":
            style = STYLE.get(status, "")
            progress.update(bar, completed=steps, state=f"[{style}]{status}[/]" if style else status)
        elif current.get("branch") == result.get("branch"):
            phase = str(current.get("phase"))
            progress.update(bar, completed=1 if phase == "verifying" else 0, state=phase)
    done = sum(1 for r in results if r.get("status") != "pending")
    state = str(report.get("status"))
    if state not in ENDED and current and current.get("branch") is None:
        state = f"batch: {current.get('phase')}"  # the gate over a whole batch, or bisecting it
    progress.update(overall, completed=done, state=state)


# The report


def detail(result: Mapping[str, Any]) -> str:
    status = result.get("status")
    if status == "merged":
        commit = str(result.get("commit") or "")[:SHORT_ID]
        resolution = result.get("resolution") or {}
        return f"{commit} (conflicts resolved on {resolution['branch']})" if resolution.get("branch") else commit
    return str(result.get("reason") or "")


def print_report(report: Mapping[str, Any]) -> None:
    results = list(report.get("results", []))
    columns = (
        Column("BRANCH", "branch", max_width=48),
        Column("STATUS", "status"),
        Column("AGENT", "agentId", "id"),
        Column("DETAIL", detail, max_width=80),
    )
    print_table(columns, results)
    if not output.is_tty():
        return
    for result in results:
        if result.get("status") == "gate-failed":
            print_line(f"\n{result.get('branch')}: {result.get('reason')}", style="bold red")
            for line in str(result.get("output") or "").rstrip().splitlines()[-OUTPUT_LINES:]:
                print_line(f"  {line}", style="dim")
    summary = report.get("summary") or {}
    merged, total = summary.get("merged", 0), len(results)
    print_line(f"\n{merged} of {total} merged into {report.get('into')} ({str(report.get('head'))[:SHORT_ID]})")
