"""The attacker's move on Godel's own git: configuration that makes git run a program, planted in a workspace.

Each planted program, if it ever runs, writes a marker into a folder outside the workspace. The agent plants
everything git could honour -- ``core.fsmonitor``, ``core.hooksPath`` and hooks in its git directory, filter, diff
and merge drivers selected by ``.gitattributes`` and ``info/attributes``, ``diff.external``, a signing program with
``commit.gpgSign``, pager, editor, ``include.path``, a ``commondir`` pointing at a planted git directory, a nested
repository with its own configuration, and a ``.git`` (file or symlink) pointing at a planted git directory -- both
as the agent process itself (local and sandbox runtimes) and by direct writes on the host (what the local runtime's
agent, or one that escaped, could do). Then every path on which Godel runs git is driven: diff, snapshot, the
commit and commits at a run's end, restore, fork, a merge of the branch, cleanup. No marker may appear, and each
result must be right. A control at the end shows the plants are live: plain git in the workspace runs them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from godel.core.ids import new_id
from godel.core.ports import LaunchSpec, ProcessState, RuntimeHandle, WorkspaceSpec
from godel.merging import MergeQueue, make_plan
from godel.merging.results import BranchStatus
from godel.runtimes.local import LocalRuntime
from godel.runtimes.sandbox import SandboxRuntime
from tests.conftest import make_repo, remove_tree, run_git
from tests.sandbox.conftest import _scratch, require_sandbox

DONE = {ProcessState.EXITED, ProcessState.GONE}
HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout", "post-index-change",
         "reference-transaction", "pre-auto-gc", "post-merge", "post-rewrite")  # fmt: skip
PROGRAMS = ("fsmonitor", "clean", "smudge", "process", "textconv", "diffcmd", "external", "inc-clean", "merge",
            "gpg", "pager", "editor", "ssh", "planted-fsmonitor", "planted-clean", "nested-fsmonitor")  # fmt: skip

# Run in the workspace, as the agent or on the host. $M is the markers folder (outside the workspace and the
# sandbox), $DOTGIT how the workspace's .git ends up: "file" (rewritten to a planted git directory) or "symlink".
PLANT = r"""
set -u
W=$PWD; E=$W/.evil; P=$(sed -n 's/^gitdir: //p' .git)
mkdir -p "$E/hooks" "$E/gitdir/objects" "$E/gitdir/refs/heads"
prog() { printf '#!/bin/sh\ntouch "%s/%s-ran"\ncat\n' "$M" "$1" > "$2"; chmod +x "$2"; }
for k in PROGRAMS; do prog "$k" "$E/$k"; done
for h in HOOKS; do prog "hook-$h" "$E/hooks/$h"; prog "hook-$h" "$P/hooks/$h" 2>/dev/null; done
printf '[filter "inc"]\n\tclean = %s/inc-clean\n[core]\n\tfsmonitor = %s/fsmonitor\n' "$E" "$E" > "$E/inc.cfg"
cat >> "$P/config" 2>/dev/null <<EOF
[core]
	fsmonitor = $E/fsmonitor
	hooksPath = $E/hooks
	pager = $E/pager
	editor = $E/editor
	sshCommand = $E/ssh
[filter "evil"]
	clean = $E/clean
	smudge = $E/smudge
	required = true
[filter "p.x"]
	process = $E/process
[diff "evil"]
	textconv = $E/textconv
	command = $E/diffcmd
[diff]
	external = $E/external
[merge "evil"]
	driver = $E/merge
[gpg]
	program = $E/gpg
[commit]
	gpgSign = true
[include]
	path = $E/inc.cfg
EOF
ATTRS='* filter=evil diff=evil merge=evil
*.inc filter=inc
*.px filter=p.x'
printf '%s\n' "$ATTRS" > "$P/info/attributes" 2>/dev/null
printf '%s\n' "$ATTRS" > .gitattributes
echo x > a.inc; echo y > b.px
# A planted git directory with a configuration of its own, named by a commondir and by the .git below.
printf 'ref: refs/heads/main\n' > "$E/gitdir/HEAD"
printf '[core]\n\tfsmonitor = %s/planted-fsmonitor\n\tbare = false\n[filter "evil"]\n\tclean = %s/planted-clean\n' \
  "$E" "$E" > "$E/gitdir/config"
