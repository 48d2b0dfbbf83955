"""The settings files, read without pydantic: where they are, their syntax, their keys, and what a client needs.

``godel.settings.Settings`` (pydantic-settings) is the full, typed configuration the server builds. Loading
pydantic-settings costs a quarter of a second, more than a whole ``godel agent list`` may take, so the CLI and
the HTTP client read the two settings they use (``url`` and ``home``) here instead, with the standard library
only. Both paths give the same one-line errors for what they both check: a file that is not TOML, and a key
that is not a setting (with the closest one as a suggestion). Type errors in settings the client does not read
are the server's to report (``godel serve``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from godel.errors import GodelError

# Every field of ``godel.settings.Settings``, spelled out so that checking a file's keys does not need pydantic.
# tests/unit/test_settings_files.py fails when this and the class disagree.
NAMES: frozenset[str] = frozenset(
    {
        'home', 'workspace_mode', 'workspace_cache_size',
        'database_url', 'sqlite_synchronous', 'host', 'port', 'url', 'node_name', 'max_concurrent_agents',
        'on_shutdown', 'kill_grace', 'default_timeout', 'retry_backoff', 'retry_backoff_max', 'watch_interval',
        'reconcile_interval', 'log_level', 'providers', 'fallbacks', 'agents_dir', 'agent_cli_retries', 'use_gateway',
        'gateway_url', 'runtime', 'runtimes', 'runtime_fallback', 'container_image', 'container_storage',
        'gateway_redact_pii', 'gateway_audit_bodies',
        'kubernetes_image', 'kubernetes_namespace', 'kubernetes_kubeconfig',
        'kubernetes_context', 'kubernetes_runtime_class', 'kubernetes_memory_mb', 'kubernetes_cpus',
        'kubernetes_service_account', 'e2b_api_key_env', 'e2b_template', 'e2b_domain', 'e2b_api_url', 'e2b_sandbox_url',
        'e2b_timeout', 'budget_hold_timeout', 'rate_limits',
        'agent_memory_mb', 'agent_cpus', 'agent_pids',
        'gateway_cache_seconds', 'gateway_breaker_failures', 'gateway_breaker_reset', 'redis_url', 'gateway_policies',
        'gateway_read_timeout', 'prices', 'commit_on_complete', 'roles', 'auth_enabled', 'allowed_hosts',
        'cors_origins', 'access_token_ttl', 'refresh_token_ttl', 'jwt_secret_file', 'api_rate_limit', 'cookie_secure',
        'tls_cert', 'tls_key', 'webhook_max_attempts', 'webhook_backoff', 'webhook_backoff_max',
        'webhook_failure_threshold', 'webhook_timeout', 'webhook_concurrency', 'max_request_bytes', 'secret_key_file',
        'repo_roots', 'oidc_issuer', 'oidc_client_id', 'oidc_client_secret_env', 'oidc_redirect_url', 'oidc_scopes',
        'oidc_role_claim', 'oidc_role_map', 'oidc_default_role', 'oidc_team_claim', 'webhook_allow_private',
        'egress_allow_private', 'merge_gate_confined',
    }
)  # fmt: skip

DEFAULT_URL = "http://127.0.0.1:7373"


class SettingsError(GodelError):
    """The configuration (a settings file, a ``GODEL_*`` variable or a flag) is wrong; the message is one line
    that names where, the key and what it should be. The CLI exits 2 on it, as for bad usage."""

    code = "INVALID_SETTINGS"


def toml_files() -> list[Path]:
    """The settings files that exist, the user's first and the repository's (or ``GODEL_CONFIG``'s) last, so
    that a later one wins over an earlier one."""
    files = [Path.home() / ".config" / "godel" / "config.toml"]
    explicit = os.environ.get("GODEL_CONFIG")
    # Absolute, so that an error names the file wherever the command was run from.
    files.append(Path(explicit).absolute() if explicit else Path.cwd() / "godel.toml")
    return [f for f in files if f.is_file()]


def read_toml(path: Path) -> dict[str, Any]:
    """A settings file's table, its syntax and its top-level keys checked."""
    import tomllib  # only when there is a file: a CLI call without one does not pay for the parser

    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}; fix the syntax there") from exc
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be read: {exc.strerror}") from exc
    for key in data:
        if key not in NAMES:
            raise SettingsError(unknown_key(str(path), key))
    return data


def unknown_key(where: str, key: str) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, sorted(NAMES), n=1)
    hint = f"did you mean {close[0]}?" if close else "the settings are listed in docs/configuration.md"
    return f"{where}: unknown setting {key!r}: {hint}"


@dataclass(frozen=True)
class ClientSettings:
    url: str
    """Where the server is (``url``)."""
    home: Path
    """``$GODEL_HOME``, where a server on this machine left its administrator's credentials."""


def client_settings() -> ClientSettings:
    """``url`` and ``home`` with the precedence of ``Settings``: ``GODEL_*`` environment > repository file >
    user's file > defaults. Every file is checked (syntax, keys) even when the environment decides both."""
    values: dict[str, str] = {"url": DEFAULT_URL, "home": str(Path.home() / ".godel")}
    for path in toml_files():
        data = read_toml(path)
        for key in values:
            if key in data:
                if not isinstance(data[key], str):
                    raise SettingsError(f"{path}: {key} must be a string (got {data[key]!r}); put it in quotes")
                values[key] = data[key]
    for key in values:
        env = os.environ.get(f"GODEL_{key.upper()}")
        if env is not None:
            values[key] = env
    return ClientSettings(url=values["url"], home=Path(values["home"]))
