"""A failed shell step says why: its ``error`` carries the end of what it wrote to stderr, bounded."""

from __future__ import annotations

from pathlib import Path

import httpx

from godel.workflow.steps import STDERR_BYTES, STDERR_LINES
from tests.workflow.conftest import steps_by_id, submit, wait_finished

FAILING = """
name: failing
steps:
  - id: many
    command: 'echo to stdout; for i in $(seq 1 30); do echo "noise $i" >&2; done; echo "the real cause" >&2; exit 4'
    onError: continue
  - id: wide
    command: 'head -c 6000 /dev/zero | tr "\\\\0" x >&2; echo " the end" >&2; exit 3'
    onError: continue
  - id: quiet
    command: exit 5
    onError: continue
"""


async def test_the_error_carries_the_end_of_stderr(client: httpx.AsyncClient, git_repo: Path) -> None:
    done = await wait_finished(client, (await submit(client, FAILING, git_repo))["id"])
    steps = steps_by_id(done)
    many = steps["many"]["error"]
    assert many.startswith("exited 4; the end of its stderr:\n")
    tail = many.split("\n")[1:]
    assert len(tail) == STDERR_LINES and tail[-1] == "the real cause" and tail[0] == "noise 12"
    assert "to stdout" not in many  # stdout is the step's output, not its error
    wide = steps["wide"]["error"]
    assert wide.startswith("exited 3") and wide.endswith("x the end")
    assert len(wide.encode()) < STDERR_BYTES + 100  # bounded: one long line is cut from the front
    assert steps["quiet"]["error"] == "exited 5"  # nothing on stderr: nothing added
