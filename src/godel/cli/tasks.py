"""``godel task …``: the durable task queue.

A task id may be given in full or as a unique prefix (tables show ids shortened); ``--agent`` takes an agent
id or prefix too. Piped, ``create`` prints the new id alone, so ``ID=$(godel task create "…")`` works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from godel.cli import output
from godel.cli.agents import parse_env, print_agent_created
from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.ids import resolve, resolve_optional
from godel.cli.output import Column, print_json, print_line, print_record, print_table
from godel.client import GodelClient
from godel.core.states import TaskStatus

app = typer.Typer(no_args_is_help=True, help="Create, list, assign, complete and retry queued tasks.")

TaskRef = Annotated[str, typer.Argument(metavar="ID", help="Task id (or a unique prefix of one).")]
AgentOpt = Annotated[str | None, typer.Option("--agent", metavar="ID", help="An agent (id or unique prefix).")]
TeamOpt = Annotated[str | None, typer.Option("--team", metavar="ID", help="A team id.")]


def holder(task: Mapping[str, Any]) -> str | None:
    """Who has (or is reserved) the task: its agent, else ``team:<id>``; shortened in a terminal."""
    short = (lambda v: str(v)[: output.SHORT_ID]) if output.is_tty() else str
    if task.get("agentId"):
        return short(task["agentId"])
    return f"team:{short(task['teamId'])}" if task.get("teamId") else None


TASK_COLUMNS = (
    Column("ID", "id", "id"),
    Column("PRI", "priority"),
    Column("STATUS", "status"),
    Column("TITLE", "title", max_width=60),
    Column("HOLDER", holder),
    Column("TRIES", lambda t: f"{t.get('attempts', 0)}/{t.get('maxAttempts', '?')}"),
    Column("LAST ERROR", "lastError", max_width=40),
    Column("CREATED", "createdAt", "time"),
)
HISTORY_COLUMNS = (
    Column("#", "attempt"),
    Column("AGENT", "agentId", "id"),
    Column("TEAM", "teamId", "id"),
    Column("ASSIGNED", "assignedAt", "time"),
    Column("STARTED", "startedAt", "time"),
    Column("ENDED", "endedAt", "time"),
    Column("OUTCOME", "outcome"),
    Column("ERROR", "error", max_width=60),
)
SHOWN = ("id", "title", "status", "priority", "agentId", "teamId", "attempts", "maxAttempts", "lastError",
         "result", "metadata", "createdAt", "updatedAt", "completedAt")  # fmt: skip


class DeadFlagError(typer.BadParameter):
    def format_message(self) -> str:
        return self.message


def iter_tasks(godel: GodelClient, **filters: Any) -> Iterator[dict[str, Any]]:
    """Every matching task, queue order, following the cursor."""
    cursor: str | None = None
    while True:
        page = godel.list_tasks(cursor=cursor, **filters)
        yield from page.get("items", [])
        pagination = page.get("pagination") or {}
        cursor = pagination.get("cursor")
        if not pagination.get("hasMore") or not cursor:
            return


def target(ctx: typer.Context, agent: str | None, team: str | None, *, required: bool) -> tuple[str | None, str | None]:
    """``(agent id, team id)`` from ``--agent``/``--team`` (an agent prefix resolved to its full id)."""
    if required and agent is None and team is None:
        raise typer.BadParameter("give --agent ID or --team ID", param_hint="--agent/--team")
    return resolve_optional(ctx, "agent", agent), resolve_optional(ctx, "team", team)


def parse_result(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise typer.BadParameter(f"not JSON: {text[:80]!r}", param_hint="--result") from None
    if not isinstance(value, dict):
        raise typer.BadParameter('a JSON object, such as {"pr": 12}', param_hint="--result")
    return value


def show_task(ctx: typer.Context, task: dict[str, Any] | None, json_out: bool, verb: str) -> None:
    """After a command: the data with --json; piped, the id; in a terminal, a sentence."""
    if wants_json(ctx, json_out):
        print_json(task)
    elif task is None:
        if output.is_tty():  # piped: nothing, so that ID=$(godel task claim …) is empty
            print_line("no task to claim", style="dim")
    elif output.is_tty():
        holder = task.get("agentId") or task.get("teamId")
        suffix = f" ({task.get('status')}" + (f", {holder}" if holder else "") + ")"
        print_line(f"{verb} task {task.get('id')}{suffix}")
    else:
        print_line(str(task.get("id")))


@app.command("create")
def create(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(help="What to do (at most 255 characters).")],
    description: Annotated[str | None, typer.Option("--description", "-d", help="The details.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", "-p", help="-1000 to 1000; higher goes first.")] = None,
    team: TeamOpt = None,
    agent: AgentOpt = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="Failed attempts before the dead-letter list (default 3).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Queue a task (reserved for an agent or a team when one is given)."""
    agent_ref, team_ref = target(ctx, agent, team, required=False)
    task = client(ctx).create_task(
        title, description=description, priority=priority, max_attempts=max_attempts, agent_id=agent_ref,
        team_id=team_ref,
    )  # fmt: skip
    show_task(ctx, task, json_out, "created")


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    status: Annotated[list[TaskStatus] | None, typer.Option("--status", help="Repeatable.")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Only the dead-letter list.")] = False,
    team: TeamOpt = None,
    agent: AgentOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Page size (1-500).")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursor through every page.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """List tasks in queue order: highest priority first, then oldest first."""
    if dead and status and set(status) != {TaskStatus.DEAD}:
        raise DeadFlagError("--dead lists the dead-letter list: leave out --status")
    godel = client(ctx)
    filters: dict[str, Any] = {
        "status": [s.value for s in status] if status and not dead else None,
        "dead": True if dead else None,
        "limit": limit,
    }
    filters["agent_id"], filters["team_id"] = target(ctx, agent, team, required=False)
    if all_pages:
        page: dict[str, Any] = {
            "items": list(iter_tasks(godel, **filters)),
            "pagination": {"limit": limit, "cursor": None, "hasMore": False},
        }
    else:
        page = godel.list_tasks(**filters)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    print_table(TASK_COLUMNS, page.get("items", []), title="dead-letter list" if dead and output.is_tty() else None)
    if page.get("pagination", {}).get("hasMore") and output.is_tty():
        typer.echo("(more tasks: use --all or a larger --limit)", err=True)


@app.command("show")
def show(ctx: typer.Context, ref: TaskRef, json_out: JsonFlag = False) -> None:
    """Show one task and the history of its attempts."""
    task = client(ctx).get_task(resolve(ctx, "task", ref))
    if wants_json(ctx, json_out):
        print_json(task)
        return
    print_record([(name, task.get(name)) for name in SHOWN])
    if task.get("description"):
        typer.echo("")
        typer.echo(task["description"])
    typer.echo("")
    if task.get("history"):
        print_table(HISTORY_COLUMNS, task["history"], title="attempts" if output.is_tty() else None)
    else:
        print_line("no attempts yet", style="dim")


@app.command("assign")
def assign(
    ctx: typer.Context, ref: TaskRef, agent: AgentOpt = None, team: TeamOpt = None, json_out: JsonFlag = False
) -> None:
    """Assign a pending task to an agent or a team (or a team's task to one agent)."""
    agent_ref, team_ref = target(ctx, agent, team, required=True)
    assigned = client(ctx).assign_task(resolve(ctx, "task", ref), agent_id=agent_ref, team_id=team_ref)
    show_task(ctx, assigned, json_out, "assigned")


@app.command("claim")
def claim(ctx: typer.Context, agent: AgentOpt = None, team: TeamOpt = None, json_out: JsonFlag = False) -> None:
    """Take the next task for an agent or a team (exit 0 and "no task to claim" when the queue has none)."""
    agent_ref, team_ref = target(ctx, agent, team, required=True)
    show_task(ctx, client(ctx).claim_task(agent_id=agent_ref, team_id=team_ref), json_out, "claimed")


@app.command("run")
def run(
    ctx: typer.Context,
    ref: TaskRef,
    repo: Annotated[Path, typer.Option("--repo", help="The git repository the agent works in.")],
    kind: Annotated[str | None, typer.Option("--agent", help="Agent kind (default: command).")] = None,
    command: Annotated[str | None, typer.Option("--command", help="Shell command (agent kind 'command').")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Ref to branch from (default: HEAD).")] = None,
    label: Annotated[str | None, typer.Option("--label")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds per attempt.")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Spawn an agent for a pending task: its task is the task's title and description, it holds the task, and
    the task completes or fails with it."""
    spawned = client(ctx).spawn_for_task(
        resolve(ctx, "task", ref),
        # The server may see the filesystem from another cwd: send an absolute path.
        repo=str(repo.expanduser().resolve()),
        agent=kind, command=command, model=model, base_ref=base, label=label, timeout=timeout,
        max_retries=max_retries, env=parse_env(env),
    )  # fmt: skip
    if wants_json(ctx, json_out):
        print_json(spawned)
        return
    print_agent_created(spawned["agent"], f"task {spawned['task']['id']} taken by")


@app.command("complete")
def complete(
    ctx: typer.Context,
    ref: TaskRef,
    result: Annotated[str | None, typer.Option("--result", metavar="JSON", help="The result, a JSON object.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Complete an assigned task."""
    value = parse_result(result)
    show_task(ctx, client(ctx).complete_task(resolve(ctx, "task", ref), value), json_out, "completed")


@app.command("fail")
def fail(
    ctx: typer.Context,
    ref: TaskRef,
    error: Annotated[str, typer.Option("--error", metavar="MSG", help="What went wrong.")],
    no_retry: Annotated[bool, typer.Option("--no-retry", help="Failed for good: no requeue.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Fail an assigned task: requeued while attempts remain, else to the dead-letter list."""
    task = client(ctx).fail_task(resolve(ctx, "task", ref), error, retry=False if no_retry else None)
    show_task(ctx, task, json_out, "failed")


@app.command("retry")
def retry(ctx: typer.Context, ref: TaskRef, json_out: JsonFlag = False) -> None:
    """Requeue a dead (or failed) task with a fresh count of attempts."""
    show_task(ctx, client(ctx).retry_task(resolve(ctx, "task", ref)), json_out, "requeued")


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    ref: TaskRef,
    reason: Annotated[str | None, typer.Option("--reason", help="Why.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Cancel a pending or assigned task (it ends failed, not in the dead-letter list)."""
    show_task(ctx, client(ctx).cancel_task(resolve(ctx, "task", ref), reason), json_out, "cancelled")


@app.command("rm")
def remove(
    ctx: typer.Context,
    ref: TaskRef,
    force: Annotated[bool, typer.Option("--force", help="Also when it is assigned.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete a task (its events stay in the log)."""
    result = client(ctx).delete_task(resolve(ctx, "task", ref), force=force)
    if wants_json(ctx, json_out):
        print_json(result)
    elif output.is_tty():
        print_line(f"deleted task {result.get('id')}")
    else:
        print_line(str(result.get("id")))
