"""Test helpers shipped with Godel for users' own tests and demos.

``ScriptedModel`` is a real HTTP server speaking OpenAI chat completions, OpenAI Responses, Anthropic
Messages and the Gemini API, replaying a script of turns, so agent CLIs can be run end to end without an LLM.
"""

from godel.testing.script import Script, ScriptedError, ScriptError, ToolCall, Turn, load_script
from godel.testing.server import LoggedRequest, ScriptedModel
from godel.testing.wire import Usage

__all__ = [
    "LoggedRequest",
    "Script",
    "ScriptError",
    "ScriptedError",
    "ScriptedModel",
    "ToolCall",
    "Turn",
    "Usage",
    "load_script",
]
