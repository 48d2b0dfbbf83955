"""What a step's agent is started with: its kind, model, role profile, label and starting point.

The label (``wf:<workflow>:<step>:<attempt>[.<relaunch>]``) is how a restarted engine finds the agent of a step
whose id it had no time to record (see ``godel.workflow.steps``).
"""

from __future__ import annotations

from typing import Any

from godel.agents.roles import RoleProfile, takes_tools
from godel.core.models import Workflow
from godel.scheduler.requests import SpawnRequest
from godel.workflow.definition import RenderedStep, StepDefinition


def agent_label(workflow_id: str, step_id: str, attempt: int, relaunch: int = 0) -> str:
    return f"wf:{workflow_id}:{step_id}:{attempt}" + (f".{relaunch}" if relaunch else "")


def profile(step: StepDefinition, roles: dict[str, RoleProfile]) -> tuple[str, str, dict[str, Any], str | None]:
    """The step's agent kind, model, adapter options and prompt preamble: its own, else its role's
    (``role:``, see ``godel.agents.roles``: the preamble goes before the task, the tool allowlist to the CLIs
    that take one). The role is known: ``submit`` refused the run otherwise."""
    kind, model = step.agent or "command", step.model or ""
    if step.role is None:
        return kind, model, {}, None
    role = roles[step.role]
    kind = step.agent or role.agent or kind
    model = step.model or role.model or ""
    tools = role.tools_for(kind)
    config = {"tools": tools} if tools is not None and takes_tools(kind) else {}
    return kind, model, config, role.preamble or None


def spawn_request(
    step: StepDefinition,
    rendered: RenderedStep,
    wf: Workflow,
    *,
    base_ref: str,
    roles: dict[str, RoleProfile],
    attempt: int,
    relaunch: int,
) -> SpawnRequest:
    kind, model, config, preamble = profile(step, roles)
    ctx = wf.context or {}
    return SpawnRequest(
        task=rendered.task, repo=step.repo or ctx.get("repo") or "", base_ref=base_ref,
        label=agent_label(wf.id, step.id, attempt, relaunch), team_id=wf.team_id, agent=kind,
        command=rendered.command, model=model, timeout=step.timeout, env=rendered.env, config=config,
        prompt_context=preamble,
        metadata={"workflowId": wf.id, "stepId": step.id, "attempt": attempt, "role": step.role},
        owner=wf.created_by if (wf.created_by or "").startswith(("user:", "agent:")) else None,
    )  # fmt: skip
