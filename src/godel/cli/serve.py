"""``godel serve``: run the API server in the foreground (the only command that is not an HTTP client)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from godel.errors import GodelError
from godel.settings import Settings


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: GODEL_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (default: GODEL_PORT or 7373).")] = None,
) -> None:
    """Run the Godel server until Ctrl-C (data lives under GODEL_HOME)."""
    overrides: dict[str, Any] = {"host": host, "port": port}
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    try:
        # Imported here so that every other command stays a thin HTTP client that never loads the server.
        from godel.api.server import serve as run_server
    except ModuleNotFoundError as exc:
        if exc.name not in ("godel.api.server", "godel.api"):
            raise
        raise GodelError("this installation of Godel has no API server (godel.api.server)") from exc
    run_server(settings)
