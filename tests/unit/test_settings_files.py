"""Bad configuration is one line naming where, the key and the fix, on both paths: the full ``load_settings`` of
the server and the pydantic-free ``client_settings`` of the CLI and the HTTP client."""

from __future__ import annotations

from pathlib import Path

import pytest

from godel.settings import Settings, load_settings
from godel.settings_files import NAMES, SettingsError, client_settings


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user config.toml of this machine
    for name in ("GODEL_URL", "GODEL_HOME", "GODEL_PORT", "GODEL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "godel.toml"


def test_names_are_the_fields_of_settings() -> None:
    assert set(Settings.model_fields) == NAMES, "update godel.settings_files.NAMES to the fields of Settings"


@pytest.mark.parametrize("load", [load_settings, client_settings])
def test_a_misspelt_key_is_refused_with_the_closest_name(config: Path, load: object) -> None:
    config.write_text("max_concurent_agents = 3\n")
    with pytest.raises(SettingsError) as caught:
        load()  # type: ignore[operator]
    assert caught.value.message == (
        f"{config}: unknown setting 'max_concurent_agents': did you mean max_concurrent_agents?"
    )


@pytest.mark.parametrize("load", [load_settings, client_settings])
def test_a_file_that_is_not_toml_names_its_line(config: Path, load: object) -> None:
    config.write_text('url = "http://x"\nport = \n')
    with pytest.raises(SettingsError) as caught:
        load()  # type: ignore[operator]
    assert caught.value.message.startswith(f"{config}: not valid TOML: ")
    assert "line 2" in caught.value.message and "\n" not in caught.value.message


def test_a_wrong_type_names_the_file_and_the_key(config: Path) -> None:
    config.write_text('max_concurrent_agents = "many"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.message.startswith(f"{config}: max_concurrent_agents: input should be a valid integer")
    assert caught.value.message.endswith("(got 'many')")


def test_a_bad_environment_variable_is_named(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text("port = 9000\n")  # the environment wins, so it is the one at fault
    monkeypatch.setenv("GODEL_PORT", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.message.startswith("environment variable GODEL_PORT: input should be a valid integer")


def test_a_bad_flag_is_named_as_the_flag(config: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(port=70000)
    assert caught.value.message == "--port: input should be less than or equal to 65535 (got 70000)"


def test_an_unknown_key_inside_a_table_is_refused(config: Path) -> None:
    config.write_text('[providers.local]\nkind = "openai-chat"\nbase_url = "http://x"\nkidn = "x"\n')
    with pytest.raises(SettingsError, match=r"godel.toml: providers.local.kidn: not a known key here"):
        load_settings()


def test_client_settings_follow_the_precedence(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = config.parent / "home" / ".config" / "godel" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('url = "http://user:1"\nhome = "/from/user"\n')
    assert client_settings().url == "http://user:1"
    config.write_text('url = "http://repo:2"\n')
    assert (client_settings().url, client_settings().home) == ("http://repo:2", Path("/from/user"))
    monkeypatch.setenv("GODEL_URL", "http://env:3")
    assert client_settings().url == "http://env:3"
    assert load_settings().url == "http://env:3"  # the same answer as the server's full settings


def test_client_settings_check_the_type_of_what_they_read(config: Path) -> None:
    config.write_text("url = 5\n")
    with pytest.raises(SettingsError, match=r"godel.toml: url must be a string \(got 5\); put it in quotes"):
        client_settings()
