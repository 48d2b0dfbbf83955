"""Third hostile review: what a merge gate (code a hostile branch smuggles into the test suite) leaves in the
integration worktree for Godel's own git, which runs there on the host after the gate."""

from __future__ import annotations

import shlex
from pathlib import Path

from godel.merging import BranchStatus, MergeQueue, make_plan
from godel.runtimes.sandbox import SandboxRuntime
from tests.conftest import run_git
from tests.merging.conftest import Fixture, build_five
from tests.sandbox.conftest import require_sandbox

# Run by the gate, confined, in the integration worktree: point the worktree's .git at a git directory planted in the
# tree, whose configuration runs a program (it writes the marker) whenever git refreshes the index.
_PLANT_DOTGIT = r"""
set -e
W=$PWD; E=$W/.planted; own=$(sed -n 's/^gitdir: //p' .git); common=$(cd "$own" && cd "$(cat commondir)" && pwd)
mkdir -p "$E/objects/info" "$E/refs/heads"
echo "$common/objects" > "$E/objects/info/alternates"
git rev-parse HEAD > "$E/HEAD"
cp "$own/index" "$E/index"
printf '#!/bin/sh\necho "ran as $(id -u) on $(uname -n)" > %s\nexit 1\n' "$MARK" > "$E/mon"; chmod +x "$E/mon"
printf '[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfsmonitor = %s/mon\n' "$E" > "$E/config"
echo "gitdir: $E" > .git
"""

# The same through the worktree's own git directory, which the gate may write: its commondir names the planted one.
_PLANT_COMMONDIR = r"""
set -e
W=$PWD; E=$W/.planted; own=$(sed -n 's/^gitdir: //p' .git); common=$(cd "$own" && cd "$(cat commondir)" && pwd)
mkdir -p "$E/objects/info" "$E/refs/heads"
echo "$common/objects" > "$E/objects/info/alternates"
cp "$common/config" "$E/config" 2>/dev/null || true
printf '#!/bin/sh\necho "ran as $(id -u) on $(uname -n)" > %s\nexit 1\n' "$MARK" > "$E/mon"; chmod +x "$E/mon"
printf '[core]\n\tfsmonitor = %s/mon\n' "$E" >> "$E/config"
echo "$E" > "$own/commondir"
"""


async def _gate_then_marker(fast_tmp: Path, plant: str) -> Path:
    require_sandbox()
    five: Fixture = build_five(fast_tmp / "repo")
    marker = fast_tmp / "host-marker"
    runtime = SandboxRuntime(fast_tmp / "w", fast_tmp / "l", run_root=fast_tmp / "run")
    gate = f"MARK={shlex.quote(str(marker))}; export MARK; " + plant
    plan = await make_plan(five.repo, "integration", ["feature/one"], verify=gate, verify_timeout=60)
    try:
        await MergeQueue(plan, workdir=fast_tmp / "m", runtime=runtime).run()
    except Exception:  # the run may fail on a broken worktree: what counts is whether the program ran on the host
        pass
    return marker


async def test_a_gate_repoints_the_worktrees_dotgit_and_godels_git_runs_its_program(fast_tmp: Path) -> None:
    marker = await _gate_then_marker(fast_tmp, _PLANT_DOTGIT)
    assert not marker.exists(), marker.read_text()


async def test_a_gate_rewrites_the_worktrees_commondir_and_godels_git_runs_its_program(fast_tmp: Path) -> None:
    marker = await _gate_then_marker(fast_tmp, _PLANT_COMMONDIR)
    assert not marker.exists(), marker.read_text()


async def test_a_gate_points_the_worktrees_head_at_the_users_branch_and_godels_reset_moves_it(fast_tmp: Path) -> None:
    require_sandbox()
    five: Fixture = build_five(fast_tmp / "repo")
    main = run_git(five.repo, "rev-parse", "refs/heads/main")
    runtime = SandboxRuntime(fast_tmp / "w", fast_tmp / "l", run_root=fast_tmp / "run")
    gate = "own=$(sed -n 's/^gitdir: //p' .git); echo 'ref: refs/heads/main' > \"$own/HEAD\""
    plan = await make_plan(five.repo, "integration", ["feature/one"], verify=gate, verify_timeout=60)
    (result,) = await MergeQueue(plan, workdir=fast_tmp / "m", runtime=runtime).run()
    assert result.status is BranchStatus.MERGED, (result.reason, result.output)
    assert run_git(five.repo, "rev-parse", "refs/heads/main") == main, "the gate had Godel move the user's main"
