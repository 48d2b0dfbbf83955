"""The Pod an agent runs as: built here as a plain manifest (a dict the client sends as it is), so what Godel asks of
the cluster can be read, and tested, in one place.

What the manifest confines:

* **Privilege.** ``runAsNonRoot`` with uid/gid 1000 (the image's user is not trusted to be non-root), no privilege
  escalation, every capability dropped, the RuntimeDefault seccomp profile, a read-only root filesystem.
* **The cluster.** No service-account token mounted (``automountServiceAccountToken: false``), no service
  environment variables (``enableServiceLinks: false``): the agent gets no credential to the cluster's API.
* **Resources.** Requests and limits from the agent's limits (memory, CPU) or the runtime's defaults; Kubernetes
  has no per-pod pids limit (the kubelet's ``podPidsLimit`` is node-wide), so a pids limit is refused.
* **Isolation level.** ``runtimeClassName`` when configured (kata for a microVM per pod, gvisor for a user-space
  kernel), else the cluster's default runtime (runc: a container).
* **Writable places.** Only emptyDir volumes: the transfer directory, ``/tmp``, the workspace (at the server's path),
  the agent's home, and the folders of the launch's config files.
* **Secrets.** The container's environment is the launch's and nothing else: no provider key (the adapters give the
  agent the gateway's URL and a virtual key), nothing from the server's own environment.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from godel.runtimes.remote.entry import TRANSFER_DIR

CONTAINER = "agent"
MANAGED = {"app.kubernetes.io/managed-by": "godel"}
AGENT_LABEL = "godel.dev/agent"
RUN_LABEL = "godel.dev/run"
STARTED = "godel.dev/started"
UID = 1000
HOME = f"{TRANSFER_DIR}/home"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def label_value(text: str) -> str:
    """``text`` when it is a valid label value, else a digest of it (a launch id can be any string)."""
    return text if _LABEL_VALUE.match(text) else "h-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def pod_name(agent_id: str, run: str, started: float) -> str:
    """One name per launch: ``godel-<agent>-<digest of the launch id and start>`` (DNS-1123, at most 63 characters;
    a retry with the same launch id gets a new name, so a pod still terminating cannot clash with it)."""
    digest = hashlib.sha256(f"{run} {started!r}".encode()).hexdigest()[:8]
    return f"godel-{agent_id.lower()[:46]}-{digest}"


def selector(agent_id: str, run: str) -> str:
    return f"{AGENT_LABEL}={label_value(agent_id)},{RUN_LABEL}={label_value(run)}"


def writable_paths(workspace: str, home: str, files: Iterable[str]) -> list[str]:
    """The folders mounted as emptyDir volumes: each one not already inside another, shallowest first."""
    wanted = {TRANSFER_DIR, "/tmp", workspace, home, *(str(PurePosixPath(f).parent) for f in files)}
    paths = sorted(wanted, key=lambda p: (len(PurePosixPath(p).parts), p))
    kept: list[str] = []
    for path in paths:
        if path == workspace or not any(PurePosixPath(path).is_relative_to(k) for k in kept):
            kept.append(path)  # the workspace gets its own volume: an empty folder the clone goes into
    return kept


def resources(memory_mb: int | None, cpus: float | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    if memory_mb is not None:
        out["requests"]["memory"] = out["limits"]["memory"] = f"{memory_mb}Mi"
    if cpus is not None:
        millis = f"{max(1, math.ceil(cpus * 1000))}m"
        out["requests"]["cpu"] = out["limits"]["cpu"] = millis
    return {k: v for k, v in out.items() if v}


def pod_manifest(
    *,
    name: str,
    namespace: str,
    agent_id: str,
    run: str,
    started: float,
    image: str,
    argv: list[str],
    env: Mapping[str, str],
    workspace: str,
    files: Iterable[str],
    runtime_class: str | None,
    memory_mb: int | None,
    cpus: float | None,
    service_account: str | None = None,
) -> dict[str, Any]:
    env = dict(env)
    home = env.setdefault("HOME", HOME)
    paths = writable_paths(workspace, home, files)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "command": argv[:1],
                "args": argv[1:],
                "workingDir": TRANSFER_DIR,
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "resources": resources(memory_mb, cpus),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": f"w{i}", "mountPath": p} for i, p in enumerate(paths)],
            }
        ],
        "volumes": [{"name": f"w{i}", "emptyDir": {}} for i in range(len(paths))],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED, AGENT_LABEL: label_value(agent_id), RUN_LABEL: label_value(run)},
            "annotations": {STARTED: repr(started), RUN_LABEL: run},
        },
        "spec": spec,
    }
