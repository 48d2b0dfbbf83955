"""What one run needs from the server, handed to it explicitly: no run reaches back into the supervisor.

Built once by the supervisor and shared by every ``AgentRun``, the launch and the start-up reconciliation.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from godel.core.ports import Clock, Runtime, Store
from godel.scheduler.keys import RunKeys
from godel.scheduler.sessions import Sessions
from godel.settings import Settings
from godel.store.secrets import SecretBox


@dataclass(frozen=True)
class RunDeps:
    store: Store
    runtime: Runtime
    settings: Settings
    clock: Clock
    keys: RunKeys  # the run's gateway key and API credential
    sessions: Sessions
    secrets: SecretBox  # opens the sealed spawn env at launch
    node_id: str
    # Arm a named timer (a delayed cleanup): after ``delay`` seconds on the clock it starts the work. Shutdown cancels
    # a timer still waiting (the next start re-arms what is left) and waits for work it has started.
    arm_timer: Callable[[str, float, Callable[[], Coroutine[Any, Any, None]]], None]
    # A slot may have come free or work arrived: wake the admission loop.
    wake: Callable[[], None]
