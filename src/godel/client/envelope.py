"""The one place where HTTP answers become data or exceptions.

``unwrap`` reads the ``{"success", "data" | "error", "meta"}`` envelope of docs/api.md; ``translate`` turns
httpx's transport failures into ``ServerNotRunningError``. Sync and async clients both go through here.
"""

from __future__ import annotations

from typing import Any

import httpx

from godel.client.errors import ApiError, ServerNotRunningError, api_error, not_running


def unwrap(response: httpx.Response) -> Any:
    """The ``data`` of a success envelope; raise the server's error otherwise. The body must be read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("success"), bool):
        if body["success"]:
            return body.get("data")
        raise _error_from(body, response)
    # Probes such as /health may answer bare JSON; anything else un-enveloped is not a Godel answer.
    if response.is_success:
        return body
    raise api_error(
        "BAD_RESPONSE",
        f"unexpected answer from {response.request.url}: HTTP {response.status_code}",
        status_code=response.status_code,
        details={"body": response.text[:2000]},
        request_id=response.headers.get("x-request-id"),
    )


def _error_from(body: dict[str, Any], response: httpx.Response) -> ApiError:
    error = _mapping(body.get("error"))
    meta = _mapping(body.get("meta"))
    return api_error(
        str(error.get("code") or "INTERNAL_ERROR"),
        str(error.get("message") or f"HTTP {response.status_code}"),
        status_code=response.status_code,
        details=error.get("details"),
        request_id=meta.get("requestId") or response.headers.get("x-request-id"),
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def translate(exc: httpx.TransportError, base_url: str) -> ServerNotRunningError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return not_running(base_url)
    if isinstance(exc, httpx.TimeoutException):
        # The server is there but slow; a POST may or may not have been applied, so say exactly that.
        return not_running(base_url, f"Godel server at {base_url} did not answer in time ({type(exc).__name__})")
    return not_running(base_url, f"lost the connection to the Godel server at {base_url}: {exc}")
