"""The OCI bundle of one gVisor sandbox, and the ``runsc`` command that runs it: pure functions of a ``Confinement``.

The bundle's root is an empty directory of our own, read-only, holding only the links a merged-/usr system has
(``/bin`` -> ``usr/bin``, …): everything the agent sees of the host is an explicit bind in ``mounts``, at the same
path inside as outside, read-only unless listed as writable. ``/proc``, ``/dev`` and ``/tmp`` are gVisor's own
(its kernel's proc, device and memory file systems), not the host's.

``runsc`` itself runs with ``--network=none`` (gVisor's network stack with a loopback interface only: no route to
the host's loopback or anywhere else), ``--host-uds=open`` (a program inside may connect to a host Unix socket that
a bind makes visible: the gateway's, which is how the relay reaches the server) and ``--ignore-cgroups`` (runsc
would otherwise create, and on a kill leave behind, a cgroup named after the container in every hierarchy; limits
belong to the cgroups the host-side wrapper runs in, which the sandbox's processes inherit).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from godel.runtimes.sandbox.bwrap import ENV, GATEWAY_DIR, Confinement

RUNSC = "runsc"
HOSTNAME = "godel-gvisor"
PLATFORM = "ptrace"  # the KVM platform hangs on this machine kind (its /dev/kvm is PVM); ptrace works everywhere

# Top-level system paths: symlinks into /usr on a merged-/usr system (copied as links), directories elsewhere
# (bound read-only).
_SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The parts of /etc a program needs (the same as the bubblewrap sandbox's): CA certificates, Debian's alternatives,
# the loader cache, the local time. passwd, group and hosts are generated.
_ETC = ("ssl", "ca-certificates", "ca-certificates.conf", "alternatives", "ld.so.cache", "localtime")
_NO_CAPABILITIES: dict[str, list[str]] = {
    k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
}


def runsc_argv(state: Path) -> list[str]:
    """``runsc`` and its global flags, up to the subcommand. ``state``: runsc's ``--root`` (its container state).

    runsc runs with an empty environment: the agent's is in the bundle, and runsc reads ``TMPDIR`` to choose where
    its sandbox process makes its chroot (an agent's private ``TMPDIR`` is out of that process's reach, and the
    sandbox then fails to start)."""
    return [
        ENV,
        "-i",
        f"PATH={os.defpath}",
        shutil.which(RUNSC) or RUNSC,
        *("--root", str(state)),
        f"--platform={PLATFORM}",
        "--network=none",
        "--host-uds=open",
        "--ignore-cgroups",
    ]


def _bind(path: Path | str, *, writable: bool) -> dict[str, Any]:
    return {
        "destination": str(path),
        "type": "bind",
        "source": str(path),
        "options": ["rbind", "rw" if writable else "ro"],
    }


def mounts(c: Confinement) -> list[dict[str, Any]]:
    """gVisor's own /proc, /dev and /tmp, the system read-only, the minimal /etc, then the confinement's binds,
    shallowest first (a bind inside another is mounted after it), read-only before read-write at the same depth."""
    out: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},  # gVisor fills it with its own device files
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        _bind("/usr", writable=False),
    ]
    for name in _SYSTEM:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink():
            out.append(_bind(host, writable=False))
    for name in _ETC:
        if (Path("/etc") / name).exists():
            out.append(_bind(f"/etc/{name}", writable=False))
    for name in ("passwd", "group", "hosts"):
        out.append(
            {"destination": f"/etc/{name}", "type": "bind", "source": str(c.etc / name), "options": ["rbind", "ro"]}
        )
    if c.gateway_dir is not None:
        out.append(
            {"destination": GATEWAY_DIR, "type": "bind", "source": str(c.gateway_dir), "options": ["rbind", "ro"]}
        )
    binds = [(p, False) for p in c.readonly] + [(p, True) for p in c.writable]
    seen: set[tuple[Path, bool]] = set()
    for path, writable in sorted(binds, key=lambda b: (len(b[0].parts), b[1])):
        if (path, writable) not in seen:
            seen.add((path, writable))
            out.append(_bind(path, writable=writable))
    return out


def spec(c: Confinement, args: Sequence[str], env: Mapping[str, str], ids: tuple[int, int]) -> dict[str, Any]:
    """The bundle's ``config.json``: ``args`` run in ``c.cwd`` as ``ids`` with exactly ``env``, no capability in any
    set (the bounding set included, so no exec can regain one) and ``no_new_privs``."""
    uid, gid = ids
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": list(args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": str(c.cwd),
            "capabilities": _NO_CAPABILITIES,
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": HOSTNAME,
        "mounts": mounts(c),
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
    }


def write_bundle(bundle: Path, config: dict[str, Any]) -> None:
    """A fresh bundle directory: ``config.json`` (owner only: the agent's environment holds its gateway key) and
    the empty read-only root with the system's top-level links. Whatever an earlier run left there is replaced."""
    bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
    rootfs = bundle / "rootfs"
    rootfs.mkdir(exist_ok=True)
    for name in _SYSTEM:
        host, link = Path("/") / name, rootfs / name
        if host.is_symlink() and not link.is_symlink():
            link.symlink_to(os.readlink(host))
    tmp = bundle / "config.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    os.replace(tmp, bundle / "config.json")
