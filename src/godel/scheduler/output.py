"""How a run's output becomes events: what an ``AgentRun`` keeps about its stream (``RunOutput``).

Each output line becomes an ``agent:log`` event; the adapter's parser turns lines into signals, each of which
becomes an event of its own (``agent:message``, ``agent:tool_call``, …). The signals that decide the outcome
(the agent's final result and its errors) are also kept on the agent row, so a restarted server that re-adopts
the agent still has them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from godel.core.events import Event, make_event
from godel.core.ports import (
    AgentSignal,
    OutputLine,
    SignalKind,
    StreamParser,
)

log = structlog.get_logger("godel.watch")

SIGNAL_EVENTS = {
    SignalKind.MESSAGE: "agent:message",
    SignalKind.TOOL_CALL: "agent:tool_call",
    SignalKind.TOOL_RESULT: "agent:tool_result",
    SignalKind.USAGE: "agent:usage",
    SignalKind.NEEDS_INPUT: "agent:needs_input",
    SignalKind.ERROR: "agent:error",
    SignalKind.SESSION: "agent:session",
    SignalKind.FINAL: "agent:result",
}
OUTCOME_SIGNALS = (SignalKind.FINAL, SignalKind.ERROR, SignalKind.SESSION)
USAGE_FIELDS = ("inputTokens", "outputTokens", "cachedTokens")

# Godel's credentials by their form (gateway keys, agents' and users' API keys): masked in every line and signal, so
# a run adopted after a restart (whose key text the server no longer has) is masked as well as a fresh one.
_CREDENTIAL = re.compile(r"godel_(?:vk|ak|sk)_[A-Za-z0-9_\-]{8,}")

Changes = dict[str, dict[str, Any]]  # agent id → column updates committed with a batch of events


@dataclass(kw_only=True)
class RunOutput:
    """The stream side of a run: its parser, the signals that decide its outcome, usage totals, what it waits for.
    Ingesting a batch changes these in memory; ``checkpoint``/``rollback`` undo it when the batch's commit fails."""

    agent_id: str
    team_id: str | None
    parser: StreamParser
    signals: list[AgentSignal] = field(default_factory=list)
    waiting: bool = False  # what the agent's stream says: it asked for input and has not moved on
    usage: dict[str, Any] = field(default_factory=dict)  # this run's totals of the USAGE signals
    secrets: tuple[str, ...] = ()  # values (the provider key) never to be stored: replaced in lines and signals
    parse_failures: list[str] = field(default_factory=list)  # parser exceptions not yet recorded as events

    def event(self, type_: str, payload: dict[str, Any]) -> Event:
        return make_event(type_, payload, component="supervisor", agent_id=self.agent_id, team_id=self.team_id)

    def ingest(self, lines: list[OutputLine], events: list[Event], changes: Changes) -> None:
        for line in lines:
            text = self.redact(line.text)
            events.append(self.event("agent:log", {"stream": line.stream, "line": text}))
            self.absorb(self.guarded(self.parser.feed, line.stream, text), events, changes)

    def guarded(self, produce: Callable[..., list[AgentSignal]], *args: Any) -> list[AgentSignal]:
        """Signals from a parser (or a collector); one that raises loses that line's signals, never the run's
        supervision: the watch pass goes on for every agent, and the failure is on record."""
        try:
            return list(produce(*args))
        except Exception as exc:
            log.warning("agent output could not be parsed", agent=self.agent_id, error=repr(exc))
            self.parse_failures.append(f"{type(exc).__name__}: {exc}"[:500])
            return []

    def checkpoint(self) -> Checkpoint:
        """What ingesting a batch changes in memory, to put back when the batch's commit fails (its lines are
        then read and parsed again)."""
        return Checkpoint(copy.deepcopy(self.parser), dict(self.usage), len(self.signals), self.waiting)

    def rollback(self, cp: Checkpoint) -> None:
        self.parser, self.usage, self.waiting = cp.parser, cp.usage, cp.waiting
        del self.signals[cp.signals :]
        self.parse_failures.clear()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        if "godel_" in text:  # a credential Godel issued (the run's own, whatever the run knew): never stored
            text = _CREDENTIAL.sub("[redacted]", text)
        return text

    def absorb(self, signals: list[AgentSignal], events: list[Event], changes: Changes) -> None:
        for failure in self.parse_failures:
            events.append(self.event("agent:error", {"message": f"Godel could not parse the agent's output: {failure}",
                                                     "provider": False, "source": "godel"}))  # fmt: skip
        self.parse_failures.clear()
        for sig in signals:
            sig = AgentSignal(sig.kind, _redacted(sig.data, self.redact))
            events.append(self.event(SIGNAL_EVENTS[sig.kind], dict(sig.data)))
            if sig.kind in OUTCOME_SIGNALS:
                self.signals.append(sig)
                self._record(changes)
            elif sig.kind == SignalKind.USAGE:
                add_usage(self.usage, sig.data)
                self._record(changes)
            elif sig.kind == SignalKind.NEEDS_INPUT:
                self.waiting = True
            elif sig.kind in (SignalKind.TOOL_CALL, SignalKind.MESSAGE) and self.waiting:
                self.waiting = False  # the agent moved on: whatever it waited for arrived

    def _record(self, changes: Changes) -> None:
        # Kept on the agent row with the batch, so a re-adopting server still has them.
        changes.setdefault(self.agent_id, {})["outcome"] = {"signals": dump_signals(self.signals), "usage": self.usage}

    def native_session(self) -> str | None:
        ids = [s.data.get("sessionId") for s in self.signals if s.kind is SignalKind.SESSION]
        return str(ids[-1]) if ids and ids[-1] else None


@dataclass(frozen=True)
class Checkpoint:
    parser: StreamParser
    usage: dict[str, Any]
    signals: int
    waiting: bool


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    return value


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0  # a parser's odd value must not break the totals


def add_usage(total: dict[str, Any], data: dict[str, Any]) -> None:
    for key in USAGE_FIELDS:
        total[key] = int(total.get(key, 0)) + int(_number(data.get(key)))
    if data.get("costUsd") is not None:
        total["costUsd"] = round(float(total.get("costUsd") or 0.0) + _number(data["costUsd"]), 8)
    total["calls"] = int(total.get("calls", 0)) + 1


def dump_signals(signals: list[AgentSignal]) -> list[dict[str, Any]]:
    return [{"kind": s.kind.value, "data": s.data} for s in signals]


def load_signals(raw: object) -> list[AgentSignal]:
    kinds = {k.value for k in SignalKind}
    items = raw if isinstance(raw, list) else []
    return [
        AgentSignal(SignalKind(s["kind"]), s.get("data", {}))
        for s in items
        if isinstance(s, dict) and s.get("kind") in kinds
    ]
