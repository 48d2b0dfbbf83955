"""Podman as the container runtime drives it: Godel's own storage, the global flags this machine needs, the
``podman run`` command line of one agent (a pure function of a ``Spec``), and a few calls that act on a container.

Why each global flag (measured in docs/container.md and the isolation reference):

* ``--runtime <runc>``: crun 1.8 refuses this hybrid cgroup v1 layout ("cgroups in hybrid mode not supported").
* ``--cgroup-manager cgroupfs --events-backend file``: systemd is not PID 1 here.
* ``--root/--runroot/--tmpdir`` under ``storage`` (default ``~/.cache/godel/containers``): Godel's images and
  containers live apart from the machine's own podman storage. podman still writes ``/var/lib/containers/cache``.
* ``--storage-driver overlay`` with idmapped mounts turned off (``pin_storage_probe``): podman 4.3's idmapped
  overlay mounts fail here (EACCES resolving the lower layers from the container's user namespace); without them
  containers/storage chowns a copy of the image once per id mapping (about 2 s, the first time only).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from godel.errors import RuntimeFailure

DEFAULT_IMAGE = "localhost/godel-agent:latest"
BUILD_SCRIPT = "scripts/build-agent-image"
INSTALL_HINT = "apt-get install podman runc"
AGENT_ID = 1000  # the agent's uid and gid inside: the image's ``agent`` user
# Container ids other than the agent's land on a host range nobody uses (container root is host 200000): inside,
# root owns the image's files, outside it owns nothing.
_SUBID_BASE = 200_000
_ID_SPAN = 65_536
LABEL = "org.godel.agent"  # every container the runtime starts carries the agent's id under this label
DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")  # podman's default profile (containers-common)
_CLONE_NEWUSER = 0x10000000


def tools() -> dict[str, str | None]:
    return {name: shutil.which(name) for name in ("podman", "runc")}


def missing_tools() -> list[str]:
    return [name for name, path in tools().items() if path is None]


def default_storage() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/godel/containers``: where scripts/build-agent-image imports the image too."""
    cache = os.environ.get("GODEL_CONTAINER_STORAGE")
    if cache:
        return Path(cache)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "godel" / "containers"


def pin_storage_probe(storage: Path) -> None:
    """Record, before podman probes it, that idmapped overlay mounts are not to be used (see the module doc).
    containers/storage keeps the result of its probe as an empty file named after it in the run root."""
    probes = storage / "run" / "overlay"
    probes.mkdir(parents=True, exist_ok=True, mode=0o700)
    (probes / "idmapped-lower-dir-true").unlink(missing_ok=True)
    (probes / "idmapped-lower-dir-false").touch()


