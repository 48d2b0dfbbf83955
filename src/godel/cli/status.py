"""``godel status``: is the server healthy, and what are its agents doing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.output import Column, print_json, print_table, render_warning

STATUS_COLUMNS = (Column("CHECK", "check"), Column("VALUE", "value", max_width=80))


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested health documents as dotted ``(key, leaf)`` pairs, so any shape prints as two columns."""
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        # Lists of named parts (background tasks, nodes) read better keyed by name than by position.
        for index, item in enumerate(value):
            rest = {k: v for k, v in item.items() if k != "name"}
            yield from flatten(rest, f"{prefix}.{item.get('name', index)}")
    else:
        yield prefix, value


def status(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Show the server's detailed health, including agent counts by status."""
    godel = client(ctx)
    detailed = godel.health_detailed()
    if wants_json(ctx, json_out):
        print_json(detailed)
        return
    isolation = detailed.get("isolation") if isinstance(detailed, dict) else None
    if isinstance(isolation, dict) and isolation.get("warning"):
        render_warning(str(isolation["warning"]))
    rows = [{"check": "url", "value": godel.base_url}]
    rows += [{"check": key, "value": value} for key, value in flatten(detailed)]
    print_table(STATUS_COLUMNS, rows)
