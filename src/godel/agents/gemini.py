"""Google's Gemini CLI (``@google/gemini-cli``) headless, with its stream-json output.

Launch: ``gemini -p TASK -o stream-json --approval-mode yolo --skip-trust -m MODEL`` with ``GEMINI_CLI_HOME``
and ``HOME`` at CFG, whose ``.gemini/settings.json`` selects API-key auth (without it gemini exits 41),
bounds its retries (``general.maxAttempts``, default 10: about 220 s with the endpoint down), and turns off
auto-update and usage statistics. ``GOOGLE_GEMINI_BASE_URL`` points it at the endpoint (the server root; it
calls ``/v1beta/models/M:streamGenerateContent``). ``TMPDIR`` is CFG/tmp, because gemini writes an error
report file into the temporary directory on every API error. Sessions are kept in
``CFG/.gemini/tmp/<project>/chats``, so ``--resume ID`` continues one.

Stream: one JSON object per line. ``init`` carries the session id; ``message`` the user prompt and the
assistant text (in ``delta`` pieces, joined here); ``tool_use``/``tool_result`` the tool calls; ``error``
warnings and non-fatal errors; ``result`` ends the run with ``status`` (``success``/``error``), the error and
the run's token totals per model (no cost). The exit code is 0, 41 (auth), 1 or the HTTP status of a failed
model request modulo 256 (500 → 244, 400 → 144); it proves nothing alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from godel.agents.base import CliAdapter, clip, error, final, json_line, usage
from godel.core.ports import AgentSignal, LaunchRequest, LaunchSpec, SignalKind, WireApi
from godel.errors import FieldError

MAX_ATTEMPTS = 10  # gemini refuses a general.maxAttempts above this


class GeminiParser:
    def __init__(self) -> None:
        self.text: list[str] = []  # assistant deltas not yet emitted as one message
        self.last_text: str | None = None  # the latest complete assistant message
        self.last_error: str | None = None  # the latest error event (a result with status error may not say why)

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        if stream != "stdout" or (ev := json_line(line)) is None:
            return []
        kind = ev.get("type")
        if kind == "message" and ev.get("role") == "assistant":
            self.text.append(str(ev.get("content") or ""))
            return []
        out = self._flush()
        if kind == "init" and ev.get("session_id"):
            out.append(AgentSignal(SignalKind.SESSION, {"sessionId": str(ev["session_id"])}))
        elif kind == "message" and ev.get("role") == "user":
            out.append(AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(str(ev.get("content") or ""))}))
        elif kind == "tool_use":
            self.last_text = None  # the answer is what the model says after its last tool call
            data = {"id": ev.get("tool_id"), "name": ev.get("tool_name"), "input": ev.get("parameters") or {}}
            out.append(AgentSignal(SignalKind.TOOL_CALL, data))
        elif kind == "tool_result":
            failed = ev.get("status") != "success"
            output = str(ev.get("output") or "")
            if failed and isinstance(ev.get("error"), dict):
                output = output or str(ev["error"].get("message") or "")
            out.append(
                AgentSignal(
                    SignalKind.TOOL_RESULT, {"id": ev.get("tool_id"), "output": clip(output), "isError": failed}
                )
            )
        elif kind == "error":
            message = str(ev.get("message") or "gemini reported an error")
            if ev.get("severity") == "error":
                self.last_error = message
                out.append(error(message))
        elif kind == "result":
            out += self._result(ev)
        return out

    def _flush(self) -> list[AgentSignal]:
        if not self.text:
            return []
        self.last_text = "".join(self.text)
        self.text = []
        return (
            [AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(self.last_text)})]
            if self.last_text
            else []
        )

    def _result(self, ev: dict[str, Any]) -> list[AgentSignal]:
        out: list[AgentSignal] = []
        stats = _mapping(ev.get("stats"))
        per_model: list[tuple[str | None, dict[str, Any]]] = [
            (str(m), _mapping(s)) for m, s in _mapping(stats.get("models")).items()
        ]
        for model, s in per_model or ([(None, stats)] if stats else []):
            cached = _count(s.get("cached"))
            prompt = _count(s["input"]) if "input" in s else _count(s.get("input_tokens")) - cached
            output = _count(s.get("output_tokens"))
            if prompt or cached or output:
                out.append(usage(model=model, input=prompt, output=output, cached=cached))
        if ev.get("status") == "success":
            out.append(final(self.last_text, success=True, reason="gemini finished (status success)"))
            return out
        err = _mapping(ev.get("error"))
        message = str(err.get("message") or self.last_error or f"gemini ended with status {ev.get('status')}")
        # A failed model request: "[API Error: {...}]" (HTTP errors) or "[API Error: exception TypeError: fetch
        # failed sending request]" (endpoint unreachable). Tool and turn-limit errors have other messages.
        provider = message.startswith("[API Error")
        if message != self.last_error:
            out.append(error(message, provider=provider))
        out.append(final(self.last_text, success=False, reason=f"gemini failed: {message}"))
        return out

    def finish(self) -> list[AgentSignal]:
        return self._flush()  # no result event: gemini was cut off; judged as "no final result"


class GeminiAdapter(CliAdapter):
    name = "gemini"
    wire_apis: tuple[WireApi, ...] = ("gemini",)
    resumable = True
    executable = "gemini"
    npm_bin = "gemini"
    extra_options = {
        "tools": "allowlist of gemini's built-in tools (settings tools.core), e.g. read_file, write_file, replace, "
        "run_shell_command, glob, grep_search, list_directory",
        "settings": "extra gemini settings.json keys (a mapping, merged over Godel's)",
    }

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        errors = []
        tools = options.get("tools")
        if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools)):
            errors.append(FieldError("config.tools", "must be a list of tool names"))
        if "settings" in options and not isinstance(options["settings"], dict):
            errors.append(FieldError("config.settings", "must be a mapping"))
        return errors

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        ep = self.require_endpoint(request)
        cfg = request.config_dir
        attempts = max(1, min(MAX_ATTEMPTS, request.cli_retries + 1))
        settings: dict[str, Any] = {
            "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
            "general": {"maxAttempts": attempts, "enableAutoUpdate": False, "enableAutoUpdateNotification": False},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
        }
        if request.options.get("tools"):
            settings["tools"] = {"core": list(request.options["tools"])}
        _merge(settings, request.options.get("settings") or {})
        argv = [self.binary(request.tools_dir, request.options), "-o", "stream-json", "--approval-mode", "yolo"]
        argv += ["--skip-trust", "-m", ep.model]
        files = {
            cfg / ".gemini" / "settings.json": json.dumps(settings, indent=2),
            cfg / "tmp" / ".keep": "",  # TMPDIR must exist
        }
        if request.resume_session:
            argv += ["--resume", request.resume_session]
            files.update(_repaired_session(cfg, request.resume_session))
        argv += [*request.options.get("args", []), "-p", _prompt(request.task)]
        env = self.base_env(request)
        env.update(
            GEMINI_CLI_HOME=str(cfg),
            HOME=str(cfg),
            TMPDIR=str(cfg / "tmp"),
            GEMINI_API_KEY=ep.api_key or "unused",
            GOOGLE_GEMINI_BASE_URL=ep.base_url.rstrip("/"),
            NO_COLOR="1",
        )
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace, files=files)

    def parser(self) -> GeminiParser:
        return GeminiParser()


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _repaired_session(cfg: Path, session_id: str) -> dict[Path, str]:
    """The session file without the duplicate tool results headless gemini records.

    In ``-p`` mode gemini 0.61.0 stores each tool result twice: in the model message's ``toolCalls`` and again
    as a user message of ``functionResponse`` parts. ``--resume`` rebuilds the history from both, so the
    resumed request answers each call twice, which the Gemini API rejects ("the number of function response
    parts is equal to the number of function call parts"). Dropping the user copies fixes that."""
    for path in sorted(cfg.glob(f".gemini/tmp/*/chats/session-*-{session_id[:8]}.jsonl")):
        try:
            lines = path.read_text().splitlines()
            head = json.loads(lines[0]) if lines else {}
        except (OSError, ValueError):
            continue
        if not isinstance(head, dict) or head.get("sessionId") != session_id:
            continue
        answered: set[str] = set()
        kept: list[str] = []
        for line in lines:
            record = json_line(line) or {}
            if record.get("type") == "gemini":
                for call in record.get("toolCalls") or []:
                    if isinstance(call, dict) and call.get("result") and call.get("id"):
                        answered.add(str(call["id"]))
            elif record.get("type") == "user" and _only_answers(record.get("content"), answered):
                continue
            kept.append(line)
        if len(kept) != len(lines):
            return {path: "\n".join(kept) + "\n"}
        return {}
    return {}


def _only_answers(content: Any, answered: set[str]) -> bool:
    if not isinstance(content, list) or not content:
        return False
    for part in content:
        response = part.get("functionResponse") if isinstance(part, dict) else None
        if not isinstance(response, dict) or str(response.get("id")) not in answered:
            return False
    return True


def _prompt(task: str) -> str:
    # A prompt that starts with "-" would be read as an option.
    return " " + task if task.startswith("-") else task
