"""``godel events list|tail``: the durable event log, read back or followed live."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.ids import resolve_optional
from godel.cli.output import Column, cell, console, is_tty, print_json, print_json_line, print_table

if TYPE_CHECKING:
    from godel.client import GodelClient

RECENT = 20  # past events `tail` starts with: enough to see what just happened, on one screen
SCAN_PAGE = 1000  # the API's largest page

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
    page = client(ctx).events(
        type=types,
        agent_id=resolve_optional(ctx, "agent", agent),
        team_id=resolve_optional(ctx, "team", team),
        since=since,
        limit=limit,
    )
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
    last: Annotated[
        int, typer.Option("--last", "-n", min=0, help="Start with this many past events (0: only new ones).")
    ] = RECENT,
    since: Annotated[
        int | None, typer.Option("--since", help="Start after this sequence number instead (overrides -n).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print the last events (-n, default 20), then each new one as it happens, until Ctrl-C (--json: one JSON
    object per line)."""
    as_json = wants_json(ctx, json_out)
    godel = client(ctx)
    kinds = patterns or ["*"]
    agent_id = resolve_optional(ctx, "agent", agent)
    past: list[dict[str, Any]] = []
    if since is None and last > 0:
        past, since = recent(godel, last, kinds, agent_id)
    try:
        for event in past:
            print_json_line(event) if as_json else print_event(event)
        for event in godel.stream_events(kinds, agent_id=agent_id, since=since):
            print_json_line(event) if as_json else print_event(event)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops tailing: not an error


def recent(godel: GodelClient, n: int, kinds: list[str], agent_id: str | None) -> tuple[list[dict[str, Any]], int]:
    """The last ``n`` events that match (oldest first) and the sequence to follow from: every matching event after
    it is new, none before it is missed.

    The API lists events forward from a sequence. With the log's last sequence (``/health/detailed``, for callers
    who may read the whole node), windows before it are read, each 8 times the last, until ``n`` match; without
    it the log is read forward to its end, keeping the last ``n``."""
    position = (godel.health_detailed().get("store") or {}).get("lastSequence")
    if isinstance(position, int):
        window = max(4 * n, 200)
        while True:
            start = max(position - window, 0)
            found = [e for e in _scan(godel, start, kinds, agent_id) if e["sequence"] <= position]
            if len(found) >= n or start == 0:
                return found[-n:], position
            window *= 8
    kept: deque[dict[str, Any]] = deque(maxlen=n)
    scanned = 0
    for event in _scan(godel, 0, kinds, agent_id):
        kept.append(event)
        scanned = max(scanned, event["sequence"])
    return list(kept), scanned


def _scan(godel: GodelClient, since: int, kinds: list[str], agent_id: str | None) -> Iterator[dict[str, Any]]:
    """Matching events after ``since``, in order, to the end of the log as it is now."""
    cursor: int | None = since
    while cursor is not None:
        page = godel.events(type=kinds, agent_id=agent_id, since=cursor, limit=SCAN_PAGE)
        yield from page.get("items", [])
        pagination = page.get("pagination") or {}
        cursor = int(pagination["cursor"]) if pagination.get("hasMore") and pagination.get("cursor") else None


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
