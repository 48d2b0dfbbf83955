"""One exception tree for all of Godel.

Every error a user can see is a ``GodelError`` with a stable ``code`` (the spec's §5.3 names) and the HTTP
status it maps to. The API maps the tree to the error envelope in exactly one place
(``godel.api.errors``); everything else raises. Foreign exceptions (git, SQL, HTTP clients, OS) are
translated where they happen with ``raise SomeGodelError(...) from exc``.

    GodelError                         500 INTERNAL_ERROR
    ├── ValidationError                400 VALIDATION_ERROR   (details: list of field errors)
    │   ├── NotAGitRepositoryError     400 NOT_A_GIT_REPOSITORY
    │   ├── RefNotFoundError           400 REF_NOT_FOUND
    │   ├── UnknownAgentKindError      400 UNKNOWN_AGENT_KIND
    │   └── PathOutsideWorkspaceError  400 PATH_OUTSIDE_WORKSPACE
    ├── NotFoundError                  404 NOT_FOUND
    │   ├── AgentNotFoundError         404 AGENT_NOT_FOUND
    │   ├── EventNotFoundError         404 EVENT_NOT_FOUND
    │   └── SnapshotNotFoundError      404 SNAPSHOT_NOT_FOUND
    ├── ConflictError                  409 CONFLICT
    │   └── InvalidTransitionError     409 INVALID_TRANSITION (details: current state, trigger)
    ├── AgentSpawnError                503 AGENT_SPAWN_FAILED
    ├── RuntimeFailure                 500 RUNTIME_ERROR      (a workspace or process operation failed)
    │   └── GitError                   500 GIT_ERROR          (details: command, stderr)
    ├── StoreError                     503 STORE_UNAVAILABLE
    └── ServerNotRunningError          503 SERVER_NOT_RUNNING (raised by the client, shown by the CLI)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One offending field in a request: a dotted path and what is wrong with it."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class GodelError(Exception):
    code: str = "INTERNAL_ERROR"
    status_code: int = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationError(GodelError):
    code = "VALIDATION_ERROR"
    status_code = 400

    def __init__(self, message: str, fields: Sequence[FieldError] = (), *, details: Any = None) -> None:
        self.fields = list(fields)
        if details is None and self.fields:
            details = {"fields": [f.as_dict() for f in self.fields]}
        super().__init__(message, details=details)


class NotAGitRepositoryError(ValidationError):
    code = "NOT_A_GIT_REPOSITORY"


class RefNotFoundError(ValidationError):
    code = "REF_NOT_FOUND"


class UnknownAgentKindError(ValidationError):
    code = "UNKNOWN_AGENT_KIND"


class PathOutsideWorkspaceError(ValidationError):
    code = "PATH_OUTSIDE_WORKSPACE"


class NotFoundError(GodelError):
    code = "NOT_FOUND"
    status_code = 404


class AgentNotFoundError(NotFoundError):
    code = "AGENT_NOT_FOUND"

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} not found", details={"agentId": agent_id})


class EventNotFoundError(NotFoundError):
    code = "EVENT_NOT_FOUND"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id!r} not found", details={"eventId": event_id})


class SnapshotNotFoundError(NotFoundError):
    code = "SNAPSHOT_NOT_FOUND"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"snapshot {snapshot_id!r} not found", details={"snapshotId": snapshot_id})


class ConflictError(GodelError):
    code = "CONFLICT"
    status_code = 409


class InvalidTransitionError(ConflictError):
    code = "INVALID_TRANSITION"

    def __init__(self, entity_id: str, current: str, trigger: str) -> None:
        super().__init__(
            f"cannot {trigger} agent {entity_id}: it is {current}",
            details={"agentId": entity_id, "currentState": current, "trigger": trigger},
        )
        self.current = current
        self.trigger = trigger


class AgentSpawnError(GodelError):
    code = "AGENT_SPAWN_FAILED"
    status_code = 503


class RuntimeFailure(GodelError):
    code = "RUNTIME_ERROR"
    status_code = 500


class GitError(RuntimeFailure):
    code = "GIT_ERROR"

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        cmd = " ".join(args)
        super().__init__(
            f"git {cmd} failed ({returncode}): {stderr.strip()[:500]}",
            details={"command": ["git", *args], "returncode": returncode, "stderr": stderr[-4000:]},
        )
        self.returncode = returncode
        self.stderr = stderr


class StoreError(GodelError):
    code = "STORE_UNAVAILABLE"
    status_code = 503


class ServerNotRunningError(GodelError):
    code = "SERVER_NOT_RUNNING"
    status_code = 503
