"""The one wiring place, used the way an embedding program would: build the services, start them, run an agent
through the control plane without any HTTP, stop them, and nothing of theirs is left running."""

from __future__ import annotations

import asyncio
from pathlib import Path

from godel.api.app import create_app
from godel.core.states import AgentState
from godel.scheduler.requests import SpawnRequest
from godel.services import Services
from godel.settings import Settings


async def test_services_run_an_agent_embedded_and_stop_cleanly(settings: Settings, git_repo: Path) -> None:
    before = {t for t in asyncio.all_tasks() if not t.done()}
    services = Services.build(settings)
    await services.start()
    try:
        assert (settings.home / "credentials").exists()  # the first administrator, made at start as by the server
        agent = await services.plane.spawn(SpawnRequest(task="t", repo=str(git_repo), command="echo embedded"))
        ended = await services.plane.wait_for_end(agent.id, timeout=60)
        assert ended.state == AgentState.COMPLETED, ended.last_error
        assert [e.payload["line"] for e in await services.plane.logs(agent.id)] == ["embedded"]
    finally:
        await services.stop()
    left = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not left, sorted(t.get_name() for t in left)


async def test_the_api_and_its_services_share_one_merge_queue(settings: Settings) -> None:
    app = create_app(settings)  # the server: HTTP in front of the same services
    assert app.state.merges is app.state.services.merges
    assert app.state.services.plane is app.state.plane
