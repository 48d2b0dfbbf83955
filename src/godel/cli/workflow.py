"""``godel workflow …``: workflow files and runs.

``run`` submits a file to the server (which validates it too, and runs it); ``list``, ``show``, ``cancel``,
``pause`` and ``resume`` act on runs.

``validate`` works offline: it reads the file and checks it with ``godel.workflow`` (the pure definition
layer), no server needed. Invalid files print one ``FILE:LINE:COL: field: message`` line per problem, like a
compiler, and exit 1 — the same code as any other refused request (``godel.cli.main``); a missing file is a
usage error (2). A file that is not UTF-8 text is invalid (1).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn

from godel.cli.context import JsonFlag, action_commands, client, wants_json
from godel.cli.ids import resolve
from godel.cli.output import Column, is_tty, print_json, print_line, print_record, print_table
from godel.errors import FieldError, WorkflowValidationError
from godel.workflow import WorkflowDefinition, load_workflow
from godel.workflow.roles import configured_roles

app = typer.Typer(no_args_is_help=True, help="Check and run DAG workflows of agent and shell steps.")

EXIT_INVALID = 1


@app.command("validate")
def validate(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="A workflow file (.yaml, .yml or .json); - for stdin.")],
    json_output: JsonFlag = False,
) -> None:
    """Check a workflow file and print every problem at once, each with its line and column."""
    name = "<stdin>" if file == "-" else file
    try:
        # Roles come from configuration: checked against this machine's, as the (embedded) server would.
        definition = load_workflow(_read(file), filename=name, roles=configured_roles())
    except WorkflowValidationError as exc:
        _report_invalid(name, exc.fields, as_json=wants_json(ctx, json_output))
        raise typer.Exit(EXIT_INVALID) from None
    if wants_json(ctx, json_output):
        print_json({"valid": True, "errors": [], "name": definition.name, "steps": _steps(definition)})
        return
    order = " → ".join(", ".join(level) for level in definition.levels())
    count = len(definition.steps)
    print_line(f"ok: {definition.name}, {count} step{'' if count == 1 else 's'}, order: {order}", style="green")


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    path = Path(file)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE") from None
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = FieldError("", f"not UTF-8 text (byte {exc.start})", 1, 1)
        raise WorkflowValidationError(f"invalid workflow {file}", [problem]) from None


def _report_invalid(file: str, fields: list[FieldError], *, as_json: bool) -> None:
    if as_json:
        print_json({"valid": False, "errors": [f.as_dict() for f in fields], "steps": []})
        return
    for f in fields:
        where = f"{file}:{f.line}:{f.column}" if f.line is not None else file
        typer.echo(f"{where}: {f.field}: {f.message}" if f.field else f"{where}: {f.message}")
    typer.echo(f"{len(fields)} problem{'' if len(fields) == 1 else 's'} in {file}", err=True)


def _steps(definition: WorkflowDefinition) -> list[dict[str, Any]]:
    """The steps in run order, with what a reader checks first."""
    out = []
    for step_id in definition.topological_order():
        step = definition.step(step_id)
        out.append(
            {
                "id": step.id,
                "name": step.name,
                "dependsOn": list(step.depends_on),
                "agent": step.agent,
                "when": step.when,
            }
        )
    return out


# Runs (on the server) -------------------------------------------------------------------------------------

FINISHED = ("completed", "failed", "cancelled")
EXIT_NOT_COMPLETED = 1  # `run --wait` of a workflow that failed or was cancelled
WORKFLOW_COLUMNS = [
    Column("ID", "id", "id"),
    Column("NAME", "name", max_width=30),
    Column("STATUS", "status"),
    Column("STEP", "currentStepId"),
    Column("CREATED", "createdAt", "time"),
]
STEP_COLUMNS = [
    Column("STEP", "id"),
    Column("STATUS", "status"),
    Column("TRIES", lambda s: len(s.get("attempts") or [])),
    Column("AGENT", "agentId", "id"),
    Column("OUTPUT / ERROR", lambda s: s.get("error") or s.get("output") or "", max_width=60),
]
WorkflowRef = Annotated[str, typer.Argument(metavar="ID", help="A workflow id (or a unique prefix of one).")]


@app.command("run")
def run(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="A workflow file (.yaml, .yml or .json); - for stdin.")],
    repo: Annotated[Path, typer.Option("--repo", help="The repository its steps work on (default: here).")] = Path(),
    base: Annotated[str, typer.Option("--base", help="The ref the steps start from.")] = "HEAD",
    var: Annotated[
        list[str] | None, typer.Option("--var", help="NAME=VALUE, overrides a variable (repeatable).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run until it ends (exit 1 unless completed).")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Submit a workflow to the server and start it."""
    name = "<stdin>" if file == "-" else file
    variables = dict(_variable(v) for v in var or [])
    godel = client(ctx)
    data = godel.submit_workflow(_read(file), repo=str(repo.resolve()), base_ref=base, variables=variables,
                                 filename=name)  # fmt: skip
    if not wait:
        if wants_json(ctx, json_output):
            print_json(data)
        else:
            print_line(f"workflow {data['id']} {data['status']}: {data['name']}, {len(data['steps'])} steps")
        return
    final = _follow(ctx, data["id"], quiet=wants_json(ctx, json_output))
    if wants_json(ctx, json_output):
        print_json(final)
    else:
        print_table(STEP_COLUMNS, final["steps"])
        print_line(
            f"workflow {final['id']} {final['status']}", style="green" if final["status"] == "completed" else "red"
        )
    if final["status"] != "completed":
        raise typer.Exit(EXIT_NOT_COMPLETED)


