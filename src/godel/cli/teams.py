"""``godel team …``: create, list, show, start, pause, resume, scale, complete and remove teams.

A team id may be given in full or as a unique prefix (tables show ids shortened). Piped, ``create`` prints the
new id alone, so ``ID=$(godel team create …)`` works. ``create --wait`` and ``show --watch`` follow the team
until it ends: Rich progress bars in a terminal (the team, and one bar per agent), one plain line per change
otherwise; ``--wait`` exits 1 unless the team completed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from godel.cli.context import JsonFlag, action_commands, client, wants_json
from godel.cli.ids import resolve
from godel.cli.output import Column, console, is_tty, print_json, print_line, print_record, print_table
from godel.client import GodelClient

app = typer.Typer(no_args_is_help=True, help="Run teams of agents: parallel, map-reduce, pipeline or tree.")

TeamRef = Annotated[str, typer.Argument(metavar="ID", help="Team id (or a unique prefix of one).")]
FINISHED = ("completed", "failed")
EXIT_NOT_COMPLETED = 1  # --wait / --watch of a team that failed
POLL_SECONDS = 0.5

TEAM_COLUMNS = (
    Column("ID", "id", "id"),
    Column("NAME", "name", max_width=24),
    Column("STRATEGY", "strategy"),
    Column("STATUS", "status"),
    Column("SIZE", "size"),
    Column("AGENTS", lambda t: (t.get("agents") or {}).get("total", 0)),
    Column("PROGRESS", lambda t: f"{t.get('progress', 0)}%"),
    Column("CREATED", "createdAt", "time"),
)
AGENT_COLUMNS = (
    Column("ID", "id", "id"),
    Column("STEP", lambda a: (a.get("metadata") or {}).get("step")),
    Column("ROLE", lambda a: (a.get("metadata") or {}).get("role")),
    Column("STATE", "state"),
    Column("BRANCH", "branch"),
    Column("RESULT / ERROR", lambda a: a.get("lastError") or (a.get("outcome") or {}).get("result"), max_width=60),
)
SHOWN = ("id", "name", "strategy", "status", "progress", "size", "maxAgents", "error", "budgetAllocated",
         "budgetConsumed", "createdAt", "completedAt")  # fmt: skip


def _stage(value: str) -> dict[str, str]:
    role, found, task = value.partition(":")
    if not found or not role or not task.strip():
        raise typer.BadParameter(f"expected ROLE:TASK, got {value!r}", param_hint="--stage")
    return {"role": role, "task": task.strip()}


def _pairs(values: list[str] | None, option: str, sep: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, found, rest = value.partition(sep)
        if not found or not key or not rest:
            raise typer.BadParameter(f"expected A{sep}B, got {value!r}", param_hint=option)
        out[key] = rest
    return out


@app.command()
def create(
    ctx: typer.Context,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="parallel, map-reduce, pipeline or tree.")],
    task: Annotated[str | None, typer.Argument(metavar="TASK", help="The team's task.")] = None,
    size: Annotated[
        int | None, typer.Option("--size", "-n", help="Agents (parallel), worker pool (map-reduce).")
    ] = None,
    kind: Annotated[str | None, typer.Option("--agent", help="Agent kind (default: pi).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="PROVIDER/MODEL for the team's agents.")] = None,
    repo: Annotated[Path, typer.Option("--repo", help="The repository (default: here).")] = Path(),
    base: Annotated[str | None, typer.Option("--base", help="Ref the agents start from (default: HEAD).")] = None,
    command: Annotated[str | None, typer.Option("--command", help="Shell command (agent kind 'command').")] = None,
    tasks: Annotated[list[str] | None, typer.Option("--task", "-t", help="A task of a list (repeatable).")] = None,
    stages: Annotated[
        list[str] | None, typer.Option("--stage", help="ROLE:TASK, a pipeline stage in order (repeatable).")
    ] = None,
    roles: Annotated[list[str] | None, typer.Option("--role", help="SLOT=ROLE, e.g. reduce=refinery.")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    max_agents: Annotated[int | None, typer.Option("--max-agents")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="The team's limit in seconds.")] = None,
    agent_timeout: Annotated[float | None, typer.Option("--agent-timeout", help="Seconds per agent attempt.")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", help="Retries per agent.")] = None,
    max_rounds: Annotated[int | None, typer.Option("--max-rounds", help="Reviews per gated stage.")] = None,
    depth: Annotated[int | None, typer.Option("--depth", help="tree: levels below the root.")] = None,
    fanout: Annotated[int | None, typer.Option("--fanout", help="tree: subtasks per node.")] = None,
    budget: Annotated[float | None, typer.Option("--budget", help="USD for the whole team.")] = None,
    monitor: Annotated[bool, typer.Option("--monitor", help="Run a monitor agent beside the team.")] = False,
    no_start: Annotated[bool, typer.Option("--no-start", help="Create it without starting it.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends (exit 1 unless completed).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create a team (and start it, unless --no-start)."""
    stage_list = [_stage(s) for s in stages] if stages else None
    retry = {"max_retries": max_retries, "max_rounds": max_rounds}
    data = client(ctx).create_team(
        strategy, str(repo.expanduser().resolve()),
        task=task, tasks=tasks, stages=stage_list, size=size, agent=kind, model=model, base_ref=base,
        command=command, roles=_pairs(roles, "--role", "=") or None, name=name, max_agents=max_agents,
        timeout=timeout, agent_timeout=agent_timeout,
        retry_policy={k: v for k, v in retry.items() if v is not None} or None,
        depth=depth, fanout=fanout, budget=budget, monitor=monitor or None, start=not no_start,
    )  # fmt: skip
    if wait and not no_start:
        _finish(ctx, _follow(ctx, data["id"], quiet=wants_json(ctx, json_out)), json_out)
        return
    if wants_json(ctx, json_out):
        print_json(data)
    elif not is_tty():
        print_line(data["id"])
    else:
        print_line(f"team {data['id']} {data['status']} ({data['strategy']})", style="bold")
        print_line(f"follow it with: godel team show --watch {data['id'][:8]}", style="dim")


