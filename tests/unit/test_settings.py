"""Every setting is documented: a docstring in settings.py and a row in docs/configuration.md."""

from pathlib import Path

import pytest

from godel.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    assert Settings.model_fields[name].description, f"{name} has no docstring in settings.py"
    assert f"`GODEL_{name.upper()}`" in DOC.read_text(), f"GODEL_{name.upper()} missing from docs/configuration.md"


def test_environment_and_toml_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "godel.toml"
    toml.write_text("max_concurrent_agents = 7\nport = 9000\n")
    monkeypatch.setenv("GODEL_CONFIG", str(toml))
    monkeypatch.setenv("GODEL_PORT", "9100")
    s = Settings()
    assert s.max_concurrent_agents == 7  # from the file
    assert s.port == 9100  # the environment wins over the file
    assert Settings(port=9200).port == 9200  # explicit (CLI flags) win over both
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