echo "$E/gitdir" > "$P/commondir" 2>/dev/null
# A nested repository (a gitlink in the tree) whose configuration runs a program.
git init -q sub && git -C sub -c user.name=a -c user.email=a@b commit -q --allow-empty -m s
printf '[core]\n\tfsmonitor = %s/nested-fsmonitor\n' "$E" >> sub/.git/config
echo changed >> README.md; echo new > new.txt
if [ "$DOTGIT" = symlink ]; then rm .git && ln -s "$E/gitdir" .git; else echo "gitdir: $E/gitdir" > .git; fi
echo planted
""".replace("PROGRAMS", " ".join(PROGRAMS)).replace("HOOKS", " ".join(HOOKS))


def sh(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """A command run to its end, output captured (the plain git of the controls, planting by direct writes)."""
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


@dataclass
class Scene:
    base: Path
    repo: Path
    markers: Path
    runtime: LocalRuntime
    handles: list[RuntimeHandle] = field(default_factory=list)

    def ran(self) -> list[str]:
        return sorted(p.name for p in self.markers.iterdir())

    async def prepare(self, **spec: object) -> RuntimeHandle:
        handle = await self.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=self.repo, **spec))  # type: ignore[arg-type]
        self.handles.append(handle)
        return handle

    async def plant(self, handle: RuntimeHandle, dotgit: str, *, as_agent: bool) -> None:
        env = {"M": str(self.markers), "DOTGIT": dotgit}
        if as_agent:
            started = await self.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", PLANT], env))
            self.handles.append(started)
            status = await self.runtime.wait_for_state(started, DONE, timeout=60)
            lines, _ = await self.runtime.read_output(started, {}, final=True)
            out = "\n".join(x.text for x in lines)
            assert status.exit_code == 0 and "planted" in out, out
        else:
            proc = sh(["/bin/sh", "-c", PLANT], cwd=handle.workspace, env={**os.environ, **env})
            assert proc.returncode == 0 and "planted" in proc.stdout, proc.stderr
        assert self.ran() == []  # planting ran nothing (the agent's own git never touched the plants)


def _local(base: Path) -> LocalRuntime:
    return LocalRuntime(base / "worktrees", base / "logs")


def _sandbox(base: Path) -> LocalRuntime:
    require_sandbox()
    return SandboxRuntime(base / "worktrees", base / "logs")


@pytest.fixture(params=["local", "sandbox"])
async def scene(request: pytest.FixtureRequest) -> AsyncIterator[Scene]:
    base = _scratch()
    try:
        runtime = (_local if request.param == "local" else _sandbox)(base)
        markers = base / "markers"
        markers.mkdir()
        s = Scene(base, make_repo(base / "repo"), markers, runtime)
        yield s
        for handle in s.handles:
            await s.runtime.terminate(handle, grace=0.0)
    finally:
        remove_tree(base)


@pytest.mark.parametrize("dotgit", ["file", "symlink"])
@pytest.mark.parametrize("as_agent", [True, False], ids=["by-the-agent", "direct-writes"])
async def test_nothing_planted_runs_on_any_path_that_runs_git(scene: Scene, dotgit: str, as_agent: bool) -> None:
    rt, repo = scene.runtime, scene.repo
    handle = await scene.prepare()
    base = handle.base_commit
    await scene.plant(handle, dotgit, as_agent=as_agent)

    diff = await rt.diff(handle)
    assert "b/new.txt" in diff and "+changed" in diff
    snap = await rt.snapshot(handle, "planted")
    assert run_git(repo, "show", f"{snap.commit}:new.txt") == "new"
    assert run_git(repo, "show", f"{snap.commit}:README.md").endswith("changed")
    assert snap.parent_commit == base

    assert await rt.commit_all(handle, "the agent's work") is True  # what a run's end does (commit_leftovers)
    commits = await rt.commits(handle)
    assert len(commits) == 1 and run_git(repo, "rev-parse", handle.branch) == commits[0]
    assert run_git(repo, "show", f"{handle.branch}:new.txt") == "new"

    await rt.restore(handle, "planted")  # the branch back to the snapshot's parent, the files as they were
    assert run_git(repo, "rev-parse", handle.branch) == base
    assert (handle.workspace / "new.txt").read_text() == "new\n"
    fork = await scene.prepare(from_snapshot="planted")
    assert (fork.workspace / "new.txt").read_text() == "new\n"
    assert await rt.commit_all(fork, "the fork's work") is True

    await rt.bring_back_branches(repo, [fork.branch])  # what a merge does first
    plan = await make_plan(repo, "integration", [fork.branch], base="main")
    results = await MergeQueue(plan, workdir=scene.base / "merges").run()
    assert [r.status for r in results] == [BranchStatus.MERGED], results
    assert run_git(repo, "show", "integration:new.txt") == "new"

    await rt.cleanup(fork)
    (handle.workspace / "late.txt").write_text("left uncommitted\n")
    await rt.cleanup(handle)
    assert handle.extra.get("final_snapshot") and not handle.workspace.exists()
    assert (
        run_git(repo, "show", f"refs/godel/snapshots/{handle.extra['final_snapshot']}:late.txt") == "left uncommitted"
    )
    assert scene.ran() == []


async def test_the_plants_are_live_for_plain_git(scene: Scene) -> None:
    """The control: the same plants do run programs when git is used the ordinary way in the workspace, so the test
    above would see Godel running them."""
    handle = await scene.prepare()
    await scene.plant(handle, "file", as_agent=False)
    sh(["git", "status"], cwd=handle.workspace)
    sh(["git", "add", "-A"], cwd=handle.workspace / "sub")
    assert {"planted-fsmonitor-ran", "nested-fsmonitor-ran"} <= set(scene.ran())  # the .git file, the nested repo
    dirs = scene.runtime._workspaces.dirs(handle.agent_id)
    sh(["git", f"--git-dir={dirs.git}", f"--work-tree={handle.workspace}", "add", "-A"])
    assert "planted-clean-ran" in scene.ran()  # the commondir the agent wrote: git takes the planted config
    (dirs.git / "commondir").write_text(".\n")
    sh(["git", f"--git-dir={dirs.git}", f"--work-tree={handle.workspace}", "add", "-A"])
    assert {"fsmonitor-ran", "clean-ran", "hook-post-index-change-ran"} <= set(scene.ran())  # its config, hooks


async def test_a_corrupt_object_never_enters_the_users_repository(fast_tmp: Path) -> None:
    runtime = _local(fast_tmp)
    repo = make_repo(fast_tmp / "repo")
    handle = await runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=repo))
    private = runtime._workspaces.dirs(handle.agent_id).git
    tree = run_git(repo, "rev-parse", "HEAD^{tree}")
    # A commit without an author: git makes one only when told to skip its checks; fsck rejects it.
    bad = sh(
        ["git", f"--git-dir={private}", "hash-object", "--literally", "-t", "commit", "-w", "--stdin"],
        input=f"tree {tree}\nparent {handle.base_commit}\ncommitter x <x@y> 1 +0000\n\nbad\n",
        check=True,
    ).stdout.strip()
    (private / "refs" / "heads" / handle.branch).write_text(f"{bad}\n")
    assert await runtime.commits(handle) == []  # not brought back: logged, the user's branch as it was
    assert run_git(repo, "rev-parse", handle.branch) == handle.base_commit
    assert sh(["git", "cat-file", "-e", bad], cwd=repo).returncode != 0
    await runtime.cleanup(handle)  # fails closed: the commits exist nowhere else, so the workspace is kept
    assert handle.workspace.is_dir() and private.is_dir()
    runtime._workspaces._remove(handle.workspace, runtime._workspaces.dirs(handle.agent_id))


async def test_the_sandboxed_agent_cannot_write_the_users_repository(fast_tmp: Path) -> None:
    require_sandbox()
    runtime = SandboxRuntime(fast_tmp / "worktrees", fast_tmp / "logs")
    repo = make_repo(fast_tmp / "repo")
    run_git(repo, "branch", "other")
    common = repo / ".git"

    def state() -> dict[str, object]:
        files = {str(p.relative_to(common)): p.read_bytes() for p in common.rglob("*") if p.is_file()}
        return {"refs": run_git(repo, "for-each-ref"), "files": files}

    handle = await runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=repo))
    private = runtime._workspaces.dirs(handle.agent_id).git
    private_config = (private / "config").read_bytes()
    before = state()  # the agent's branch is made by Godel at creation
    # Paths of the user's repository are not bound at all: a write there lands in the sandbox's own tmpfs at most
    # (checked on the host below). The private git directory is bound: its protected files must refuse inside.
    attempts = [
        f"git --git-dir={common} update-ref refs/heads/main HEAD~0",
        f"git --git-dir={common} update-ref refs/heads/other HEAD",
        f"git --git-dir={common} branch planted",
        f"echo x > {common}/refs/heads/planted",
        f"echo x > {common}/objects/planted",
        f"echo x > {common}/hooks/post-commit",
        f"echo '[core] fsmonitor=x' >> {common}/config",
    ]
    protected = [
        f"echo x >> {private}/config",
        f"echo x > {private}/hooks/post-commit",
        f"echo x > {private}/info/attributes",
        f"echo /tmp >> {private}/objects/info/alternates",
        f"rm -f {private}/config",
        f"mv {private}/config {private}/config.old",
        f"echo {private} > {private}/commondir",
        f"rm -rf {private}/hooks",
    ]
    script = "; ".join(f"sh -c {shlex.quote(a)} 2>/dev/null" for a in attempts)
    script += "; " + "; ".join(f"if sh -c {shlex.quote(a)} 2>/dev/null; then echo WROTE {a}; fi" for a in protected)
    script += (
        "; echo hi > made.txt && git add made.txt && git -c user.name=A -c user.email=a@x commit -qm made && echo ok"
    )
    started = await runtime.start(handle, LaunchSpec(["/bin/sh", "-c", script]))
    try:
        status = await runtime.wait_for_state(started, DONE, timeout=60)
        lines, _ = await runtime.read_output(started, {}, final=True)
        out = "\n".join(x.text for x in lines)
        assert status.exit_code == 0 and "ok" in out.splitlines(), out
        assert "WROTE" not in out, out
        assert state() == before  # no ref, hook, config or object of the user's repository changed
        assert (private / "config").read_bytes() == private_config
        commits = await runtime.commits(handle)  # only Godel moves the user's branch: the agent's own
        assert len(commits) == 1 and run_git(repo, "rev-parse", handle.branch) == commits[0]
        assert run_git(repo, "rev-parse", "main") == run_git(repo, "rev-parse", "other") == handle.base_commit
    finally:
        await runtime.terminate(started, grace=0.0)
        await runtime.cleanup(started)
