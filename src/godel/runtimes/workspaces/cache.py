"""Read-only checkouts of base commits, shared by every workspace that starts from the same commit.

``$GODEL_HOME/cache/checkouts/<commit>/`` holds ``tree/`` (the commit's files) and ``index`` (git's index of
them, with their stat data: a ``git status`` or ``add -A`` over an overlay of ``tree/`` rehashes nothing that was
not changed). A commit names its content, so one entry serves every repository that has the commit. The entry is
made once (the first workspace at a commit pays for the checkout), in a temporary folder renamed into place, so a
crash never leaves half an entry. It is never written again: overlays only read it.

The cache is bounded (``keep`` entries): the least recently used entries beyond it are removed, except those an
overlay still mounts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import structlog

from godel.runtimes.workspaces import safegit
from godel.runtimes.workspaces.overlay import mounted_lowers

log = structlog.get_logger("godel.runtime")


class CheckoutCache:
    def __init__(self, root: Path, keep: int = 16) -> None:
        self.root = root
        self.keep = max(keep, 1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._holding: dict[str, int] = {}  # entries handed out and not yet mounted: never evicted

    def entry(self, commit: str) -> Path:
        return self.root / commit

    async def checkout(self, git_common: Path, commit: str) -> Path:
        """The entry of ``commit`` (made from the repository whose git directory is ``git_common`` when there is
        none yet); its ``tree`` and ``index``. The entry is held (never evicted) until ``release``."""
        entry = self.entry(commit)
        self._holding[commit] = self._holding.get(commit, 0) + 1
        try:
            if (entry / "index").is_file():
                await asyncio.to_thread(_touch, entry)
                return entry
            async with self._locks.setdefault(commit, asyncio.Lock()):
                if not (entry / "index").is_file():
                    await self._make(git_common, commit, entry)
            await self.evict()
            return entry
        except BaseException:
            self.release(commit)
            raise

    def release(self, commit: str) -> None:
        """The entry handed out by ``checkout`` is mounted now (or no longer wanted)."""
        left = self._holding.get(commit, 0) - 1
        if left > 0:
            self._holding[commit] = left
        else:
            self._holding.pop(commit, None)

    async def _make(self, git_common: Path, commit: str, entry: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f".{commit[:12]}-", dir=self.root))
        try:
            (tmp / "tree").mkdir()
            # The user's configuration is read, its drivers switched off like any other: the checkout is the
            # commit's bytes, whatever .gitattributes the commit carries (an agent's earlier commit, on a retry).
            drivers = await safegit.configured_drivers(git_common)
            await safegit.run(
                ["read-tree", "-u", "--reset", commit], git_dir=git_common, work_tree=tmp / "tree",
                env={"GIT_INDEX_FILE": str(tmp / "index")}, drivers=drivers,
            )  # fmt: skip
            await asyncio.to_thread(os.rename, tmp, entry)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, tmp, True))
            raise

    async def evict(self) -> None:
        """Remove the least recently used entries beyond ``keep`` that no overlay mounts."""
        await asyncio.to_thread(self._evict)

    def _evict(self) -> None:
        try:
            entries = [p for p in self.root.iterdir() if not p.name.startswith(".") and p.is_dir()]
        except FileNotFoundError:
            return
        if len(entries) <= self.keep:
            return
        in_use = mounted_lowers()
        in_use.update(str(self.entry(commit) / "tree") for commit in list(self._holding))
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.keep :]:
            if str(old / "tree") in in_use:
                continue
            log.info("cached checkout evicted", commit=old.name)
            gone = old.with_name(f".evicted-{old.name}")
            try:
                os.rename(old, gone)  # out of sight at once, so no new workspace picks it up half removed
            except OSError:
                continue
            shutil.rmtree(gone, ignore_errors=True)


def _touch(entry: Path) -> None:
    try:
        os.utime(entry)  # the entry's mtime is its last use (eviction order)
    except OSError:
        pass
