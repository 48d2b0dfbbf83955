"""The one place where exceptions become HTTP responses (spec §5.3 envelope).

``GodelError`` subclasses carry their own code and status; FastAPI's request validation becomes a 400
``VALIDATION_ERROR`` with one entry per offending field; unknown routes are ``NOT_FOUND``; a known path with
another method is ``METHOD_NOT_ALLOWED`` with ``Allow`` listing every method the path serves; anything else is
a 500 ``INTERNAL_ERROR`` that is logged with the request id (and never leaks a traceback to the client).

The OpenAPI document says the same (``openapi``): 400 with the envelope instead of FastAPI's 422, 401/403/429 on
every route that needs a credential, 404 where a path names a resource, 409 on commands, 413 where a body is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from godel.api.access import PERMISSION_ATTR
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


def _response(
    request: Request, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    rid = request_id_of(request)
    return JSONResponse(
        error_body(rid, code, message, details), status_code=status, headers={**(headers or {}), "X-Request-ID": rid}
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette's own 405 names only the first route's)."""
    routes = request.app.router.routes
    return [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]


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
        response = _response(request, exc.status_code, exc.code, exc.message, exc.details)
        retry = exc.details.get("retryAfter") if isinstance(exc.details, dict) else None
        if isinstance(retry, int | float) and exc.status_code in (429, 503):  # rate limits, a limit's store down
            response.headers["Retry-After"] = str(max(1, int(retry)))
        return response

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
        headers = dict(exc.headers or {})
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not JSON, nested too deep): bad input too
            fields = [{"field": "body", "message": message}]
            return _response(request, 400, "VALIDATION_ERROR", message, {"fields": fields}, headers)
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        return _response(request, exc.status_code, code, message, None, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", request_id=request_id_of(request))
        return _response(request, 500, "INTERNAL_ERROR", "internal error; see the server log", None)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------------------- OpenAPI

ENVELOPE = "ErrorEnvelope"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["success", "error", "meta"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["VALIDATION_ERROR"]},
                "message": {"type": "string"},
                "details": {"description": "per code: {fields: [{field, message}]} for VALIDATION_ERROR"},
            },
        },
        "meta": {
            "type": "object",
            "properties": {"requestId": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"}},
        },
    },
}
_WHY = {
    400: "Bad input (VALIDATION_ERROR with one entry per field); nothing was created",
    401: "No credential, or one that is unknown, expired or revoked",
    403: "The credential does not grant this permission on this resource",
    404: "No such resource",
    405: "The path does not serve this method (Allow lists those it does)",
    409: "The resource's state does not allow this now",
    413: "The request body is larger than max_request_bytes",
    429: "Over the rate limit (Retry-After says when to try again)",
    503: "A dependency (the database, Redis, an agent CLI) is unavailable",
}


def _permissions(dependant: Dependant) -> Iterator[str]:
    for dep in dependant.dependencies:
        permission = getattr(dep.call, PERMISSION_ATTR, None)
        if permission is not None:
            yield permission
        yield from _permissions(dep)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the error answers this server really gives (see the module docstring)."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})[ENVELOPE] = _ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an access token or an API key"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    declared: dict[tuple[str, str], list[str]] = {}
    for context in iter_route_contexts(app.routes):  # included routers are lazy contexts: their full paths
        original = context.original_route
        if isinstance(original, APIRoute):
            for method in getattr(context, "methods", None) or ():
                declared[(str(context.path), str(method).lower())] = list(_permissions(original.dependant))
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            _document_errors(op, method, "{" in path, declared.get((path, method), []))
    return doc


def _document_errors(op: dict[str, Any], method: str, names_resource: bool, permissions: list[str]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    codes = [400]
    if permissions and "public" not in permissions:
        codes += [401, 403, 429]
        op["security"] = [{"bearer": []}, {"apiKey": []}]
    if names_resource:
        codes.append(404)
    if method not in ("get", "head", "options"):
        codes.append(409)
    if "requestBody" in op:
        codes.append(413)
    codes.append(503)
    for code in codes:
        responses.setdefault(str(code), _error_response(_WHY[code]))


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ENVELOPE}"}}},
    }
