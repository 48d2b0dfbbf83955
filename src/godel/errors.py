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
    │   ├── PathOutsideWorkspaceError  400 PATH_OUTSIDE_WORKSPACE
    │   ├── UnknownStrategyError       400 UNKNOWN_STRATEGY   (a team's strategy; details list the valid ones)
    │   ├── UnknownRoleError           400 UNKNOWN_ROLE       (a team's role; details list the known ones)
    │   └── WorkflowValidationError    400 INVALID_WORKFLOW   (every problem at once, each with line/column)
    ├── AuthenticationError            401 UNAUTHORIZED       (no credential, or one that is unknown, expired, revoked)
    ├── PermissionDeniedError          403 FORBIDDEN          (details: the permission the call needs)
    │   └── OriginRefusedError         403 ORIGIN_REFUSED     (a cross-site request, or a Host not served here)
    ├── RateLimitedError               429 RATE_LIMITED       (details: retryAfter seconds)
    ├── SsoProviderError               502 SSO_PROVIDER_ERROR (the OpenID provider is unreachable or not OIDC)
    ├── NotFoundError                  404 NOT_FOUND
    │   ├── AgentNotFoundError         404 AGENT_NOT_FOUND
    │   ├── EventNotFoundError         404 EVENT_NOT_FOUND
    │   ├── SnapshotNotFoundError      404 SNAPSHOT_NOT_FOUND
    │   ├── TaskNotFoundError          404 TASK_NOT_FOUND
    │   ├── MergeNotFoundError         404 MERGE_NOT_FOUND
    │   ├── TeamNotFoundError          404 TEAM_NOT_FOUND
    │   └── WorkflowNotFoundError      404 WORKFLOW_NOT_FOUND
    ├── ConflictError                  409 CONFLICT
    │   ├── InvalidTransitionError     409 INVALID_TRANSITION (details: current state, trigger)
    │   ├── TaskTransitionError        409 INVALID_TASK_TRANSITION (details: task, current status, trigger)
    │   ├── BranchCheckedOutError      409 BRANCH_CHECKED_OUT (details: branch, worktree)
    │   └── TeamTransitionError        409 INVALID_TEAM_TRANSITION (details: team, current status, trigger)
    ├── AgentSpawnError                503 AGENT_SPAWN_FAILED
    ├── WorkflowConditionError         422 WORKFLOW_CONDITION_ERROR (a step's `when` failed to evaluate)
    ├── WorkflowTemplateError          422 WORKFLOW_TEMPLATE_ERROR  (a `{{ … }}` failed to render)
    ├── RuntimeFailure                 500 RUNTIME_ERROR      (a workspace or process operation failed)
    │   ├── GitError                   500 GIT_ERROR          (details: command, stderr)
    │   └── RuntimeUnavailableError    503 RUNTIME_UNAVAILABLE (a runtime cannot be used here: not enabled, a tool
    │                                                          missing, its remote refusing; a fallback may follow)
    ├── StoreError                     503 STORE_UNAVAILABLE
    │   └── SharedStateUnavailableError 503 SHARED_STATE_UNAVAILABLE
    └── ServerNotRunningError          503 SERVER_NOT_RUNNING (raised by the client, shown by the CLI)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One offending field in a request: a dotted path and what is wrong with it; ``line``/``column``
    (1-based) when it comes from a file, such as a workflow definition."""

    field: str
    message: str
    line: int | None = None
    column: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        if self.column is not None:
            out["column"] = self.column
        return out


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


class WorkflowValidationError(ValidationError):
    code = "INVALID_WORKFLOW"


class AuthenticationError(GodelError):
    code = "UNAUTHORIZED"
    status_code = 401


class PermissionDeniedError(GodelError):
    code = "FORBIDDEN"
    status_code = 403


class OriginRefusedError(PermissionDeniedError):
    code = "ORIGIN_REFUSED"


class SsoProviderError(GodelError):
    """The OpenID provider could not be reached, or answered something that is not OpenID Connect."""

    code = "SSO_PROVIDER_ERROR"
    status_code = 502


class RateLimitedError(GodelError):
    code = "RATE_LIMITED"
    status_code = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, details={"retryAfter": retry_after})
        self.retry_after = retry_after


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


class WorkflowConditionError(GodelError):
    """A step's ``when`` condition could not be evaluated against the run's data (e.g. a missing key)."""

    code = "WORKFLOW_CONDITION_ERROR"
    status_code = 422

    def __init__(self, step_id: str, expression: str, reason: str) -> None:
        super().__init__(
            f"step {step_id!r}: condition {expression!r} failed: {reason}",
            details={"stepId": step_id, "expression": expression, "reason": reason},
        )
        self.step_id = step_id
        self.reason = reason


class WorkflowTemplateError(GodelError):
    """A ``{{ … }}`` placeholder could not be rendered from the run's data (e.g. an absent result key)."""

    code = "WORKFLOW_TEMPLATE_ERROR"
    status_code = 422

    def __init__(self, expression: str, reason: str, *, step_id: str | None = None) -> None:
        where = f"step {step_id!r}: " if step_id else ""
        super().__init__(
            f"{where}template {{{{ {expression} }}}} failed: {reason}",
            details={"stepId": step_id, "expression": expression, "reason": reason},
        )
        self.step_id = step_id
        self.reason = reason


class RuntimeFailure(GodelError):
    code = "RUNTIME_ERROR"
    status_code = 500


class RuntimeUnavailableError(RuntimeFailure):
    """A runtime cannot be used here or now: not enabled on this server, a tool it needs missing, its remote
    refusing. A spawn with a fallback chain moves on to the next runtime."""

    code = "RUNTIME_UNAVAILABLE"
    status_code = 503


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


class SharedStateUnavailableError(StoreError):
    """The Redis the servers share (``GODEL_REDIS_URL``) does not answer: budgeted requests are refused (503)."""

    code = "SHARED_STATE_UNAVAILABLE"


class ServerNotRunningError(GodelError):
    code = "SERVER_NOT_RUNNING"
    status_code = 503


class TaskNotFoundError(NotFoundError):
    code = "TASK_NOT_FOUND"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found", details={"taskId": task_id})


class TaskTransitionError(ConflictError):
    """A task move its status does not allow (complete a pending task, retry a completed one…)."""

    code = "INVALID_TASK_TRANSITION"

    def __init__(self, task_id: str, current: str, trigger: str, why: str | None = None) -> None:
        super().__init__(
            why or f"cannot {trigger} task {task_id}: it is {current}",
            details={"taskId": task_id, "currentState": current, "trigger": trigger},
        )
        self.current = current
        self.trigger = trigger


class MergeNotFoundError(NotFoundError):
    code = "MERGE_NOT_FOUND"

    def __init__(self, merge_id: str) -> None:
        super().__init__(f"merge {merge_id!r} not found", details={"mergeId": merge_id})


class BranchCheckedOutError(ConflictError):
    """The merge queue's integration branch is checked out in a worktree: moving it would leave that
    checkout's files and index behind its branch."""

    code = "BRANCH_CHECKED_OUT"

    def __init__(self, branch: str, worktree: str) -> None:
        super().__init__(
            f"branch {branch!r} is checked out at {worktree}; merge into a branch no checkout is on "
            "(switch that checkout to another branch, or pick another --into)",
            details={"branch": branch, "worktree": worktree},
        )


class WorkflowNotFoundError(NotFoundError):
    code = "WORKFLOW_NOT_FOUND"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} not found", details={"workflowId": workflow_id})


class UnknownStrategyError(ValidationError):
    code = "UNKNOWN_STRATEGY"


class UnknownRoleError(ValidationError):
    code = "UNKNOWN_ROLE"


class TeamNotFoundError(NotFoundError):
    code = "TEAM_NOT_FOUND"

    def __init__(self, team_id: str) -> None:
        super().__init__(f"team {team_id!r} not found", details={"teamId": team_id})


class TeamTransitionError(ConflictError):
    """A team command its status does not allow (start a completed team, pause one that is not active…)."""

    code = "INVALID_TEAM_TRANSITION"

    def __init__(self, team_id: str, current: str, trigger: str, why: str | None = None) -> None:
        super().__init__(
            why or f"cannot {trigger} team {team_id}: it is {current}",
            details={"teamId": team_id, "currentState": current, "trigger": trigger},
        )
        self.current = current
        self.trigger = trigger
