"""``godel agent …``: spawn, list, inspect and control agents.

Workspace commands (logs, diff, snapshots, fork) live in ``cli/workspace.py`` on the same ``app``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.ids import resolve, resolve_optional
from godel.cli.output import Column, is_tty, print_json, print_line, print_record, print_table
from godel.core.cleanup import CleanupPolicy
from godel.core.states import AgentStatus

app = typer.Typer(no_args_is_help=True, help="Spawn, inspect and control agents.")

AgentRef = Annotated[str, typer.Argument(metavar="ID", help="Agent id (or a unique prefix of one).")]
Reason = Annotated[str | None, typer.Option("--reason", help="Recorded with the transition.")]

AGENT_COLUMNS = (
    Column("ID", "id", "id"),
    Column("STATUS", "status"),
    Column("LABEL", "label", max_width=24),
    Column("KIND", "kind"),
    Column("SPAWNED", "spawnedAt", "time"),
    Column("TASK", "task", max_width=60),
)
TRANSITION_COLUMNS = (
    Column("AT", "at", "time"),
    Column("FROM", "fromState"),
    Column("TO", "toState"),
    Column("TRIGGER", "trigger"),
    Column("ACTOR", "actor"),
    Column("REASON", "reason", max_width=60),
)
SHOWN_FIELDS = (
    "id", "label", "status", "state", "kind", "model", "task", "repo", "baseRef", "baseCommit", "branch",
    "worktree", "priority", "timeout", "cleanup", "pid", "exitCode", "retryCount", "maxRetries", "lastError",
    "spawnedAt", "startedAt", "completedAt", "runtime", "teamId",
)  # fmt: skip


def parse_env(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--env")
        env[key] = value
    return env


def print_agent_created(agent: dict[str, Any], verb: str) -> None:
    if not is_tty():
        print_line(agent["id"])  # so that ID=$(godel agent spawn …) works
        return
    print_line(f"{verb} agent {agent['id']} ({agent.get('status')})", style="bold")
    print_line(f"follow it with: godel agent logs -f {agent['id']}", style="dim")


def _entry_line(entry: dict[str, Any], width: int) -> str:
    kind = entry.get("kind")
    if kind == "message":
        head, body = entry.get("role", "assistant"), str(entry.get("text", ""))
    elif kind == "tool_call":
        head, body = f"tool {entry.get('name')}", json.dumps(entry.get("input"), ensure_ascii=False)
    else:
        head, body = "error" if entry.get("isError") else "result", str(entry.get("output", ""))
    body = " ".join(body.split())
    return f"  {head:>10}  {body[:width] + ('…' if len(body) > width else '')}"


def print_session(session: dict[str, Any]) -> None:
    """One run's conversation, one line per message, tool call and result (clipped in a terminal)."""
    usage = session.get("usage") or {}
    tokens = f"{usage.get('inputTokens', 0)} in / {usage.get('outputTokens', 0)} out" if usage else "no usage"
    cost = f", ${usage['costUsd']:.4f}" if usage.get("costUsd") else ""
    print_line(
        f"session {session['id']} ({session.get('status')}, {session.get('model') or 'no model'}, {tokens}{cost})",
        style="bold",
    )
    width = 100 if is_tty() else 10_000
    for entry in session.get("messages", []):
        print_line(_entry_line(entry, width))
    if session.get("outcome"):
        print_line(f"  {'outcome':>10}  {session['outcome']}", style="dim")


def print_agent_state(agent: dict[str, Any]) -> None:
    if is_tty():
        print_line(f"agent {agent['id']} is {agent.get('status')} ({agent.get('state')})")
    else:
        print_line(f"{agent['id']}\t{agent.get('status')}")


