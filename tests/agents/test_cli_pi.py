"""The issue's "done when", literally: a real ``godel serve`` that reads ``godel.toml`` from its working
directory, and the ``godel`` CLI spawning pi with ``--agent pi --model scripted/scripted-model``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from godel.testing import ScriptedModel
from tests.agents.conftest import agents_dir, require_cli
from tests.agents.test_pi import EDIT
from tests.conftest import make_repo, run_git
from tests.e2e.serverproc import ServerProcess


@pytest.fixture
def _pi() -> None:
    require_cli("pi")


def godel(url: str, cwd: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        # GODEL_HOME: the CLI finds the server's credentials there, as on a user's machine.
        [sys.executable, "-m", "godel", *args], env={**os.environ, "GODEL_URL": url, "GODEL_HOME": str(cwd / "home")},
        cwd=cwd,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == expect, f"godel {args} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def wait_ended(url: str, cwd: Path, agent_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        agent = json.loads(godel(url, cwd, "agent", "show", agent_id, "--json").stdout)
        if agent["state"] in ("completed", "failed", "killed"):
            return agent
        time.sleep(0.2)  # polling the server the way a user's script would
    raise AssertionError(f"agent {agent_id} did not end")


@pytest.mark.usefixtures("_pi")
def test_spawn_show_and_resume_pi_from_the_cli(fast_tmp: Path) -> None:
    repo = make_repo(fast_tmp / "repo")
    workdir = fast_tmp / "project"
    workdir.mkdir()
    with ScriptedModel(EDIT) as model:
        (workdir / "godel.toml").write_text(
            f'agents_dir = "{agents_dir()}"\nagent_cli_retries = 0\n\n'
            f'[providers.scripted]\nkind = "openai-chat"\nbase_url = "{model.base_url}"\n'
            'models = ["scripted-model"]\n'
        )
        env = {"GODEL_CONFIG": ""} if "GODEL_CONFIG" in os.environ else {}
        server = ServerProcess(fast_tmp / "home", cwd=workdir, **env).start()
        try:
            out = godel(server.url, fast_tmp, "agent", "spawn", "--agent", "pi", "--model", "scripted/scripted-model",
                        "--repo", str(repo), "create hello.txt")  # fmt: skip
            agent_id = out.stdout.strip()
            agent = wait_ended(server.url, fast_tmp, agent_id)
            assert agent["state"] == "completed", agent["lastError"]
            assert run_git(repo, "show", f"{agent['branch']}:hello.txt") == "hello from pi"

            # It went through the server's gateway: its usage is metered per agent.
            usage = json.loads(godel(server.url, fast_tmp, "usage", "--by", "agent", "--json").stdout)
            (row,) = [r for r in usage["items"] if r["key"] == agent_id]
            assert row["requests"] == len(model.requests) == 2
            assert row["outputTokens"] == model.usage_reported.output_tokens

            shown = godel(server.url, fast_tmp, "agent", "show", agent_id).stdout
            assert "tool write" in shown and '"path": "hello.txt"' in shown and "Created hello.txt." in shown

            godel(server.url, fast_tmp, "agent", "resume", agent_id, "one more thing")
            again = wait_ended(server.url, fast_tmp, agent_id)
            assert again["state"] == "completed", again["lastError"]
            sessions = json.loads(godel(server.url, fast_tmp, "agent", "show", agent_id, "--json").stdout)
            assert sessions["context"]["followUp"] == "one more thing"

            refused = godel(server.url, fast_tmp, "agent", "spawn", "--agent", "pi", "--model", "nope/x",
                            "--repo", str(repo), "x", expect=1)  # fmt: skip
            assert "unknown provider 'nope'" in refused.stderr
        finally:
            server.stop()
