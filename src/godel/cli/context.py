"""What every command shares: the global options and the client built from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from godel.cli.output import print_json, print_line

if TYPE_CHECKING:
    import httpx

    from godel.client import GodelClient

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's data payload as JSON, nothing else.")]


@dataclass
class CliState:
    url: str | None = None  # None: GODEL_URL, else the settings files' url
    json: bool = False
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = None  # only tests set it; the CLI always talks real HTTP
    _client: GodelClient | None = None

    def client(self, ctx: typer.Context) -> GodelClient:
        if self._client is None:
            from godel.client import GodelClient  # httpx and the SDK: only for the commands that call the server
            from godel.settings_files import client_settings

            url = self.url or client_settings().url
            transport = self.transport or plain_http_transport(url)
            self._client = GodelClient(url, timeout=self.timeout, transport=transport)
            ctx.find_root().call_on_close(self._client.close)
        return self._client


def plain_http_transport(url: str) -> httpx.BaseTransport | None:
    """For an ``http://`` server, a transport that skips loading the certificate store: httpx loads it for every
    client (40-100 ms, a fifth of a CLI call) though plain HTTP never uses it. Its TLS context trusts no
    certificate, so were it ever asked to speak TLS it would refuse, never trust. None (httpx's own) for https."""
    if not url.lower().startswith("http://"):
        return None
    import ssl

    import httpx

    return httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


def state(ctx: typer.Context) -> CliState:
    return ctx.find_root().ensure_object(CliState)


def client(ctx: typer.Context) -> GodelClient:
    return state(ctx).client(ctx)


def wants_json(ctx: typer.Context, flag: bool) -> bool:
    """``--json`` may be given before the noun (global) or after the verb (per command)."""
    return flag or state(ctx).json


def action_commands(
    app: typer.Typer,
    noun: str,
    call: Callable[[typer.Context, str, str], Mapping[str, Any]],
    actions: Mapping[str, str],
    *,
    ref_help: str,
) -> None:
    """One command per lifecycle action (``godel team pause ID``, ``godel workflow cancel ID`` …): ``call(ctx,
    ref, action)`` sends it; the answer is printed as JSON with ``--json``, else as "NOUN ID STATUS"."""
    for name, help_text in actions.items():
        app.command(name)(_action_command(noun, name, help_text, call, ref_help))


def _action_command(
    noun: str, action: str, help_text: str, call: Callable[[typer.Context, str, str], Mapping[str, Any]],
    ref_help: str,
) -> Callable[..., None]:  # fmt: skip
    def command(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(metavar="ID", help=ref_help)],
        json_out: JsonFlag = False,
    ) -> None:
        data = call(ctx, ref, action)
        if wants_json(ctx, json_out):
            print_json(data)
        else:
            print_line(f"{noun} {data['id']} {data['status']}")

    command.__doc__ = help_text
    # Real objects, not the strings ``from __future__ import annotations`` leaves: Typer reads the signature, and
    # ``ref_help`` is this call's local.
    command.__annotations__ = {
        "ctx": typer.Context,
        "ref": Annotated[str, typer.Argument(metavar="ID", help=ref_help)],
        "json_out": JsonFlag,
        "return": None,
    }
    return command