@app.command()
def spawn(
    ctx: typer.Context,
    task: Annotated[
        str, typer.Argument(metavar="TASK", help="What the agent should do (GODEL_TASK in its environment).")
    ],
    repo: Annotated[Path, typer.Option("--repo", help="The git repository to work in.")],
    base: Annotated[str | None, typer.Option("--base", help="Ref to branch from (default: HEAD).")] = None,
    label: Annotated[str | None, typer.Option("--label")] = None,
    command: Annotated[str | None, typer.Option("--command", help="Shell command (agent kind 'command').")] = None,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds per attempt.")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries")] = None,
    cleanup: Annotated[CleanupPolicy | None, typer.Option("--cleanup")] = None,
    setup: Annotated[str | None, typer.Option("--setup", help="Shell command run in the workspace first.")] = None,
    kind: Annotated[str | None, typer.Option("--agent", help="Agent kind (default: command).")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable.")] = None,
    team: Annotated[str | None, typer.Option("--team")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Spawn an agent in its own worktree of REPO."""
    agent = client(ctx).spawn_agent(
        task=task,
        # The server may run elsewhere in the filesystem's eyes (another cwd): send an absolute path.
        repo=str(repo.expanduser().resolve()),
        base_ref=base,
        label=label,
        command=command,
        priority=priority,
        timeout=timeout,
        max_retries=max_retries,
        cleanup=cleanup.value if cleanup else None,
        setup=setup,
        agent=kind,
        model=model,
        env=parse_env(env),
        team_id=resolve_optional(ctx, "team", team),
    )
    if wants_json(ctx, json_out):
        print_json(agent)
    else:
        print_agent_created(agent, "spawned")


@app.command("list")
def list_agents(
    ctx: typer.Context,
    status: Annotated[AgentStatus | None, typer.Option("--status")] = None,
    team: Annotated[str | None, typer.Option("--team")] = None,
    label: Annotated[str | None, typer.Option("--label")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Page size (1-500).")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursor through every page.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """List agents, newest first."""
    godel = client(ctx)
    filters: dict[str, Any] = {"status": status.value if status else None, "label": label, "model": model}
    filters |= {"team_id": resolve_optional(ctx, "team", team), "limit": limit}
    if all_pages:
        # Several pages have no single payload; print them as one page that has no more after it.
        items = list(godel.iter_agents(**filters))
        page: dict[str, Any] = {
            "items": items,
            "pagination": {"limit": limit, "cursor": None, "hasMore": False},
        }
    else:
        page = godel.list_agents(**filters)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    print_table(AGENT_COLUMNS, page["items"])
    if page.get("pagination", {}).get("hasMore") and is_tty():
        typer.echo("(more agents: use --all or a larger --limit)", err=True)


@app.command()
def show(ctx: typer.Context, ref: AgentRef, json_out: JsonFlag = False) -> None:
    """Show one agent and its state transitions (--json: the agent object only)."""
    godel = client(ctx)
    agent = godel.get_agent(resolve(ctx, "agent", ref))
    if wants_json(ctx, json_out):
        print_json(agent)
        return
    print_record([(name, agent.get(name)) for name in SHOWN_FIELDS])
    typer.echo("")
    print_table(TRANSITION_COLUMNS, godel.transitions(agent["id"]).get("items", []), title="transitions")
    for session in godel.sessions(agent["id"]).get("items", []):
        typer.echo("")
        print_session(session)


def _control(ctx: typer.Context, action: str, ref: str, reason: str | None, json_out: bool) -> None:
    godel = client(ctx)
    control = {"kill": godel.kill, "pause": godel.pause, "resume": godel.resume, "restart": godel.restart}
    agent = control[action](resolve(ctx, "agent", ref), reason)
    if wants_json(ctx, json_out):
        print_json(agent)
    else:
        print_agent_state(agent)


@app.command()
def kill(ctx: typer.Context, ref: AgentRef, reason: Reason = None, json_out: JsonFlag = False) -> None:
    """Stop an agent for good (its process tree gets SIGTERM, then SIGKILL)."""
    _control(ctx, "kill", ref, reason, json_out)


@app.command()
def pause(ctx: typer.Context, ref: AgentRef, reason: Reason = None, json_out: JsonFlag = False) -> None:
    """Freeze a running agent's process tree."""
    _control(ctx, "pause", ref, reason, json_out)


@app.command()
def resume(
    ctx: typer.Context,
    ref: AgentRef,
    message: Annotated[
        str | None,
        typer.Argument(metavar="[MESSAGE]", help="A follow-up: continue the ended agent's CLI session with it."),
    ] = None,
    reason: Reason = None,
    json_out: JsonFlag = False,
) -> None:
    """Continue a paused agent, or, given a MESSAGE, continue an ended agent's conversation where it stopped."""
    if message is None:
        _control(ctx, "resume", ref, reason, json_out)
        return
    agent = client(ctx).resume(resolve(ctx, "agent", ref), reason, message=message)
    if wants_json(ctx, json_out):
        print_json(agent)
    else:
        print_agent_state(agent)


@app.command()
def restart(ctx: typer.Context, ref: AgentRef, reason: Reason = None, json_out: JsonFlag = False) -> None:
    """Start a new attempt of an agent."""
    _control(ctx, "restart", ref, reason, json_out)


@app.command("rm")
def remove(
    ctx: typer.Context,
    ref: AgentRef,
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill it first if it is still live.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete an agent's record."""
    result = client(ctx).delete_agent(resolve(ctx, "agent", ref), force=force)
    if wants_json(ctx, json_out):
        print_json(result)
    elif is_tty():
        print_line(f"deleted agent {result.get('id')}")
    else:
        print_line(str(result.get("id")))
