"""Runtimes by short name: where an agent's workspace and process live.

Back-ends are imported only when asked for, so a heavy client (kubernetes, e2b, ray) is loaded only by the
runtime that needs it, and a missing optional dependency breaks only that runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from godel.core.ports import Runtime
from godel.errors import FieldError, ValidationError

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