def _variable(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--var")
    try:
        return name, json.loads(value)  # numbers, booleans and JSON values keep their type
    except ValueError:
        return name, value


def _follow(ctx: typer.Context, workflow_id: str, *, quiet: bool) -> dict[str, Any]:
    """Poll the run until it ends: a Rich progress bar in a terminal, one line per step change otherwise."""
    godel = client(ctx)
    seen: dict[str, str] = {}
    if is_tty() and not quiet:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      transient=True) as bar:  # fmt: skip
            task = bar.add_task("starting", total=100)
            while True:
                data = godel.get_workflow(workflow_id)
                running = [s["id"] for s in data["steps"] if s["status"] in ("running", "retrying")]
                bar.update(task, completed=data.get("progress", 0),
                           description=f"{data['name']}: {', '.join(running) or data['status']}")  # fmt: skip
                if data["status"] in FINISHED:
                    return dict(data)
                time.sleep(POLL_SECONDS)  # the CLI follows the server by polling it
    while True:
        data = godel.get_workflow(workflow_id)
        for step in data["steps"]:
            if not quiet and seen.get(step["id"]) != step["status"]:
                seen[step["id"]] = step["status"]
                typer.echo(f"{step['id']}: {step['status']}")
        if data["status"] in FINISHED:
            return dict(data)
        time.sleep(POLL_SECONDS)  # the CLI follows the server by polling it


POLL_SECONDS = 0.5


@app.command("list")
def list_runs(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", help="Repeatable.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Page size (1-500).")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """The workflow runs, newest first."""
    page = client(ctx).list_workflows(status=status, limit=limit)
    if wants_json(ctx, json_output):
        print_json(page)
        return
    print_table(WORKFLOW_COLUMNS, page.get("items", []))


@app.command("show")
def show(ctx: typer.Context, ref: WorkflowRef, json_output: JsonFlag = False) -> None:
    """One run and its steps."""
    data = client(ctx).get_workflow(resolve(ctx, "workflow", ref))
    if wants_json(ctx, json_output):
        print_json(data)
        return
    shown = ("id", "name", "status", "progress", "repo", "baseRef", "createdAt", "startedAt", "completedAt")
    print_record([(k, data.get(k)) for k in shown])
    typer.echo("")
    print_table(STEP_COLUMNS, data["steps"])


action_commands(
    app, "workflow", lambda ctx, ref, action: client(ctx).workflow_action(resolve(ctx, "workflow", ref), action),
    {
        "cancel": "Cancel a run: its running steps' agents are killed (a finished run: 409).",
        "pause": "Pause a run: no new step starts and its running agents are paused.",
        "resume": "Resume a paused run.",
        "start": "Start a run submitted without starting it.",
    },
    ref_help="A workflow id (or a unique prefix of one).",
)  # fmt: skip


@app.command("rm")
def remove(
    ctx: typer.Context,
    ref: WorkflowRef,
    force: Annotated[bool, typer.Option("--force", help="Cancel a running one first.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Delete a run (its events stay in the log). A running one needs --force, which cancels it first."""
    data = client(ctx).delete_workflow(resolve(ctx, "workflow", ref), force=force)
    if wants_json(ctx, json_output):
        print_json(data)
    else:
        print_line(f"workflow {ref} deleted")
