"""The ``godel`` command: global options, the nouns, and how failures become exit codes.

Exit codes: 0 ok, 1 the server refused (its error code is printed), 2 bad usage (Click's) or bad configuration
(a settings file, a ``GODEL_*`` variable), 3 no server reachable at the URL. Expected failures print one
``error:`` line, never a traceback.

Every noun is imported only when it is used (``COMMANDS``): a CLI call pays for the modules of its own command,
not for the server, the workflow engine or the HTTP client when it needs none of them (``benchmarks/cli.py``).
"""

from __future__ import annotations

import copy
import importlib
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo

import godel
from godel.errors import GodelError, ServerNotRunningError
from godel.settings_files import SettingsError

EXIT_API_ERROR = 1
EXIT_BAD_CONFIG = 2  # as Click's bad usage: the caller has something to fix before trying again
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130

# name -> (module, attribute, the line the root's --help shows). The attribute is a Typer app (a noun with its
# verbs) or a function (a command of its own). tests/unit/test_cli_lazy.py checks that the lines match the help
# of what they stand for, and that every entry loads.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("godel.cli.workspace", "app", "Spawn, inspect and control agents."),
    "events": ("godel.cli.events", "app", "Read and follow the event log."),
    "dev": ("godel.cli.dev", "app", "Development tools: a scripted model server for offline runs."),
    "key": ("godel.cli.gateway", "key_app", "Create, list and revoke the gateway's virtual keys (for calling models; keys for Godel's own API: godel user key)."),  # noqa: E501
    "budget": ("godel.cli.gateway", "budget_app", "Set, show and remove USD spending limits."),
    "workflow": ("godel.cli.workflow", "app", "Check and run DAG workflows of agent and shell steps."),
    "task": ("godel.cli.tasks", "app", "Create, list, assign, complete and retry queued tasks."),
    "team": ("godel.cli.teams", "app", "Run teams of agents: parallel, map-reduce, pipeline or tree."),
    "user": ("godel.cli.access", "user_app", "People who may call Godel: their roles, teams and API keys."),
    "role": ("godel.cli.access", "role_app", "Roles: the built-in ones and your own (resource:action:scope)."),
    "audit": ("godel.cli.access", "audit_app", "The append-only audit log: list it, verify its hash chain."),
    "login": ("godel.cli.access", "login", "Log in to a server and remember it: an API key for this machine is made and saved (mode 0600) in ~/.config/godel/credentials.json; every later command to that URL uses it."),  # noqa: E501
    "logout": ("godel.cli.access", "logout", "Forget the key saved for a server."),
    "whoami": ("godel.cli.access", "whoami", "Who the server says you are, with your roles and permissions."),
    "usage": ("godel.cli.gateway", "usage", "What went through the gateway: requests, tokens and USD, summed by agent, team, user, model or day."),  # noqa: E501
    "merge": ("godel.cli.merge", "merge", "Merge BRANCHes (or --team's, or --workflow's) into --into, one by one, each behind the --verify gate."),  # noqa: E501
    "status": ("godel.cli.status", "status", "Show the server's detailed health, including agent counts by status."),
    "serve": ("godel.cli.serve", "serve", "Run the Godel server until Ctrl-C (data lives under GODEL_HOME)."),
}  # fmt: skip


def load_command(name: str) -> Any:
    """The Click command of one entry of ``COMMANDS``, its module imported now."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    command: Any
    if isinstance(target, typer.Typer):
        command = Verbs.of(target)
    else:
        # A plain function: a Typer holding it alone becomes a single command.
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class Verbs(TyperGroup):
    """A noun whose verbs are each built when named: Typer reads every parameter's annotation to build a command,
    and `godel agent list` needs one of the agent's fourteen verbs, not all of them."""

    unbuilt: dict[str, CommandInfo]

    @classmethod
    def of(cls, noun: typer.Typer) -> Verbs:
        # The noun as Typer builds it (help, options, sub-nouns such as `user key`), verbs left out.
        shell = copy.copy(noun)
        shell.info = copy.copy(noun.info)
        shell.info.cls = cls
        shell.registered_commands = []
        group = typer.main.get_group(shell)  # a group even with one verb (`godel dev model`), as `add_typer` makes
        assert isinstance(group, cls)
        group.unbuilt = {
            info.name or typer.main.get_command_name(info.callback.__name__): info
            for info in noun.registered_commands
            if info.callback is not None
        }
        return group

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.unbuilt, *(name for name in self.commands if name not in self.unbuilt)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.unbuilt:
            one = typer.Typer(add_completion=False)  # completion belongs to the root only
            one.registered_commands.append(self.unbuilt[cmd_name])
            self.commands[cmd_name] = typer.main.get_command(one)
        return self.commands.get(cmd_name)


class GodelGroup(TyperGroup):
    """The root group: loads each noun on first use, and runs every subcommand inside its ``invoke``, so errors
    are mapped here once."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The listing needs a line per noun, not the noun: a copy that lists stand-ins carrying those lines.
        listing = copy.copy(self)
        listing.commands = {
            **{name: TyperCommand(name=name, help=line) for name, (_, _, line) in COMMANDS.items()},
            **self.commands,
        }
        TyperGroup.format_help(listing, ctx, formatter)

    # ``Any``: Typer vendors Click and keeps its base Context class private; any Context subclass works.
    def invoke(self, ctx: Any) -> Any:
        from godel.cli.output import render_error  # here, not at the top: `godel --help` needs none of it

        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(EXIT_BAD_CONFIG) from None
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
    # Click's plain help for the root: Typer's Rich rendering (Rich, markdown-it) would double what `godel --help`
    # costs. The nouns' own help keeps Rich.
    rich_markup_mode=None,
    help="Godel: a control plane for AI coding agents.",
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"godel {godel.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="GODEL_URL", help="Server URL (default: settings' url, http://127.0.0.1:7373)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print API data as JSON (any command).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for an answer.")] = 30.0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print Godel's version and exit."),
    ] = False,
) -> None:
    from godel.cli.context import state

    cli = state(ctx)
    # Tests may hand in a prepared CliState (with a transport); options only fill what is given.
    cli.url = url or cli.url
    cli.json = json_output or cli.json
    cli.timeout = timeout


def run() -> None:
    skip_httpx_command_line()
    # The name is fixed so that `python -m godel` completes and documents itself as `godel` too.
    app(prog_name="godel")


def skip_httpx_command_line() -> None:
    """``import httpx`` also imports httpx's own command line (click, Rich, Pygments: half of what importing httpx
    costs) whenever those are installed, as they are here; httpx falls back to a stub when that import fails
    (encode/httpx#3547 would move it to ``python -m httpx``). A ``None`` in ``sys.modules`` is Python's way of
    saying a module is absent, so ``godel`` never loads a command line it does not run. Only the ``godel`` process
    does this, and only if httpx has not loaded it already."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


__all__ = ["app", "run"]
