"""``godel events list|tail``: the durable event log, read back or followed live."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from godel.cli.context import JsonFlag, agent_id, client, wants_json
from godel.cli.output import Column, cell, console, is_tty, print_json, print_json_line, print_table

app = typer.Typer(no_args_is_help=True, help="Read and follow the event log.")

EVENT_COLUMNS = (
    Column("SEQ", "sequence"),
    Column("TIME", "timestamp", "ms"),
    Column("TYPE", "type"),
    Column("AGENT", lambda e: (e.get("metadata") or {}).get("agentId"), "id"),
    Column("PAYLOAD", "payload", max_width=80),
)

AgentFilter = Annotated[str | None, typer.Option("--agent", help="Only this agent's events (id or prefix).")]
Since = Annotated[int | None, typer.Option("--since", help="Only events after this sequence number.")]


def _agent(ctx: typer.Context, ref: str | None) -> str | None:
    return agent_id(ctx, ref) if ref else None


@app.command("list")
def list_events(
    ctx: typer.Context,
    types: Annotated[list[str] | None, typer.Option("--type", "-t", help="Type pattern, e.g. 'agent:*'.")] = None,
    agent: AgentFilter = None,
    team: Annotated[str | None, typer.Option("--team")] = None,
    since: Since = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many (default: 100).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List recorded events in sequence order."""
    page = client(ctx).events(type=types, agent_id=_agent(ctx, agent), team_id=team, since=since, limit=limit)
    if wants_json(ctx, json_out):
        print_json(page)
    else:
        print_table(EVENT_COLUMNS, page.get("items", []))


@app.command()
def tail(
    ctx: typer.Context,
    patterns: Annotated[
        list[str] | None, typer.Option("--pattern", "-p", help="Type pattern, repeatable (default: *).")
    ] = None,
    agent: AgentFilter = None,
    since: Since = None,
    json_out: JsonFlag = False,
) -> None:
    """Print events as they happen, one per line, until Ctrl-C (--json: one JSON object per line)."""
    as_json = wants_json(ctx, json_out)
    stream = client(ctx).stream_events(patterns or ["*"], agent_id=_agent(ctx, agent), since=since)
    try:
        for event in stream:
            print_json_line(event) if as_json else print_event(event)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops tailing: not an error


def print_event(event: dict[str, Any]) -> None:
    tty = is_tty()
    fields = [cell(c.value(event), c.kind, tty) for c in EVENT_COLUMNS[:-1]]
    payload = json.dumps(event.get("payload") or {}, separators=(",", ":"))
    if not tty:
        typer.echo("\t".join([*fields, cell(payload, "text", False)]))
        return
    seq, _, kind, agent = (escape(f) for f in fields)
    # Live, the wall-clock time says more than "0s ago".
    ms = event.get("timestamp")
    at = datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3] if isinstance(ms, int | float) else "-"
    line = f"[dim]{seq:>6} {at}[/] [bold]{kind}[/] [cyan]{agent}[/] {escape(payload)}"
    console().print(line, overflow="ellipsis", no_wrap=True)
