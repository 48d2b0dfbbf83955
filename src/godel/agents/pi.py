"""pi (``@mariozechner/pi-coding-agent``) in print mode with its JSON event stream.

Launch: ``pi -p TASK --provider P --model M --mode json --session-dir CFG/sessions`` with
``PI_CODING_AGENT_DIR=CFG`` holding ``models.json`` (the provider, pointed at the chosen endpoint) and
``settings.json`` (bounded retries). Sessions are kept in ``CFG/sessions``, so ``--session ID`` continues one.

Stream: one JSON object per line. ``session`` carries the session id; ``message_end`` carries each complete
message (assistant text, tool calls, usage with cost, or ``stopReason: "error"`` with ``errorMessage``);
``tool_execution_end`` the tool results; ``agent_end`` closes an attempt -- but pi retries on its own
(``auto_retry_start`` follows, then another ``agent_end``), so the verdict is taken from the *last*
``agent_end`` once the stream is over. pi exits 0 even when every attempt failed: the exit code proves nothing.
"""

from __future__ import annotations

import json
from typing import Any

from godel.agents.base import CliAdapter, clip, error, final, json_line, usage
from godel.core.ports import AgentSignal, LaunchRequest, LaunchSpec, SignalKind, WireApi
from godel.errors import FieldError

_API_OF = {
    "openai-chat": "openai-completions",
    "openai-responses": "openai-responses",
    "anthropic": "anthropic-messages",
}


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")


class PiParser:
    def __init__(self) -> None:
        self.last_end: dict[str, Any] | None = None  # the latest agent_end's last assistant message
        self.retry_failed: str | None = None  # auto_retry_end with success false: pi gave up

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        if stream != "stdout" or (ev := json_line(line)) is None:
            return []
        kind = ev.get("type")
        if kind == "session" and ev.get("id"):
            return [AgentSignal(SignalKind.SESSION, {"sessionId": str(ev["id"])})]
        if kind == "message_end" and isinstance(ev.get("message"), dict):
            return self._message(ev["message"])
        if kind == "tool_execution_end":
            output = _texts((ev.get("result") or {}).get("content"))
            return [
                AgentSignal(
                    SignalKind.TOOL_RESULT,
                    {"id": ev.get("toolCallId"), "output": clip(output), "isError": bool(ev.get("isError"))},
                )
            ]
        if kind == "agent_end":
            assistant = [m for m in ev.get("messages") or [] if isinstance(m, dict) and m.get("role") == "assistant"]
            self.last_end = assistant[-1] if assistant else {}
            self.retry_failed = None
        elif kind == "auto_retry_start":
            self.last_end = None  # that attempt is not the last word
        elif kind == "auto_retry_end" and not ev.get("success"):
            self.retry_failed = str(ev.get("finalError") or "pi gave up after retrying")
        return []

    def _message(self, msg: dict[str, Any]) -> list[AgentSignal]:
        role = msg.get("role")
        if role == "user":
            return [AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(_texts(msg.get("content")))})]
        if role != "assistant":
            return []  # toolResult messages repeat tool_execution_end
        out: list[AgentSignal] = []
        text = _texts(msg.get("content"))
        if text:
            out.append(AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(text)}))
        for c in msg.get("content") or []:
            if isinstance(c, dict) and c.get("type") == "toolCall":
                out.append(
                    AgentSignal(
                        SignalKind.TOOL_CALL, {"id": c.get("id"), "name": c.get("name"), "input": c.get("arguments")}
                    )
                )
        u = msg.get("usage") or {}
        tokens = (u.get("input") or 0, u.get("output") or 0, u.get("cacheRead") or 0)
        if any(tokens):
            cost = (u.get("cost") or {}).get("total")
            out.append(usage(model=msg.get("model"), input=tokens[0], output=tokens[1], cached=tokens[2], cost=cost))
        if msg.get("stopReason") == "error":
            out.append(error(str(msg.get("errorMessage") or "model request failed"), provider=True))
        return out

    def finish(self) -> list[AgentSignal]:
        if self.retry_failed is not None:
            return [final(None, success=False, reason=f"pi gave up: {self.retry_failed}")]
        if self.last_end is None:
            return []  # no agent_end: pi was cut off (or never reached the model); judged as "no final result"
        stop = self.last_end.get("stopReason")
        text = _texts(self.last_end.get("content")) or None
        if stop in ("stop", "end_turn"):
            return [final(text, success=True, reason=f"pi finished (stopReason {stop})")]
        why = self.last_end.get("errorMessage") or f"stopReason {stop}"
        return [final(text, success=False, reason=f"pi ended with {why}")]


class PiAdapter(CliAdapter):
    name = "pi"
    wire_apis: tuple[WireApi, ...] = ("openai-chat", "openai-responses", "anthropic")
    resumable = True
    executable = "pi"
    npm_bin = "pi"
    extra_options = {
        "tools": "allowlist of pi tool names (read, bash, edit, write, grep, find, ls)",
        "thinking": "thinking level: off, minimal, low, medium, high, xhigh",
        "compat": "pi's per-provider compat flags for OpenAI-compatible servers (a mapping)",
    }

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        errors = []
        tools = options.get("tools")
        if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
            errors.append(FieldError("config.tools", "must be a list of tool names"))
        if "compat" in options and not isinstance(options["compat"], dict):
            errors.append(FieldError("config.compat", "must be a mapping"))
        return errors

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        ep = self.require_endpoint(request)
        cfg = request.config_dir
        provider: dict[str, Any] = {
            "baseUrl": ep.base_url,
            "api": _API_OF[ep.kind],
            "apiKey": ep.api_key or "unused",
            "models": [{"id": ep.model}],
        }
        if "compat" in request.options:
            provider["compat"] = request.options["compat"]
        retries = request.cli_retries
        settings = {"retry": {"enabled": retries > 0, "maxRetries": retries, "baseDelayMs": 1000,
                              "provider": {"maxRetries": 0}}}  # fmt: skip
        argv = [self.binary(request.tools_dir, request.options), "-p", "--mode", "json"]
        argv += ["--provider", ep.provider, "--model", ep.model, "--session-dir", str(cfg / "sessions")]
        if request.resume_session:
            argv += ["--session", request.resume_session]
        if request.options.get("tools"):
            argv += ["--tools", ",".join(request.options["tools"])]
        if request.options.get("thinking"):
            argv += ["--thinking", str(request.options["thinking"])]
        argv += [*request.options.get("args", []), _prompt(request.task)]
        env = self.base_env(request)
        env.update(PI_CODING_AGENT_DIR=str(cfg), PI_OFFLINE="1")
        files = {
            cfg / "models.json": json.dumps({"providers": {ep.provider: provider}}, indent=2),
            cfg / "settings.json": json.dumps(settings, indent=2),
        }
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace, files=files)

    def parser(self) -> PiParser:
        return PiParser()


def _prompt(task: str) -> str:
    # A prompt that starts with "-" would be read as an option, one with "@" as a file to include.
    return " " + task if task.startswith(("-", "@")) else task
