"""Runtimes by short name: where an agent's workspace and process live.

Back-ends are imported only when asked for, so a heavy client (kubernetes, e2b, ray) is loaded only by the
runtime that needs it, and a missing optional dependency breaks only that runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from godel.core.ports import Runtime
from godel.errors import FieldError, ValidationError

if TYPE_CHECKING:
    from godel.settings import Settings

# short name -> "module:class"
_RUNTIMES = {
    "local": "godel.runtimes.local:LocalRuntime",
    "sandbox": "godel.runtimes.sandbox:SandboxRuntime",  # bubblewrap; needs bwrap and socat
}


def runtime_names() -> list[str]:
    return sorted(_RUNTIMES)


def get_runtime(name: str, **kwargs: Any) -> Runtime:
    """A new instance of the runtime registered as ``name``; keyword arguments go to its constructor."""
    try:
        target = _RUNTIMES[name]
    except KeyError:
        valid = ", ".join(runtime_names())
        raise ValidationError(
            f"unknown runtime {name!r}; valid runtimes: {valid}", [FieldError("runtime", f"one of: {valid}")]
        ) from None
    module, _, cls = target.partition(":")
    runtime: Runtime = getattr(importlib.import_module(module), cls)(**kwargs)
    return runtime


def runtime_for(settings: Settings) -> Runtime:
    """The runtime the settings choose (``runtime``), over the settings' directories. A sandbox reaches the
    gateway through the server's Unix socket, relayed inside to the port of the gateway URL the agents are given."""
    kwargs: dict[str, Any] = {"worktrees_root": settings.worktrees_dir, "logs_root": settings.logs_dir}
    if settings.runtime == "sandbox":
        kwargs.update(run_root=settings.home / "run", agents_dir=settings.agents_dir)
        if settings.use_gateway:
            kwargs.update(
                gateway_socket=settings.gateway_socket, gateway_port=urlsplit(settings.agent_gateway_url).port
            )
    return get_runtime(settings.runtime, **kwargs)
