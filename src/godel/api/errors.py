"""The one place where exceptions become HTTP responses (spec §5.3 envelope).

``GodelError`` subclasses carry their own code and status; FastAPI's request validation becomes a 400
``VALIDATION_ERROR`` with one entry per offending field; unknown routes are ``NOT_FOUND``; anything else is
a 500 ``INTERNAL_ERROR`` that is logged with the request id (and never leaks a traceback to the client).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from godel.core.clock import utcnow
from godel.errors import GodelError

log = structlog.get_logger("godel.api")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def error_body(request_id: str, code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details},
        "meta": {"requestId": request_id, "timestamp": utcnow().isoformat()},
    }


def _response(request: Request, status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    rid = request_id_of(request)
    return JSONResponse(error_body(rid, code, message, details), status_code=status, headers={"X-Request-ID": rid})


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(GodelError)
    async def godel_error(request: Request, exc: GodelError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("request failed", code=exc.code, error=exc.message, request_id=request_id_of(request))
        return _response(request, exc.status_code, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": _field_of(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        return _response(request, 400, "VALIDATION_ERROR", f"invalid request: {summary}", {"fields": fields})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.lower()
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return _response(request, exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", request_id=request_id_of(request))
        return _response(request, 500, "INTERNAL_ERROR", "internal error; see the server log", None)
