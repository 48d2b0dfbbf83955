"""Agent adapters by short name: how each agent CLI is launched and understood.

Adapters are imported only when asked for; an unknown name is a client error that lists the valid ones.
"""

from __future__ import annotations

import importlib

from godel.core.ports import AgentAdapter
from godel.errors import FieldError, UnknownAgentKindError

# short name -> "module:class"
_ADAPTERS = {
    "command": "godel.agents.command:CommandAdapter",
    "pi": "godel.agents.pi:PiAdapter",
    "claude": "godel.agents.claude:ClaudeAdapter",
    "codex": "godel.agents.codex:CodexAdapter",
    "aider": "godel.agents.aider:AiderAdapter",
    "mini-swe-agent": "godel.agents.miniswe:MiniSweAdapter",
    "gemini": "godel.agents.gemini:GeminiAdapter",
}


def adapter_names() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(name: str) -> AgentAdapter:
    try:
        target = _ADAPTERS[name]
    except KeyError:
        valid = ", ".join(adapter_names())
        raise UnknownAgentKindError(
            f"unknown agent kind {name!r}; valid kinds: {valid}", [FieldError("kind", f"one of: {valid}")]
        ) from None
    module, _, cls = target.partition(":")
    adapter: AgentAdapter = getattr(importlib.import_module(module), cls)()
    return adapter
