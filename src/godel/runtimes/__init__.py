"""Runtimes by short name: where an agent's workspace and process live.

Back-ends are imported only when asked for, so a heavy client (kubernetes, e2b, ray) is loaded only by the
runtime that needs it, and a missing optional dependency breaks only that runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from godel.core.ports import Runtime
from godel.errors import FieldError, ValidationError

if TYPE_CHECKING:
    from godel.settings import Settings

# short name -> "module:class". Each class has a ``from_settings(settings)`` classmethod that builds it over the
# settings' directories (and whatever else it needs from them).
_RUNTIMES = {
    "local": "godel.runtimes.local:LocalRuntime",
    "sandbox": "godel.runtimes.sandbox:SandboxRuntime",  # bubblewrap; needs bwrap and socat
    "gvisor": "godel.runtimes.gvisor:GVisorRuntime",  # gVisor; needs runsc (as root) and socat
    "container": "godel.runtimes.container:ContainerRuntime",  # podman + runc; image: scripts/build-agent-image
    "kubernetes": "godel.runtimes.kubernetes:KubernetesRuntime",  # a pod per agent; the `kubernetes` extra
    "e2b": "godel.runtimes.e2b:E2BRuntime",  # an E2B sandbox per agent; the `e2b` extra
}


# What each runtime confines, by name, without building it: "worktree" (a workspace of its own, nothing else),
# "namespace" (bubblewrap), "user-kernel" (gVisor's kernel in user space), "container", "pod" (whatever the cluster's
# runtime class gives), "remote-vm" (a sandbox of a remote service).
_ISOLATION = {
    "local": "worktree",
    "sandbox": "namespace",
    "gvisor": "user-kernel",
    "container": "container",
    "kubernetes": "pod",
    "e2b": "remote-vm",
}


# How strongly each confines, for "never weaker than": a sub-agent may not run in a weaker runtime than its parent.
# Namespaces (bubblewrap, a container, a pod of the cluster's default class) rank alike; a kernel of its own (gVisor's
# in user space, an E2B microVM) above them.
_STRENGTH = {"local": 0, "sandbox": 1, "container": 1, "kubernetes": 1, "gvisor": 2, "e2b": 2}


def isolation_of(name: str | None) -> str | None:
    return _ISOLATION.get(name) if name else None


def strength_of(name: str) -> int:
    return _STRENGTH.get(name, 0)


def runtime_names() -> list[str]:
    return sorted(_RUNTIMES)


def _runtime_class(name: str) -> Any:
    try:
        target = _RUNTIMES[name]
    except KeyError:
        valid = ", ".join(runtime_names())
        raise ValidationError(
            f"unknown runtime {name!r}; valid runtimes: {valid}", [FieldError("runtime", f"one of: {valid}")]
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_runtime(name: str, **kwargs: Any) -> Runtime:
    """A new instance of the runtime registered as ``name``; keyword arguments go to its constructor."""
    runtime: Runtime = _runtime_class(name)(**kwargs)
    return runtime


def runtime_for(settings: Settings, name: str | None = None) -> Runtime:
    """The runtime ``name`` (default: the one the settings choose, ``runtime``), built from the settings."""
    runtime: Runtime = _runtime_class(name or settings.runtime).from_settings(settings)
    return runtime
