"""``godel workflow validate``: offline checking, one line per problem, exit codes, ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from godel.cli.main import app

GOOD = """\
name: good
defaults: {agent: pi}
steps:
  - {id: plan, task: plan it}
  - {id: api, task: build the api, dependsOn: [plan]}
  - {id: ui, task: build the ui, dependsOn: [plan]}
  - {id: review, task: "review {{ steps.api.output }}", dependsOn: [api, ui]}
"""

BAD = """\
name: bad
defaults: {agent: pi}
steps:
  - id: plan
    task: t
    dependsOn: [plna]
  - id: plan
    task: t
    onError: sometimes
"""


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    code, out, _ = run("workflow", "validate", str(path))
    assert code == 0
    assert out == "ok: good, 4 steps, order: plan → api, ui → review\n"


def test_an_invalid_file_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, out, err = run("workflow", "validate", str(path))
    assert code == 1
    assert out.splitlines() == [
        f"{path}:6:17: steps[0].dependsOn[0]: unknown step 'plna' (did you mean 'plan'?)",
        f"{path}:7:9: steps[1].id: duplicate step id 'plan' (first defined on line 4)",
        f"{path}:9:14: steps[1].onError: must be one of fail, continue, retry, not 'sometimes'",
    ]
    assert err == f"3 problems in {path}\n"


def test_json_output(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    code, out, _ = run("workflow", "validate", str(good), "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] is True and data["errors"] == [] and data["name"] == "good"
    assert [s["id"] for s in data["steps"]] == ["plan", "api", "ui", "review"]
    assert data["steps"][3] == {
        "id": "review",
        "name": "review",
        "dependsOn": ["api", "ui"],
        "agent": "pi",
        "when": None,
    }
    code, out, _ = run("--json", "workflow", "validate", str(bad))  # the global flag works too
    data = json.loads(out)
    assert code == 1 and data["valid"] is False and data["steps"] == []
    assert data["errors"][0] == {
        "field": "steps[0].dependsOn[0]",
        "message": "unknown step 'plna' (did you mean 'plan'?)",
        "line": 6,
        "column": 17,
    }
    assert len(data["errors"]) == 3


def test_json_files_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('{"name": "j", "steps": [{"id": "a", "task": "t", "agent": "pi"}]}')
    assert run("workflow", "validate", str(path))[:2] == (0, "ok: j, 1 step, order: a\n")
    code, out, _ = run("workflow", "validate", "-", stdin="name: s\nsteps: [{id: a, command: 'true'}]\n")
    assert (code, out) == (0, "ok: s, 1 step, order: a\n")
    code, out, _ = run("workflow", "validate", "-", stdin="name: [\n")
    assert code == 1 and out.startswith("<stdin>:2:1: invalid YAML:")


def test_a_syntax_error_has_no_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",\n "steps": [}\n')
    code, out, _ = run("workflow", "validate", str(path))
    assert (code, out) == (1, f"{path}:2:12: invalid JSON: Expecting value\n")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    code, _, err = run("workflow", "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    code, out, _ = run("workflow", "validate", str(binary))
    assert (code, out) == (1, f"{binary}:1:1: not UTF-8 text (byte 6)\n")
