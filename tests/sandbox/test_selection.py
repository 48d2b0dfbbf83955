"""Choosing the runtime: ``runtime = "sandbox"`` builds the sandbox, and fails closed where bubblewrap is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.errors import RuntimeFailure
from godel.runtimes import runtime_for
from godel.runtimes.sandbox import SandboxRuntime
from godel.settings import Settings, load_settings
from godel.settings_files import SettingsError
from tests.sandbox.conftest import require_sandbox


def test_the_default_runtime_is_local(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.runtime == "local"
    assert runtime_for(settings).name == "local"


def test_runtime_sandbox_builds_the_sandbox_with_the_gateway_relay(tmp_path: Path) -> None:
    require_sandbox()
    settings = Settings(home=tmp_path, runtime="sandbox", port=7399)
    runtime = runtime_for(settings)
    assert isinstance(runtime, SandboxRuntime)
    assert runtime.gateway_socket == tmp_path / "gateway" / "proxy.sock" and runtime.gateway_port == 7399
    assert runtime.worktrees_root == settings.worktrees_dir and runtime.run_root == tmp_path / "run"
    without = runtime_for(Settings(home=tmp_path, runtime="sandbox", use_gateway=False))
    assert isinstance(without, SandboxRuntime) and without.gateway_socket is None  # then no way out at all


def test_without_bubblewrap_the_sandbox_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither bwrap nor socat on it
    with pytest.raises(SettingsError) as info:
        load_settings(home=tmp_path, runtime="sandbox")
    assert "--runtime" in str(info.value) and "apt-get install bubblewrap socat" in str(info.value)
    monkeypatch.setenv("GODEL_RUNTIME", "sandbox")
    with pytest.raises(SettingsError, match=r"environment variable GODEL_RUNTIME.*apt-get install bubblewrap socat"):
        load_settings(home=tmp_path)
    with pytest.raises(RuntimeFailure, match="apt-get install bubblewrap socat"):
        SandboxRuntime(tmp_path / "w", tmp_path / "l")
