"""One state-machine layer for every lifecycle: agents, tasks, teams, workflows and their steps, merge jobs.

A ``Machine`` is a table of legal moves, ``(state, trigger) → target(s)``, and the event each move emits. Planning
is pure: ``plan`` validates a move and returns it with its event type, or raises the entity's own 409 error naming
the current state. The writer of each entity (the store's transaction for agents, tasks and teams; the engines for
workflows and merges) asks the machine first and commits the new state together with the move's event, so no status
changes anywhere without passing through a table a newcomer can read in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from godel.errors import ConflictError

S = TypeVar("S", bound=StrEnum)
T = TypeVar("T", bound=StrEnum)


@dataclass(frozen=True)
class Move(Generic[S, T]):
    entity_id: str
    from_state: S
    to_state: S
    trigger: T
    event: str  # the event type this move emits


class Machine(Generic[S, T]):
    def __init__(
        self,
        entity: str,
        table: Mapping[tuple[S, T], S | frozenset[S]],
        *,
        refuse: Callable[[str, str, str], ConflictError],
        event: Callable[[S, S, T], str],
    ) -> None:
        """``refuse(entity_id, current, trigger)`` builds the error for an illegal move; ``event(from, to,
        trigger)`` names the event a legal one emits. A table entry may name several targets when the trigger's
        outcome is decided by data (a failed task goes back to pending or to the dead-letter list)."""
        self.entity = entity
        self._table = {k: (v if isinstance(v, frozenset) else frozenset({v})) for k, v in table.items()}
        self._refuse = refuse
        self._event = event

    def targets(self, current: S, trigger: T) -> frozenset[S]:
        return self._table.get((current, trigger), frozenset())

    def can(self, current: S, trigger: T) -> bool:
        return (current, trigger) in self._table

    def plan(self, entity_id: str, current: S, trigger: T, to: S | None = None) -> Move[S, T]:
        """The move ``trigger`` makes from ``current`` (to ``to``, when the table allows several targets)."""
        targets = self._table.get((current, trigger))
        if targets is None or (to is not None and to not in targets) or (to is None and len(targets) > 1):
            raise self._refuse(entity_id, current.value, trigger.value)
        target = to if to is not None else next(iter(targets)) if targets else current
        return Move(entity_id, current, target, trigger, self._event(current, target, trigger))

    def check(self, entity_id: str, current: S, trigger: T) -> None:
        """Refuse unless ``trigger`` is legal from ``current`` (whatever its target)."""
        if (current, trigger) not in self._table:
            raise self._refuse(entity_id, current.value, trigger.value)

    def sources(self, trigger: T) -> tuple[S, ...]:
        """Every state ``trigger`` is legal from: the guard a store applies atomically when it writes the move."""
        return tuple(s for (s, t) in self._table if t == trigger)

    def moves(self) -> list[tuple[S, T, frozenset[S]]]:
        """Every legal move, for documentation and tests."""
        return [(s, t, targets) for (s, t), targets in self._table.items()]
