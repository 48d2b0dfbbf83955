"""The step graph: order, cycles, ancestry, and which steps may start given how the others went.

Everything here takes the dependency lists as a plain mapping ``{step id: [ids it depends on]}`` in file
order, so the validator can use it before a ``WorkflowDefinition`` exists and the engine after.

How a dependency's outcome gates its dependents (the engine applies this through ``progress``):

* ``completed`` or ``skipped`` (its ``when`` was false): satisfied — dependents run, and may test
  ``steps.<id>.status`` in their own ``when``;
* ``failed`` with ``onError: continue``: satisfied the same way;
* ``failed`` with ``onError: fail`` or ``retry`` (retries used up): the workflow fails, nothing new starts;
* ``cancelled``: its dependents, and theirs, can never run (``blocked``: the engine marks them
  ``cancelled`` too — not ``skipped``, which would let their own dependents run).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

Dependencies = Mapping[str, Sequence[str]]


class StepStatus(StrEnum):
    PENDING = "pending"  # not started: waiting for its dependencies or for a concurrency slot
    RUNNING = "running"  # an attempt is under way
    RETRYING = "retrying"  # an attempt failed; waiting out the backoff before the next one
    COMPLETED = "completed"  # succeeded
    FAILED = "failed"  # failed, retries used up
    SKIPPED = "skipped"  # its ``when`` was false (dependents still run)
    CANCELLED = "cancelled"  # stopped by a cancel, or never run: the workflow failed or a dependency was cancelled


TERMINAL = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})
ACTIVE = frozenset({StepStatus.RUNNING, StepStatus.RETRYING})


def topological_order(deps: Dependencies) -> list[str]:
    """Every step after all of its dependencies; ties keep file order. Steps in a cycle are left out."""
    return [step for level in levels(deps) for step in level]


def levels(deps: Dependencies) -> list[list[str]]:
    """Waves that could run in parallel: level 0 has no dependencies, level n depends on earlier levels."""
    names = list(deps)
    index = {step: i for i, step in enumerate(names)}
    waiting = {step: len({d for d in ds if d in deps and d != step}) for step, ds in deps.items()}
    users = dependents_map(deps)
    ready = [i for i, step in enumerate(names) if waiting[step] == 0]
    out: list[list[str]] = []
    while ready:
        wave = [names[i] for i in ready]
        out.append(wave)
        upcoming: list[int] = []
        for step in wave:
            for user in users[step]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    upcoming.append(index[user])
        ready = sorted(upcoming)
    return out


def dependents_map(deps: Dependencies) -> dict[str, list[str]]:
    """``{step: the steps that depend on it directly}``, in file order."""
    users: dict[str, list[str]] = {step: [] for step in deps}
    for step, ds in deps.items():
        for dep in dict.fromkeys(ds):
            if dep in users and dep != step:
                users[dep].append(step)
    return users


def ancestors(deps: Dependencies, step: str) -> set[str]:
    """Every step ``step`` waits for, directly or through others (never itself, even in a cycle)."""
    seen: set[str] = set()
    stack = [d for d in deps.get(step, ()) if d in deps]
    while stack:
        current = stack.pop()
        if current in seen or current == step:
            continue
        seen.add(current)
        stack.extend(d for d in deps.get(current, ()) if d in deps)
    return seen


def find_cycles(deps: Dependencies) -> list[list[str]]:
    """Each dependency cycle as a path ``[a, b, c]`` meaning a depends on b, b on c, c on a; rotated to
    start at its earliest step in file order. Self-dependencies are not cycles here (reported apart)."""
    index = {step: i for i, step in enumerate(deps)}
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for root in deps:
        if colour[root] != white:
            continue
        colour[root] = grey
        path = [root]
        iters = [iter(_edges(deps, root))]
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            if colour[nxt] == grey:
                cycle = path[path.index(nxt) :]
                start = min(range(len(cycle)), key=lambda i: index[cycle[i]])
                rotated = tuple(cycle[start:] + cycle[:start])
                if rotated not in seen:
                    seen.add(rotated)
                    found.append(list(rotated))
            elif colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(_edges(deps, nxt)))
    return found


def _edges(deps: Dependencies, step: str) -> list[str]:
    return [d for d in dict.fromkeys(deps[step]) if d in deps and d != step]


@dataclass(frozen=True)
class Progress:
    """Where a run stands, from each step's status (see the module docstring for the rules)."""

    ready: tuple[str, ...]  # pending steps that may start now (evaluate ``when`` first), within maxConcurrency
    waiting: tuple[str, ...]  # pending steps whose dependencies are not all finished (or no slot is free)
    blocked: tuple[str, ...]  # pending steps that can never run (a dependency was cancelled): cancel them
    active: tuple[str, ...]  # running or retrying
    fatal: tuple[str, ...]  # failed steps whose failure fails the workflow
    finished: bool  # nothing is active and nothing can start: the run is over (cancel what is still pending)

    @property
    def status(self) -> str:
        """The workflow's status: ``failed`` once a fatal failure is recorded (even while others wind
        down), ``completed`` when finished without one, else ``running``."""
        if self.fatal:
            return "failed"
        return "completed" if self.finished else "running"


def progress(
    deps: Dependencies,
    statuses: Mapping[str, str],
    *,
    continue_on_error: Iterable[str] = (),
    max_concurrency: int | None = None,
) -> Progress:
    """Classify every step. ``statuses`` maps step id to a ``StepStatus`` value (absent: pending);
    ``continue_on_error`` names the steps with ``onError: continue``."""
    tolerant = set(continue_on_error)
    status = {step: StepStatus(statuses.get(step, StepStatus.PENDING)) for step in deps}
    fatal = tuple(s for s in deps if status[s] is StepStatus.FAILED and s not in tolerant)
    active = tuple(s for s in deps if status[s] in ACTIVE)
    ready: list[str] = []
    waiting: list[str] = []
    blocked: list[str] = []
    gone = {s for s in deps if status[s] is StepStatus.CANCELLED}  # cancelled, or blocked by a cancel
    for step in topological_order(deps):
        if status[step] is not StepStatus.PENDING:
            continue
        before = [d for d in dict.fromkeys(deps[step]) if d in deps and d != step]
        if any(d in gone for d in before):
            blocked.append(step)
            gone.add(step)
        elif all(status[d] in TERMINAL for d in before):
            ready.append(step)
        else:
            waiting.append(step)
    # Steps caught in a cycle never reach topological order; a validated workflow has none.
    waiting += [s for s in deps if status[s] is StepStatus.PENDING and s not in {*ready, *waiting, *blocked}]
    if fatal:  # the workflow is failing: start nothing new
        waiting, ready = waiting + ready, []
    elif max_concurrency is not None:
        room = max(max_concurrency - len(active), 0)
        waiting, ready = ready[room:] + waiting, ready[:room]
    finished = not active and not ready and (bool(fatal) or not waiting)
    return Progress(tuple(ready), tuple(waiting), tuple(blocked), active, fatal, finished)
