"""mini-swe-agent v2 (``mini``, pip ``mini-swe-agent``) in yolo mode, judged from its trajectory file.

Launch: ``mini -m openai/M -c mini.yaml -c CFG/godel.yaml --task=TASK -y --exit-immediately -o OUT/traj-N.json``
with ``MSWEA_GLOBAL_CONFIG_DIR=CFG`` (and ``HOME=CFG``), ``MSWEA_CONFIGURED=true`` (no first-run setup prompt),
``MSWEA_COST_TRACKING=ignore_errors`` (an unknown model has no price), ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no
fetch of litellm's price list) and the endpoint as ``OPENAI_API_BASE``/``OPENAI_API_KEY`` (or the ``ANTHROPIC_``
pair with ``-m anthropic/M``). Retries are bounded twice: mini's own tenacity loop
(``MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT``, 4 s+ exponential waits) gets ``cli_retries + 1`` attempts, and the
OpenAI client inside litellm (2 retries by default) gets none (``model_kwargs.max_retries: 0`` in godel.yaml).

Record: mini's stdout is a human console, not a stream. Its evidence is the trajectory JSON, rewritten after
every step: ``messages`` (system, the rendered task, assistant messages with ``tool_calls`` and
``extra.response.usage``/``extra.cost``, ``tool`` observations with ``extra.raw_output``/``returncode``, format-error
feedback as ``user`` messages) ending in an ``exit`` message whose ``extra.exit_status`` is ``Submitted`` on
success, ``LimitsExceeded``/``RepeatedFormatError`` (exit 0!) or the name of an uncaught exception such as
``InternalServerError`` (exit 1, ``extra.exception_str`` says why). ``collect`` turns it into signals once mini
exited. Each launch writes a new ``traj-<nonce>.json`` (named in ``CFG/godel-run.json``), so a retry never reads an
earlier attempt's trajectory. The parser only reports a crash that happened before mini's agent loop ran (an
exception summary on stderr with no ``Exit:`` section on stdout), which leaves no trajectory to collect.

mini has no sessions: a follow-up cannot continue a conversation (``resumable = False``).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from godel.agents.base import CliAdapter, clip, error, final, usage
from godel.core.ports import AgentSignal, LaunchRequest, LaunchSpec, SignalKind, WireApi
from godel.errors import AgentSpawnError, FieldError

SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
RUN_FILE = "godel-run.json"  # in the config dir: which trajectory file this launch writes
_PREFIX = {"openai-chat": "openai", "anthropic": "anthropic"}  # litellm's provider prefix per wire API
_ENV = {"openai-chat": ("OPENAI_API_BASE", "OPENAI_API_KEY"), "anthropic": ("ANTHROPIC_API_BASE", "ANTHROPIC_API_KEY")}
# The summary line of an uncaught exception, as Python and typer/rich print it last on stderr.
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exceeded|Interrupt)): (.+)$")
_NOT_EXECUTED = "action was not executed"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal content blocks
        return "".join(str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("type") == "text")
    return ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _provider_failure(exit_status: str, message: str) -> bool:
    """An uncaught litellm exception (connection refused, HTTP error, rate limit, bad key...) is the endpoint's."""
    return message.startswith("litellm.") or exit_status in {
        "APIConnectionError",
        "APIError",
        "AuthenticationError",
        "BadRequestError",
        "InternalServerError",
        "NotFoundError",
        "PermissionDeniedError",
        "RateLimitError",
        "ServiceUnavailableError",
        "Timeout",
    }


class MiniSweParser:
    """mini's stdout is for humans; the trajectory (``collect``) is the record. This only catches a crash before
    the agent loop (bad arguments, a broken install): then stdout has no ``Exit:`` section and no trajectory
    exists, and the last exception summary on stderr is the reason."""

    def __init__(self) -> None:
        self.exited = False  # mini printed its exit message: the trajectory has the verdict
        self.crash: str | None = None

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        text = line.rstrip()
        if stream == "stdout":
            if text == "Exit:":
                self.exited = True
        elif (m := _EXCEPTION.match(text.strip())) is not None:
            self.crash = f"{m.group(1)}: {m.group(2)}"
        return []

    def finish(self) -> list[AgentSignal]:
        if self.exited or self.crash is None:
            return []
        return [error(f"mini-swe-agent crashed: {self.crash}", provider="litellm." in self.crash)]


