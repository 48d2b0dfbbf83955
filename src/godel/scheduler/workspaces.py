"""Commands on an agent's working tree and history: snapshots (git refs of its tree), restore, fork (a new agent
from a snapshot, optionally with the conversation up to a session point), and its sessions with transcripts."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from godel.core.events import make_event
from godel.core.ids import new_snapshot_id
from godel.core.models import Agent, Session, Snapshot
from godel.core.ports import AgentAdapter, Runtime, RuntimeHandle, Store
from godel.core.states import AgentState
from godel.errors import ConflictError, FieldError, SnapshotNotFoundError, ValidationError
from godel.scheduler.handles import handle_of
from godel.scheduler.requests import SpawnRequest, fork_request
from godel.scheduler.sessions import Sessions, render_transcript
from godel.settings import Settings

_PREAMBLE_LIMIT = 64 * 1024  # characters of earlier conversation a fork from a session point carries


class WorkspaceCommands:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        settings: Settings,
        sessions: Sessions,
        spawn: Callable[..., Awaitable[Agent]],
        validate: Callable[[SpawnRequest], tuple[AgentAdapter, dict[str, Any], dict[str, Any]]],
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.settings = settings
        self._sessions = sessions
        self._spawn = spawn
        self._validate = validate

    def _workspace_handle(self, agent: Agent) -> RuntimeHandle:
        if not agent.worktree or not Path(agent.worktree).exists():
            raise ConflictError(
                f"agent {agent.id} has no workspace on disk (state {agent.state.value})",
                details={"currentState": agent.state.value},
            )
        return handle_of(agent, self.runtime.name, self.settings.worktrees_dir)

    async def snapshot(
        self, agent_id: str, *, label: str | None = None, include_ignored: bool = False, actor: str = "api"
    ) -> Snapshot:
        agent = await self.store.get_agent(agent_id)
        handle = self._workspace_handle(agent)
        info = await self.runtime.snapshot(handle, new_snapshot_id(), include_ignored=include_ignored)
        snap = await self.store.add_snapshot(
            Snapshot(
                id=info.id, agent_id=agent_id, ref=info.ref, commit=info.commit,
                parent_commit=info.parent_commit, label=label, created_at=info.created_at,
            )
        )  # fmt: skip
        await self.store.append_events(
            [make_event("agent:snapshot", {"snapshotId": snap.id, "commit": snap.commit, "label": label,
                        "includeIgnored": include_ignored, "actor": actor}, component="api", agent_id=agent_id,
                        team_id=agent.team_id)]
        )  # fmt: skip
        return snap

    async def snapshots(self, agent_id: str) -> list[Snapshot]:
        await self.store.get_agent(agent_id)
        return await self.store.list_snapshots(agent_id)

    async def _own_snapshot(self, agent_id: str, snapshot_id: str) -> Snapshot:
        snap = await self.store.get_snapshot(snapshot_id)
        if snap.agent_id != agent_id:
            raise SnapshotNotFoundError(snapshot_id)
        return snap

    async def restore(self, agent_id: str, snapshot_id: str, *, actor: str = "api") -> Agent:
        agent = await self.store.get_agent(agent_id)
        snap = await self._own_snapshot(agent_id, snapshot_id)
        if agent.state in (
            AgentState.EXECUTING,
            AgentState.WAITING,
            AgentState.INITIALIZING,
            AgentState.SPAWNING,
        ):
            raise ConflictError(
                f"agent {agent_id} is {agent.state.value}; pause or stop it before restoring a snapshot",
                details={"currentState": agent.state.value},
            )
        await self.runtime.restore(self._workspace_handle(agent), snap.id)
        await self.store.append_events(
            [make_event("agent:restore", {"snapshotId": snap.id, "commit": snap.commit, "actor": actor},
                        component="api", agent_id=agent_id, team_id=agent.team_id)]
        )  # fmt: skip
        return await self.store.get_agent(agent_id)

    async def fork(
        self,
        agent_id: str,
        *,
        snapshot_id: str | None = None,
        overrides: dict[str, Any] | None = None,
        session_point: int | None = None,
        include_ignored: bool = False,
        actor: str = "api",
        owner: str | None = None,
    ) -> Agent:
        """A new agent from a snapshot of this one's working tree (a fresh one when none is named). With
        ``session_point`` N, it also gets the first N entries of this agent's transcript, as context before its
        task, so it picks up the conversation where it stood."""
        source = await self.store.get_agent(agent_id)
        req = fork_request(source, snapshot_id or "", overrides or {})
        req.owner = owner or source.owner  # the fork is its maker's (the source's owner's when made internally)
        if req.owner and req.owner.startswith("agent:"):  # an agent's own credential: held like its sub-agents
            req.metadata["parentAgent"] = req.owner.split(":", 1)[1]
        if req.owner != source.owner:
            req.env = {}  # the source's secrets belong to its owner, not to whoever forks it
        if session_point is not None:
            req.prompt_context = await self._fork_preamble(agent_id, session_point)
            req.metadata["sessionPoint"] = session_point
        self._validate(req)  # refused before a snapshot is taken for it
        snap = (
            await self._own_snapshot(agent_id, snapshot_id)
            if snapshot_id
            else await self.snapshot(agent_id, label="fork", include_ignored=include_ignored, actor=actor)
        )
        req.snapshot_from = snap.id
        req.metadata["snapshotId"] = snap.id
        return await self._spawn(req, actor=actor)

    async def _fork_preamble(self, agent_id: str, session_point: int) -> str | None:
        entries = [e for s in await self.sessions(agent_id) for e in s.context.get("messages", [])]
        if not 0 <= session_point <= len(entries):
            raise ValidationError(
                f"session point {session_point} is outside the transcript ({len(entries)} entries)",
                [FieldError("sessionPoint", f"between 0 and {len(entries)}")],
            )
        kept = entries[:session_point]
        if not kept:
            return None
        text = render_transcript(kept)
        if len(text) > _PREAMBLE_LIMIT:  # it travels as one command-line argument (Linux: 128 KiB at most)
            text = "[… earlier entries left out …]\n" + text[-_PREAMBLE_LIMIT:]
        return (
            f"You continue the work of another agent. Its conversation up to entry {len(kept)} of {len(entries)} "
            f"follows; the working tree you start from is a snapshot of that agent's workspace.\n{text}\n\n"
            "Your task from here:"
        )

    async def sessions(self, agent_id: str) -> list[Session]:
        """The agent's runs as Sessions, oldest first, each with its transcript in ``context["messages"]``."""
        await self.store.get_agent(agent_id)
        out = []
        sessions = await self.store.list_sessions(agent_id)
        for i, session in enumerate(sessions):
            nxt = sessions[i + 1].context.get("fromSequence") if i + 1 < len(sessions) else None
            messages = await self._sessions.messages(session, int(nxt) + 1 if nxt is not None else None)
            out.append(dataclasses.replace(session, context={**session.context, "messages": messages}))
        return out
