"""Which roles a step may name: the built-in ones and those configured in ``[roles.NAME]`` (godel.toml).

The server checks a submitted run against its own settings; ``godel workflow validate`` checks a file against
this machine's configuration (the same files the embedded server reads), with the same checker
(``parsing._Checker.role``), so a file that validates is not refused by ``workflow run`` for its roles.
"""

from __future__ import annotations

from godel.agents.roles import load_roles
from godel.settings import Settings


def configured_roles(settings: Settings | None = None) -> list[str]:
    """The role names ``settings`` (default: this machine's configuration) declares, built-ins included."""
    return sorted(load_roles((settings or Settings()).roles))
