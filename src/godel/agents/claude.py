"""Claude Code (``@anthropic-ai/claude-code``) in print mode with its stream-json output.

Launch: ``claude -p --output-format stream-json --verbose --model M --dangerously-skip-permissions -- TASK``
with ``CLAUDE_CONFIG_DIR=CFG`` (settings, sessions and ``.claude.json`` live there; ``~/.claude`` is not read),
``ANTHROPIC_BASE_URL``/``ANTHROPIC_API_KEY`` for the endpoint, ``IS_SANDBOX=1`` (the permission bypass refuses
to run as root without it) and ``CLAUDE_CODE_MAX_RETRIES`` (its own default retries for minutes). Sessions are
kept in ``CFG/projects/<cwd>/``, so ``--resume ID`` continues one, with the same session id.

Stream: one JSON object per line. ``system/init`` carries the session id (and the tools offered);
``assistant`` one message of the model (text and ``tool_use`` blocks; an API failure comes as a synthetic
assistant message with ``is_api_error_message``); ``user`` the tool results; ``system/api_retry`` each retry;
``result`` closes the run with ``is_error``, ``result``, ``usage`` and ``total_cost_usd`` for the whole run. The
per-message usage of ``assistant`` events is the stream's start (output tokens 0), so the run's total from
``result`` is the only USAGE signal. ``result.subtype`` stays ``success`` on an API error: ``is_error`` decides.
The prompt itself is not echoed in the stream (the Session records it as its ``prompt``).
"""

from __future__ import annotations

from typing import Any

from godel.agents.base import CliAdapter, clip, error, final, json_line, usage
from godel.core.ports import AgentSignal, LaunchRequest, LaunchSpec, SignalKind, WireApi
from godel.errors import FieldError


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


class ClaudeParser:
    def __init__(self, prompt: str | None = None) -> None:
        self.provider_error = False  # an ERROR with provider=True was already emitted for this run
        self.prompt = prompt  # the task Godel sent: claude does not echo the user's message in its stream

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        if stream != "stdout" or (ev := json_line(line)) is None:
            return []
        kind = ev.get("type")
        if kind == "system":
            return self._system(ev)
        if kind == "assistant" and isinstance(ev.get("message"), dict):
            return self._assistant(ev)
        if kind == "user" and isinstance(ev.get("message"), dict):
            return self._user(ev["message"])
        if kind == "result":
            return self._result(ev)
        return []

    def _system(self, ev: dict[str, Any]) -> list[AgentSignal]:
        sub = ev.get("subtype")
        if sub == "init" and ev.get("session_id"):
            out = [AgentSignal(SignalKind.SESSION, {"sessionId": str(ev["session_id"])})]
            if self.prompt:
                out.append(AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(self.prompt)}))
                self.prompt = None
            return out
        if sub == "api_retry":
            what = ev.get("error_status") or ev.get("error") or "error"
            return [
                error(
                    f"model request failed ({what}); retry {ev.get('attempt')} of {ev.get('max_retries')} "
                    f"in {ev.get('retry_delay_ms')} ms",
                    provider=True,
                )
            ]
        return []

    def _assistant(self, ev: dict[str, Any]) -> list[AgentSignal]:
        msg = ev["message"]
        text = _texts(msg.get("content"))
        if ev.get("is_api_error_message") or ev.get("api_error"):
            self.provider_error = True
            return [error(text or str(ev.get("api_error") or ev.get("error") or "model request failed"), provider=True)]
        out: list[AgentSignal] = []
        if text:
            out.append(AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(text)}))
        for c in msg.get("content") or []:
            if isinstance(c, dict) and c.get("type") == "tool_use":
                out.append(
                    AgentSignal(
                        SignalKind.TOOL_CALL, {"id": c.get("id"), "name": c.get("name"), "input": c.get("input")}
                    )
                )
        return out

    def _user(self, msg: dict[str, Any]) -> list[AgentSignal]:
        content = msg.get("content")
        if isinstance(content, str):
            return [AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(content)})] if content else []
        out: list[AgentSignal] = []
        for c in content or []:
            if not isinstance(c, dict):
                continue
            if c.get("type") == "tool_result":
                output = _texts(c.get("content"))
                data = {"id": c.get("tool_use_id"), "output": clip(output), "isError": bool(c.get("is_error"))}
                out.append(AgentSignal(SignalKind.TOOL_RESULT, data))
            elif c.get("type") == "text" and c.get("text"):
                out.append(AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(c["text"])}))
        return out

    def _result(self, ev: dict[str, Any]) -> list[AgentSignal]:
        out: list[AgentSignal] = []
        u: dict[str, Any] = ev["usage"] if isinstance(ev.get("usage"), dict) else {}
        tokens = (
            _int(u.get("input_tokens")) + _int(u.get("cache_creation_input_tokens")),
            _int(u.get("output_tokens")),
            _int(u.get("cache_read_input_tokens")),
        )
        cost = ev.get("total_cost_usd")
        if any(tokens) or cost:
            models = list(ev.get("modelUsage") or {})
            out.append(
                usage(
                    model=models[0] if len(models) == 1 else None,
                    input=tokens[0],
                    output=tokens[1],
                    cached=tokens[2],
                    cost=float(cost) if isinstance(cost, int | float) else None,
                )
            )
        text = ev.get("result") if isinstance(ev.get("result"), str) else None
        failed = bool(ev.get("is_error")) or ev.get("subtype") != "success"
        if not failed:
            why = ev.get("terminal_reason") or ev.get("stop_reason") or "done"
            out.append(final(text, success=True, reason=f"claude finished ({why}, {ev.get('num_turns')} turn(s))"))
            return out
        api = ev.get("api_error") or ev.get("api_error_status") or ev.get("terminal_reason") == "api_error"
        errors: list[Any] = ev["errors"] if isinstance(ev.get("errors"), list) else []
        why = text or "; ".join(str(e) for e in errors) or f"claude ended with {ev.get('subtype')}"
        if api and not self.provider_error:
            self.provider_error = True
            out.append(error(why, provider=True))
        out.append(final(text, success=False, reason=why))
        return out

    def finish(self) -> list[AgentSignal]:
        return []  # no result event: claude was cut off; judged as "ended without a final result"


