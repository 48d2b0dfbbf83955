"""What only the E2B runtime does: pause and resume through the SDK, the API key kept to the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from godel.core.ids import new_id
from godel.core.ports import LaunchSpec, ProcessState, WorkspaceSpec
from godel.errors import RuntimeFailure
from godel.runtimes import runtime_for
from godel.runtimes.e2b import E2BRuntime
from godel.settings import Settings
from tests.remote.conftest import DONE, Rig, fake_e2b
from tests.remote.fake_e2b import API_KEY


async def _until(check: Callable[[int], bool], read: Callable[[], Awaitable[int]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check(await read()):
        if time.monotonic() > deadline:
            pytest.fail("the agent's output did not change as expected")
        await asyncio.sleep(0.05)


ONLY = pytest.mark.parametrize("rig", ["e2b"], indirect=True)  # the rig of this runtime alone


@ONLY
async def test_pause_freezes_the_sandbox_and_resume_thaws_it(rig: Rig) -> None:
    handle = await rig.run("while :; do echo tick; sleep 0.05; done")
    log = handle.log_dir / "stdout.log"

    async def ticks() -> int:
        await rig.runtime.read_output(handle, {})
        return log.stat().st_size

    await _until(lambda size: size > 0, ticks)
    await rig.runtime.pause(handle)
    assert (await rig.runtime.status(handle)).state is ProcessState.STOPPED
    assert fake_e2b().sandboxes[handle.extra["remote"]].paused
    before = await ticks()
    await asyncio.sleep(0.3)  # a window in which a running loop prints ~6 lines
    assert log.stat().st_size == before
    await rig.runtime.resume(handle)
    assert (await rig.runtime.status(handle)).state is ProcessState.RUNNING
    await _until(lambda size: size > before, ticks)
    await rig.runtime.terminate(handle, grace=1)  # a paused one is resumed first; here it runs
    assert (await rig.runtime.status(handle)).state in DONE


@ONLY
async def test_the_api_key_goes_to_the_api_only(rig: Rig) -> None:
    fake = fake_e2b()
    seen = len(fake.requests)
    handle = await rig.run("env")
    await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    for method, path, headers in fake.requests[seen:]:
        if not path.startswith(("/sandboxes", "/v2/sandboxes")):  # envd: the sandbox never sees the key
            assert API_KEY not in str(headers), (method, path)
    for command in fake.commands:
        assert API_KEY not in str(command)
    out, err = await rig.output(handle)
    assert API_KEY not in "\n".join(out + err)
    assert API_KEY not in repr(rig.runtime)


@ONLY
async def test_a_sandbox_created_for_a_start_that_fails_is_killed(rig: Rig) -> None:
    fake = fake_e2b()
    fake.fail_next["start"] = 500  # the sandbox is made and the workspace delivered; starting the entry fails
    handle = await rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=rig.repo))
    with pytest.raises(RuntimeFailure, match="start the agent"):
        await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "true"]))
    made = [s for s in fake.requests if s[:2] == ("POST", "/v2/sandboxes")]
    assert made, "no sandbox was created"
    mine = [s.id for s in fake.sandboxes.values() if s.metadata.get("godel-agent") == handle.agent_id]
    assert mine == []  # not left running (and billed) on E2B with no record of it here
    assert (await rig.runtime.status(handle)).state is ProcessState.GONE


def test_built_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path / "home", e2b_api_key_env="GODEL_TEST_E2B_KEY", use_gateway=False)  # type: ignore[call-arg]
    monkeypatch.delenv("GODEL_TEST_E2B_KEY", raising=False)
    with pytest.raises(RuntimeFailure, match="GODEL_TEST_E2B_KEY"):
        runtime_for(settings, "e2b")
    monkeypatch.setenv("GODEL_TEST_E2B_KEY", "e2b_secret")
    runtime = runtime_for(settings, "e2b")
    assert isinstance(runtime, E2BRuntime) and runtime.capabilities().pause
    assert "e2b_secret" not in repr(runtime)
