"""Both remote runtimes, each against its fake at the HTTP edge: the workspace goes there and the work comes back,
exit statuses, terminate, adoption by a restarted server, refusals mapped to RuntimeFailure, secrets kept out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from godel.core.ids import new_id
from godel.core.ports import RUN_KEY, LaunchSpec, ProcessState, RuntimeHandle, WorkspaceSpec
from godel.errors import RuntimeFailure
from tests.remote.conftest import DONE, Rig, g
from tests.remote.fake_e2b import API_KEY, FakeE2B
from tests.remote.fake_k8s import FakeKubernetes


async def _until_output(rig: Rig, handle: RuntimeHandle, text: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        lines, _ = await rig.runtime.read_output(handle, {})
        if any(x.text == text for x in lines):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} never appeared in the output")
        await asyncio.sleep(0.05)


async def test_the_agents_commits_and_working_tree_come_back_to_its_branch(rig: Rig) -> None:
    script = (
        'echo work > work.txt && git add work.txt && git commit -qm "agent work" && echo left > uncommitted.txt && '
        'echo changed >> README.md && pwd && echo "stderr line" >&2'
    )
    handle = await rig.run(script)
    status = await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    assert (status.state, status.exit_code) == (ProcessState.EXITED, 0)
    out, err = await rig.output(handle)
    assert out == [str(handle.workspace)]  # the workspace sits at the server's own path inside
    assert err == ["stderr line"]
    commits = await rig.runtime.commits(handle)
    assert len(commits) == 1 and g(rig.repo, "log", "-1", "--format=%s", handle.branch) == "agent work"
    assert g(rig.repo, "show", f"{handle.branch}:work.txt") == "work"
    assert (handle.workspace / "uncommitted.txt").read_text() == "left\n"  # the working tree came back too
    assert "+changed" in await rig.runtime.diff(handle)
    assert g(rig.repo, "rev-parse", "main") == handle.base_commit  # no other branch moved


async def test_a_failing_agent_reports_its_exit_code_and_stderr(rig: Rig) -> None:
    handle = await rig.run("echo about to fail; echo broken >&2; exit 7")
    status = await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    assert (status.state, status.exit_code) == (ProcessState.EXITED, 7)
    assert await rig.output(handle) == (["about to fail"], ["broken"])
    assert (await rig.runtime.status(handle)).exit_code == 7  # stable once brought home


async def test_a_missing_program_exits_127(rig: Rig) -> None:
    handle = await rig.run("no-such-program-godel")
    status = await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    assert status.exit_code == 127
    _, err = await rig.output(handle)
    assert any("no-such-program-godel" in line for line in err)


async def test_output_is_mirrored_while_the_agent_runs(rig: Rig) -> None:
    handle = await rig.run("echo first; sleep 100")
    await _until_output(rig, handle, "first")
    assert (await rig.runtime.status(handle)).state is ProcessState.RUNNING


async def test_terminate_ends_the_agent_and_still_brings_its_commits_back(rig: Rig) -> None:
    handle = await rig.run(
        'echo done > a.txt && git add a.txt && git commit -qm "before the kill"; echo ready; sleep 100'
    )
    await _until_output(rig, handle, "ready")
    started = time.monotonic()
    await rig.runtime.terminate(handle, grace=5)
    assert time.monotonic() - started < 15
    status = await rig.runtime.status(handle)
    assert (status.state, status.exit_code) == (ProcessState.EXITED, 128 + 15)  # TERM reached the agent's group
    assert g(rig.repo, "log", "-1", "--format=%s", handle.branch) == "before the kill"


async def test_a_restarted_server_adopts_a_running_agent(rig: Rig) -> None:
    handle = await rig.run("echo up; sleep 100")
    fresh = rig.fresh()
    assert await fresh.adopt(handle)
    assert (await fresh.status(handle)).state is ProcessState.RUNNING
    await fresh.terminate(handle, grace=1)
    assert (await fresh.status(handle)).state is ProcessState.EXITED
    assert (await rig.output(handle))[0] == ["up"]


async def test_adopt_completes_an_unrecorded_launch_from_its_record(rig: Rig) -> None:
    handle = await rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=rig.repo))
    handle.extra[RUN_KEY] = "launch-1"
    handle = await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "sleep 100"]))
    rig.handles.append(handle)
    found = RuntimeHandle(**{**handle.__dict__, "pid": None, "pid_started": None, "extra": {RUN_KEY: "launch-1"}})
    assert await rig.fresh().adopt(found)
    assert (found.pid, found.pid_started) == (handle.pid, handle.pid_started)
    other = RuntimeHandle(**{**handle.__dict__, "pid": None, "pid_started": None, "extra": {RUN_KEY: "launch-2"}})
    assert not await rig.fresh().adopt(other)  # the record is another launch's


async def test_a_handle_that_does_not_match_the_launch_acts_on_nothing(rig: Rig) -> None:
    handle = await rig.run("sleep 100")
    assert handle.pid_started is not None
    impostor = RuntimeHandle(**{**handle.__dict__, "pid_started": handle.pid_started - 1000})
    fresh = rig.fresh()
    assert not await fresh.adopt(impostor)
    assert (await fresh.status(impostor)).state is ProcessState.GONE
    await fresh.terminate(impostor, grace=0)
    assert (await rig.runtime.status(handle)).state is ProcessState.RUNNING


async def test_the_servers_secrets_never_reach_the_agent(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-secret")
    handle = await rig.run("env; cat /proc/self/environ", env={"GODEL_GATEWAY_KEY": "vk-agent"})
    await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    out, err = await rig.output(handle)
    text = "\n".join(out + err)
    assert "GODEL_GATEWAY_KEY=vk-agent" in text  # the agent's own virtual key is there…
    assert "sk-server-secret" not in text and API_KEY not in text  # …the server's keys are not
    assert "sk-server-secret" not in (handle.log_dir / "stdout.log").read_text()


async def test_a_refusal_of_the_remote_is_a_runtime_failure(rig: Rig) -> None:
    fake = _fake(rig)
    for status in (403, 500):
        if isinstance(fake, FakeKubernetes):
            fake.fail_next[("POST", "pods")] = (status, "refused by the test")
        else:
            fake.fail_next["create"] = status
        handle = await rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=rig.repo))
        with pytest.raises(RuntimeFailure) as info:
            await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "true"]))
        assert str(status) in info.value.message or info.value.details.get("status") == status
        assert info.value.status_code == 500 and info.value.code == "RUNTIME_ERROR"
        assert (await rig.runtime.status(handle)).state is ProcessState.GONE
        await rig.runtime.discard(handle)  # nothing ran: the fallback chain can take the agent elsewhere
        assert not handle.workspace.exists()


async def test_a_second_start_keeps_the_previous_runs_logs(rig: Rig) -> None:
    handle = await rig.run("echo first; exit 1")
    await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    handle = await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "echo second"]))
    rig.handles.append(handle)
    status = await rig.runtime.wait_for_state(handle, DONE, timeout=30)
    assert status.exit_code == 0
    assert (await rig.output(handle))[0] == ["second"]
    assert (handle.log_dir / "run-1" / "stdout.log").read_text() == "first\n"


async def test_cleanup_stops_the_agent_and_deletes_the_remote_side(rig: Rig) -> None:
    handle = await rig.run("sleep 100")
    await rig.runtime.cleanup(handle)
    assert (await rig.runtime.status(handle)).state in DONE
    assert not handle.workspace.exists()
    fake = _fake(rig)
    live = fake.pods if isinstance(fake, FakeKubernetes) else fake.sandboxes
    assert handle.extra["remote"] not in {k[1] if isinstance(k, tuple) else k for k in live}


def _fake(rig: Rig) -> FakeKubernetes | FakeE2B:
    from tests.remote.conftest import fake_e2b, fake_kubernetes

    return fake_kubernetes() if rig.name == "kubernetes" else fake_e2b()


def test_files_of_the_launch_are_written_at_their_paths(tmp_path: Path) -> None:
    """(Covered end to end by the conformance suite's start test; here only that the packing keeps them private.)"""
    import io
    import tarfile

    from godel.runtimes.remote.transfer import _pack

    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "a.txt").write_text("a\n")
    (tmp_path / "b").write_bytes(b"")
    packed = _pack(tmp_path / "ws", tmp_path / "b", "n\ne\n", {Path("/x/y/cfg.json"): "{}"})
    with tarfile.open(fileobj=io.BytesIO(packed)) as outer:
        files = outer.extractfile("files.tar")
        assert files is not None
        with tarfile.open(fileobj=io.BytesIO(files.read())) as inner:
            (member,) = inner.getmembers()
            assert (member.name, member.mode) == ("x/y/cfg.json", 0o600)
