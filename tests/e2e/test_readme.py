"""The README's shell examples run as written.

Every command of the README's ``bash`` blocks is either run here -- in README order, by ``bash``, from inside a
fresh git repository (with the repo's ``examples/`` and the README's own ``godel.toml``), against a real
``godel serve``, with ``godel`` on PATH as after ``. .venv/bin/activate`` -- or listed in ``SKIPPED`` with the
reason. A command in neither fails the test, so a new README example cannot go untried. Placeholders are filled in
as a reader would: ``/path/to/a/git/repo`` is that repository, ``<id>`` the agent the first spawn printed.

Assertions stay at the exit status and the key content of the output (other work may change the CLI's layout).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import godel
from tests.conftest import make_repo, run_git
from tests.e2e.serverproc import ServerProcess, ctrl_c_works

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SOURCE = str(Path(godel.__file__).resolve().parents[1])  # the Godel under test, wherever a command runs from
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

SKIPPED = {
    "./scripts/serve": "builds .venv and serves on the fixed port 7373; the test runs its own `godel serve`",
    ". .venv/bin/activate": "the test puts the `godel` under test on PATH itself",
    "scripts/install-agent-clis              # or only some: scripts/install-agent-clis pi claude": (
        "downloads six agent CLIs (minutes); tests/agents drives them"
    ),
    "godel login https://godel.example.com": "a remote server",
    'godel agent spawn --agent claude --model anthropic/claude-sonnet-4-5 --repo . "fix the failing test"': (
        "needs a real model provider (Anthropic)"
    ),
    'godel agent resume <id> "now add a test for it"': "continues the CLI session of the claude agent above",
    'godel agent fork <id> --at 4 --task "try another approach"': (
        "forks at the 4th transcript entry of the claude agent above"
    ),
    "godel workflow run examples/workflows/feature.yaml --repo . --wait": (
        "its steps are pi and claude agents: needs a real model provider"
    ),
    "godel team create --strategy map-reduce --agent pi --model anthropic/claude-sonnet-4-5 --repo . "
    '"split and do X"': "pi agents: needs a real model provider",
    "godel merge --repo . --into integration --verify 'python -m pytest -q' --workflow <id>": (
        "merges the branches of the feature.yaml run above"
    ),
    "./scripts/test": "runs the whole suite, this test included",
}

# What a run command must print (besides exiting 0); keyed by the start of the command.
EXPECT = {
    "godel agent spawn --repo": [],  # its id is checked when captured
    "godel agent list": ["{short}"],
    "godel agent logs <id> -f": ["working on: stamp the repo"],
    "godel agent diff <id>": ["stamp.txt"],
    "godel events tail": ["agent:"],
    "godel user create alice": ["alice"],
    "godel user key create alice": ["godel_sk_"],
    "godel role set auditor": ["auditor"],
    "godel audit verify": [],
    "godel agent show <id>": ["completed", "{short}"],
    "godel budget set --agent <id>": ["{uuid}"],  # piped, it prints the budget's id
    "godel usage --by agent": [],
    "godel key create --user me": ["godel_vk_"],
    "godel workflow validate examples/workflows/feature.yaml": [],
    'godel task create "triage the flaky test"': [],
}
# Typed at the prompt, as the reader would.
STDIN = {"godel user create alice": "a-long-enough-password\na-long-enough-password\n"}


@dataclass(frozen=True)
class Command:
    text: str  # as in the README, continuation lines joined

    @property
    def bare(self) -> str:
        """Without its trailing comment."""
        return re.sub(r"\s+#\s.*$", "", self.text)


def readme_commands() -> list[Command]:
    out: list[Command] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        pending = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if text and not text.startswith("#"):
                out.append(Command(text))
    return out


def expectation(command: Command) -> list[str] | None:
    for start, wanted in EXPECT.items():
        if command.bare.startswith(start):
            return wanted
    return None


def readme_toml() -> str:
    """The README's ``godel.toml`` example: the server of this test is configured with it."""
    (block,) = re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
    return str(block)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, dict[str, str]]]:
    base = tmp_path_factory.mktemp("readme")
    repo = make_repo(base / "repo", {"README.md": "# demo\n", "godel.toml": readme_toml()})
    shutil.copytree(ROOT / "examples", repo / "examples")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "examples")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "godel"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m godel "$@"\n')
    shim.chmod(0o755)
    # The default runtime (``auto``: the sandbox where bubblewrap is installed), as a reader's server has it.
    server = ServerProcess(
        base / "home", cwd=repo, GODEL_ON_SHUTDOWN="terminate", PYTHONPATH=SOURCE, GODEL_RUNTIME="auto"
    ).start(60)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": SOURCE,
        "PYTHONUNBUFFERED": "1",  # `events tail` is read line by line through a pipe
        "GODEL_URL": server.url,
        "GODEL_HOME": str(server.home),
    }
    try:
        yield server, repo, env
    finally:
        server.stop()


