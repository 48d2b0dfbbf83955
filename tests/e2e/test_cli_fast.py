"""The CLI as a user runs it (a subprocess): what it imports, ``--version``, shell completion, and bad settings
as one line with exit code 2 — for ``godel serve`` and for a command that talks to a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import godel
from tests.e2e.serverproc import free_port

SERVER_STACK = ("fastapi", "sqlalchemy", "uvicorn", "starlette", "godel.api", "pydantic_settings")


def run_godel(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    home = cwd / "home"
    full_env = {**os.environ, "HOME": str(cwd), "GODEL_HOME": str(home), **(env or {})}
    full_env.pop("GODEL_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "godel", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    # A None in sys.modules is a module kept out on purpose (godel.cli.main.skip_httpx_command_line): not loaded.
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(n for n, m in sys.modules.items() if m is not None)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_server_stack() -> None:
    loaded = modules_after("import godel.cli.main")
    assert not loaded & set(SERVER_STACK)


def test_help_and_version_load_neither_the_client_nor_a_noun() -> None:
    for argv in (["godel", "--help"], ["godel", "--version"]):
        loaded = modules_after(
            f"import godel.cli.main as m\nsys.argv = {argv!r}\ntry:\n    m.run()\nexcept SystemExit:\n    pass"
        )
        assert not loaded & {"httpx", "godel.client", "godel.cli.agents", "godel.cli.workflow", *SERVER_STACK}


def test_a_command_loads_its_noun_only(tmp_path: Path) -> None:
    loaded = modules_after(
        "import godel.cli.main as m\nsys.argv = ['godel', 'agent', 'list', '--help']\n"
        "try:\n    m.run()\nexcept SystemExit:\n    pass"
    )
    assert "godel.cli.agents" in loaded
    assert not loaded & {"godel.cli.workflow", "godel.cli.teams", "godel.workflow", *SERVER_STACK}


def test_a_scripted_command_loads_only_what_it_uses(tmp_path: Path) -> None:
    """`godel agent list` piped, as a script runs it, up to its request (no server answers, so it exits 3): the
    blocking client and httpx, nothing of what made it miss 300 ms (benchmarks/cli.py). Not asyncio (the async
    client), Rich or Pygments (a pipe gets plain text), httpx's own command line (its click, Rich and Pygments), the
    domain's dataclasses, nor pydantic, which only Typer 0.29 and later bring (pyproject.toml keeps Typer below)."""
    nobody = f"http://127.0.0.1:{free_port()}"
    loaded = modules_after(
        "import godel.cli.main as m\nsys.argv = ['godel', 'agent', 'list']\n"
        "try:\n    m.run()\nexcept SystemExit:\n    pass",
        env={"GODEL_URL": nobody, "GODEL_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)},
    )
    assert {"godel.client.sync", "httpx", "httpcore"} <= loaded  # it did get as far as the request
    unused = {"asyncio", "godel.client.aio", "rich", "pygments", "click", "httpx._main", "godel.core.models"}
    if tuple(int(part) for part in typer.__version__.split(".")[:2]) < (0, 29):
        unused.add("pydantic")
    assert sorted(loaded & unused) == []


def test_version(tmp_path: Path) -> None:
    result = run_godel("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"godel {godel.__version__}\n")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_a_script_for_the_shell(tmp_path: Path, shell: str) -> None:
    result = run_godel("--show-completion", shell, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_GODEL_COMPLETE" in result.stdout


def test_completion_completes_nouns_and_verbs(tmp_path: Path) -> None:
    # What the bash script does on <TAB>: run `godel` with the words typed so far.
    nouns = run_godel(cwd=tmp_path, env={"_GODEL_COMPLETE": "complete_bash", "COMP_WORDS": "godel wor",
                                         "COMP_CWORD": "1"})  # fmt: skip
    assert nouns.stdout.split() == ["workflow"]
    verbs = run_godel(cwd=tmp_path, env={"_GODEL_COMPLETE": "complete_bash", "COMP_WORDS": "godel agent li",
                                         "COMP_CWORD": "2"})  # fmt: skip
    assert verbs.stdout.split() == ["list"]


BAD_FILES = {
    "misspelt": (
        "max_concurent_agents = 3\n",
        "unknown setting 'max_concurent_agents': did you mean max_concurrent_agents?",
    ),
    "not-toml": ("port = \n", "not valid TOML: Invalid value (at line 1, column 8); fix the syntax there"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("command", [["agent", "list"], ["serve"], ["events", "list"]])
def test_a_bad_settings_file_is_one_line_and_exit_2(tmp_path: Path, case: str, command: list[str]) -> None:
    content, message = BAD_FILES[case]
    (tmp_path / "godel.toml").write_text(content)
    result = run_godel(*command, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'godel.toml'}: {message}\n"
    assert result.stdout == ""


def test_serve_names_a_wrong_type_in_the_file(tmp_path: Path) -> None:
    (tmp_path / "godel.toml").write_text('max_concurrent_agents = "many"\n')
    result = run_godel("serve", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'godel.toml'}: max_concurrent_agents: input should be")
    assert len(result.stderr.splitlines()) == 1


def test_serve_names_a_bad_environment_variable(tmp_path: Path) -> None:
    result = run_godel("serve", cwd=tmp_path, env={"GODEL_ON_SHUTDOWN": "explode"})
    assert result.returncode == 2
    assert result.stderr == (
        "error: environment variable GODEL_ON_SHUTDOWN: input should be 'leave' or 'terminate' (got 'explode')\n"
    )


def test_plain_http_skips_the_certificate_store_and_would_trust_nothing() -> None:
    import ssl

    from godel.cli.context import plain_http_transport

    assert plain_http_transport("https://godel.example") is None  # https: httpx's own, certificates verified
    transport = plain_http_transport("http://127.0.0.1:7373")
    assert transport is not None
    context = transport._pool._ssl_context  # type: ignore[attr-defined]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0  # no anchor: a TLS server would be refused, never trusted
