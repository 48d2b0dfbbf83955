"""The Godel HTTP SDK. It speaks only the API of docs/api.md and never imports the server (docs/client.md)."""

from typing import TYPE_CHECKING, Any

from godel.client.errors import ApiError, ServerNotRunningError
from godel.client.models import Agent, Event, LogLine, Page, Task, Team, Workflow, WorkflowStep
from godel.client.sse import ServerSentEvent
from godel.client.sync import GodelClient

if TYPE_CHECKING:
    from godel.client.aio import AsyncGodelClient


def __getattr__(name: str) -> Any:
    # The async client brings asyncio (~10% of a CLI call's imports); the blocking client, which the CLI and most
    # scripts use, does not need it. `from godel.client import AsyncGodelClient` still works: it lands here.
    if name == "AsyncGodelClient":
        from godel.client.aio import AsyncGodelClient

        return AsyncGodelClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
