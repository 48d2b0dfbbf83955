"""A conflict handed to a real refinery agent (pi through the gateway, against the scripted model): it resolves
the conflict on its own branch, Godel commits the resolution, and the queue merges that branch behind the gate.
The conflicting branch itself is left as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.agents.conftest import agents_dir, require_cli
from tests.conftest import make_repo, run_git
from tests.gateway.conftest import MODEL, stack  # noqa: F401  (a fixture)

RESOLVE = [
    {"tool_call": {"name": "write", "arguments": {"path": "notes.txt", "content": "one\ntwo\n"}}},
    {"text": "Resolved the conflict in notes.txt."},
]


async def test_a_refinery_agent_resolves_a_conflict_on_its_own_branch(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    require_cli("pi")
    repo = make_repo(fast_tmp / "repo", {"notes.txt": "base\n"})
    for name, text in (("feature-one", "one\n"), ("feature-two", "two\n")):
        run_git(repo, "checkout", "-q", "-b", name, "main")
        (repo / "notes.txt").write_text(text)
        run_git(repo, "commit", "-qam", f"write {text.strip()}")
    run_git(repo, "checkout", "-q", "main")
    tips = {b: run_git(repo, "rev-parse", b) for b in ("feature-one", "feature-two")}
    settings = {"agents_dir": agents_dir(), "agent_cli_retries": 0, "watch_interval": 0.02, "reconcile_interval": 0.05}
    async with (
        stack(RESOLVE, **settings) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as client,
    ):
        body = {
            "repo": str(repo), "into": "integration", "branches": ["feature-one", "feature-two"],
            "verify": "grep -qx one notes.txt",  # the resolution must keep feature-one's line
            "refinery": {"agent": "pi", "model": f"scripted/{MODEL}"},
        }  # fmt: skip
        r = await client.post("/api/v1/merges", json=body)
        assert r.status_code == 202, r.text
        while True:
            report = (await client.get(f"/api/v1/merges/{r.json()['data']['id']}")).json()["data"]
            if report["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.1)  # polling the merge job
        one, two = report["results"]
        assert one["status"] == "merged" and two["status"] == "merged", report
        assert two["resolution"]["branch"].startswith("godel/") and "pi agent" in two["resolution"]["note"]
        assert run_git(repo, "show", "integration:notes.txt") == "one\ntwo"
        assert {b: run_git(repo, "rev-parse", b) for b in tips} == tips  # the agents' branches are untouched
        # The refinery agent went through the gateway like any agent, and saw the conflict it was given.
        (request,) = [r for r in s.model.requests if r.tool_results == 0]
        assert "notes.txt" in str(request.body) and "feature-two" in str(request.body)


async def test_a_refinery_that_could_never_run_is_refused_before_the_merge(stack: Any, fast_tmp: Path) -> None:  # noqa: F811
    require_cli("pi")
    repo = make_repo(fast_tmp / "repo", {"notes.txt": "base\n"})
    async with stack(RESOLVE) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as client:
        base = {"repo": str(repo), "into": "integration", "branches": ["main"]}
        for refinery, field in (
            ({"agent": "pi"}, "refinery"),  # pi needs a model
            ({"agent": "nosuch", "model": f"scripted/{MODEL}"}, "refinery"),
            ({"agent": "command"}, "refinery.agent"),
            ({"agent": "pi", "model": "nowhere/none"}, "refinery"),
        ):
            r = await client.post("/api/v1/merges", json={**base, "refinery": refinery})
            assert r.status_code == 400, (refinery, r.text)
            assert r.json()["error"]["details"]["fields"][0]["field"] == field
        assert (await client.get("/api/v1/merges")).json()["data"]["items"] == []  # nothing was started
