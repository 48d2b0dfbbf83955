"""Typed configuration.

Precedence: explicit arguments (CLI flags) > ``GODEL_*`` environment > ``./godel.toml`` (or the file named by
``GODEL_CONFIG``) > ``~/.config/godel/config.toml`` > the defaults below. Secrets are never stored here, only
the *names* of environment variables that hold them. The environment is read only when ``Settings()`` is built.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Literal

import pydantic
import pydantic_settings
from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from godel.core.limits import CPUS_RANGE, MEMORY_MB_RANGE, PIDS_RANGE, ResourceLimits
from godel.providers.config import ProviderConfig, RateLimit
from godel.settings_files import SettingsError, read_toml, toml_files, unknown_key
from godel.settings_runtimes import RuntimeSettings


class Settings(RuntimeSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GODEL_", extra="forbid", use_attribute_docstrings=True)
    _unconfined_because: str | None = PrivateAttr(default=None)  # why ``auto`` chose ``local``

    home: Path = Field(default_factory=lambda: Path.home() / ".godel")
    """Where Godel keeps its data: ``godel.db``, ``logs/``, ``worktrees/`` (the workspaces), ``workspaces/`` (their
    private git directories), ``cache/``, ``run/``."""

    database_url: str | None = None
    """SQLAlchemy async URL. Unset: SQLite at ``$GODEL_HOME/godel.db``. For a team:
    ``postgresql+asyncpg://user@host/db``."""

    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    """SQLite's ``synchronous`` pragma in WAL mode. NORMAL survives a crash of Godel (kill -9) without losing a
    committed write; FULL also survives a power loss, at a cost per commit."""

    host: str = "127.0.0.1"
    """Address ``godel serve`` binds. Keep 127.0.0.1 unless the API is protected."""

    port: int = Field(default=7373, ge=0, le=65535)
    """Port ``godel serve`` listens on."""

    url: str = "http://127.0.0.1:7373"
    """Where the CLI and the client find the server."""

    node_name: str = Field(default_factory=socket.gethostname)
    """This node's name (one embedded server is one node)."""

    max_concurrent_agents: int = 32
    """Agents admitted at once on this node (initializing through completing, paused included)."""

    workspace_mode: Literal["auto", "overlay", "checkout"] = "auto"
    """How agent workspaces are made: ``overlay`` (an overlayfs layer over a cached checkout of the base commit:
    constant time; needs root), ``checkout`` (a full checkout: time in proportion to the files) or ``auto``
    (overlay where it can be mounted, checkout otherwise, said once in the log and in ``/capabilities``)."""

    workspace_cache_size: int = Field(default=16, ge=1)
    """Cached checkouts of base commits kept for overlay workspaces (least recently used ones beyond this are
    removed unless a workspace still uses them)."""

    on_shutdown: Literal["leave", "terminate"] = "leave"
    """What ``godel serve`` does with running agents when it stops: ``leave`` them running so the next start
    re-adopts them (their output keeps going to their log files), or ``terminate`` them (agents end ``killed``)."""

    kill_grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when an agent is killed or times out."""

    default_timeout: float = 3600.0
    """Hard limit, in seconds of wall-clock running time, of one agent attempt when the spawn request gives none.
    Time spent paused does not count; on expiry the process tree gets SIGTERM, then SIGKILL after the grace."""

    retry_backoff: float = 2.0
    """Base of the exponential retry delay: attempt n waits ``retry_backoff * 2**(n-1)`` seconds."""

    retry_backoff_max: float = 300.0
    """Upper bound of the retry delay in seconds."""

    watch_interval: float = 0.1
    """Seconds between two passes of the supervisor over running agents (exit, output, timeouts)."""

    reconcile_interval: float = 1.0
    """Seconds between two admission passes when nothing wakes the scheduler earlier."""

    log_level: str = "info"
    """Server log level."""

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    """Model providers, as ``[providers.NAME]`` tables with ``kind`` (``openai-chat`` | ``openai-responses`` |
    ``anthropic`` | ``gemini``), ``base_url``, ``api_key_env`` and ``models``. A spawn names ``NAME/MODEL``."""

    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    """Fallback chains: ``"NAME/MODEL" = ["OTHER/MODEL", …]``. When an attempt fails because its provider failed
    (refused, HTTP error, overloaded), the next attempt uses the next model of the chain that the agent's CLI can
    talk to. These attempts come on top of ``maxRetries``."""

    agents_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "godel" / "agents"
    )
    """Where ``scripts/install-agent-clis`` installed the agent CLIs (``npm/bin``, ``venvs/NAME/bin``); searched
    before ``PATH``."""

    agent_cli_retries: int = Field(default=1, ge=0, le=10)
    """How often an agent CLI may retry a failed model request on its own (codex and claude otherwise retry for
    minutes, hiding a dead endpoint from the supervisor)."""

    use_gateway: bool = True
    """Agents reach their models through this server's gateway (``GODEL_GATEWAY_URL`` + ``/proxy/v1``) with a
    virtual key scoped to the agent, so provider keys never enter a workspace and every token is metered. Needs the API
    server running (``godel serve``); turn it off when embedding the control plane without one."""

    gateway_url: str | None = None
    """Where agents reach this server's gateway. Default: ``http://HOST:PORT`` of ``godel serve`` (127.0.0.1 when
    it binds every address). Set it when agents run elsewhere (a container, another node)."""

    runtime: Literal["auto", "local", "sandbox", "gvisor", "container", "kubernetes", "e2b"] = "auto"
    """Where agents run by default: ``sandbox`` (bubblewrap: own namespaces, no capabilities, the system read-only,
    no network but the gateway; see docs/sandbox.md), ``local`` (a git worktree, the agent as a plain process of the
    server's user: no confinement), or ``gvisor``, ``container``, ``kubernetes``, ``e2b``. ``auto`` (the default) is
    ``sandbox`` where ``bwrap`` and ``socat`` are installed and agents reach their models through the gateway
    (``use_gateway``, their only way out of a sandbox), else ``local``, said loudly at start and by ``godel status``.
    An explicit ``sandbox`` fails closed: the server refuses to start without ``bwrap`` and ``socat``
    (``apt-get install bubblewrap socat``)."""

    agent_memory_mb: int | None = Field(default=None, ge=MEMORY_MB_RANGE[0], le=MEMORY_MB_RANGE[1])
    """Memory limit of each agent, in MiB, when neither its spawn (``config.sandbox.limits.memoryMb``) nor its team
    (``resourceLimits``) sets one; over it the kernel kills the agent, which ends ``failed`` with "memory limit".
    Unset: no limit. Enforced through cgroups by the ``sandbox`` runtime; a runtime that cannot enforce it refuses
    every spawn rather than run agents without it."""

    agent_cpus: float | None = Field(default=None, ge=CPUS_RANGE[0], le=CPUS_RANGE[1])
    """CPU limit of each agent, in cores (0.5: half a core), when its spawn and team set none. Unset: no limit."""

    agent_pids: int | None = Field(default=None, ge=PIDS_RANGE[0], le=PIDS_RANGE[1])
    """Processes and threads each agent may have at once (a fork bomb stops there), when its spawn and team set
    none. Unset: no limit."""

    budget_hold_timeout: float = 86400.0
    """Seconds an agent's request that found its budget spent is held (the agent paused) waiting for the agent to
    be resumed; after that it is refused with 402."""

    rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    """Gateway rate limits: ``[rate_limits.key]`` applies to every virtual key (a key created with its own
    ``limits`` uses those instead), ``[rate_limits."provider/model"]`` to all requests for that model. Each has
    ``requests_per_minute``, ``tokens_per_minute`` and ``max_parallel``; over a limit a request gets 429 with
    ``Retry-After``."""

    gateway_redact_pii: bool = False
    """Replace e-mail addresses, key-shaped secrets and card numbers in what the gateway sends to providers (and
    writes to its audit log) with placeholders."""

    gateway_audit_bodies: bool = False
    """Write every proxied request's body and response (up to 1 MiB) to ``$GODEL_HOME/audit/gateway-DAY.jsonl``.
    The metadata of every request (who, model, tokens, cost, status, latency) is always in the usage records."""

    gateway_cache_seconds: float = Field(default=0.0, ge=0)
    """Keep successful answers to non-streaming requests this many seconds and answer an identical request (same
    provider, path and body) from them, without calling the provider. 0 (the default): no cache."""

    gateway_breaker_failures: int = Field(default=5, ge=1)
    """Failures in a row (unreachable, timed out, 5xx or 429) after which a provider's circuit opens: the gateway
    stops sending it requests (another provider serving the same model over the same wire API is used, else 503)."""

    gateway_breaker_reset: float = Field(default=30.0, gt=0)
    """Seconds an open circuit stays open before one trial request is let through."""

    redis_url: str | None = None
    """Redis (``redis://host:6379/0``) for the state several Godel servers on one database must share: the
    gateway's rate-limit windows, requests in flight and budget reservations (without it each server keeps its
    own, and enforces only its own requests)."""

    gateway_policies: list[str] = Field(default_factory=list)
    """Your own gateway policies, as ``"package.module:factory"``: each factory is called with the ``Gateway`` and
    returns a policy, an ``async (exchange, call_next) -> Reply`` callable (``godel.gateway.exchange``). They run
    after PII redaction and before budgets, rate limits, the cache and the provider, in the order given."""

    gateway_read_timeout: float = 600.0
    """Seconds the gateway waits for the next bytes of a provider's response before giving up on it."""

    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per-model price overrides for the gateway's metering, ``"provider/model" = {input_per_mtok = …,
    output_per_mtok = …, cached_input_per_mtok = …, cache_write_per_mtok = …}`` (USD per million tokens); other
    models are priced from the ``genai-prices`` table, and a model it does not know is metered without a cost."""

    commit_on_complete: bool = True
    """When an agent completes, commit what it left uncommitted in its worktree to its branch, so its whole
    change is on the branch (ready to merge)."""

    roles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Team role profiles (docs/teams.md), as ``[roles.NAME]`` tables with ``preamble``, ``tools`` (a list, or a
    table of lists per agent kind), ``agent``, ``model``, ``gate`` (``none`` | ``verdict`` | ``merge`` |
    ``monitor``) and ``description``. A built-in role (coordinator, worker, reviewer, refinery, monitor) named
    here is overridden key by key; any other name adds a role."""

    auth_enabled: bool = True
    """Require a credential on every route but health, capabilities and the OpenAPI document. Turning it off is
    only for a benchmark or a machine with no other user: ``godel serve`` then refuses to bind anything but
    loopback."""

    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names the server answers to (a DNS-rebinding defence): a request whose ``Host`` is not one of them gets
    403. Always allowed: localhost, 127.0.0.1, ::1, the bound address and the host of ``gateway_url``; ``"*"`` allows
    any (behind a reverse proxy that checks it)."""

    cors_origins: list[str] = Field(default_factory=list)
    """Web origins (``https://dash.example``) allowed to call the API from a browser. Empty (the default): no CORS,
    and any request carrying another site's ``Origin`` is refused."""

    access_token_ttl: float = Field(default=900.0, gt=0, le=86400)
    """Seconds an access token (a JWT from ``/auth/login`` or ``/auth/refresh``) stays valid."""

    refresh_token_ttl: float = Field(default=7 * 86400.0, gt=0, le=90 * 86400)
    """Seconds a refresh token stays valid; each use replaces it with a new one."""

    jwt_secret_file: Path | None = None
    """File with the key that signs access tokens. Unset: ``$GODEL_HOME/jwt.key``, made on first start (mode
    0600). Servers that share a database must share this file."""

    api_rate_limit: str = "1200/minute"
    """Requests one credential may make to the API, in the ``limits`` library's notation (``100/second``,
    ``1200/minute``); over it: 429 with ``Retry-After``. Shared between servers through ``redis_url``."""

    cookie_secure: bool | None = None
    """Mark the session cookie ``Secure`` (sent over HTTPS only). Unset: when the server itself serves TLS."""

    tls_cert: Path | None = None
    """PEM certificate for ``godel serve`` to serve HTTPS itself (or put a reverse proxy in front: docs/auth.md)."""

    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    """Attempts of one webhook delivery (the first included) before it fails for good."""

    webhook_backoff: float = Field(default=1.0, gt=0)
    """Seconds before a webhook delivery's second attempt; the wait doubles after each failed attempt."""

    webhook_backoff_max: float = Field(default=300.0, gt=0)
    """The longest wait, in seconds, between two attempts of one webhook delivery."""

    webhook_failure_threshold: int = Field(default=5, ge=1)
    """Failed webhook deliveries in a row (each after all its attempts) that disable a subscription."""

    webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds one webhook attempt may take (connect, send, answer) before it counts as failed."""

    webhook_concurrency: int = Field(default=8, ge=1)
    """Webhook attempts in flight at once on this server."""

    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """The largest request body the API accepts, in bytes; a larger one gets 413 before it is read further
    (the gateway's ``/proxy`` is not limited by it)."""

    secret_key_file: Path | None = None
    """File with the key that encrypts the secrets Godel stores (spawn ``env`` values, webhook secrets). Unset:
    ``$GODEL_HOME/secret.key``, made on first use (mode 0600). Servers that share a database must share this file."""

    repo_roots: list[Path] = Field(default_factory=list)
    """Folders the repositories of spawns and merges must be inside (``repo`` elsewhere gets 400). Empty (the
    default): any repository the server's user can read."""

    oidc_issuer: str | None = None
    """Single sign-on (docs/sso.md): the OpenID Connect provider's issuer URL; its
    ``/.well-known/openid-configuration`` is read on the first login. Unset (the default): no single sign-on, and
    ``/auth/oidc/…`` answers 404."""

    oidc_client_id: str | None = None
    """The client id Godel is registered under at the provider (needed with ``oidc_issuer``)."""

    oidc_client_secret_env: str | None = None
    """Name of the environment variable that holds the client secret (read at each login). Unset: a public client,
    held by PKCE alone."""

    oidc_redirect_url: str | None = None
    """The callback URL registered at the provider. Default: ``url`` + ``/auth/oidc/callback``."""

    oidc_scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    """Scopes asked of the provider; add the one that releases ``oidc_role_claim`` if it needs one (often
    ``groups``)."""

    oidc_role_claim: str = "groups"
    """The claim (in the ID token, else the provider's userinfo) whose values ``oidc_role_map`` turns into roles."""

    oidc_role_map: dict[str, str] = Field(default_factory=dict)
    """Claim value → Godel role (``"godel-admins" = "admin"``). A user gets every role one of its values maps to,
    recomputed at each login."""

    oidc_default_role: str | None = None
    """The role of a user none of whose values maps to a role. Unset (the default): such a login is refused (403)."""

    oidc_team_claim: str | None = None
    """The claim that gives a user's team, set at each login. Unset: single sign-on leaves teams alone."""

    merge_gate_confined: bool = True
    """Run merge gates (``verify``) and conflict resolvers (``resolve``), which execute what agents wrote, as confined
    as an agent when the default runtime confines (``sandbox``): no network, the system read-only, only the
    integration worktree writable. Tools the gate needs must be on the system (``/usr``) or in the repository. Off:
    they run as the server's user, with its files and network."""

    egress_allow_private: bool = False
    """Let a sandboxed agent's egress proxy connect to loopback, private and link-local addresses when its allowlist
    names a host that is or resolves to one. Off by default, so an allowlisted name cannot lead into the server's own
    network (its database, its API, a metadata service)."""

    webhook_allow_private: bool = False
    """Let webhooks be delivered to loopback, private and link-local addresses (checked when a subscription is made
    and again each time its host is resolved). Off by default, so a webhook cannot probe or call what sits behind
    the server."""

    @property
    def agent_limits(self) -> ResourceLimits:
        """The server's default resource limits of an agent (``agent_memory_mb``, ``agent_cpus``, ``agent_pids``)."""
        return ResourceLimits(memory_mb=self.agent_memory_mb, cpus=self.agent_cpus, pids=self.agent_pids)

    @field_validator("runtime")
    @classmethod
    def _sandbox_tools_present(cls, value: str) -> str:
        if value == "sandbox":
            missing = [tool for tool in ("bwrap", "socat") if shutil.which(tool) is None]
            if missing:
                raise ValueError(
                    f"the sandbox runtime needs {' and '.join(missing)}, not installed here: run "
                    '`apt-get install bubblewrap socat`, or set runtime = "local" (agents then run unconfined)'
                )
        return value

    @model_validator(mode="after")
    def _resolve_auto_runtime(self) -> Settings:
        if self.runtime == "auto":
            missing = [tool for tool in ("bwrap", "socat") if shutil.which(tool) is None]
            if missing:
                self._unconfined_because = f"not installed: {', '.join(missing)} (apt-get install bubblewrap socat)"
            elif not self.use_gateway:
                self._unconfined_because = "use_gateway is off (a sandbox's only way out is the gateway)"
            self.runtime = "local" if self._unconfined_because else "sandbox"
        elif self.runtime == "local":
            self._unconfined_because = 'runtime = "local" was chosen'
        return self

    @property
    def unconfined_warning(self) -> str | None:
        """Why agents run unconfined by default here (as the server's user, on its network), or None."""
        if self.runtime != "local":
            return None
        return (
            f"agents run UNCONFINED (runtime local: as this server's user, seeing its files, processes and network): "
            f"{self._unconfined_because or 'runtime = local'}"
        )

    @model_validator(mode="after")
    def _fallbacks_enabled(self) -> Settings:
        offered = {self.runtime, *self.runtimes}
        missing = [name for name in self.runtime_fallback if name not in offered]
        if missing:
            raise ValueError(
                f"runtime_fallback names {', '.join(missing)}, which is neither the runtime nor in runtimes "
                f"({', '.join(sorted(offered))}); add it to runtimes"
            )
        return self

    @property
    def confines_agents(self) -> bool:
        """Some runtime this server offers confines agents behind the gateway's socket (every one but ``local``)."""
        return any(name != "local" for name in (self.runtime, *self.runtimes))

    @field_validator("api_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        from limits import parse  # here, not at import: the CLI builds Settings on every call

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate limit such as '1200/minute' or '20/second'") from exc
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Later files win among themselves, so the repo's godel.toml goes before the user's config.
        tomls = [TomlConfigSettingsSource(settings_cls, toml_file=f) for f in reversed(toml_files())]
        return (init_settings, env_settings, *tomls)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.home / 'godel.db'}"

    @property
    def agent_gateway_url(self) -> str:
        if self.gateway_url:
            return self.gateway_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def local_url(self) -> str:
        """Where a client on this machine reaches ``godel serve`` (what ``$GODEL_HOME/credentials`` names)."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.agent_gateway_url.split('://', 1)[1]}"

    @property
    def gateway_socket(self) -> Path:
        """The Unix socket on which the server also serves the gateway alone, for sandboxed agents (its directory
        is bound into each sandbox)."""
        return self.home / "gateway" / "proxy.sock"

    @property
    def egress_socket(self) -> Path:
        """The Unix socket of the egress proxy for sandboxed agents (beside the gateway's, bound into each sandbox)."""
        return self.home / "gateway" / "egress.sock"

    @property
    def worktrees_dir(self) -> Path:
        return self.home / "worktrees"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


def load_settings(**overrides: Any) -> Settings:
    """``Settings(**overrides)`` for an entry point (``godel serve``): whatever is wrong in the files, the
    environment or the flags becomes a ``SettingsError`` whose message is one line naming where the bad value is,
    the key and what it should be, instead of pydantic's multi-line report."""
    files = toml_files()
    for path in files:
        read_toml(path)  # the syntax and the keys, with the same messages as the CLI's client-side check
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        raise SettingsError(_one_line(exc, overrides, files)) from None
    except pydantic_settings.SettingsError as exc:
        # A GODEL_* variable of a list or table setting that is not JSON: pydantic-settings names only the field.
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else "?"
        raise SettingsError(f"environment variable GODEL_{name.upper()}: not valid JSON for this setting") from None


def _one_line(exc: pydantic.ValidationError, overrides: dict[str, Any], files: list[Path]) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    top = loc[0] if loc else "?"
    where = _origin(top, overrides, files)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden" and len(loc) == 1:
        return unknown_key(where, top) + more
    message = first["msg"][0].lower() + first["msg"][1:]
    if first["type"] == "extra_forbidden":
        message = "not a known key here"
    # A variable or a flag names the setting already; a file needs the key, a table the path inside it.
    key = "" if len(loc) == 1 and not where.endswith(".toml") else ".".join(loc) + ": "
    return f"{where}: {key}{message} (got {first['input']!r}){more}"


def _origin(key: str, overrides: dict[str, Any], files: list[Path]) -> str:
    """Where the value of setting ``key`` came from, following the precedence: a flag, the environment, the
    last file that sets it."""
    if key in overrides:
        return f"--{key.replace('_', '-')}"
    if f"GODEL_{key.upper()}" in {name.upper() for name in os.environ}:
        return f"environment variable GODEL_{key.upper()}"
    for path in reversed(files):
        try:
            if key in read_toml(path):
                return str(path)
        except SettingsError:
            continue
    return "settings"
