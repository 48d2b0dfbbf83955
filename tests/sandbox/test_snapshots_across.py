"""Snapshots in every runtime, with ignored files when asked, and forks from them into another runtime: an agent
works in the sandbox, its working tree (a commit, an untracked file, an ignored build output) is snapshotted, and
forks continue from it on the local runtime and in a container, each seeing exactly what the snapshot holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import eventually, wait_state
from tests.conftest import make_repo
from tests.sandbox.conftest import require_sandbox
from tests.sandbox.containers import require_container
from tests.sandbox.test_selection import _output, _server

WORK = (
    "echo built > out.bin && echo note > notes.txt && echo code > lib.py && git add lib.py && "
    "git commit -qm lib && sleep 300"
)
SHOW = "for f in lib.py notes.txt out.bin; do if [ -f $f ]; then echo $f=$(cat $f); else echo $f=absent; fi; done"


async def _snapshot(client: httpx.AsyncClient, agent_id: str, **body: Any) -> dict[str, Any]:
    r = await client.post(f"/api/v1/agents/{agent_id}/snapshots", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def _fork_shows(client: httpx.AsyncClient, agent_id: str, **body: Any) -> tuple[dict[str, Any], str]:
    r = await client.post(f"/api/v1/agents/{agent_id}/fork", json={"agent": "command", "command": SHOW, **body})
    assert r.status_code == 201, r.text
    fork = r.json()["data"]
    done = await wait_state(client, fork["id"], "completed", "failed", timeout=60)
    assert done["state"] == "completed", done["lastError"]
    return done, await _output(client, fork["id"])


async def test_snapshots_with_ignored_files_and_forks_into_other_runtimes(fast_tmp: Path) -> None:
    require_sandbox()
    require_container()
    repo = make_repo(fast_tmp / "repo", {"README.md": "# demo\n", ".gitignore": "*.bin\n"})
    async with _server(fast_tmp / "home", runtimes=["sandbox", "container"]) as client:
        r = await client.post("/api/v1/agents", json={"task": "t", "repo": str(repo), "command": WORK,
                                                      "config": {"sandbox": {"runtime": "sandbox"}}})  # fmt: skip
        assert r.status_code == 201, r.text
        source = r.json()["data"]

        async def ready() -> bool:
            worktree = (await client.get(f"/api/v1/agents/{source['id']}")).json()["data"]["metadata"]["worktree"]
            return bool(worktree) and (Path(worktree) / "notes.txt").is_file()

        await eventually(ready, timeout=30)
        plain = await _snapshot(client, source["id"], label="plain")
        whole = await _snapshot(client, source["id"], label="whole", includeIgnored=True)

        # Into the local runtime from the plain snapshot: the commit and the untracked file, no ignored output.
        fork, shown = await _fork_shows(client, source["id"], snapshotId=plain["id"], runtime="local")
        assert fork["isolation"]["runtime"] == "local"
        assert shown.split() == ["lib.py=code", "notes.txt=note", "out.bin=absent"]
        # Into a container from the whole one: the ignored build output too.
        fork, shown = await _fork_shows(client, source["id"], snapshotId=whole["id"], runtime="container")
        assert fork["isolation"]["runtime"] == "container"
        assert shown.split() == ["lib.py=code", "notes.txt=note", "out.bin=built"]
        # Without naming one, a fork stays where its source runs.
        fork, shown = await _fork_shows(client, source["id"], snapshotId=whole["id"])
        assert fork["isolation"]["runtime"] == "sandbox" and "out.bin=built" in shown.split()
        # A runtime this server does not offer is refused, and nothing is made.
        r = await client.post(f"/api/v1/agents/{source['id']}/fork", json={"runtime": "gvisor"})
        assert r.status_code == 400 and "not enabled" in r.json()["error"]["message"], r.text
