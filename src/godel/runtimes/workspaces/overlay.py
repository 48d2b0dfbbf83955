"""overlayfs mounts: a workspace as a copy-on-write layer over a cached checkout.

Mounting costs a few milliseconds whatever the size of the tree below (``mount(2)`` through libc; the
``mount`` program would add a process). Only root can mount an overlay on the host (Debian's bubblewrap 0.8 cannot
mount one inside a sandbox): ``probe`` tries once, in a scratch folder, and says why not, so the caller falls back
to a plain checkout and says so.

``redirect_dir=on`` lets a folder of the lower layer be renamed (``os.rename`` would fail with EXDEV without it);
a kernel that refuses the option gets the mount without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2
_UNSAFE = (",", ":", "\\", "\n")  # characters the overlay option string cannot carry unescaped

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class OverlayError(OSError):
    pass


def _mount(options: str, target: Path) -> None:
    rc = _libc.mount(b"overlay", os.fsencode(target), b"overlay", _MS_NOSUID | _MS_NODEV, options.encode())
    if rc != 0:
        code = ctypes.get_errno()
        raise OverlayError(code, f"mount -t overlay on {target}: {os.strerror(code)}")


def mount(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount ``lower`` + ``upper`` (with overlayfs' ``work`` folder) at ``target``; OverlayError otherwise."""
    for path in (lower, upper, work, target):
        if any(c in str(path) for c in _UNSAFE):
            raise OverlayError(errno.EINVAL, f"{path} holds a character an overlay mount cannot take (, : \\)")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    try:
        _mount(f"{options},redirect_dir=on", target)
    except OverlayError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _mount(options, target)


def unmount(target: Path) -> None:
    """Unmount ``target`` (lazily when something still holds it); nothing when it is not mounted."""
    if not os.path.ismount(target):
        return
    if _libc.umount2(os.fsencode(target), 0) != 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL:  # not a mount point after all
            return
        if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
            code = ctypes.get_errno()
            raise OverlayError(code, f"umount {target}: {os.strerror(code)}")


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, file system type, super options) of every mount in this mount namespace."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        head, _, rest = line.partition(" - ")
        fields, tail = head.split(" "), rest.split(" ")
        if len(fields) >= 5 and len(tail) >= 3:
            found.append((_unescape(fields[4]), tail[0], tail[2]))
    return found


def _unescape(text: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def unmount_under(root: Path) -> list[Path]:
    """Unmount every overlay mounted at or below ``root`` (deepest first); the mount points unmounted. For a
    caller about to remove a whole folder of workspaces (a test's scratch folder, say)."""
    top = str(root.resolve())
    points = [Path(p) for p, kind, _ in _mountinfo() if kind == "overlay" and (p == top or p.startswith(top + "/"))]
    for point in sorted(points, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            unmount(point)
    return points


def mounted_lowers() -> set[str]:
    """The lower folders of every overlay mounted in this mount namespace (from /proc/self/mountinfo)."""
    lowers: set[str] = set()
    for _, kind, options in _mountinfo():
        if kind != "overlay":
            continue
        for option in options.split(","):
            if option.startswith("lowerdir="):
                lowers.update(_unescape(lower) for lower in option.removeprefix("lowerdir=").split(":"))
    return lowers


def probe(scratch_parent: Path) -> str | None:
    """None when an overlay can be mounted under ``scratch_parent``, else why not (one mount and unmount in a
    throwaway folder)."""
    if os.geteuid() != 0:
        return "overlayfs needs root to mount on the host (the server does not run as root)"
    try:
        scratch_parent.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=scratch_parent))
    except OSError as exc:
        return f"cannot make a scratch folder: {exc}"
    try:
        dirs = [base / name for name in ("lower", "upper", "work", "merged")]
        for d in dirs:
            d.mkdir()
        (dirs[0] / "probe").write_text("1")
        mount(*dirs)
        try:
            if (dirs[3] / "probe").read_text() != "1":
                return "the overlay does not show its lower layer"
        finally:
            unmount(dirs[3])
        return None
    except OSError as exc:
        return f"overlayfs cannot be mounted here: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            unmount(base / "merged")
        shutil.rmtree(base, ignore_errors=True)
