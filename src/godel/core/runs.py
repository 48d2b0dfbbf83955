"""What an agent's runs carry from one to the next, and when an agent has ended for good.

``RunContext`` is the typed form of the agent row's ``context`` column (a JSON document, kept with camelCase keys
so rows written by earlier versions read the same):

- ``route``: the ``provider/model`` names this agent may use, primary first (decided at spawn);
- ``route_index``: which of them the next attempt uses (moved on when a provider fails);
- ``prompt``: the message of the next run when it is a follow-up (``continue``), else the task is sent;
- ``preamble``: text put before the task (a fork from a session point: the earlier conversation);
- ``resume``: the CLI's own session id the next run continues;
- ``native_session``: the CLI's session id of the last run (from its stream), what a follow-up resumes;
- ``session``: the id of the current run's Session row;
- ``depth``: how many follow-ups deep the next run's session is;
- ``skipped_fallbacks``: fallback models left out of the route at spawn (their CLI cannot speak to them).

Keys this version does not know are kept as they are (``extra``), so a newer server's rows survive a round trip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from godel.core.models import Agent
from godel.core.states import AgentState

_KEYS = {
    "route": "route",
    "route_index": "routeIndex",
    "prompt": "prompt",
    "preamble": "preamble",
    "resume": "resume",
    "native_session": "nativeSession",
    "session": "session",
    "depth": "depth",
    "skipped_fallbacks": "skippedFallbacks",
}


@dataclass(frozen=True)
class RunContext:
    route: tuple[str, ...] = ()
    route_index: int = 0
    prompt: str | None = None
    preamble: str | None = None
    resume: str | None = None
    native_session: str | None = None
    session: str | None = None
    depth: int = 0
    skipped_fallbacks: tuple[Any, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> RunContext:
        raw = dict(raw or {})
        known = {attr: raw.pop(key) for attr, key in _KEYS.items() if key in raw}
        known["route"] = tuple(str(x) for x in known.get("route") or ())
        known["skipped_fallbacks"] = tuple(known.get("skipped_fallbacks") or ())
        known["route_index"] = _int(known.get("route_index"))
        known["depth"] = _int(known.get("depth"))
        return cls(**known, extra=raw)

    @classmethod
    def of(cls, agent: Agent) -> RunContext:
        return cls.parse(agent.context)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for attr, key in _KEYS.items():
            value = getattr(self, attr)
            if attr == "route_index":
                if self.route:
                    out[key] = value
            elif value not in (None, (), 0):  # absent, as rows have always been written
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> RunContext:
        return dataclasses.replace(self, **changes)

    @property
    def model(self) -> str | None:
        """The route's model for the next attempt (None: the agent names no model route)."""
        if not self.route:
            return None
        return self.route[min(self.route_index, len(self.route) - 1)]

    @property
    def next_fallback(self) -> str | None:
        """The model a provider failure falls back to, if the route has one left."""
        return self.route[self.route_index + 1] if self.route_index + 1 < len(self.route) else None

    def route_from_current(self) -> list[str]:
        """The route, rotated so that this attempt's model comes first (what the run's gateway key allows)."""
        index = min(self.route_index, max(0, len(self.route) - 1))
        return list(self.route[index:] + self.route[:index])

    def task_for(self, task: str) -> str:
        """What the next run is told: a follow-up's message, or the task (after a fork's preamble)."""
        if self.prompt:
            return self.prompt
        return f"{self.preamble}\n\n{task}" if self.preamble else task

    def fresh(self) -> RunContext:
        """For a restart: the same route from its primary model again, the fork preamble, no follow-up and no
        session to resume."""
        return self.replace(prompt=None, resume=None, route_index=0)

    def with_native(self, native: str | None) -> RunContext:
        return self.replace(native_session=native or self.native_session)


def ended_for_good(agent: Agent) -> bool:
    """Whether the agent will not run again on its own: completed, killed, or failed with neither a retry nor a
    fallback to the route's next model left. The one definition every waiter (workflows, teams, the task queue,
    the API's waits) uses."""
    if agent.state in (AgentState.COMPLETED, AgentState.KILLED):
        return True
    if agent.state != AgentState.FAILED:
        return False
    if agent.outcome.get("fallback"):
        return False  # the run's provider failed and the scheduler falls back to the route's next model
    return agent.retry_count >= agent.max_retries


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
