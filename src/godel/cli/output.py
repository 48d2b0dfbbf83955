"""How the CLI prints: one decision, three forms.

``--json`` prints the API's ``data`` exactly (indented) and nothing else. Otherwise a terminal gets Rich
tables (ids shortened, times as ages) and a pipe gets plain text: tab-separated rows under one header line,
full ids, raw ISO times, no ANSI codes and no box drawing, so ``cut``/``awk``/``grep`` work.

Rich is imported by the terminal forms only: a pipe, ``--json`` and errors print with ``typer.echo``, so a scripted
``godel`` call does not pay for Rich (``benchmarks/cli.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import typer

from godel.errors import GodelError, ServerNotRunningError

if TYPE_CHECKING:
    from rich.console import Console

Kind = Literal["text", "id", "time", "ms"]
SHORT_ID = 8


def is_tty() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    from rich.console import Console

    # Built per use so it writes to whatever sys.stdout is now (CliRunner swaps it).
    return Console(highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def print_json_line(data: Any) -> None:
    """One event per line for streams, where there is no single payload to print."""
    typer.echo(json.dumps(data, separators=(",", ":")))


def print_line(text: str, *, style: str | None = None) -> None:
    if style and is_tty():
        from rich.markup import escape

        console().print(escape(text), style=style)
    else:
        typer.echo(text)


@dataclass(frozen=True)
class Column:
    header: str
    key: str | Callable[[Mapping[str, Any]], Any]
    kind: Kind = "text"
    max_width: int | None = None  # in a terminal only; a pipe gets the whole value

    def value(self, row: Mapping[str, Any]) -> Any:
        return self.key(row) if callable(self.key) else row.get(self.key)


def cell(value: Any, kind: Kind, tty: bool) -> str:
    if value is None or value == "":
        return "-" if tty else ""
    if kind == "ms" and isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000, tz=UTC).isoformat(timespec="milliseconds")
    if kind == "id" and tty:
        return str(value)[:SHORT_ID]
    if kind in ("time", "ms") and tty:
        return age(str(value))
    if isinstance(value, float) and tty:
        return f"{value:.2f}"
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    # A tab or newline inside a value would break the row structure of piped output.
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def age(iso: str, now: datetime | None = None) -> str:
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def print_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], *, title: str | None = None) -> None:
    tty = is_tty()
    if not tty:
        typer.echo("\t".join(c.header for c in columns))
        for row in rows:
            typer.echo("\t".join(cell(c.value(row), c.kind, False) for c in columns))
        return
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out = console()
    cells = [[cell(c.value(row), c.kind, True) for c in columns] for row in rows]
    natural = [max([len(c.header), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    # One line per row, always. Ids, states and times keep their width; only the columns that have a
    # max_width (free text) share what is left of the terminal, and end in "…" when cut.
    flexible = [c.max_width is not None for c in columns]
    fixed = sum(w for w, flex in zip(natural, flexible, strict=True) if not flex) + 3 * (len(columns) - 1)
    share = max((out.width - fixed) // max(sum(flexible), 1), 8)
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
    for c, width in zip(columns, natural, strict=True):
        limit = min(c.max_width, share) if c.max_width is not None else None
        table.add_column(
            c.header, no_wrap=True, overflow="ellipsis", max_width=limit, min_width=None if limit else width
        )
    for r in cells:
        table.add_row(*(escape(text) for text in r))
    out.print(table)


def print_record(pairs: Sequence[tuple[str, Any]]) -> None:
    """One object as ``key<TAB>value`` lines (piped) or an aligned key/value grid (terminal)."""
    if not is_tty():
        for key, value in pairs:
            typer.echo(f"{key}\t{cell(value, 'text', False)}")
        return
    from rich.markup import escape
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in pairs:
        grid.add_row(key, escape(cell(value, "text", True)))
    console().print(grid)


def print_diff(text: str) -> None:
    if not is_tty():
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if not text.strip():
        console().print("(no changes)", style="dim")
        return
    from rich.syntax import Syntax

    console().print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))


def render_warning(text: str) -> None:
    """``WARNING: <text>`` on stderr, bold red on a terminal: something the user must not miss."""
    if is_tty():
        from rich.console import Console

        Console(stderr=True).print(f"WARNING: {text}", style="bold red", markup=False, highlight=False)
    else:
        typer.echo(f"WARNING: {text}", err=True)


def render_error(exc: GodelError) -> None:
    """``error: <message> (<CODE>)`` on stderr, then one line per offending field."""
    if isinstance(exc, ServerNotRunningError):
        # Its message already says what to do; a code would only add noise.
        typer.echo(f"error: {exc.message}", err=True)
        return
    typer.echo(f"error: {exc.message} ({exc.code})", err=True)
    for field in getattr(exc, "fields", []):
        typer.echo(f"  {field.field}: {field.message}", err=True)
    request_id = getattr(exc, "request_id", None)
    if request_id and exc.status_code >= 500:
        typer.echo(f"  request id: {request_id}", err=True)