class ClaudeAdapter(CliAdapter):
    name = "claude"
    wire_apis: tuple[WireApi, ...] = ("anthropic",)
    resumable = True
    executable = "claude"
    npm_bin = "claude"
    extra_options = {
        "tools": "allowlist of the built-in tools offered to the model (--tools), e.g. [Read, Write, Edit, Bash]",
        "disallowed_tools": "tools or permission rules to deny (--disallowedTools), e.g. [WebFetch, 'Bash(rm *)']",
    }

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        errors = []
        for key in ("tools", "disallowed_tools"):
            value = options.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
                errors.append(FieldError(f"config.{key}", "must be a list of tool names"))
        return errors

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        ep = self.require_endpoint(request)
        argv = [self.binary(request.tools_dir, request.options), "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--model", ep.model, "--dangerously-skip-permissions"]
        if request.resume_session:
            argv += ["--resume", request.resume_session]
        if request.options.get("tools") is not None:
            argv += ["--tools", ",".join(request.options["tools"])]
        if request.options.get("disallowed_tools"):
            argv += ["--disallowedTools", ",".join(request.options["disallowed_tools"])]
        argv += [*request.options.get("args", []), "--", request.task]
        env = self.base_env(request)
        env.update(
            IS_SANDBOX="1",  # --dangerously-skip-permissions refuses to run as root without it
            CLAUDE_CONFIG_DIR=str(request.config_dir),
            ANTHROPIC_BASE_URL=ep.base_url,
            ANTHROPIC_API_KEY=ep.api_key or "unused",
            # Its model aliases (the small/fast model, subagents) would name models the provider may not serve.
            ANTHROPIC_DEFAULT_HAIKU_MODEL=ep.model,
            ANTHROPIC_DEFAULT_SONNET_MODEL=ep.model,
            ANTHROPIC_DEFAULT_OPUS_MODEL=ep.model,
            CLAUDE_CODE_MAX_RETRIES=str(request.cli_retries),
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
        )
        self._prompt: str | None = request.task
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace)

    def parser(self) -> ClaudeParser:
        # The parser made right after a launch knows its task (one adapter instance per launch); a re-adopted
        # run's parser does not, and its transcript then starts at the first tool call.
        prompt: str | None = getattr(self, "_prompt", None)
        self._prompt = None
        return ClaudeParser(prompt)
