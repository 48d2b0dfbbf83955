"""``godel serve``: run the API server in the foreground (the only command that is not an HTTP client)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

import typer

from godel.cli.output import render_warning
from godel.errors import GodelError, ValidationError
from godel.settings import Settings, load_settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse to start in a way that would hand the machine to whoever can reach it."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ValidationError("--tls-cert and --tls-key go together: give both, or neither")
    if is_loopback(settings.host):
        return
    if not settings.auth_enabled:
        raise ValidationError(
            f"refusing to serve on {settings.host} with authentication off (GODEL_AUTH_ENABLED=false): anyone who "
            "can reach this address could run commands as you. Bind 127.0.0.1, or turn authentication on."
        )
    if not settings.tls_cert:
        typer.echo(
            f"warning: serving on {settings.host} over plain HTTP: credentials cross the network in clear. Use "
            "--tls-cert/--tls-key, or a reverse proxy that terminates TLS (docs/auth.md).",
            err=True,
        )


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: GODEL_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (default: GODEL_PORT or 7373).")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Run the Godel server until Ctrl-C (data lives under GODEL_HOME)."""
    overrides: dict[str, Any] = {"host": host, "port": port, "tls_cert": tls_cert, "tls_key": tls_key}
    settings = load_settings(**{key: value for key, value in overrides.items() if value is not None})
    check_exposure(settings)
    if settings.unconfined_warning:
        render_warning(settings.unconfined_warning)
    try:
        # Imported here so that every other command stays a thin HTTP client that never loads the server.
        from godel.api.server import serve as run_server
    except ModuleNotFoundError as exc:
        if exc.name not in ("godel.api.server", "godel.api"):
            raise
        raise GodelError("this installation of Godel has no API server (godel.api.server)") from exc
    run_server(settings)