def read_trajectory(path: Path) -> list[AgentSignal]:
    """The signals of one mini trajectory file (see the module docstring for its shape)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [error(f"mini-swe-agent wrote no trajectory ({path.name})")]
    except (OSError, ValueError) as exc:  # cut off while being rewritten (killed mid-save)
        return [error(f"mini-swe-agent's trajectory {path.name} is unreadable: {exc}")]
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        return [error(f"mini-swe-agent's trajectory {path.name} has no messages")]
    return trajectory_signals([m for m in messages if isinstance(m, dict)])


def trajectory_signals(messages: list[dict[str, Any]]) -> list[AgentSignal]:
    out: list[AgentSignal] = []
    exit_msg = next((m for m in reversed(messages) if m.get("role") == "exit"), None)
    exit_extra = (exit_msg or {}).get("extra") or {}
    submitted = exit_extra.get("exit_status") == "Submitted"
    submit_shown = False
    last_assistant = ""
    for msg in messages:
        role, extra = msg.get("role"), msg.get("extra") or {}
        if role == "assistant":
            text = _text(msg.get("content"))
            if text:
                last_assistant = text
                out.append(AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(text)}))
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    args: Any = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = fn.get("arguments") or ""
                out.append(
                    AgentSignal(SignalKind.TOOL_CALL, {"id": call.get("id"), "name": fn.get("name"), "input": args})
                )
            out.extend(_usage(extra.get("response"), extra.get("cost")))
        elif role == "tool":
            output = str(extra.get("raw_output", _text(msg.get("content"))))
            exception = extra.get("exception_info") or ""
            is_error = extra.get("returncode") not in (0, None) or bool(exception)
            if submitted and exception == _NOT_EXECUTED and not submit_shown:
                # mini stops at the submit command before recording its output: it printed the marker.
                submit_shown, is_error = True, False
                output = SUBMIT + "\n" + str(exit_extra.get("submission") or "")
            elif exception and exception not in output:
                output = f"{output}\n{exception}" if output else str(exception)
            out.append(AgentSignal(SignalKind.TOOL_RESULT, {"id": msg.get("tool_call_id"), "output": clip(output),
                                                            "isError": is_error}))  # fmt: skip
        elif role == "user":
            if isinstance(response := extra.get("response"), dict):  # a reply mini rejected (no or a bad tool call)
                choices = response.get("choices") or [{}]
                if text := _text(((choices[0] or {}).get("message") or {}).get("content")):
                    last_assistant = text
                    out.append(AgentSignal(SignalKind.MESSAGE, {"role": "assistant", "text": clip(text)}))
                out.extend(_usage(response, extra.get("cost")))  # billed too
            out.append(AgentSignal(SignalKind.MESSAGE, {"role": "user", "text": clip(_text(msg.get("content")))}))
    if exit_msg is not None:
        out.extend(_verdict(exit_extra, str(exit_msg.get("content") or ""), last_assistant))
    return out


def _usage(response: Any, cost: Any) -> list[AgentSignal]:
    u = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(u, dict):
        return []
    cached = _int((u.get("prompt_tokens_details") or {}).get("cached_tokens"))
    usd = float(cost) if isinstance(cost, (int, float)) and cost > 0 else None  # 0.0 = price unknown
    model = response.get("model") if isinstance(response, dict) else None
    return [usage(model=model, input=_int(u.get("prompt_tokens")), output=_int(u.get("completion_tokens")),
                  cached=cached, cost=usd)]  # fmt: skip


def _verdict(extra: dict[str, Any], content: str, last_assistant: str) -> list[AgentSignal]:
    status = str(extra.get("exit_status") or "")
    submission = str(extra.get("submission") or "").strip()
    if status == "Submitted":
        return [final(submission or last_assistant or None, success=True, reason="mini-swe-agent submitted")]
    why = str(extra.get("exception_str") or content or "").strip()
    reason = f"mini-swe-agent ended with {status or 'no exit status'}" + (f": {why}" if why and why != status else "")
    signals = []
    if extra.get("exception_str") is not None:  # an uncaught exception ended the run
        signals.append(error(reason, provider=_provider_failure(status, why)))
    signals.append(final(submission or last_assistant or None, success=False, reason=clip(reason, 2000)))
    return signals


class MiniSweAdapter(CliAdapter):
    name = "mini-swe-agent"
    wire_apis: tuple[WireApi, ...] = ("openai-chat", "anthropic")
    resumable = False
    executable = "mini"
    venv = "mini-swe-agent"
    extra_options = {
        "step_limit": "most model calls mini may make (0: no limit; mini's default)",
        "cost_limit": "USD mini may spend before it stops (0: no limit; mini's default is 3)",
        "command_timeout": "seconds one bash command may run (mini's default is 30)",
        "model_kwargs": "extra arguments for litellm.completion (a mapping, e.g. temperature)",
    }

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        errors = []
        for key, kind in (("step_limit", int), ("command_timeout", int), ("cost_limit", (int, float))):
            value = options.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool) or value < 0):
                errors.append(FieldError(f"config.{key}", "must be a number >= 0"))
        if options.get("command_timeout") == 0:
            errors.append(FieldError("config.command_timeout", "must be at least 1 second"))
        if "model_kwargs" in options and not isinstance(options["model_kwargs"], dict):
            errors.append(FieldError("config.model_kwargs", "must be a mapping"))
        return errors

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        ep = self.require_endpoint(request)
        if ep.kind not in _PREFIX:
            raise AgentSpawnError(f"mini-swe-agent cannot talk to a {ep.kind} provider ({ep.name}); it speaks "
                                  f"{', '.join(self.wire_apis)}")  # fmt: skip
        cfg, opts = request.config_dir, request.options
        trajectory = request.output_dir / f"traj-{uuid.uuid4().hex[:12]}.json"
        config: dict[str, Any] = {"model": {"model_kwargs": {**opts.get("model_kwargs", {}), "max_retries": 0}}}
        agent = {key: opts[key] for key in ("step_limit", "cost_limit") if opts.get(key) is not None}
        if agent:
            config["agent"] = agent
        if opts.get("command_timeout"):
            config["environment"] = {"timeout": opts["command_timeout"]}
        argv = [self.binary(request.tools_dir, opts), "-m", f"{_PREFIX[ep.kind]}/{ep.model}"]
        argv += ["-c", "mini.yaml", "-c", str(cfg / "godel.yaml"), f"--task={request.task}", "-y"]
        argv += ["--exit-immediately", "-o", str(trajectory), *opts.get("args", [])]
        base_var, key_var = _ENV[ep.kind]
        env = self.base_env(request)
        env.update({
            "HOME": str(cfg),
            "MSWEA_GLOBAL_CONFIG_DIR": str(cfg),
            "MSWEA_CONFIGURED": "true",
            "MSWEA_SILENT_STARTUP": "1",
            "MSWEA_COST_TRACKING": "ignore_errors",
            "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": str(max(request.cli_retries, 0) + 1),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONUNBUFFERED": "1",
            "TYPER_STANDARD_TRACEBACK": "1",  # a plain traceback: its last line is not wrapped at 80 columns
            base_var: ep.base_url,
            key_var: ep.api_key or "unused",
        })  # fmt: skip
        files = {
            cfg / "godel.yaml": json.dumps(config, indent=2),  # JSON is YAML
            cfg / RUN_FILE: json.dumps({"trajectory": str(trajectory)}),
        }
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace, files=files)

    def parser(self) -> MiniSweParser:
        return MiniSweParser()

    def collect(self, request: LaunchRequest) -> list[AgentSignal]:
        try:
            path = Path(json.loads((request.config_dir / RUN_FILE).read_text())["trajectory"])
        except (OSError, ValueError, KeyError, TypeError):
            return []  # never launched: nothing to collect
        return read_trajectory(path)
