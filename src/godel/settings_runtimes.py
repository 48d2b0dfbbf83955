"""The settings of the runtimes beyond the sandbox (``container``, ``kubernetes``, ``e2b``): a part of
``godel.settings.Settings`` kept apart, so the settings of the server itself read on their own. Each is a
``GODEL_*`` variable or a key of godel.toml like every other setting. The remote runtimes are tested against fakes
of their APIs, not a live cluster or E2B (docs/remote-runtimes.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    runtimes: list[Literal["local", "sandbox", "gvisor", "container", "kubernetes", "e2b"]] = Field(
        default_factory=list
    )
    """The runtimes a spawn may ask for (``config.sandbox.runtime``, ``config.sandbox.fallback``) besides the default
    ``runtime``. Empty: only the default. Each is built when an agent first needs it; one that cannot run here (a
    tool missing) fails that agent's spawn, or hands it to the next runtime of its fallback chain."""

    runtime_fallback: list[Literal["local", "sandbox", "gvisor", "container", "kubernetes", "e2b"]] = Field(
        default_factory=list
    )
    """The fallback chain of an agent that names none: when its runtime cannot start it (not installed here, a
    remote refusing), the next runtime of the chain is tried, and the change is an ``agent:runtime:fallback`` event.
    Every runtime named must be the default or in ``runtimes``."""

    container_image: str | None = None
    """The image of the ``container`` runtime when an agent's ``config.sandbox.image`` names none. Unset:
    ``localhost/godel-agent:latest``, built from Debian packages by ``scripts/build-agent-image``."""

    container_storage: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "godel" / "containers"
        )
    )
    """Godel's own podman storage (images and containers of the ``container`` runtime), apart from the machine's."""

    kubernetes_image: str | None = None
    """``runtime = "kubernetes"``: the image agents run in (needs ``sh``, ``git``, ``tar``, ``gzip``, ``base64``,
    ``setsid`` and the agent CLIs at the paths the server uses). Required by that runtime; see
    docs/remote-runtimes.md."""

    kubernetes_namespace: str = "default"
    """The namespace of the agents' pods."""

    kubernetes_kubeconfig: Path | None = None
    """The kubeconfig file to reach the cluster. Unset: the in-cluster service account when the server runs in a pod,
    else ``~/.kube/config``."""

    kubernetes_context: str | None = None
    """The kubeconfig context to use (unset: the file's current context)."""

    kubernetes_runtime_class: str | None = None
    """The pods' ``runtimeClassName`` (e.g. ``kata`` for a microVM per agent, ``gvisor``); unset: the cluster's
    default."""

    kubernetes_memory_mb: int | None = Field(default=None, ge=8)
    """Memory request and limit (MiB) of an agent that asks for none."""

    kubernetes_cpus: float | None = Field(default=None, gt=0)
    """CPU request and limit (cores) of an agent that asks for none."""

    kubernetes_service_account: str | None = None
    """The pods' service account (its token is never mounted); unset: the namespace's default."""

    e2b_api_key_env: str = "E2B_API_KEY"
    """``runtime = "e2b"``: the name of the environment variable holding the E2B API key (read when the runtime is
    built; the key is never logged and never given to an agent)."""

    e2b_template: str = "base"
    """The E2B template agents' sandboxes are made from (needs ``sh``, ``git``, ``tar``, ``gzip`` and the CLIs)."""

    e2b_domain: str | None = None
    """The E2B domain (unset: the SDK's default, ``e2b.app``, or ``E2B_DOMAIN``)."""

    e2b_api_url: str | None = None
    """The E2B API's URL, for a self-hosted E2B (unset: ``https://api.<domain>``)."""

    e2b_sandbox_url: str | None = None
    """The URL of the sandboxes' agent (envd), for a self-hosted E2B (unset: derived from the domain)."""

    e2b_timeout: int = Field(default=3600, ge=60)
    """Seconds an agent's sandbox may live (E2B kills it after that)."""
