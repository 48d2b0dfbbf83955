"""The bubblewrap command line of one sandboxed process: a pure function of a ``Confinement``.

Every path is bound at the same place inside as outside, so a workspace path, a config file an adapter wrote, or
a ``GODEL_WORKSPACE`` variable means the same thing on both sides. Mount order matters to bwrap (each mount point is
created inside what is already mounted), so the system comes first, then the binds, shallowest path first, and the
root is made read-only last.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BWRAP = "bwrap"
ENV = "/usr/bin/env"  # coreutils: sets signal dispositions across an exec
_GRACEFUL = "HUP,INT,TERM"
SOCAT = "socat"
GATEWAY_DIR = "/run/godel"  # where the gateway socket's directory appears inside the sandbox
EGRESS_PORT = 3128  # where the egress proxy is relayed inside the sandbox (its own loopback: no clash with the host)
UNPRIVILEGED_ID = 1000  # the id a sandbox started by root runs as (it maps back to root's files outside)

# Top-level system paths: symlinks into /usr on a merged-/usr system, directories elsewhere.
_SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The parts of /etc a program needs: CA certificates (an agent's own HTTPS), Debian's alternatives (awk, editor, …
# are symlinks through it), the dynamic loader's cache and the local time. No resolv.conf (no DNS without a
# network), no gitconfig, no passwd of the host (a minimal one is generated).
_ETC = ("ssl", "ca-certificates", "ca-certificates.conf", "alternatives", "ld.so.cache", "localtime")


@dataclass(frozen=True)
class Confinement:
    """What one sandboxed process may see: everything else of the host is absent."""

    cwd: Path
    home: Path  # the agent's own home (also listed in ``writable``)
    etc: Path  # a directory holding the generated ``passwd``, ``group`` and ``hosts``
    writable: Sequence[Path] = ()  # bound read-write: the workspace, the agent's private dirs, git's write paths
    readonly: Sequence[Path] = ()  # bound read-only: agent CLIs, interpreters, the repository's git directory
    gateway_dir: Path | None = None  # the directory of the gateway's Unix socket, seen at GATEWAY_DIR
    env: dict[str, str] = field(default_factory=dict)  # set inside, over the inherited environment


def sandbox_ids() -> tuple[int, int]:
    """The uid and gid inside: the server's own, or ``UNPRIVILEGED_ID`` when the server runs as root."""
    uid, gid = os.getuid(), os.getgid()
    return (uid or UNPRIVILEGED_ID, gid or UNPRIVILEGED_ID)


def write_etc(etc: Path, ids: tuple[int, int] | None = None) -> None:
    """The sandbox's /etc/passwd, /etc/group and /etc/hosts: one user (``ids``, default ``sandbox_ids()``), its
    group, localhost. Shared by every sandbox of a runtime (each agent's home is its ``HOME``; the passwd entry's is
    the private ``/tmp``)."""
    uid, gid = ids or sandbox_ids()
    etc.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": f"agent:x:{uid}:{gid}:Godel agent:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n",
        "group": f"agent:x:{gid}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }
    for name, text in files.items():
        path = etc / name
        if not path.is_file() or path.read_text() != text:
            # A temporary name of its own: the first agents of a new runtime may all be starting at once.
            fd, tmp = tempfile.mkstemp(dir=etc, prefix=f".{name}.")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # read inside by the sandbox's own id, to which the host's owner is a stranger
            os.replace(tmp, path)


def bwrap_argv(c: Confinement) -> list[str]:
    """``bwrap …`` up to (not including) the command it runs."""
    uid, gid = sandbox_ids()
    argv = [
        # bwrap itself ignores TERM (and INT, HUP), so a TERM to the agent's process group cannot kill bwrap and,
        # through --die-with-parent, the whole sandbox at once: the agent gets its grace period to shut down, as
        # it does outside. ENTRY gives the agent the default actions back; KILL still ends everything at once.
        *(ENV, f"--ignore-signal={_GRACEFUL}"),
        BWRAP,
        # New user, pid, ipc, uts, network and cgroup namespaces (the mount namespace comes with bwrap); an
        # unprivileged id without any capability, even when the server is root (without --cap-drop, root keeps
        # CAP_SYS_ADMIN inside and could mount).
        *("--unshare-user", "--uid", str(uid), "--gid", str(gid)),
        *("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try"),
        *("--cap-drop", "ALL", "--disable-userns", "--hostname", "godel-sandbox"),  # no nested user namespace
        # The sandbox dies with the process that started it. No --new-session: it would put the sandbox in a
        # process group of its own, and pause (SIGSTOP to the agent's group) would then stop bwrap alone.
        "--die-with-parent",
        *("--ro-bind", "/usr", "/usr"),
    ]
    for name in _SYSTEM:
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/etc"]
    for name in _ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts"):
        argv += ["--ro-bind", str(c.etc / name), f"/etc/{name}"]
    if c.gateway_dir is not None:
        argv += ["--ro-bind", str(c.gateway_dir), GATEWAY_DIR]
    binds = [(p, "--ro-bind") for p in c.readonly] + [(p, "--bind") for p in c.writable]
    seen: set[str] = set()
    for path, how in sorted(binds, key=lambda b: (len(b[0].parts), b[1] == "--bind")):
        key = f"{how} {path}"
        if key not in seen:
            seen.add(key)
            argv += [how, str(path), str(path)]
    for name, value in c.env.items():
        argv += ["--setenv", name, value]
    argv += ["--remount-ro", "/", "--chdir", str(c.cwd)]
    return argv


# Run inside the sandbox by /bin/sh: start the relays from 127.0.0.1:$1 to the gateway's socket $2 and from
# 127.0.0.1:$3 to the egress proxy's socket $4, wait until each listens (so the agent's first request finds it), then
# become the agent, with the signals bwrap ignores reset to their defaults. An empty port: no such relay. A missing
# program exits 127 with a message naming it, as it does outside. The relays end with the agent: when the agent (the
# only direct child of bwrap's init) exits, the init exits too, and the kernel kills everything left in the pid
# namespace.
ENTRY = (
    "relay() { "
    f"{SOCAT} -lpgodel-relay TCP-LISTEN:$1,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:$2 & "
    "h=$(printf ':%04X 00000000:0000 0A' \"$1\"); i=0; "
    'while [ $i -lt 500 ] && ! grep -q "$h" /proc/net/tcp; do sleep 0.01; i=$((i+1)); done; }; '
    'if [ -n "$1" ]; then relay "$1" "$2"; fi; if [ -n "$3" ]; then relay "$3" "$4"; fi; shift 4; '
    f'exec {ENV} --default-signal={_GRACEFUL} "$@"'
)


def entry_argv(
    argv: Sequence[str], relay_port: int | None, socket_name: str, egress_port: int | None = None,
    egress_socket: str = "",
) -> list[str]:  # fmt: skip
    """The command bwrap runs: ``ENTRY`` with each relay's port and socket, then the agent's own argv."""
    gateway = [str(relay_port) if relay_port else "", f"{GATEWAY_DIR}/{socket_name}"]
    egress = [str(egress_port) if egress_port else "", f"{GATEWAY_DIR}/{egress_socket}"]
    return ["/bin/sh", "-c", ENTRY, "godel-sandbox", *gateway, *egress, *argv]
