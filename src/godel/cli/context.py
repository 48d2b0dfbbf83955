"""What every command shares: the global options, the client built from them, and agent-id resolution."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

import httpx
import typer

from godel.client import GodelClient
from godel.errors import AgentNotFoundError, GodelError

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's data payload as JSON, nothing else.")]


class AmbiguousIdError(GodelError):
    code = "AMBIGUOUS_ID"
    status_code = 400


@dataclass
class CliState:
    url: str | None = None  # None: GODEL_URL, else Settings().url (resolved by the client)
    json: bool = False
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = None  # only tests set it; the CLI always talks real HTTP
    _client: GodelClient | None = None

    def client(self, ctx: typer.Context) -> GodelClient:
        if self._client is None:
            self._client = GodelClient(self.url, timeout=self.timeout, transport=self.transport)
            ctx.find_root().call_on_close(self._client.close)
        return self._client


def state(ctx: typer.Context) -> CliState:
    return ctx.find_root().ensure_object(CliState)


def client(ctx: typer.Context) -> GodelClient:
    return state(ctx).client(ctx)


def wants_json(ctx: typer.Context, flag: bool) -> bool:
    """``--json`` may be given before the noun (global) or after the verb (per command)."""
    return flag or state(ctx).json


def is_full_id(ref: str) -> bool:
    try:
        return str(uuid.UUID(ref)) == ref.lower()
    except ValueError:
        return False


def agent_id(ctx: typer.Context, ref: str) -> str:
    """A full agent id from a full id or a unique prefix of one (tables show ids shortened)."""
    if is_full_id(ref):
        return ref
    prefix = ref.lower()
    matches = [a["id"] for a in client(ctx).iter_agents(limit=500) if prefix and a["id"].startswith(prefix)]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise AgentNotFoundError(ref)
    raise AmbiguousIdError(f"{ref!r} matches {len(matches)} agents; give more of the id", details={"matches": matches})
