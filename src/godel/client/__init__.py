"""The Godel HTTP SDK. It speaks only the API of docs/api.md and never imports the server (docs/client.md)."""

from godel.client.aio import AsyncGodelClient
from godel.client.errors import ApiError, ServerNotRunningError
from godel.client.models import Agent, Event, LogLine, Page, Task, Team, Workflow, WorkflowStep
from godel.client.sse import ServerSentEvent
from godel.client.sync import GodelClient

__all__ = [
    "Agent",
    "ApiError",
    "AsyncGodelClient",
    "Event",
    "GodelClient",
    "LogLine",
    "Page",
    "ServerNotRunningError",
    "ServerSentEvent",
    "Task",
    "Team",
    "Workflow",
    "WorkflowStep",
]
