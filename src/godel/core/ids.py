"""Identifiers. Entities use UUID v4 (spec §2.1); snapshots use a short, sortable, ref-safe id."""

from __future__ import annotations

import secrets
import time
import uuid


def new_id() -> str:
    return str(uuid.uuid4())


def new_snapshot_id() -> str:
    # Time-prefixed so `git for-each-ref refs/godel/snapshots` lists them in creation order.
    return f"{int(time.time() * 1000):013x}-{secrets.token_hex(4)}"


def branch_for(agent_id: str) -> str:
    return f"godel/{agent_id}"


def agent_of_branch(branch: str) -> str | None:
    """The agent whose branch this is (``godel/<id>``), or None for any other branch."""
    prefix, _, rest = branch.removeprefix("refs/heads/").partition("/")
    return rest if prefix == "godel" and rest and "/" not in rest else None


def snapshot_ref(snapshot_id: str) -> str:
    return f"refs/godel/snapshots/{snapshot_id}"
