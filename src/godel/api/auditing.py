"""Every state-changing call (POST, PUT, PATCH, DELETE) and every refused authentication (401, 403) is appended to
the audit log before its answer is sent, so an acknowledged change always has its row. The gateway's ``/proxy`` is
not audited here: each proxied request is already a usage record.

A handler may add details for its row in ``request.state.audit`` (a dict), such as the user a login was for or the
id of a key it created (never a secret).
"""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from godel.auth.audit import AuditLog

log = structlog.get_logger("godel.audit")
_CHANGES = ("POST", "PUT", "PATCH", "DELETE")


def _outcome(status: int) -> str:
    if status in (401, 403):
        return "denied"
    return "success" if status < 400 else "failure"


def route_template(path: str, params: dict[str, object]) -> str:
    """``/api/v1/users/eve/api-keys`` with ``{"name": "eve"}`` → ``/api/v1/users/{name}/api-keys``: the action
    without its ids, which go in ``resource`` (segment by segment, so an id is never replaced inside a word)."""
    by_value = {str(v): k for k, v in params.items()}
    return "/".join(f"{{{by_value[s]}}}" if s in by_value else s for s in path.split("/"))


class AuditMiddleware:
    def __init__(self, app: ASGIApp, *, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/proxy/"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                explicit = bool((scope.get("state") or {}).get("audit"))  # a handler asked (an SSO login is a GET)
                failed_auth = scope["path"].startswith("/auth/") and status >= 400  # a refused login of any kind
                if method in _CHANGES or status in (401, 403) or explicit or failed_auth:
                    await self._record(scope, status)
            await send(message)

        await self.app(scope, receive, send_audited)

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        principal = state.get("principal")
        params = scope.get("path_params") or {}
        template = route_template(scope["path"], params)
        client = scope.get("client")
        try:
            await self.audit.record(
                actor=principal.id if principal is not None else "anonymous",
                action=f"{scope['method']} {template}",
                resource=",".join(f"{k}={v}" for k, v in params.items()) or None,
                outcome=_outcome(status),
                status_code=status,
                request_id=state.get("request_id"),
                client=client[0] if client else None,
                details=state.get("audit"),
            )
        except Exception:  # the change is done; its answer must still go out, and the loss must be loud
            log.exception("audit record failed", action=f"{scope['method']} {template}", status=status)
