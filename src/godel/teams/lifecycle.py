"""The team state machine as one table (a ``core.machine.Machine``).

creating ──start──▶ active ◀──resume── paused
                      └──────pause──────▶┘
creating/active/paused ──complete──▶ completed      ──fail──▶ failed
creating/active/paused ──scale──▶ (the same status: a new size, recorded as team:scaled)
"""

from __future__ import annotations

from enum import StrEnum

from godel.core.machine import Machine
from godel.core.states import TeamStatus as S
from godel.errors import TeamTransitionError


class TeamTrigger(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    SCALE = "scale"
    COMPLETE = "complete"
    FAIL = "fail"


_OPEN = (S.CREATING, S.ACTIVE, S.PAUSED)
TABLE: dict[tuple[S, TeamTrigger], S] = {
    (S.CREATING, TeamTrigger.START): S.ACTIVE,
    (S.ACTIVE, TeamTrigger.PAUSE): S.PAUSED,
    (S.PAUSED, TeamTrigger.RESUME): S.ACTIVE,
    **{(s, TeamTrigger.SCALE): s for s in _OPEN},
    **{(s, TeamTrigger.COMPLETE): S.COMPLETED for s in _OPEN},
    **{(s, TeamTrigger.FAIL): S.FAILED for s in _OPEN},
}

_EVENTS = {
    TeamTrigger.START: "team:started",
    TeamTrigger.PAUSE: "team:paused",
    TeamTrigger.RESUME: "team:resumed",
    TeamTrigger.SCALE: "team:scaled",
    TeamTrigger.COMPLETE: "team:completed",
    TeamTrigger.FAIL: "team:failed",
}

TEAMS: Machine[S, TeamTrigger] = Machine(
    "team", TABLE, refuse=TeamTransitionError, event=lambda _from, _to, trigger: _EVENTS[trigger]
)
