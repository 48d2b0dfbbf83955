"""What the client raises, grafted onto ``godel.errors`` so callers catch one tree.

    GodelError                   (godel.errors)
    ├── ApiError                 the server answered with an error envelope (or something unreadable);
    │   │                        ``code``, ``status_code``, ``details``, ``request_id`` are the server's
    │   └── Api<Name>            one per ``godel.errors`` class, made on demand: also an instance of it,
    │                            so ``except AgentNotFoundError`` works across the wire
    └── ServerNotRunningError    nothing usable answered at the URL (refused, timed out, dropped)

Only ``ApiError`` and ``ServerNotRunningError`` are constructed here; the envelope is read in
``godel.client.envelope`` and nowhere else.
"""

from __future__ import annotations

from typing import Any

from godel import errors
from godel.errors import FieldError, GodelError, ServerNotRunningError

__all__ = ["ApiError", "ServerNotRunningError", "api_error", "not_running"]


class ApiError(GodelError):
    """An error the server reported. Unlike local ``GodelError``s, code and status are per instance."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status_code: int,
        details: Any = None,
        request_id: str | None = None,
    ) -> None:
        # Deliberately skip the grafted base's own __init__: those build a message from local arguments,
        # while here the server already wrote the message.
        GodelError.__init__(self, message, details=details)
        self.code = code
        self.status_code = status_code
        self.request_id = request_id
        self.fields = _field_errors(details)
        if isinstance(details, dict):
            # What InvalidTransitionError callers read; harmless elsewhere.
            self.current = details.get("currentState")
            self.trigger = details.get("trigger")

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


def _field_errors(details: Any) -> list[FieldError]:
    fields = details.get("fields") if isinstance(details, dict) else None
    if not isinstance(fields, list):
        return []
    return [FieldError(str(f.get("field", "")), str(f.get("message", ""))) for f in fields if isinstance(f, dict)]


def _local_classes() -> dict[str, type[GodelError]]:
    found: dict[str, type[GodelError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, GodelError) and value is not GodelError:
            found.setdefault(value.code, value)
    return found


_BY_CODE = _local_classes()
# A code this client does not know yet still lands in the right branch of the tree.
_BY_STATUS: dict[int, type[GodelError]] = {
    400: errors.ValidationError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
}


_GRAFTED: dict[type[GodelError], type[ApiError]] = {}


def _grafted(base: type[GodelError]) -> type[ApiError]:
    if base not in _GRAFTED:
        _GRAFTED[base] = type(f"Api{base.__name__}", (ApiError, base), {"__module__": __name__})
    return _GRAFTED[base]


def api_error(
    code: str, message: str, *, status_code: int, details: Any = None, request_id: str | None = None
) -> ApiError:
    base = _BY_CODE.get(code) or _BY_STATUS.get(status_code)
    cls = _grafted(base) if base is not None else ApiError
    return cls(message, code=code, status_code=status_code, details=details, request_id=request_id)


def not_running(base_url: str, message: str | None = None) -> ServerNotRunningError:
    message = message or f"Godel server is not running at {base_url} (start it with `godel serve`)"
    return ServerNotRunningError(message, details={"url": base_url})
