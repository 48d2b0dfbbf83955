"""Review of what the README says about isolation against what the code now does."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _limits() -> str:
    text = README.read_text()
    return text[text.index("## Limits, honestly") :]


def test_the_readme_does_not_call_the_shipped_egress_allowlist_missing() -> None:
    limits = " ".join(_limits().split())
    not_yet = limits[limits.index("Not yet:") : limits.index("Not yet:") + 300]
    assert "egress allowlist" not in not_yet, (
        "README 'Limits, honestly' lists an egress allowlist as 'Not yet', but config.sandbox.egress and the egress "
        f"proxy (src/godel/api/egress.py, docs/sandbox.md#egress) shipped: {not_yet!r}"
    )


def test_the_readme_does_not_say_agents_still_run_as_the_servers_user() -> None:
    limits = " ".join(_limits().split())
    assert "Agents still run as the server's user" not in limits, (
        "README says agents still run as the server's user with its files and network ('confining them is the next "
        "issue'), while the sandbox is now the default where bubblewrap is installed; it should say when that holds "
        "(runtime local) and name what still reaches the host from a sandbox (setup commands, sub-agents' setup)"
    )