def seccomp_profile(storage: Path, default: Path = DEFAULT_SECCOMP) -> Path:
    """podman's default seccomp profile, less new user namespaces: ``unshare``/``clone`` with CLONE_NEWUSER fail
    with the profile's default error (ENOSYS); ``clone3``, whose flags a filter cannot read, fails with ENOSYS, so
    the C library falls back to ``clone``. The default allows them, and a nested user namespace gives the agent
    every capability in it: the kernel surface bwrap's ``--disable-userns`` closes in the sandbox. Fails closed
    without the default profile."""
    try:
        profile = json.loads(default.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"the container runtime needs podman's seccomp profile {default} ({exc}): apt-get install podman",
            details={"missing": str(default)},
        ) from exc
    # Taken out of the profile's allow lists and allowed again only without the flag: a deny rule beside an
    # unconditional allow of the same call does not take effect (measured: ``unshare -r`` still worked).
    guarded = {"unshare", "clone", "clone3"}
    for rule in profile["syscalls"]:
        if rule.get("action") == "SCMP_ACT_ALLOW":
            rule["names"] = [name for name in rule["names"] if name not in guarded]
    without_newuser = {"index": 0, "value": _CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    profile["syscalls"] += [
        {"names": ["unshare", "clone"], "action": "SCMP_ACT_ALLOW", "args": [without_newuser]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "args": []},
    ]
    path = storage / "seccomp.json"
    text = json.dumps(profile, indent=1)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def global_flags(storage: Path, runc: str) -> list[str]:
    return [
        *("--root", str(storage / "storage"), "--runroot", str(storage / "run"), "--tmpdir", str(storage / "tmp")),
        *("--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"),
        *("--runtime", runc, "--log-level", "error"),
    ]


def _hard(limit: int, fallback: int) -> int:
    hard = resource.getrlimit(limit)[1]
    return fallback if hard == resource.RLIM_INFINITY else hard


def ulimits() -> list[str]:
    """podman asks for nofile 1048576 and nproc 32768 by default, which needs CAP_SYS_RESOURCE (root here lacks
    it): ask for no more than the current hard limits instead. nproc stays at or below 32768, the most the
    container's init could set here (more: "error setting rlimit type 6"). RLIMIT_NPROC counts every process of
    the agent's host uid, so it is no limit for an agent; ``--pids-limit`` is."""
    nofile = min(_hard(resource.RLIMIT_NOFILE, 1 << 20), 1 << 20)
    nproc = min(_hard(resource.RLIMIT_NPROC, 1 << 15), 1 << 15)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def id_maps(host_uid: int, host_gid: int) -> list[str]:
    """A user namespace in which the agent's id inside is the server's id outside (so what it writes in the
    workspace belongs to the server's user, as in the sandbox) and every other id maps to an unused range."""
    args: list[str] = []
    for flag, host in (("--uidmap", host_uid), ("--gidmap", host_gid)):
        args += [flag, f"0:{_SUBID_BASE}:{AGENT_ID}", flag, f"{AGENT_ID}:{host}:1"]
        args += [flag, f"{AGENT_ID + 1}:{_SUBID_BASE + AGENT_ID + 1}:{_ID_SPAN - AGENT_ID - 1}"]
    return args


@dataclass(frozen=True)
class Limits:
    """cgroup limits of one container (v1 here: podman writes them through runc). None: no limit."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # CPUs' worth of time (0.5: half of one)
    pids: int | None = None

    def args(self) -> list[str]:
        args: list[str] = []
        if self.memory is not None:
            args += ["--memory", str(self.memory), "--memory-swap", str(self.memory)]  # no swap beyond it
        if self.cpus is not None:
            args += ["--cpus", f"{self.cpus:g}"]
        if self.pids is not None:
            args += ["--pids-limit", str(self.pids)]
        return args

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in ("memory", "cpus", "pids") if getattr(self, k) is not None)


@dataclass(frozen=True)
class Spec:
    """One container: what it runs and what of the host it sees. Everything else of the host is absent."""

    name: str
    image: str
    cwd: Path
    argv: Sequence[str]
    env_names: Sequence[str]  # passed by name: podman copies each value from its own environment
    readonly: Sequence[Path] = ()  # bound read-only at the same path
    writable: Sequence[Path] = ()  # bound read-write at the same path
    extra_binds: Sequence[tuple[Path, str]] = ()  # (host path, path inside), read-only
    limits: Limits = field(default_factory=Limits)
    labels: Mapping[str, str] = field(default_factory=dict)
    user: tuple[int, int] = (os.getuid(), os.getgid())  # the server's ids, which the agent's id maps to
    seccomp: Path | None = None  # a seccomp profile (None: podman's default)


def run_argv(podman: str, flags: Sequence[str], spec: Spec) -> list[str]:
    """``podman … run …`` in the foreground: it returns the agent's exit status (125 when podman itself fails,
    126/127 when the command cannot be run), and proxies TERM, INT and HUP to the container's init."""
    argv = [podman, *flags, "run", "--rm", "--replace", "--name", spec.name]
    argv += ["--init", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    if spec.seccomp is not None:
        argv += ["--security-opt", f"seccomp={spec.seccomp}"]
    argv += ["--network", "none", "--hostname", "godel-container", "--pull", "never"]
    argv += [*id_maps(*spec.user), "--user", f"{AGENT_ID}:{AGENT_ID}", *ulimits(), *spec.limits.args()]
    for key, value in sorted(spec.labels.items()):
        argv += ["--label", f"{key}={value}"]
    binds = [(p, "ro") for p in spec.readonly] + [(p, "rw") for p in spec.writable]
    seen: set[tuple[Path, str]] = set()
    # Parents first, so a read-write path inside a read-only one (git's objects in the repository's git directory)
    # is mounted over it; podman keeps this order.
    for path, how in sorted(binds, key=lambda b: (len(b[0].parts), b[1] == "rw")):
        if (path, how) not in seen:
            seen.add((path, how))
            argv += ["--volume", f"{path}:{path}:{how}"]
    for host, inside in spec.extra_binds:
        argv += ["--volume", f"{host}:{inside}:ro"]
    for name in spec.env_names:
        argv += ["--env", name]
    argv += ["--workdir", str(spec.cwd), spec.image, *spec.argv]
    return argv


class Podman:
    """Calls on Godel's podman storage."""

    def __init__(self, storage: Path) -> None:
        found = tools()
        podman, runc = found["podman"], found["runc"]
        if podman is None or runc is None:
            missing = [name for name, path in found.items() if path is None]
            raise RuntimeFailure(
                f"the container runtime needs {' and '.join(missing)}, which is not installed: {INSTALL_HINT} "
                "(crun does not work on this machine's cgroup layout)",
                details={"missing": missing, "fix": INSTALL_HINT},
            )
        self.podman, self.runc = podman, runc
        self.storage = storage
        for sub in ("storage", "run", "tmp"):
            (storage / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        pin_storage_probe(storage)
        self.seccomp = seccomp_profile(storage)
        self.flags = global_flags(storage, runc)

    async def call(self, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
        """Run ``podman <flags> ARGS``: (exit status, stdout, stderr). The environment is the server's minimal one."""
        proc = await asyncio.create_subprocess_exec(
            self.podman, *self.flags, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/")},
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def image_exists(self, image: str) -> bool:
        code, _, _ = await self.call("image", "exists", image)
        return code == 0

    async def state(self, name: str) -> str | None:
        """The container's state (running, paused, exited, …), None when there is no such container."""
        code, out, _ = await self.call("container", "inspect", "--format", "{{.State.Status}}", name)
        return out.strip() if code == 0 else None

    async def pause(self, name: str) -> bool:
        code, _, _ = await self.call("pause", name)
        return code == 0

    async def unpause(self, name: str) -> bool:
        code, _, _ = await self.call("unpause", name)
        return code == 0

    async def remove(self, name: str) -> None:
        """Kill and remove the container if it exists (``podman rm -f`` with no grace): nothing in it survives."""
        await self.call("rm", "--force", "--ignore", "--time", "0", name)

    async def remove_labelled(self, label: str) -> None:
        """Remove every container carrying ``label`` (``key=value``): a test session's teardown."""
        code, out, _ = await self.call("ps", "--all", "--quiet", "--filter", f"label={label}")
        ids = out.split()
        if code == 0 and ids:
            await self.call("rm", "--force", "--ignore", "--time", "0", *ids)