@app.command("list")
def list_teams(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", help="Repeatable.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Page size (1-200).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Teams, newest first, with their progress."""
    page = client(ctx).list_teams(status=status, limit=limit)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    print_table(TEAM_COLUMNS, page.get("items", []))


@app.command()
def show(
    ctx: typer.Context,
    ref: TeamRef,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow it until it ends.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """One team, its agents and its result (--watch: follow its progress until it ends)."""
    tid = resolve(ctx, "team", ref)
    if watch:
        _finish(ctx, _follow(ctx, tid, quiet=wants_json(ctx, json_out)), json_out)
        return
    data = client(ctx).get_team(tid)
    if wants_json(ctx, json_out):
        print_json(data)
        return
    _print_team(client(ctx), data)


def _print_team(godel: GodelClient, data: dict[str, Any]) -> None:
    print_record([(k, data.get(k)) for k in SHOWN])
    typer.echo("")
    print_table(AGENT_COLUMNS, godel.team_agents(data["id"]).get("items", []), title="agents")


def _finish(ctx: typer.Context, data: dict[str, Any], json_out: bool) -> None:
    if wants_json(ctx, json_out):
        print_json(data)
    else:
        _print_team(client(ctx), data)
        colour = "green" if data["status"] == "completed" else "red"
        print_line(f"team {data['id']} {data['status']}" + (f": {data['error']}" if data.get("error") else ""),
                   style=colour)  # fmt: skip
    if data["status"] != "completed":
        raise typer.Exit(EXIT_NOT_COMPLETED)


def _line(data: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(((data.get("agents") or {}).get("byState") or {}).items()))
    return f"{data['status']}\t{data.get('progress', 0)}%\t{states or 'no agents yet'}"


def _follow(ctx: typer.Context, tid: str, *, quiet: bool) -> dict[str, Any]:
    """Poll the team until it ends: progress bars in a terminal, one line per change otherwise."""
    godel = client(ctx)
    if is_tty() and not quiet:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, console=console(), transient=False) as bars:
            overall = bars.add_task("team", total=100)
            rows: dict[str, TaskID] = {}
            while True:
                data = godel.get_team(tid)
                bars.update(overall, completed=data.get("progress", 0),
                            description=escape(f"{data['name']} ({data['strategy']}) {data['status']}"))  # fmt: skip
                for agent in godel.team_agents(tid).get("items", []):
                    meta = agent.get("metadata") or {}
                    label = escape(f"  {meta.get('step')} ({meta.get('role')}) {agent['state']}")
                    ended = agent["state"] in ("completed", "killed") or (
                        agent["state"] == "failed" and agent.get("retryCount", 0) >= agent.get("maxRetries", 0)
                    )
                    if agent["id"] not in rows:
                        rows[agent["id"]] = bars.add_task(label, total=1)
                    bars.update(rows[agent["id"]], completed=1 if ended else 0, description=label)
                if data["status"] in FINISHED:
                    return dict(data)
                time.sleep(POLL_SECONDS)  # the CLI follows the server by polling it
    last = ""
    while True:
        data = godel.get_team(tid)
        line = _line(data)
        if not quiet and line != last:
            typer.echo(line)
            last = line
        if data["status"] in FINISHED:
            return dict(data)
        time.sleep(POLL_SECONDS)  # the CLI follows the server by polling it


action_commands(
    app, "team", lambda ctx, ref, action: client(ctx).team_action(resolve(ctx, "team", ref), action),
    {
        "start": "Start a team created with --no-start.",
        "pause": "Pause a team: it spawns nothing more and its running agents are paused.",
        "resume": "Resume a paused team (and the agents it paused).",
        "complete": "End a team now as completed: its running agents are killed.",
    },
    ref_help="Team id (or a unique prefix of one).",
)  # fmt: skip


@app.command()
def scale(
    ctx: typer.Context,
    ref: TeamRef,
    size: Annotated[int, typer.Argument(metavar="N", help="The new size (0..maxAgents).")],
    json_out: JsonFlag = False,
) -> None:
    """Resize a team live: parallel teams spawn or let go agents; map-reduce resizes its worker pool."""
    data = client(ctx).scale_team(resolve(ctx, "team", ref), size)
    if wants_json(ctx, json_out):
        print_json(data)
        return
    killed = data.get("killedAgents") or []
    print_line(f"team {data['id']} size {data['size']}" + (f"; let go {len(killed)} agent(s)" if killed else ""))


@app.command("rm")
def remove(
    ctx: typer.Context,
    ref: TeamRef,
    force: Annotated[bool, typer.Option("--force", "-f", help="Also a running team (its agents are killed).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete a team (its agents and their branches stay)."""
    data = client(ctx).delete_team(resolve(ctx, "team", ref), force=force)
    if wants_json(ctx, json_out):
        print_json(data)
    else:
        print_line(f"team {data['id']} deleted")
