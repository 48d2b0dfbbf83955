"""The task texts a team gives its agents (the role's preamble goes before each, see ``roles``).

Everything an agent needs from earlier steps is in its task: a reduce agent gets every worker's subtask,
result and branch; a pipeline stage gets the previous stage's result and starts from its branch; a reviewer
gets the round it is in (so a second review is a different request from the first), a redo gets the
reviewer's feedback. Results are clipped (``RESULT_LIMIT`` each) so a prompt stays one command-line argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RESULT_LIMIT = 8_000


@dataclass(frozen=True)
class Piece:
    """One earlier agent's contribution, as later prompts show it."""

    label: str
    task: str
    result: str
    branch: str | None


def clip(text: str, limit: int = RESULT_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "\n[… clipped …]"


def _pieces(pieces: Sequence[Piece]) -> str:
    blocks = []
    for p in pieces:
        blocks.append(
            f"### {p.label}\nTask: {p.task}\nBranch: {p.branch or '(none)'}\nResult:\n{clip(p.result) or '(no result)'}"
        )
    return "\n\n".join(blocks)


def split(task: str, *, limit: int | None = None) -> str:
    most = f", at most {limit}" if limit else ""
    return f"Split this task into independent subtasks{most}:\n\n{task}"


def item(task: str, index: int, total: int, whole: str | None) -> str:
    context = f"\n\n(Subtask {index + 1} of {total} of the team's task: {whole})" if whole else ""
    return f"{task}{context}"


def reduce(task: str, pieces: Sequence[Piece], *, merge: bool) -> str:
    how = (
        "Merge every branch below into your branch, then combine the results"
        if merge
        else "Combine the results of the workers below into one answer"
    )
    return f"{how}, for the team's task:\n{task}\n\n{len(pieces)} worker result(s):\n\n{_pieces(pieces)}"


def stage(task: str, index: int, previous: Piece | None) -> str:
    if previous is None:
        return task
    return (
        f"{task}\n\nYou continue from stage {index} of a pipeline: your workspace starts from its branch "
        f"({previous.branch}). Its result:\n{clip(previous.result) or '(no result)'}"
    )


def review(task: str, work: Piece, round_: int, rounds: int) -> str:
    return (
        f"{task}\n\n(review round {round_ + 1} of at most {rounds})\nThe work to review is on branch {work.branch} "
        f"(your workspace starts from it). Its author's summary:\n{clip(work.result) or '(no summary)'}"
    )


def redo(task: str, rejected: Piece, feedback: str, round_: int) -> str:
    return (
        f"{task}\n\n(attempt {round_ + 1}) A reviewer rejected the previous attempt (branch {rejected.branch}, "
        f"which your workspace starts from). Address this feedback:\n{clip(feedback) or '(no feedback given)'}"
    )


def plan(task: str, fanout: int, depth: int, max_depth: int) -> str:
    return (
        f"Split this task into at most {fanout} independent subtasks (level {depth + 1} of at most "
        f"{max_depth}; answer [] if it is small enough to do in one piece):\n\n{task}"
    )


def summary(task: str, pieces: Sequence[Piece], *, merge: bool) -> str:
    return reduce(task, pieces, merge=merge).replace("worker result(s)", "subtask result(s)", 1)


def monitor(name: str, strategy: str, task: str, team_id: str) -> str:
    return (
        f"Team {name} ({strategy}, id {team_id}) is working on this task:\n{task}\n\n"
        "Its agents work on branches named godel/<agent-id> in this repository."
    )
