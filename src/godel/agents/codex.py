"""codex (``@openai/codex``) in exec mode with its JSON event stream.

Launch: ``codex exec --json -- TASK`` (a follow-up: ``codex exec resume --json -- THREAD_ID TASK``) with
``CODEX_HOME=CFG`` holding ``config.toml``: one model provider pointed at the chosen endpoint (Responses API,
the only wire API codex speaks), the key passed through the environment (``env_key``), bounded retries, no
approvals, and the sandbox mode. Threads are kept in ``CFG/sessions``, so ``exec resume`` continues one.

Retries: ``request_max_retries`` / ``stream_max_retries`` bound ordinary failures, but codex also has a feature
``unbounded_connection_retries`` (on by default) that retries a refused connection *forever* ("Reconnecting...
waiting for network"); it is switched off here, so an endpoint that is down fails in well under a second.
Errors codex classifies as "server overloaded" are still retried without limit (Godel's timeout ends those).

Stream: one JSON object per line. ``thread.started`` carries the thread id (the session id); ``item.started`` /
``item.completed`` carry command executions, file changes, MCP and web-search calls, agent messages and
non-fatal warnings (``type: error`` items, e.g. "Model metadata ... not found": not errors of the run);
a top-level ``error`` is a retry notice or the fatal error; ``turn.completed`` (with the *thread's* running token
total) or ``turn.failed`` closes the turn. When codex cannot start (a bad config, an unknown thread to resume) it
says so on stderr, in a line starting with ``Error``. codex exits 1 after ``turn.failed`` and 0 after
``turn.completed``; the verdict is taken from the turn event, not from the exit code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from godel.agents.base import CliAdapter, clip, error, final, json_line, usage
from godel.core.ports import AgentSignal, LaunchRequest, LaunchSpec, SignalKind, WireApi
from godel.errors import FieldError

PROVIDER_ID = "godel"  # the model provider's id in config.toml
KEY_ENV = "GODEL_CODEX_API_KEY"  # the variable codex reads the key from (env_key)
SANDBOX_MODES = ("danger-full-access", "workspace-write", "read-only")
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")


def _toml(value: Any) -> str:
    """A TOML value for a string, number, boolean or list of them (JSON strings are valid TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _tomlable(value: Any) -> bool:
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def _error_text(message: str) -> str:
    """codex passes a 4xx body through verbatim (``{"error": {"message": ...}}``): keep only the message."""
    body = json_line(message)
    err = body.get("error") if body else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    return message


class CodexParser:
    def __init__(self, prompt: str | None = None, baseline: dict[str, int] | None = None) -> None:
        self.prompt = prompt  # the task Godel sent: codex does not echo the user's message in its stream
        # turn.completed reports the *thread's* running total; a resumed thread's earlier total is subtracted
        self.baseline = baseline or {}
        self.started: set[str] = set()  # ids of items whose TOOL_CALL was emitted at item.started
        self.in_turn = False
        self.last_error: str | None = None
        self.last_text: str | None = None  # the latest agent_message
        self.turn_end: dict[str, Any] | None = None  # the last turn.completed / turn.failed

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        if stream == "stderr" and line.startswith("Error"):
            return [error(line.strip())]  # codex could not start: a bad config, a thread to resume not found
        if stream != "stdout" or (ev := json_line(line)) is None:
            return []
        kind = ev.get("type")
        if kind == "thread.started":
            out = []
            if ev.get("thread_id"):
                out.append(AgentSignal(SignalKind.SESSION, {"sessionId": str(ev["thread_id"])}))
            if self.prompt:
                out.append(AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(self.prompt)}))
                self.prompt = None
            return out
        if kind == "turn.started":
            self.in_turn = True
            return []
        if kind in ("item.started", "item.completed") and isinstance(ev.get("item"), dict):
            return self._item(ev["item"], done=kind == "item.completed")
        if kind == "request_user_input":
            questions = [q.get("question", "") for q in ev.get("questions") or [] if isinstance(q, dict)]
            return [AgentSignal(SignalKind.NEEDS_INPUT, {"prompt": "\n".join(q for q in questions if q)})]
        if kind == "error":
            # While a turn runs, errors come from the model request (retry notices, then the fatal one).
            message = _error_text(str(ev.get("message") or "codex reported an error"))
            self.last_error = message
            return [error(message, provider=self.in_turn)]
        if kind == "turn.completed":
            self.turn_end, self.in_turn = ev, False
            u = ev.get("usage") or {}
            inp, cached, out_tokens = (
                max(0, int(u.get(k) or 0) - self.baseline.get(k, 0))
                for k in ("input_tokens", "cached_input_tokens", "output_tokens")
            )
            inp -= min(cached, inp)  # OpenAI counts cached tokens inside input_tokens; Godel's are the uncached ones
            return [usage(model=None, input=inp, output=out_tokens, cached=cached)] if inp or out_tokens else []
        if kind == "turn.failed":
            self.turn_end, self.in_turn = ev, False
            message = _error_text(str((ev.get("error") or {}).get("message") or "the turn failed"))
            if message != self.last_error:  # codex usually sends the same text as a top-level error first
                self.last_error = message
                return [error(message, provider=True)]
        return []

    def _item(self, item: dict[str, Any], *, done: bool) -> list[AgentSignal]:
        kind, item_id = item.get("type"), item.get("id")
        if kind == "agent_message":
            if not done or not item.get("text"):
                return []
            self.last_text = str(item["text"])
            return [AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(self.last_text)})]
        call = _tool_call(item)
        if call is None:
            return []  # reasoning, plans, to-do lists, warnings (error items)
        out = []
        if item_id not in self.started:
            out.append(AgentSignal(SignalKind.TOOL_CALL, {"id": item_id, **call}))
            if not done and item_id:
                self.started.add(item_id)
        if done:
            self.started.discard(item_id)
            output, failed = _tool_result(item)
            out.append(AgentSignal(SignalKind.TOOL_RESULT, {"id": item_id, "output": clip(output), "isError": failed}))
        return out

    def finish(self) -> list[AgentSignal]:
        end = self.turn_end
        if end is None:
            return []  # no turn event: codex was cut off or never reached the model; judged "no final result"
        if end.get("type") == "turn.completed":
            return [final(self.last_text, success=True, reason="codex completed the turn")]
        why = _error_text(str((end.get("error") or {}).get("message") or "no reason given"))
        return [final(self.last_text, success=False, reason=f"codex turn failed: {why}")]


