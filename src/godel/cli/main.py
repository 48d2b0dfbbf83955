"""The ``godel`` command: global options, the nouns, and how failures become exit codes.

Exit codes: 0 ok, 1 the server refused (its error code is printed), 2 bad usage (Click's), 3 no server
reachable at the URL. Expected failures print one ``error:`` line, never a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from godel.cli import access, agents, dev, events, gateway, workspace  # noqa: F401  (workspace adds its commands to `godel agent`)
from godel.cli.context import CliState, state
from godel.cli.merge import merge
from godel.cli.output import render_error
from godel.cli.serve import serve
from godel.cli.status import status
from godel.cli.tasks import app as tasks_app
from godel.cli.teams import app as teams_app
from godel.cli.workflow import app as workflow_app
from godel.errors import GodelError, ServerNotRunningError

EXIT_API_ERROR = 1
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130


class GodelGroup(TyperGroup):
    """The root group: every subcommand runs inside its ``invoke``, so errors are mapped here once."""

    # ``Any``: Typer vendors Click and keeps its base Context class private; any Context subclass works.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ServerNotRunningError as exc:
            render_error(exc)
            raise typer.Exit(EXIT_NOT_RUNNING) from None
        except GodelError as exc:
            render_error(exc)
            raise typer.Exit(EXIT_API_ERROR) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="godel",
    cls=GodelGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Godel: a control plane for AI coding agents.",
)
app.add_typer(agents.app, name="agent")
app.add_typer(events.app, name="events")
app.add_typer(dev.app, name="dev")
app.add_typer(gateway.key_app, name="key")
app.add_typer(gateway.budget_app, name="budget")
app.add_typer(workflow_app, name="workflow")
app.add_typer(tasks_app, name="task")
app.add_typer(teams_app, name="team")
app.add_typer(access.user_app, name="user")
app.add_typer(access.role_app, name="role")
app.add_typer(access.audit_app, name="audit")
app.command("login")(access.login)
app.command("logout")(access.logout)
app.command("whoami")(access.whoami)
app.command("usage")(gateway.usage)
app.command("merge")(merge)
app.command("status")(status)
app.command("serve")(serve)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="GODEL_URL", help="Server URL (default: settings' url, http://127.0.0.1:7373)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print API data as JSON (any command).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for an answer.")] = 30.0,
) -> None:
    cli = state(ctx)
    # Tests may hand in a prepared CliState (with a transport); options only fill what is given.
    cli.url = url or cli.url
    cli.json = json_output or cli.json
    cli.timeout = timeout


def run() -> None:
    app()


__all__ = ["CliState", "app", "run"]
