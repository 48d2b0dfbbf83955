"""Every workflow in examples/workflows/ validates with ``godel workflow validate`` and runs as shipped (the file
untouched; only its declared variables set), against a real repository; and ``validate`` refuses what the server
would refuse, roles included, through the same checker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import godel
from godel.core.models import WorkflowStep
from godel.errors import WorkflowValidationError
from godel.scheduler.plane import ControlPlane
from godel.testing import ScriptedModel
from godel.workflow import WorkflowDefinition, load_workflow, load_workflow_file
from godel.workflow.engine import WorkflowEngine
from tests.agents.conftest import RigFactory, require_cli, rig, runtime  # noqa: F401  (fixtures)
from tests.conftest import make_repo
from tests.workflow.conftest import steps_by_id, submit, wait_finished

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
SHIPPED = sorted(EXAMPLES.glob("*.y*ml"))


def validate(path: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI, run in ``cwd`` (where it looks for godel.toml) from the sources under test."""
    source = str(Path(godel.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-m", "godel", "workflow", "validate", str(path)], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip


def test_the_examples_are_all_covered() -> None:
    assert {p.name for p in SHIPPED} == {"feature.yaml", "queue.yaml", "shell.yaml"}  # each has a run test below


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_example_validates_with_the_cli(path: Path, fast_tmp: Path) -> None:
    done = validate(path, fast_tmp, GODEL_HOME=str(fast_tmp / "home"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: ")


PLANNER = """name: planned
steps:
  - id: plan
    role: planner
    command: echo plan
"""


def test_validate_refuses_an_unknown_role_as_the_server_does(fast_tmp: Path) -> None:
    path = fast_tmp / "planned.yaml"
    path.write_text(PLANNER)
    env = {"GODEL_HOME": str(fast_tmp / "home")}
    refused = validate(path, fast_tmp, **env)
    assert refused.returncode == 1
    assert f"{path}:4:11: steps[0].role: unknown role 'planner'; one of: coordinator, monitor" in refused.stdout
    # A role this machine's configuration declares is known to validate, as to the (embedded) server.
    config = fast_tmp / "godel.toml"
    config.write_text('[roles.planner]\npreamble = "Plan, do not change files."\n')
    accepted = validate(path, fast_tmp, GODEL_CONFIG=str(config), **env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


async def test_the_server_refuses_an_unknown_role_with_the_same_message(
    client: httpx.AsyncClient, git_repo: Path
) -> None:
    r = await client.post("/api/v1/workflows", json={"source": PLANNER, "repo": str(git_repo)})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "INVALID_WORKFLOW"
    assert "unknown role 'planner'; one of: coordinator, monitor" in str(error)
    with pytest.raises(WorkflowValidationError, match="1 problem"):  # the checker validate runs, given roles
        load_workflow(PLANNER, roles=["worker"])


PROJECT = {
    ".gitignore": "__pycache__/\n",
    "README.md": "# demo\n",
    "src/app.py": "def greet(name: str) -> str:\n    return f'hello {name}'\n",
    "tests/unit/test_app.py": (
        "import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).parents[2] / 'src'))\n\n"
        "from app import greet\n\n\ndef test_greet() -> None:\n    assert greet('you') == 'hello you'\n"
    ),
}


async def test_the_shell_example_runs_as_shipped(client: httpx.AsyncClient, fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "project", PROJECT)
    source = (EXAMPLES / "shell.yaml").read_text()
    wf = await submit(client, source, repo, variables={"python": sys.executable})  # python with ruff and pytest
    done = await wait_finished(client, wf["id"], timeout=120)
    steps = steps_by_id(done)
    assert done["status"] == "completed", {k: (v["status"], v["error"]) for k, v in steps.items()}
    assert [steps[s]["status"] for s in ("lint", "unit", "build", "report")] == ["completed"] * 4
    assert steps["report"]["output"] == "built"


async def test_the_queue_example_runs_as_shipped(
    client: httpx.AsyncClient, git_repo: Path, plane: ControlPlane
) -> None:
    for title, priority in (("Update the changelog", 50), ("Fix the typo", 10), ("Later", -5)):
        await plane.task_queue.create(title, priority=priority)
    wf = await submit(client, (EXAMPLES / "queue.yaml").read_text(), git_repo)
    done = await wait_finished(client, wf["id"], timeout=120)
    steps = steps_by_id(done)
    assert done["status"] == "completed", {k: (v["status"], v["error"]) for k, v in steps.items()}
    assert steps["report"]["output"] == "2 completed, 0 failed"  # the task below priority 0 stays queued
    assert (await plane.task_queue.stats())["pending"] == 1


# The scripted model answers both pi agents: the planner (matched by its task) reads and answers in JSON, the
# implementer writes a file and sums up. Review is skipped (the plan is not risky), and so is fix (the tests pass).
PLAN_TASK = "Write a short implementation plan"
FEATURE_TURNS: dict[str, Any] = {
    "models": ["claude-sonnet-4-5", "claude-opus-4-1"],
    "turns": [  # each place: the planner's answer (matched by its task) first, the implementer's second
        [
            {"match": PLAN_TASK, "tool_call": {"name": "read", "arguments": {"path": "README.md"}}},
            {"tool_call": {"name": "write", "arguments": {"path": "cli.py", "content": "FLAGS = ['--verbose']\n"}}},
        ],
        [
            {"match": PLAN_TASK, "text": '{"files": ["cli.py"], "risky": false, "plan": "add the flag to cli.py"}'},
            {"text": "Added --verbose to cli.py."},
        ],
    ],
}  # fmt: skip
FEATURE_PROJECT = {
    ".gitignore": "__pycache__/\n",
    "README.md": "# demo\n",
    "tests/test_cli.py": (
        "from pathlib import Path\n\n\ndef test_the_flag() -> None:\n"
        "    assert '--verbose' in Path('cli.py').read_text()\n"
    ),
}


async def test_the_feature_example_runs_as_shipped(rig: RigFactory) -> None:  # noqa: F811
    require_cli("pi")
    definition = load_workflow_file(EXAMPLES / "feature.yaml")
    model = definition.defaults.model or ""
    provider = model.split("/", 1)[0]  # the example's own provider name, pointed at the scripted model
    names = [m.split("/", 1)[1] for m in (model, definition.step("review").model or "")]
    with ScriptedModel(FEATURE_TURNS) as scripted:
        providers = {provider: {"kind": "anthropic", "base_url": scripted.url, "api_key_env": None, "models": names}}
        async with rig(None, files=FEATURE_PROJECT, providers=providers) as r:
            rows = await run_to_the_end(r.plane, definition, r.repo)
    steps = {s.step_id: s for s in rows}
    assert [steps[s].status for s in ("plan", "implement", "review", "test", "fix")] == [
        "completed", "completed", "skipped", "completed", "skipped"
    ]  # fmt: skip
    # The tests passed because `test` ran on implement's branch, where cli.py is.
    assert "1 passed" in (steps["test"].result or {})["output"]


async def run_to_the_end(plane: ControlPlane, definition: WorkflowDefinition, repo: Path) -> list[WorkflowStep]:
    engine = WorkflowEngine(plane)
    try:
        # pytest through this interpreter: the example's default `pytest -q` depends on the PATH.
        variables = {"test_command": f"{sys.executable} -m pytest -q -p no:cacheprovider"}
        wf = await engine.submit(definition, repo=str(repo), variables=variables)
        deadline = time.monotonic() + 60
        while (await plane.store.get_workflow(wf.id)).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)  # polling the store for the run's end
        wf, rows = await engine.get(wf.id)
    finally:
        await engine.stop()
    assert wf.status == "completed", {s.step_id: (s.status, s.error) for s in rows}
    return rows