def test_every_readme_command_is_run_or_skipped_with_a_reason() -> None:
    commands = readme_commands()
    assert len(commands) >= 20
    unknown = [c.text for c in commands if c.text not in SKIPPED and c.bare not in SKIPPED and expectation(c) is None]
    assert unknown == [], f"README commands neither run nor skipped here: {unknown}"
    stale = set(SKIPPED) - {c.text for c in commands} - {c.bare for c in commands}
    assert stale == set(), f"skipped commands no longer in the README: {stale}"


def tail_until_an_event(line: str, repo: Path, env: dict[str, str], within: float = 20.0) -> tuple[int, str]:
    """``events tail`` follows until Ctrl-C: read until it shows an event (or ``within`` seconds pass), then
    press it."""
    proc = subprocess.Popen(["bash", "-c", line], cwd=repo, env=env, stdout=subprocess.PIPE,
                            start_new_session=True, preexec_fn=ctrl_c_works)  # fmt: skip
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + within
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while b"agent:" not in seen and (left := deadline - time.monotonic()) > 0:
                if selector.select(timeout=left):  # waits for output, not for a fixed time
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    seen += chunk
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=20), seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.timeout(300)
def test_readme_commands_run_as_written(workspace: tuple[ServerProcess, Path, dict[str, str]]) -> None:
    _, repo, env = workspace
    agent_id = ""
    ran = []
    for command in readme_commands():
        wanted = expectation(command)
        if command.text in SKIPPED or command.bare in SKIPPED or wanted is None:
            continue
        line = command.text.replace("/path/to/a/git/repo", str(repo)).replace("<id>", agent_id)
        if command.bare.startswith("godel events tail"):
            code, out = tail_until_an_event(line, repo, env)
        else:
            stdin = next((text for start, text in STDIN.items() if command.bare.startswith(start)), None)
            done = subprocess.run(["bash", "-c", line], cwd=repo, env=env, input=stdin or "", capture_output=True,
                                  text=True, timeout=90)  # fmt: skip
            code, out = done.returncode, done.stdout + done.stderr
        assert code == 0, f"`{command.text}` exited {code}:\n{out[-3000:]}"
        if not agent_id and command.bare.startswith("godel agent spawn --repo"):
            found = UUID.search(out)
            assert found, f"`{command.text}` printed no agent id:\n{out}"
            agent_id = found.group(0)
        for text in wanted:
            if text == "{uuid}":
                assert UUID.search(out), f"`{command.text}` printed no id:\n{out[-3000:]}"
                continue
            text = text.format(short=agent_id[:8])
            assert text in out, f"`{command.text}` did not print {text!r}:\n{out[-3000:]}"
        ran.append(command.bare)
    assert len(ran) == len(EXPECT), f"ran {ran}"


def test_the_readme_server_confines_its_agents_by_default(
    workspace: tuple[ServerProcess, Path, dict[str, str]],
) -> None:
    """Where bubblewrap is installed (CI installs it), the reader's server runs agents in the sandbox with no word
    said; elsewhere it runs them on ``local`` and ``godel status`` says so loudly."""
    from godel.runtimes.sandbox import missing_tools

    _, repo, env = workspace
    done = subprocess.run(["godel", "status", "--json"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    isolation = json.loads(done.stdout)["isolation"]
    if missing_tools():
        assert isolation["runtime"] == "local" and "not installed" in isolation["warning"]
        assert (
            "WARNING: agents run UNCONFINED"
            in subprocess.run(["godel", "status"], cwd=repo, env=env, capture_output=True, text=True, timeout=60).stderr
        )
    else:
        assert isolation == {"runtime": "sandbox", "level": "namespace", "warning": None}
        assert (
            "WARNING"
            not in subprocess.run(
                ["godel", "status"], cwd=repo, env=env, capture_output=True, text=True, timeout=60
            ).stderr
        )
