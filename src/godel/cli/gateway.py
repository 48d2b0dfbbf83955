"""``godel key …``, ``godel budget …`` and ``godel usage``: the gateway's virtual keys, spending limits and spend.

A scope is one of ``--agent ID`` (a full id or a unique prefix), ``--team ID`` or ``--user NAME``. Times given
as ``30m``, ``24h`` or ``7d`` are that long ago, sent as ISO 8601 UTC; an ISO time without an offset is UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from godel.cli import output
from godel.cli.context import JsonFlag, client, wants_json
from godel.cli.ids import is_full_id, resolve
from godel.cli.output import SHORT_ID, Column, print_json, print_line, print_record, print_table

key_app = typer.Typer(
    no_args_is_help=True,
    help="Create, list and revoke the gateway's virtual keys (for calling models; keys for Godel's own API: "
    "godel user key).",
)
budget_app = typer.Typer(no_args_is_help=True, help="Set, show and remove USD spending limits.")


class UsageBy(StrEnum):
    agent = "agent"
    team = "team"
    user = "user"
    model = "model"
    day = "day"


class Period(StrEnum):
    daily = "daily"
    monthly = "monthly"
    total = "total"


AgentScope = Annotated[str | None, typer.Option("--agent", metavar="ID", help="An agent (id or unique prefix).")]
TeamScope = Annotated[str | None, typer.Option("--team", metavar="ID", help="A team.")]
UserScope = Annotated[str | None, typer.Option("--user", metavar="NAME", help="A user.")]
SCOPE_OPTIONS = "--agent ID, --team ID or --user NAME"

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)


class ScopeError(typer.BadParameter):
    """A usage error (exit 2) about several options at once, so it names none of them as "the" bad one."""

    def format_message(self) -> str:
        return self.message


# Parsing what the user typed


def parse_duration(text: str, *, bare_seconds: bool) -> float | None:
    """Seconds in ``90``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w``; ``None`` when it is not one (a bare
    number counts only with ``bare_seconds``)."""
    match = DURATION.fullmatch(text.strip())
    if match is None or (not match.group(2) and not bare_seconds):
        return None
    return float(match.group(1)) * UNIT_SECONDS[match.group(2).lower() or "s"]


def parse_expires(text: str) -> float:
    seconds = parse_duration(text, bare_seconds=True)
    if seconds is None or seconds <= 0:
        raise typer.BadParameter(
            f"expected a duration such as 30m, 12h, 7d or a number of seconds, got {text!r}", param_hint="--expires"
        )
    return int(seconds) if seconds.is_integer() else seconds


def parse_time(text: str, option: str, now: datetime | None = None) -> str:
    """``24h``/``7d``/``30m`` ago or an ISO 8601 time, as ISO 8601 UTC (``…Z``)."""
    seconds = parse_duration(text, bare_seconds=False)
    if seconds is not None:
        at = (now or datetime.now(UTC)).replace(microsecond=0) - timedelta(seconds=seconds)
    else:
        try:
            at = datetime.fromisoformat(text.strip())
        except ValueError:
            raise typer.BadParameter(
                f"expected a time such as 30m, 24h or 7d (that long ago) or an ISO 8601 time, got {text!r}",
                param_hint=option,
            ) from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_models(values: list[str] | None) -> list[str] | None:
    """``--models a/b,c/d`` (repeatable) as a list; not given: ``None`` (every configured model)."""
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def scope_of(ctx: typer.Context, agent: str | None, team: str | None, user: str | None) -> tuple[str, str] | None:
    """``(scope, id)`` of the one scope option given, ``None`` for none; more than one is a usage error."""
    given = [(name, value) for name, value in (("agent", agent), ("team", team), ("user", user)) if value is not None]
    if len(given) > 1:
        names = " and ".join(f"--{name}" for name, _ in given)
        raise ScopeError(f"{names} exclude each other: give one of {SCOPE_OPTIONS}")
    if not given:
        return None
    name, value = given[0]
    if not value.strip():
        raise typer.BadParameter("must not be empty", param_hint=f"--{name}")
    # A team scope is kept as given: the server takes any team id there (a key or a budget may come first).
    return name, resolve(ctx, "agent", value) if name == "agent" else value


def required_scope(ctx: typer.Context, agent: str | None, team: str | None, user: str | None) -> tuple[str, str]:
    scope = scope_of(ctx, agent, team, user)
    if scope is None:
        raise ScopeError(f"missing scope: give one of {SCOPE_OPTIONS}")
    return scope


# Formatting


def short(value: Any, tty: bool) -> Any:
    """A uuid shortened in a terminal, like the other tables' ids; names, models and days as they are."""
    return str(value)[:SHORT_ID] if tty and isinstance(value, str) and is_full_id(value) else value


