"""Ids as people type them: a full id, or a unique prefix of one (tables show ids shortened to 8 characters).

One resolver for every kind of id an argument or option takes. A full uuid is used as it is, with no request,
and so is a reference no uuid can begin (``no-such-team``); any other reference is looked up among the ids the
API lists for that kind (every page): an exact id wins, else the one id it begins. Several: one error line listing
them. None: the reference goes to the server as given, whose answer is the not-found error (or, for a filter, an
empty result) -- one source of truth for what exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from godel.errors import GodelError

if TYPE_CHECKING:
    from godel.client import GodelClient

PAGE = 200
UUID_CHARACTERS = frozenset("0123456789abcdef-")
SHOWN_CANDIDATES = 5


class AmbiguousIdError(GodelError):
    code = "AMBIGUOUS_ID"
    status_code = 400


Page = Mapping[str, Any]


@dataclass(frozen=True)
class Kind:
    noun: str
    pages: Callable[[GodelClient, str | None, str | None], Page]
    """One page of this kind's listing: ``(client, cursor, owner)``; ``owner`` is the user of a user's API key."""


KINDS: dict[str, Kind] = {
    "agent": Kind("agent", lambda c, cur, _: c.list_agents(limit=PAGE, cursor=cur)),
    "task": Kind("task", lambda c, cur, _: c.list_tasks(limit=PAGE, cursor=cur)),
    "team": Kind("team", lambda c, cur, _: c.list_teams(limit=PAGE, cursor=cur)),
    "workflow": Kind("workflow", lambda c, cur, _: c.list_workflows(limit=PAGE, cursor=cur)),
    "key": Kind("key", lambda c, _cur, _o: c.list_keys(revoked=True)),
    "budget": Kind("budget", lambda c, _cur, _o: c.budgets()),
    "user key": Kind("key", lambda c, _cur, owner: c.list_api_keys(str(owner), revoked=True)),
}  # fmt: skip


def is_full_id(ref: str) -> bool:
    try:
        return str(uuid.UUID(ref)) == ref.lower()
    except ValueError:
        return False


def _ids(godel: GodelClient, kind: Kind, owner: str | None) -> Iterator[str]:
    cursor: str | None = None
    while True:
        page = kind.pages(godel, cursor, owner)
        yield from (str(item["id"]) for item in page.get("items", []))
        pagination = page.get("pagination") or {}
        cursor = pagination.get("cursor")
        if not pagination.get("hasMore") or not cursor:
            return


def resolve(ctx: typer.Context, kind_name: str, ref: str, *, owner: str | None = None) -> str:
    """The full id that ``ref`` stands for among the ids of ``kind_name`` (a key of ``KINDS``)."""
    from godel.cli.context import client  # not at import: context builds the client

    prefix = ref.strip().lower()
    if is_full_id(ref) or not set(prefix) <= UUID_CHARACTERS:
        return ref  # a whole id, or one no id can begin (ids are uuids): no listing to read
    kind = KINDS[kind_name]
    matches: list[str] = []
    for full in _ids(client(ctx), kind, owner):
        if full.lower() == prefix:
            return full
        if prefix and full.lower().startswith(prefix):
            matches.append(full)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(matches[:SHOWN_CANDIDATES]) + (", …" if len(matches) > SHOWN_CANDIDATES else "")
        raise AmbiguousIdError(f"{ref!r} matches {len(matches)} {kind.noun}s ({shown}); give more of the id",
                               details={"matches": matches})  # fmt: skip
    return ref


def resolve_optional(ctx: typer.Context, kind_name: str, ref: str | None) -> str | None:
    """``resolve`` for an option that may be absent."""
    return None if ref is None else resolve(ctx, kind_name, ref)
