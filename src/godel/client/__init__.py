"""The Godel HTTP SDK. It speaks only the API of docs/api.md and never imports the server."""

from godel.client.aio import AsyncGodelClient
from godel.client.errors import ApiError, ServerNotRunningError
from godel.client.sse import ServerSentEvent
from godel.client.sync import GodelClient

__all__ = ["ApiError", "AsyncGodelClient", "GodelClient", "ServerNotRunningError", "ServerSentEvent"]
