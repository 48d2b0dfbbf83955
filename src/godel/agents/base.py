"""What every adapter of a real agent CLI shares: finding the binary, common options, JSON lines, and the
judgement of a run from evidence.

A subclass says where its CLI is installed (``npm_bin`` or ``venv``), which wire APIs it speaks, and
implements ``launch`` and ``parser`` (and ``collect`` when the CLI leaves its record in files).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

from godel.core.ports import (
    CLIP,
    AgentSignal,
    Evidence,
    LaunchRequest,
    Outcome,
    SignalKind,
    WireApi,
)
from godel.errors import AgentSpawnError, FieldError, ValidationError

# Options every CLI adapter accepts (in the spawn request's ``config``).
COMMON_OPTIONS = {
    "binary": "path of the CLI to run instead of the installed one",
    "args": "extra command-line arguments (a list of strings), appended",
    "env": "extra environment variables (names to strings)",
    "sandbox": "where the agent runs: runtime, fallback chain, limits, image, egress (see docs/sandbox.md)",
}


def clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def json_line(line: str) -> dict[str, Any] | None:
    """The object on one line of a JSON-lines stream, or None for anything else (banners, blank lines)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def signal_of(code: int) -> str | None:
    """The signal's name when an exit status says "killed by a signal" (the shell reports 128 + its number)."""
    if code > 128:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            return None
    return None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    name = signal_of(code)
    return f"killed by {name}" if name else f"exit {code}"


def usage(
    *, model: str | None, input: int = 0, output: int = 0, cached: int = 0, cost: float | None = None
) -> AgentSignal:
    return AgentSignal(
        SignalKind.USAGE,
        {"model": model, "inputTokens": input, "outputTokens": output, "cachedTokens": cached, "costUsd": cost},
    )


def error(message: str, *, provider: bool = False) -> AgentSignal:
    return AgentSignal(SignalKind.ERROR, {"message": clip(message, 2000), "provider": provider})


def final(result: str | None, *, success: bool, reason: str) -> AgentSignal:
    return AgentSignal(SignalKind.FINAL, {"result": result, "success": success, "reason": reason})


class CliAdapter:
    """Base of the adapters for real agent CLIs. Not registered itself."""

    name = "cli"
    wire_apis: tuple[WireApi, ...] = ()
    resumable = False
    executable = ""  # the program's name on PATH
    npm_bin: str | None = None  # installed under <tools_dir>/npm/bin/<npm_bin>
    venv: str | None = None  # installed as <tools_dir>/venvs/<venv>/bin/<executable>
    extra_options: dict[str, str] = {}  # option name -> what it means (documented, validated as present)

    # ----------------------------------------------------------------------------------------- options

    def validate(self, options: dict[str, Any]) -> None:
        errors = []
        known = {**COMMON_OPTIONS, **self.extra_options}
        for key in options:
            if key not in known:
                errors.append(FieldError(f"config.{key}", f"unknown option; {self.name} accepts: {', '.join(known)}"))
        binary = options.get("binary")
        if binary is not None and (not isinstance(binary, str) or not binary):
            errors.append(FieldError("config.binary", "must be a path"))
        args = options.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            errors.append(FieldError("config.args", "must be a list of strings"))
        env = options.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            errors.append(FieldError("env", "must map names to string values"))
        errors.extend(self.validate_extra(options))
        if errors:
            raise ValidationError(f"invalid options for the {self.name} agent", errors)

    def validate_extra(self, options: dict[str, Any]) -> list[FieldError]:
        return []

    # ------------------------------------------------------------------------------------------ binary

    def binary(self, tools_dir: Path | None, options: dict[str, Any]) -> str:
        explicit = options.get("binary")
        if explicit:
            if not Path(explicit).is_file():
                raise AgentSpawnError(f"the {self.name} CLI given as config.binary does not exist: {explicit}")
            return str(explicit)
        if tools_dir is not None:
            if self.npm_bin and (candidate := tools_dir / "npm" / "bin" / self.npm_bin).is_file():
                return str(candidate)
            if self.venv and (candidate := tools_dir / "venvs" / self.venv / "bin" / self.executable).is_file():
                return str(candidate)
        found = shutil.which(self.executable)
        if found:
            return found
        raise AgentSpawnError(
            f"the {self.name} CLI ({self.executable}) is not installed: run `scripts/install-agent-clis {self.name}` "
            f"(it installs under {tools_dir or 'GODEL_AGENTS_DIR'}), put `{self.executable}` on PATH, or pass "
            "config.binary",
            details={"agent": self.name, "searched": str(tools_dir) if tools_dir else None},
        )

    def locate(self, tools_dir: Path | None, options: dict[str, Any]) -> None:
        self.binary(tools_dir, options)

    def base_env(self, request: LaunchRequest) -> dict[str, str]:
        env = dict(request.options.get("env", {}))
        env.update(GODEL_AGENT_ID=request.agent_id, GODEL_WORKSPACE=str(request.workspace))
        return env

    def require_endpoint(self, request: LaunchRequest) -> Any:
        if request.endpoint is None:
            raise AgentSpawnError(
                f"the {self.name} agent needs a model: spawn it with --model PROVIDER/MODEL "
                "(providers are [providers.NAME] in godel.toml)"
            )
        return request.endpoint

    # ------------------------------------------------------------------------------------------ record

    def collect(self, request: LaunchRequest) -> list[AgentSignal]:
        return []

    def outcome(self, evidence: Evidence) -> Outcome:
        return judge(self.name, evidence)


def judge(name: str, evidence: Evidence, *, require_final: bool = True) -> Outcome:
    """Success needs the agent's own final event saying so and a clean exit; the exit code alone never counts.

    The reason always says what the evidence was, so a user reading ``outcome.reason`` knows why."""
    finals = [s for s in evidence.signals if s.kind is SignalKind.FINAL]
    errors = [s for s in evidence.signals if s.kind is SignalKind.ERROR]
    last = finals[-1].data if finals else None
    result = last.get("result") if last else None
    # The last error decides whether the provider is to blame: one the CLI retried past does not count.
    provider = bool(errors and errors[-1].data.get("provider"))
    work = f"{evidence.changed_files} file(s) changed, {evidence.commits} commit(s)"
    if evidence.timed_out:  # e.g. a CLI that kept retrying an overloaded provider until Godel's limit
        return Outcome(False, "timed out", result, provider)
    if last is None:
        if require_final:
            why = errors[-1].data.get("message") if errors else f"{name} ended without a final result"
            return Outcome(False, f"{why} ({describe_exit(evidence.exit_code)})", None, provider)
        if errors:
            return Outcome(
                False, f"{errors[-1].data.get('message')} ({describe_exit(evidence.exit_code)})", None, provider
            )
    elif not last.get("success"):
        why = last.get("reason") or (errors[-1].data.get("message") if errors else "the agent reported failure")
        return Outcome(False, str(why), result, provider)
    if evidence.exit_code != 0:
        return Outcome(False, f"{name} reported success but ended with {describe_exit(evidence.exit_code)}", result)
    what = (last or {}).get("reason") or "finished"
    return Outcome(True, f"{what}; {work}", result)
