"""``godel agent logs|diff|snapshot|snapshots|restore|fork``: what an agent wrote, and going back to it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from godel.cli.agents import AgentRef, app, print_agent_created, print_agent_state
from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.ids import resolve
from godel.cli.output import Column, is_tty, print_diff, print_json, print_json_line, print_line, print_table

SNAPSHOT_COLUMNS = (
    Column("ID", "id"),  # snapshot ids are short already, and needed whole by `restore`
    Column("LABEL", "label", max_width=30),
    Column("COMMIT", lambda s: (s.get("commit") or "")[:12] if is_tty() else s.get("commit")),
    Column("CREATED", "createdAt", "time"),
)


class Stream(StrEnum):
    stdout = "stdout"
    stderr = "stderr"


@app.command()
def logs(
    ctx: typer.Context,
    ref: AgentRef,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the agent ends.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Lines from the end (default: 100).")] = None,
    stream: Annotated[Stream | None, typer.Option("--stream")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print an agent's output (-f: follow it; --json with -f prints one JSON object per line)."""
    godel = client(ctx)
    full_id = resolve(ctx, "agent", ref)
    as_json = wants_json(ctx, json_out)
    which = stream.value if stream else None
    if not follow:
        page = godel.logs(full_id, tail=tail, stream=which)
        if as_json:
            print_json(page)
            return
        for item in page.get("items", []):
            _print_log(item)
        return
    try:
        for item in godel.follow_logs(full_id, tail=tail, stream=which):
            print_json_line(item) if as_json else _print_log(item)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following: not an error


def _print_log(item: dict[str, object]) -> None:
    print_line(str(item.get("line", "")), style="red" if item.get("stream") == "stderr" else None)


@app.command()
def diff(ctx: typer.Context, ref: AgentRef, json_out: JsonFlag = False) -> None:
    """Print what the agent changed against its base commit (a git diff)."""
    data = client(ctx).diff(resolve(ctx, "agent", ref))
    if wants_json(ctx, json_out):
        print_json(data)
    else:
        print_diff(str(data.get("diff") or ""))


@app.command("snapshot")
def take_snapshot(
    ctx: typer.Context,
    ref: AgentRef,
    label: Annotated[str | None, typer.Option("--label")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Record the agent's whole working tree now, to restore or fork from later."""
    snap = client(ctx).snapshot(resolve(ctx, "agent", ref), label=label)
    if wants_json(ctx, json_out):
        print_json(snap)
    elif is_tty():
        print_line(f"snapshot {snap['id']} of agent {snap.get('agentId')} at {str(snap.get('commit'))[:12]}")
    else:
        print_line(snap["id"])


@app.command()
def snapshots(ctx: typer.Context, ref: AgentRef, json_out: JsonFlag = False) -> None:
    """List an agent's snapshots."""
    data = client(ctx).snapshots(resolve(ctx, "agent", ref))
    if wants_json(ctx, json_out):
        print_json(data)
    else:
        print_table(SNAPSHOT_COLUMNS, data.get("items", []))


@app.command()
def restore(
    ctx: typer.Context,
    ref: AgentRef,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", help="Snapshot id.")],
    json_out: JsonFlag = False,
) -> None:
    """Put the agent's working tree back to a snapshot."""
    agent = client(ctx).restore(resolve(ctx, "agent", ref), snapshot)
    if wants_json(ctx, json_out):
        print_json(agent)
    else:
        print_agent_state(agent)


@app.command()
def fork(
    ctx: typer.Context,
    ref: AgentRef,
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="Start from this snapshot (default: one taken now).")
    ] = None,
    task: Annotated[str | None, typer.Option("--task")] = None,
    label: Annotated[str | None, typer.Option("--label")] = None,
    command: Annotated[str | None, typer.Option("--command")] = None,
    kind: Annotated[str | None, typer.Option("--agent", help="Run the fork with another agent kind.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="PROVIDER/MODEL for the fork.")] = None,
    at: Annotated[
        int | None,
        typer.Option("--at", min=0, help="Session point: hand the fork the first N transcript entries as context."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Spawn a new agent whose workspace starts from a snapshot of this one (and, with --at, its conversation)."""
    agent = client(ctx).fork(
        resolve(ctx, "agent", ref), snapshot_id=snapshot, task=task, label=label, command=command, agent=kind,
        model=model, session_point=at,
    )  # fmt: skip
    if wants_json(ctx, json_out):
        print_json(agent)
    else:
        print_agent_created(agent, "forked")