def scope_label(scope: Any, scope_id: Any, tty: bool) -> str | None:
    return f"{scope}:{short(scope_id, tty)}" if scope else None


def moment(iso: Any, tty: bool, *, missing: str | None = None, now: datetime | None = None) -> str | None:
    """Piped: the ISO time as given. Terminal: ``3d ago`` or ``in 7d``; ``missing`` when there is none."""
    if not iso:
        return missing if tty else None
    if not tty:
        return str(iso)
    try:
        then = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    current = now or datetime.now(UTC)
    ahead = int(((then if then.tzinfo else then.replace(tzinfo=UTC)) - current).total_seconds())
    if ahead <= 0:
        return output.age(str(iso), current)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if ahead >= size:
            return f"in {ahead // size}{unit}"
    return f"in {ahead}s"


def usd(value: Any) -> str | None:
    return f"{value:.4f}" if isinstance(value, int | float) else None


def models_label(models: Any) -> str:
    return ",".join(models) if models else "*"  # none listed: every configured model


def key_columns(tty: bool) -> tuple[Column, ...]:
    return (
        Column("ID", "id", "id"),
        Column("PREFIX", "prefix"),
        Column("SCOPE", lambda k: scope_label(k.get("scopeType"), k.get("scopeId"), tty)),
        Column("MODELS", lambda k: models_label(k.get("models")), max_width=48),
        Column("EXPIRES", lambda k: moment(k.get("expiresAt"), tty, missing="never")),
        Column("REVOKED", "revokedAt", "time"),
        Column("CREATED", "createdAt", "time"),
    )


def usage_columns(tty: bool) -> tuple[Column, ...]:
    return (
        Column("KEY", lambda u: short(u.get("key"), tty), max_width=48),
        Column("REQUESTS", "requests"),
        Column("IN", "inputTokens"),
        Column("OUT", "outputTokens"),
        Column("CACHED", "cachedTokens"),
        Column("COST", lambda u: usd(u.get("costUsd"))),
    )


def budget_columns(tty: bool) -> tuple[Column, ...]:
    return (
        Column("SCOPE", lambda b: scope_label(b.get("scope"), b.get("scopeId"), tty), max_width=48),
        Column("ID", "id", "id"),
        Column("PERIOD", "period"),
        Column("LIMIT", lambda b: usd(b.get("limitUsd"))),
        Column("SPENT", lambda b: usd(b.get("spentUsd"))),
        Column("REMAINING", lambda b: usd(b.get("remainingUsd"))),
        Column("PERIOD END", lambda b: moment(b.get("periodEnd"), tty)),
    )


def usage_total(items: list[dict[str, Any]]) -> dict[str, Any]:
    costs = [item["costUsd"] for item in items if isinstance(item.get("costUsd"), int | float)]
    total: dict[str, Any] = {"key": "TOTAL", "costUsd": sum(costs) if costs else None}
    for name in ("requests", "inputTokens", "outputTokens", "cachedTokens"):
        total[name] = sum(int(item.get(name) or 0) for item in items)
    return total


def print_id(verb: str, what: str, record: Mapping[str, Any]) -> None:
    """The id alone when piped (so ``ID=$(godel …)`` works), a sentence in a terminal."""
    if output.is_tty():
        print_line(f"{verb} {what} {record.get('id')}")
    else:
        print_line(str(record.get("id")))


# godel key …


