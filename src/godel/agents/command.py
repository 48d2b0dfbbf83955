"""The ``command`` agent: any shell command as an agent.

The command runs as ``/bin/sh -c <command> godel-agent <task>``, so the task is ``$1`` (and also
``$GODEL_TASK``) and the command can be anything from ``make test`` to a script driving a model. It speaks a
two-line protocol on stdout, enough for scripts to take part in Godel's events:

* ``GODEL_RESULT: <text>`` -> the agent's final result (a FINAL signal);
* ``GODEL_NEEDS_INPUT: <text>`` -> the agent asks for input (a NEEDS_INPUT signal).

Every other line is plain output. With no structured stream to judge by, the exit status *is* the evidence
for this adapter: success means exit code 0 within the time limit. Adapters for real agent CLIs decide from
their final event and the workspace diff instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from godel.agents.base import signal_of
from godel.core.ports import AgentSignal, Evidence, LaunchRequest, LaunchSpec, Outcome, SignalKind, WireApi
from godel.errors import FieldError, ValidationError

RESULT_PREFIX = "GODEL_RESULT: "
NEEDS_INPUT_PREFIX = "GODEL_NEEDS_INPUT: "


class CommandParser:
    """Turns the two protocol lines on stdout into signals; stderr is diagnostics only."""

    def feed(self, stream: str, line: str) -> list[AgentSignal]:
        if stream != "stdout":
            return []
        if line.startswith(RESULT_PREFIX):
            return [AgentSignal(SignalKind.FINAL, {"result": line[len(RESULT_PREFIX) :]})]
        if line.startswith(NEEDS_INPUT_PREFIX):
            return [AgentSignal(SignalKind.NEEDS_INPUT, {"prompt": line[len(NEEDS_INPUT_PREFIX) :]})]
        return []

    def finish(self) -> list[AgentSignal]:
        return []


def _describe_exit(code: int) -> str:
    name = signal_of(code)
    return f"killed by {name} (exit {code})" if name else f"exited {code}"


class CommandAdapter:
    name = "command"
    wire_apis: tuple[WireApi, ...] = ()  # the model is free text, handed over as $GODEL_MODEL
    resumable = False

    def locate(self, tools_dir: Path | None, options: dict[str, Any]) -> None:
        return None  # /bin/sh is always there

    def collect(self, request: LaunchRequest) -> list[AgentSignal]:
        return []

    def validate(self, options: dict[str, Any]) -> None:
        errors = []
        command = options.get("command")
        if not isinstance(command, str) or not command.strip():
            errors.append(FieldError("command", "a non-empty shell command is required"))
        env = options.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            errors.append(FieldError("env", "must map names to string values"))
        if errors:
            raise ValidationError("invalid options for the command agent", errors)

    def launch(self, request: LaunchRequest) -> LaunchSpec:
        self.validate(request.options)
        env: dict[str, str] = dict(request.options.get("env", {}))
        # Godel's own variables win over same-named user ones: scripts rely on them meaning what they say.
        env.update(
            GODEL_TASK=request.task,
            GODEL_AGENT_ID=request.agent_id,
            GODEL_WORKSPACE=str(request.workspace),
            GODEL_MODEL=request.model,
        )
        if request.gateway_url:
            env["GODEL_GATEWAY_URL"] = request.gateway_url
        if request.gateway_key:
            env["GODEL_GATEWAY_KEY"] = request.gateway_key
        argv = ["/bin/sh", "-c", request.options["command"], "godel-agent", request.task]
        return LaunchSpec(argv=argv, env=env, cwd=request.workspace)

    def parser(self) -> CommandParser:
        return CommandParser()

    def outcome(self, evidence: Evidence) -> Outcome:
        finals = [s for s in evidence.signals if s.kind is SignalKind.FINAL]
        result = finals[-1].data.get("result") if finals else None
        if evidence.timed_out:
            return Outcome(False, "timed out", result)
        if evidence.exit_code is None:
            return Outcome(False, "no exit status was recorded (the process vanished)", result)
        if evidence.exit_code != 0:
            return Outcome(False, _describe_exit(evidence.exit_code), result)
        return Outcome(True, "exited 0", result)