def _tool_call(item: dict[str, Any]) -> dict[str, Any] | None:
    kind = item.get("type")
    if kind == "command_execution":
        return {"name": "command_execution", "input": {"command": item.get("command")}}
    if kind == "file_change":
        return {"name": "file_change", "input": {"changes": item.get("changes") or []}}
    if kind == "mcp_tool_call":
        return {"name": f"{item.get('server')}.{item.get('tool')}", "input": item.get("arguments") or {}}
    if kind == "web_search":
        return {"name": "web_search", "input": {"query": item.get("query")}}
    if kind == "collab_tool_call":
        return {"name": f"collab.{item.get('tool')}", "input": {"prompt": item.get("prompt")}}
    return None


def _tool_result(item: dict[str, Any]) -> tuple[str, bool]:
    kind, status = item.get("type"), item.get("status")
    failed = status in ("failed", "declined")
    if kind == "command_execution":
        code = item.get("exit_code")
        return str(item.get("aggregated_output") or ""), failed or (code is not None and code != 0)
    if kind == "file_change":
        lines = [f"{c.get('kind')} {c.get('path')}" for c in item.get("changes") or [] if isinstance(c, dict)]
        return "\n".join(lines), failed
    if kind == "mcp_tool_call":
        if item.get("error"):
            return str((item["error"] or {}).get("message") or "failed"), True
        content = (item.get("result") or {}).get("content") or []
        return "".join(c.get("text", "") for c in content if isinstance(c, dict)), failed
    return str(status or ""), failed


