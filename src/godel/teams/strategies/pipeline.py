"""``pipeline``: stages in order, each starting from the previous stage's branch and given its result.

A stage whose role is a ``verdict`` gate (a reviewer) reviews the work of the stage before it and must answer
``VERDICT: approve`` for the pipeline to go on (``parsing.parse_verdict``). On ``reject``, that work stage runs
again, from the rejected branch and with the reviewer's feedback, and the reviewer reviews the new attempt; at
most ``retryPolicy.maxRounds`` reviews per gate, after which the team fails. A reviewer that answers no
verdict fails the team (a missing verdict is never an approval). After a gate the pipeline goes on from the
approved work's branch and result. A ``monitor`` stage reports (its ``HEALTH:`` line is recorded) and never
stops the pipeline.

Steps: ``stage/I/round/R`` (R counts attempts of stage I: 0 is the first). ``run.stages`` records, per stage,
its rounds and the agents of each.
"""

from __future__ import annotations

from typing import Any

from godel.core.models import Agent
from godel.teams import prompts
from godel.teams.parsing import FormatError, parse_health, parse_verdict
from godel.teams.prompts import Piece
from godel.teams.runner import StepFailed, TeamRun
from godel.teams.strategies.common import as_json, completed, gate_of, piece


async def run(team: TeamRun) -> dict[str, Any]:
    spec = team.spec
    stages = spec.pipeline_stages()
    extra = int(team.noted("extraRounds") or 0)
    await team.expect(len(stages) + extra)
    previous: Piece | None = None  # the work the next stage builds on
    work_index: int | None = None
    history: list[dict[str, Any]] = []
    for index, stage in enumerate(stages):
        gate = gate_of(team, stage.role)
        if gate == "verdict":
            if work_index is None or previous is None:
                raise StepFailed(f"stage {index} is a review with no work before it")
            previous = await _review(team, index, work_index, previous, history)
            continue
        base = previous.branch if previous else None
        agent = await team.run_step(
            f"stage/{index}/round/0", stage.role, prompts.stage(stage.task, index - 1, previous), stage=stage,
            base_ref=base, meta={"stage": index, "round": 0},
        )  # fmt: skip
        completed(agent, f"stage {index}")
        history.append(as_json(agent, stage=index, round=0, role=stage.role))
        if gate == "monitor":
            history[-1]["health"] = parse_health((agent.outcome or {}).get("result"))
            continue  # a report: the pipeline goes on from the work before it
        previous, work_index = piece(agent, f"stage {index}", stage.task), index
    await team.note(stages=history)
    assert previous is not None
    return {"result": previous.result, "branch": previous.branch, "stages": history}


async def _review(team: TeamRun, index: int, work_index: int, work: Piece, history: list[dict[str, Any]]) -> Piece:
    spec = team.spec
    stages = spec.pipeline_stages()
    stage, work_stage = stages[index], stages[work_index]
    rounds = spec.max_rounds
    for round_ in range(rounds):
        reviewer = await team.run_step(
            f"stage/{index}/round/{round_}", stage.role, prompts.review(stage.task, work, round_, rounds),
            stage=stage, base_ref=work.branch, meta={"stage": index, "round": round_, "reviews": work_index},
        )  # fmt: skip
        completed(reviewer, f"the review of stage {work_index}")
        try:
            verdict = parse_verdict((reviewer.outcome or {}).get("result"))
        except FormatError as exc:
            raise StepFailed(f"stage {index} (agent {reviewer.id}): {exc}") from None
        history.append(as_json(reviewer, stage=index, round=round_, role=stage.role, verdict=verdict.word))
        await team.note(stages=history)
        if verdict.approve:
            return work
        if round_ == rounds - 1:
            raise StepFailed(
                f"stage {work_index} was rejected {rounds} time(s) by its review (stage {index}); last feedback: "
                f"{prompts.clip(verdict.feedback, 500) or '(none)'}"
            )
        extra = max(int(team.noted("extraRounds") or 0), 2 * (round_ + 1))
        await team.note(extraRounds=extra)
        await team.expect(len(stages) + extra)
        redo: Agent = await team.run_step(
            f"stage/{work_index}/round/{round_ + 1}", work_stage.role,
            prompts.redo(work_stage.task, work, verdict.feedback, round_ + 1),
            stage=work_stage, base_ref=work.branch, meta={"stage": work_index, "round": round_ + 1},
        )  # fmt: skip
        completed(redo, f"stage {work_index}, attempt {round_ + 2}")
        history.append(as_json(redo, stage=work_index, round=round_ + 1, role=work_stage.role))
        work = piece(redo, f"stage {work_index}", work_stage.task)
    raise AssertionError("unreachable: the last round either approves or fails")