@key_app.command("create")
def create_key(
    ctx: typer.Context,
    agent: AgentScope = None,
    team: TeamScope = None,
    user: UserScope = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--models", metavar="P/M,…", help="Allowed provider/model names, comma-separated (default: all)."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", metavar="DURATION", help="30m, 12h, 7d or seconds (default: never).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a virtual key for one agent, team or user. Its text is shown this once (piped: the text alone)."""
    expires_in = parse_expires(expires) if expires is not None else None
    scope, scope_id = required_scope(ctx, agent, team, user)
    key = client(ctx).create_key(scope, scope_id, models=parse_models(models), expires_in=expires_in)
    if wants_json(ctx, json_out):
        print_json(key)
        return
    if not output.is_tty():
        print_line(str(key["key"]))  # so that KEY=$(godel key create …) works
        return
    print_line(str(key["key"]), style="bold green")
    print_line("This is the only time this key is shown: store it now, it cannot be retrieved again.", style="yellow")
    typer.echo("")
    print_record(
        [
            ("id", key.get("id")),
            ("prefix", key.get("prefix")),
            ("scope", scope_label(key.get("scopeType"), key.get("scopeId"), False)),
            ("models", models_label(key.get("models"))),
            ("expires", moment(key.get("expiresAt"), True, missing="never")),
        ]
    )


@key_app.command("list")
def list_keys(
    ctx: typer.Context,
    agent: AgentScope = None,
    team: TeamScope = None,
    user: UserScope = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """List virtual keys (never their text), oldest first: all of them, or one scope's."""
    scope, scope_id = scope_of(ctx, agent, team, user) or (None, None)
    page = client(ctx).list_keys(scope=scope, scope_id=scope_id, revoked=True if revoked else None)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    print_table(key_columns(output.is_tty()), page.get("items", []))


@key_app.command("revoke")
def revoke_key(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ID", help="Key id (or a unique prefix of one).")],
    json_out: JsonFlag = False,
) -> None:
    """Revoke a key: the gateway refuses it from now on."""
    godel = client(ctx)
    key_id = resolve(ctx, "key", ref)
    key = godel.revoke_key(key_id)
    if wants_json(ctx, json_out):
        print_json(key)
    else:
        print_id("revoked", "key", key)


# godel usage


def usage(
    ctx: typer.Context,
    by: Annotated[UsageBy, typer.Option("--by", help="What to sum by.")] = UsageBy.agent,
    since: Annotated[
        str | None, typer.Option("--since", metavar="TIME", help="From: 30m, 24h, 7d (ago) or an ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="TIME", help="Until: an ISO time (or 30m, 24h, 7d ago).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """What went through the gateway: requests, tokens and USD, summed by agent, team, user, model or day."""
    start = parse_time(since, "--since") if since is not None else None
    end = parse_time(until, "--until") if until is not None else None
    data = client(ctx).usage(by=by.value, since=start, until=end)
    if wants_json(ctx, json_out):
        print_json(data)
        return
    tty = output.is_tty()
    items = list(data.get("items", []))
    rows = [*items, usage_total(items)] if tty and items else items
    print_table(usage_columns(tty), rows)


# godel budget …


@budget_app.command("set")
def set_budget(
    ctx: typer.Context,
    amount: Annotated[float, typer.Option("--usd", metavar="AMOUNT", help="The limit in USD (more than 0).")],
    agent: AgentScope = None,
    team: TeamScope = None,
    user: UserScope = None,
    period: Annotated[Period, typer.Option("--period", help="Per day, per month or in all.")] = Period.total,
    json_out: JsonFlag = False,
) -> None:
    """Set (or replace) the USD limit of one agent, team or user."""
    if not math.isfinite(amount) or amount <= 0:
        raise typer.BadParameter(f"must be a number more than 0, got {amount:g}", param_hint="--usd")
    scope, scope_id = required_scope(ctx, agent, team, user)
    budget = client(ctx).set_budget(scope, scope_id, usd=amount, period=period.value)
    if wants_json(ctx, json_out):
        print_json(budget)
    elif output.is_tty():
        label = scope_label(budget.get("scope"), budget.get("scopeId"), False)
        print_line(f"budget {budget.get('id')}: {usd(budget.get('limitUsd'))} USD {budget.get('period')} for {label}")
        spent, remaining = usd(budget.get("spentUsd")) or "-", usd(budget.get("remainingUsd")) or "-"
        print_line(f"spent {spent}, remaining {remaining}", style="dim")
    else:
        print_line(str(budget.get("id")))


@budget_app.command("show")
def show_budgets(
    ctx: typer.Context,
    agent: AgentScope = None,
    team: TeamScope = None,
    user: UserScope = None,
    json_out: JsonFlag = False,
) -> None:
    """Show budgets and what was spent against them: all of them, or one scope's."""
    scope, scope_id = scope_of(ctx, agent, team, user) or (None, None)
    page = client(ctx).budgets(scope=scope, scope_id=scope_id)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    print_table(budget_columns(output.is_tty()), page.get("items", []))


@budget_app.command("rm")
def remove_budget(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ID", help="Budget id (or a unique prefix of one).")],
    json_out: JsonFlag = False,
) -> None:
    """Remove a budget: that scope has no limit any more."""
    godel = client(ctx)
    budget_id = resolve(ctx, "budget", ref)
    result = godel.delete_budget(budget_id)
    if wants_json(ctx, json_out):
        print_json(result)
    else:
        print_id("deleted", "budget", result)
