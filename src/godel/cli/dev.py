"""``godel dev``: tools for developing against Godel without paid services (``godel dev model``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from godel.errors import GodelError, ValidationError

app = typer.Typer(no_args_is_help=True, help="Development tools: a scripted model server for offline runs.")


@app.command("model")
def model(
    script: Annotated[Path, typer.Option("--script", help="The YAML script of turns to replay.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0 picks a free one).")] = 0,
    log: Annotated[Path | None, typer.Option("--log", help="Append every request to this file as JSON lines.")] = None,
) -> None:
    """Serve a scripted model (OpenAI chat, Responses, Anthropic Messages) until Ctrl-C."""
    # Imported here so the rest of the CLI never loads the server stack.
    from godel.testing import ScriptedModel, ScriptError

    try:
        server = ScriptedModel(script, host=host, port=port, log_path=log)
    except ScriptError as exc:
        raise ValidationError(str(exc)) from exc
    try:
        server.bind()
    except OSError as exc:
        raise GodelError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    typer.echo(f"scripted model serving {len(server.script.turns)} turns; models: {', '.join(server.script.models)}")
    typer.echo(f"OpenAI base URL:    {server.base_url}")
    typer.echo(f"Anthropic base URL: {server.url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises the captured SIGINT; being stopped is this command's
        # normal end, so it exits 0 rather than the root group's 130.
        pass
    typer.echo("stopped")
