"""The API of docs/api.md, written once for both clients: every group of endpoints (one module per resource) in one
class. ``godel.client.calls`` explains how one definition serves the blocking and the async client."""

from __future__ import annotations

from godel.client.access import AccessCalls
from godel.client.agents import AgentCalls
from godel.client.calls import API, JSON, Deferred, R, agent_path, camelize, iso_param, patterns_param
from godel.client.events import EventCalls
from godel.client.gateway import GatewayCalls
from godel.client.tasks import TaskCalls, task_path
from godel.client.teams import TeamCalls, team_path
from godel.client.workflows import WorkflowCalls

__all__ = [
    "API",
    "JSON",
    "Deferred",
    "Endpoints",
    "agent_path",
    "camelize",
    "iso_param",
    "patterns_param",
    "task_path",
    "team_path",
]


class Endpoints(
    AgentCalls[R], EventCalls[R], GatewayCalls[R], AccessCalls[R], TaskCalls[R], WorkflowCalls[R], TeamCalls[R]
):
    """Every request, once; the sync and async clients supply ``_call`` (which returns a value or an awaitable)."""