class CodexAdapter(CliAdapter):
    name = "codex"
    wire_apis: tuple[WireApi, ...] = ("openai-responses",)
    resumable = True
    executable = "codex"
    npm_bin = "codex"
    extra_options = {
        "sandbox_mode": "codex's sandbox for the commands it runs: danger-full-access (default; Godel's runtime is "
        "the isolation), workspace-write (bubblewrap: no network, and git cannot write a worktree's metadata), "
        "read-only",
        "reasoning_effort": "model_reasoning_effort: minimal, low, medium, high, xhigh",
        "config": "extra config.toml keys (dotted names to strings, numbers, booleans or lists), passed as -c",
    }

    def __init__(self) -> None:
        self._prompt: str | None = None  # the last launch's task, for the parser's user message
        self._baseline: dict[str, int] | None = None  # the resumed thread's usage so far

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        errors = []
        if "sandbox_mode" in options and options["sandbox_mode"] not in SANDBOX_MODES:
            errors.append(FieldError("config.sandbox_mode", f"one of: {', '.join(SANDBOX_MODES)}"))
        if "reasoning_effort" in options and options["reasoning_effort"] not in EFFORTS:
            errors.append(FieldError("config.reasoning_effort", f"one of: {', '.join(EFFORTS)}"))
        extra = options.get("config", {})
        if not isinstance(extra, dict) or not all(isinstance(k, str) and _tomlable(v) for k, v in extra.items()):
            why = "must map dotted config names to strings, numbers, booleans or lists of them"
            errors.append(FieldError("config.config", why))
        return errors

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        ep = self.require_endpoint(request)
        cfg = request.config_dir
        opts = request.options
        retries = request.cli_retries
        lines = [
            f"model = {_toml(ep.model)}",
            f"model_provider = {_toml(PROVIDER_ID)}",
            'approval_policy = "never"',
            f"sandbox_mode = {_toml(opts.get('sandbox_mode', 'danger-full-access'))}",
            "check_for_update_on_startup = false",
        ]
        if opts.get("reasoning_effort"):
            lines.append(f"model_reasoning_effort = {_toml(opts['reasoning_effort'])}")
        lines += [
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[features]",
            "unbounded_connection_retries = false  # else a refused connection is retried forever",
            "",
            f"[model_providers.{PROVIDER_ID}]",
            f"name = {_toml(ep.provider)}",
            f"base_url = {_toml(ep.base_url)}",
            f"env_key = {_toml(KEY_ENV)}",
            'wire_api = "responses"',
            f"request_max_retries = {retries}",
            f"stream_max_retries = {retries}",
            "",
        ]
        argv = [self.binary(request.tools_dir, opts), "exec"]
        if request.resume_session:
            argv.append("resume")
        argv += ["--json", "--skip-git-repo-check"]
        for key, value in opts.get("config", {}).items():
            argv += ["-c", f"{key}={_toml(value)}"]
        argv += [*opts.get("args", []), "--"]
        if request.resume_session:
            argv.append(request.resume_session)
        argv.append(request.task)
        env = self.base_env(request)
        env.update(CODEX_HOME=str(cfg), **{KEY_ENV: ep.api_key or "unused"})
        self._prompt = request.task
        self._baseline = thread_usage(cfg, request.resume_session) if request.resume_session else None
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace, files={cfg / "config.toml": "\n".join(lines)})

    def parser(self) -> CodexParser:
        prompt, baseline, self._prompt, self._baseline = self._prompt, self._baseline, None, None
        return CodexParser(prompt, baseline)


def thread_usage(codex_home: Path, thread_id: str) -> dict[str, int]:
    """The thread's token totals so far, from the last ``token_count`` in its rollout file (empty if none)."""
    total: dict[str, int] = {}
    for path in sorted((codex_home / "sessions").glob(f"**/rollout-*-{thread_id}.jsonl")):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"token_count"' not in line or (rec := json_line(line)) is None:
                continue
            info = (rec.get("payload") or {}).get("info") or {}
            if isinstance(info.get("total_token_usage"), dict):
                total = {k: int(v) for k, v in info["total_token_usage"].items() if isinstance(v, int)}
    return total
