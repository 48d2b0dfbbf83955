"""Merge gates and conflict resolvers run what agents wrote: with a confining default runtime they run as confined
as an agent. The gate here is what a hostile branch would smuggle into a test suite: it reads the server's secrets,
writes outside the worktree and calls the server on loopback. Confined, all three fail while the gate itself passes
and the merge lands; the same gate unconfined shows each of them would have worked."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from godel.merging import BranchStatus, CommandResolver, MergeQueue, make_plan
from godel.runtimes.sandbox import SandboxRuntime
from tests.conftest import run_git
from tests.merging.conftest import Fixture, build_five
from tests.sandbox.conftest import require_sandbox


def _hostile_gate(secret: Path, outside: Path, port: int) -> str:
    """Fails, saying which, when any escape works; passes when none does and the merged tree is there."""
    return (
        "bad=0; "
        f"if cat {shlex.quote(str(secret))}; then echo READ-SECRET; bad=1; fi; "
        # A write outside the worktree may succeed inside (a mount point's parent is the sandbox's own tmpfs): what
        # counts is whether it reached the host's file, which the test checks.
        f"echo pwned > {shlex.quote(str(outside))}; "
        f"if python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=3)'; "
        "then echo REACHED-SERVER; bad=1; fi; "
        '[ "$bad" = 0 ] && test -f ok'  # the gate's real work still sees the merged tree
    )


async def _listener() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_gate_runs_as_confined_as_an_agent(fast_tmp: Path) -> None:
    require_sandbox()
    five: Fixture = build_five(fast_tmp / "repo")
    secret = fast_tmp / "home" / "secret.key"
    secret.parent.mkdir()
    secret.write_text("the-server-secret\n")
    server, port = await _listener()
    try:
        runtime = SandboxRuntime(fast_tmp / "w", fast_tmp / "l", run_root=fast_tmp / "run")
        gate = _hostile_gate(secret, fast_tmp / "outside.txt", port)
        plan = await make_plan(five.repo, "integration", ["feature/one"], verify=gate, verify_timeout=60)
        (result,) = await MergeQueue(plan, workdir=fast_tmp / "m", runtime=runtime).run()
        assert result.status is BranchStatus.MERGED, (result.reason, result.output)  # no escape worked
        assert not (fast_tmp / "outside.txt").exists()

        # The control: the same gate unconfined (runtime "local", or merge_gate_confined off) does all three.
        plan = await make_plan(five.repo, "integration2", ["feature/one"], verify=gate, verify_timeout=60)
        (result,) = await MergeQueue(plan, workdir=fast_tmp / "m2", runtime=None).run()
        assert result.status is BranchStatus.GATE_FAILED
        for escape in ("the-server-secret", "READ-SECRET", "REACHED-SERVER"):
            assert escape in (result.output or ""), (escape, result.output)
        assert (fast_tmp / "outside.txt").read_text() == "pwned\n"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_conflict_resolver_runs_confined_and_still_resolves(fast_tmp: Path) -> None:
    require_sandbox()
    five = build_five(fast_tmp / "repo")
    secret = fast_tmp / "secret.key"
    secret.write_text("the-server-secret\n")
    runtime = SandboxRuntime(fast_tmp / "w", fast_tmp / "l", run_root=fast_tmp / "run")
    # Take "ours" for every conflicting path, and try to read the secret on the way.
    command = f'if cat {shlex.quote(str(secret))}; then exit 9; fi; git checkout --ours -- "$@"'
    resolver = CommandResolver(command, fast_tmp / "refinery", timeout=60, runtime=runtime)
    plan = await make_plan(five.repo, "integration", ["feature/two", "feature/three"], verify="true")
    results = await MergeQueue(plan, workdir=fast_tmp / "m", resolver=resolver, runtime=runtime).run()
    assert [r.status for r in results] == [BranchStatus.MERGED, BranchStatus.MERGED], [r.reason for r in results]
    assert run_git(five.repo, "show", "integration:shared.txt")  # the resolution landed
