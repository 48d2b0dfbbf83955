"""docs/client.md runs as written: each ``python`` block, run as a script from inside a git repository against a
real ``godel serve``, prints what the ``text`` block under it shows (``…`` standing for what differs per run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

import godel
from tests.conftest import make_repo
from tests.e2e.serverproc import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
SOURCE = str(Path(godel.__file__).resolve().parents[1])  # the Godel under test, wherever the script runs from
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    """Each ``python`` block with the ``text`` block that follows it."""
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text())]
    out = []
    for (lang, code), (next_lang, shown) in pairwise([*blocks, ("", "")]):
        if lang == "python":
            assert next_lang == "text", f"a python block of {DOC.name} has no output shown under it:\n{code}"
            out.append((code, shown))
    return out


def matches(shown: str, printed: str) -> bool:
    expected = [re.escape(line).replace("…", ".+?") for line in shown.strip().splitlines()]
    lines = printed.strip().splitlines()
    return len(lines) == len(expected) and all(re.fullmatch(p, line) for p, line in zip(expected, lines, strict=True))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("client-docs") / "home"
    proc = ServerProcess(home, GODEL_ON_SHUTDOWN="terminate").start(60)  # a loaded machine starts it slowly
    try:
        yield proc
    finally:
        proc.stop()


def test_the_doc_has_examples_for_each_topic() -> None:
    found = examples()
    assert len(found) >= 5
    code = "\n".join(c for c, _ in found)
    for needed in ("GodelClient(", "AsyncGodelClient(", "wait_agent(", "logs(", "stream_events(", "except "):
        assert needed in code, needed


@pytest.mark.parametrize("index", range(len(examples())))
def test_example_runs_as_written(server: ServerProcess, tmp_path: Path, index: int) -> None:
    code, shown = examples()[index]
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    env = {**os.environ, "GODEL_URL": server.url, "GODEL_HOME": str(server.home), "PYTHONPATH": SOURCE}
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"example {index} failed:\n{code}\n{done.stderr[-3000:]}"
    assert matches(shown, done.stdout), f"example {index} printed:\n{done.stdout}\nthe doc shows:\n{shown}"


def test_matching_is_strict() -> None:
    assert matches("a … c\nd", "a b c\nd")
    assert not matches("a … c\nd", "a b c")
    assert not matches("a … c", "a  c")
    assert not matches("x", "x\ny")
