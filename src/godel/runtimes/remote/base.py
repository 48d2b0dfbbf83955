"""``RemoteRuntime``: what the Kubernetes and E2B runtimes share: a workspace prepared here, run there.

The workspace is prepared on the server exactly as the local runtime prepares it (a worktree on the agent's branch,
include files, setup, a fork's snapshot: ``LocalRuntime.prepare``), then ``start`` packs it (``transfer.pack``) and
hands it to the remote side, where ``entry`` unpacks it into a private clone at the same absolute path and runs the
agent. While it runs, its output is mirrored into ``log_dir`` (``stdout.log``, ``stderr.log``) whenever the
supervisor reads output or status, so ``read_output`` is the local runtime's, offsets and all. When it has ended,
its result (stderr, exit status, a git bundle of its commits and working tree) is brought back once
(``_finish``): the branch moves to the agent's HEAD, the local workspace becomes the agent's working tree, ``exit``
is written, and the remote side is deleted. From then on everything (diff, commits, snapshots, exec, cleanup)
works on the server's copy, as for a local agent; while the agent runs, that copy is the one it started from.

What a launch is, is kept in ``log_dir/remote.json`` (the remote id, the launch id, the start time), written before
anything is created remotely, so a restarted server finds its pods and sandboxes again (``adopt``). The handle's
``pid`` is the remote's process id as the back-end knows it and ``pid_started`` the launch's start time: a handle
acts on a remote launch only when both match the record (a stale or foreign handle is ``GONE`` and never kills).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from godel.core.ports import (
    RUN_KEY,
    LaunchSpec,
    OutputLine,
    ProcessState,
    ProcessStatus,
    RuntimeHandle,
)
from godel.errors import AgentSpawnError, ConflictError, GodelError, RuntimeFailure
from godel.runtimes.lines import read_output
from godel.runtimes.local import LocalRuntime
from godel.runtimes.processes import read_exit, record_exit, write_private
from godel.runtimes.remote import transfer
from godel.runtimes.remote.entry import TRANSFER_DIR

log = structlog.get_logger("godel.runtime")

RECORD = "remote.json"
_LIVE = (ProcessState.RUNNING, ProcessState.STOPPED)
KILLED = 128 + 9  # what a launch whose result never came back is recorded as
_RESULT_WAIT = 30.0  # seconds for the entry to bundle the result after the agent's group is killed


@dataclass(frozen=True)
class Launched:
    """One launch on the remote side, as recorded in ``log_dir/remote.json``."""

    agent: str
    id: str  # the pod's name, the sandbox's id
    run: str
    started: float
    pid: int
    delivered: bool = False  # the workspace arrived: the entry runs the agent (or has)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Seen:
    """The remote side's own view of a launch."""

    state: ProcessState
    exit_code: int | None = None


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1", "0.0.0.0", "") or host.startswith("127.")


def check_gateway(runtime: str, gateway_url: str | None) -> None:
    """Agents elsewhere reach the gateway over the network: a loopback URL would be the pod's own loopback. Fail
    closed, naming the setting, rather than start agents that cannot reach their model."""
    if gateway_url is not None and is_loopback(gateway_url):
        raise RuntimeFailure(
            f"the {runtime} runtime runs agents on other machines, which cannot reach the gateway at {gateway_url} "
            "(a loopback address): set gateway_url (GODEL_GATEWAY_URL) to an address they can reach",
            details={"gatewayUrl": gateway_url, "fix": "set gateway_url"},
        )


def limits_of(launch: LaunchSpec) -> tuple[int | None, float | None, int | None]:
    """(memory MiB, cpus, pids) asked for the launch (``LaunchSpec.limits`` where the server has it)."""
    limits = getattr(launch, "limits", None)
    if limits is None:
        return None, None, None
    return getattr(limits, "memory_mb", None), getattr(limits, "cpus", None), getattr(limits, "pids", None)


class RemoteRuntime(LocalRuntime):
    """The shared lifecycle; a back-end implements the ``_``-prefixed hooks below ``# back-end``."""

    name = "remote"

    def __init__(
        self,
        worktrees_root: Path | None = None,
        logs_root: Path | None = None,
        *,
        workspace_mode: str = "auto",
        workspace_cache_size: int = 16,
    ) -> None:
        """The server's copy of each workspace is made as the local runtime makes it (``workspace_mode``,
        ``workspace_cache_size``: see ``LocalRuntime``); only the agent runs elsewhere."""
        super().__init__(
            worktrees_root, logs_root, workspace_mode=workspace_mode, workspace_cache_size=workspace_cache_size
        )
        self._finishing: dict[str, asyncio.Lock] = {}

    # --------------------------------------------------------------------------------------------- back-end

    async def _launch(self, handle: RuntimeHandle, launch: LaunchSpec, payload: bytes, record: Launched) -> Launched:
        """Create the remote side for ``record`` (its id is already chosen), deliver ``payload`` and start the
        entry; return the record as launched. Raise RuntimeFailure when the remote refuses."""
        raise NotImplementedError

    async def _observe(self, handle: RuntimeHandle, record: Launched) -> Seen:
        raise NotImplementedError

    async def _collect(self, record: Launched, *, final: bool) -> tuple[bytes, bytes | None, bytes | None]:
        """(stdout so far, stderr so far or None when it comes only with the result, the packed result when
        ``final`` and it is there)."""
        raise NotImplementedError

    async def _signal(self, record: Launched, signal: str) -> None:
        """Send ``signal`` (TERM, KILL) to the agent's process group on the remote side; nothing if it is gone."""
        raise NotImplementedError

    async def _delete(self, record: Launched) -> None:
        """Remove the remote side (idempotent)."""
        raise NotImplementedError

    async def _find(self, handle: RuntimeHandle, run: str) -> Launched | None:
        """The launch ``run`` of this agent on the remote side, when no record of it is on this server."""
        return None

    def _new_record(self, handle: RuntimeHandle, run: str, started: float) -> Launched:
        raise NotImplementedError

    def _check_limits(self, launch: LaunchSpec) -> None:
        memory, cpus, pids = limits_of(launch)
        asked = [k for k, v in (("memory", memory), ("cpu", cpus), ("pids", pids)) if v is not None]
        missing = [k for k in asked if k not in self.capabilities().resource_limits]
        if missing:
            raise AgentSpawnError(
                f"the {self.name} runtime cannot enforce the {', '.join(missing)} limit",
                details={"runtime": self.name, "unsupported": missing},
            )

    # -------------------------------------------------------------------------------------------- records

    def _record_path(self, handle: RuntimeHandle) -> Path:
        return handle.log_dir / RECORD

    def _load(self, handle: RuntimeHandle) -> Launched | None:
        try:
            data = json.loads(self._record_path(handle).read_text())
            return Launched(**data)
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, handle: RuntimeHandle, record: Launched) -> None:
        write_private(self._record_path(handle), json.dumps(record.as_json()))

    def _owned(self, handle: RuntimeHandle) -> Launched | None:
        """The record this handle may act on: the same agent, the same launch start time (a handle without one,
        or with another, is not trusted with anything)."""
        record = self._load(handle)
        if record is None or record.agent != handle.agent_id or handle.pid_started is None:
            return None
        if abs(record.started - handle.pid_started) > 1e-3 or record.pid != handle.pid:
            return None
        return record

    def _lock(self, agent_id: str) -> asyncio.Lock:
        return self._finishing.setdefault(agent_id, asyncio.Lock())

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self, handle: RuntimeHandle, launch: LaunchSpec) -> RuntimeHandle:
        if not launch.argv:
            raise AgentSpawnError("nothing to run: empty argv")
        self._check_limits(launch)
        await asyncio.to_thread(_begin_run, handle.log_dir, launch.files)
        payload = await transfer.pack(handle, launch)
        run = str(handle.extra.get(RUN_KEY) or "-")
        record = self._new_record(handle, run, time.time())
        self._save(handle, record)  # first: a server that dies from here on finds what it started
        try:
            record = await self._launch(handle, launch, payload, record)
        except BaseException:
            # The back-end records the remote id as soon as the remote side exists (an E2B sandbox's id is known
            # only once it is made): delete what the record names now, not what it named before the launch.
            with contextlib.suppress(Exception):
                await self._delete(self._load(handle) or record)
            with contextlib.suppress(OSError):
                self._record_path(handle).unlink()
            raise
        self._save(handle, dataclasses.replace(record, delivered=True))
        extra = {**handle.extra, "remote": record.id}
        return dataclasses.replace(handle, pid=record.pid, pid_started=record.started, extra=extra)

    async def adopt(self, handle: RuntimeHandle) -> bool:
        run = str(handle.extra.get(RUN_KEY) or "")
        if handle.pid is None:
            record = self._load(handle)
            if record is None or record.agent != handle.agent_id or (run and record.run != run):
                record = await self._find(handle, run) if run else None
                if record is None:
                    return False
                self._save(handle, record)
            handle.pid, handle.pid_started = record.pid, record.started
        record = self._owned(handle)
        if record is None:
            return False
        if read_exit(handle) is not None:
            return True
        return (await self.status(handle)).state is not ProcessState.GONE

    async def status(self, handle: RuntimeHandle) -> ProcessStatus:
        record = self._owned(handle)
        if record is None:
            return ProcessStatus(ProcessState.GONE)
        code = read_exit(handle)
        if code is not None:
            return ProcessStatus(ProcessState.EXITED, code)
        if not record.delivered:  # the server stopped while handing the workspace over: this launch never ran
            return ProcessStatus(ProcessState.GONE)
        seen = await self._observe(handle, record)
        if seen.state is ProcessState.EXITED:
            return ProcessStatus(ProcessState.EXITED, await self._finish(handle, record, seen.exit_code))
        return ProcessStatus(seen.state)

    async def _finish(self, handle: RuntimeHandle, record: Launched, code: int | None) -> int:
        """Bring the result of an ended launch home, once: output, commits, working tree, exit status; then delete
        the remote side. Returns the exit status recorded."""
        async with self._lock(handle.agent_id):
            done = read_exit(handle)
            if done is not None:
                return done
            result: transfer.Result | None = None
            try:
                packed = await self._mirror(handle, record, final=True)
                result = transfer.unpack_result(packed) if packed is not None else None
            except GodelError as exc:
                log.warning("result of a remote agent unreadable", agent=handle.agent_id, error=exc.message)
            if result is not None:
                await asyncio.to_thread(_grow, handle.log_dir / "stderr.log", result.stderr)
                if result.bundle:
                    try:
                        await transfer.apply_result(handle, result.bundle, self._workspaces.dirs(handle.agent_id))
                    except GodelError as exc:  # the exit status still counts; the branch stays where it was
                        log.warning("commits of a remote agent not applied", agent=handle.agent_id, error=exc.message)
                        note = f"godel: the agent's commits could not be brought back: {exc.message}\n"
                        await asyncio.to_thread(_append, handle.log_dir / "stderr.log", note.encode())
            final = code if code is not None else (result.code if result is not None else None)
            final = final if final is not None else KILLED
            await asyncio.to_thread(record_exit, handle, final)
            with contextlib.suppress(GodelError):
                await self._delete(record)
            return read_exit(handle) or final

    async def _mirror(self, handle: RuntimeHandle, record: Launched, *, final: bool) -> bytes | None:
        stdout, stderr, packed = await self._collect(record, final=final)
        await asyncio.to_thread(_grow, handle.log_dir / "stdout.log", stdout)
        if stderr is not None:
            await asyncio.to_thread(_grow, handle.log_dir / "stderr.log", stderr)
        return packed

    async def read_output(
        self, handle: RuntimeHandle, offsets: dict[str, int], *, final: bool = False
    ) -> tuple[list[OutputLine], dict[str, int]]:
        record = self._owned(handle)
        if record is not None and record.delivered and read_exit(handle) is None:
            try:
                seen = await self._observe(handle, record)
                if seen.state is ProcessState.EXITED:
                    await self._finish(handle, record, seen.exit_code)
                elif seen.state is ProcessState.RUNNING:
                    await self._mirror(handle, record, final=False)
            except GodelError as exc:  # output is read again on the next poll
                log.warning("output of a remote agent not read", agent=handle.agent_id, error=exc.message)
        return read_output(handle.log_dir, offsets, final)

    async def wait_for_state(self, handle: RuntimeHandle, states: set[ProcessState], timeout: float) -> ProcessStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.02
        while True:
            st = await self.status(handle)
            if st.state in states:
                return st
            if loop.time() >= deadline:
                raise TimeoutError(f"agent {handle.agent_id} is {st.state}, not {sorted(states)}, after {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def terminate(self, handle: RuntimeHandle, *, grace: float = 5.0) -> None:
        """TERM to the agent's process group, KILL after ``grace``; the entry then brings the result back as after
        any end. If even that does not end it (or the result does not come), the remote side is deleted and the run
        recorded as killed."""
        record = self._owned(handle)
        if record is None or read_exit(handle) is not None:
            return
        if (await self.status(handle)).state not in _LIVE:
            return
        await self._before_signal(handle, record)
        for signal, within in (("TERM", grace), ("KILL", _RESULT_WAIT)):
            with contextlib.suppress(GodelError):
                await self._signal(record, signal)
            with contextlib.suppress(TimeoutError):
                await self.wait_for_state(handle, {ProcessState.EXITED, ProcessState.GONE}, max(within, 0.05))
                return
        with contextlib.suppress(GodelError):
            await self._delete(record)
        await asyncio.to_thread(record_exit, handle, KILLED)

    async def _before_signal(self, handle: RuntimeHandle, record: Launched) -> None:
        """A paused remote side cannot take signals: the back-end resumes it here."""

    async def pause(self, handle: RuntimeHandle) -> None:
        await self._no_pause(handle)

    async def resume(self, handle: RuntimeHandle) -> None:
        await self._no_pause(handle)

    async def _no_pause(self, handle: RuntimeHandle) -> None:
        if (await self.status(handle)).state in _LIVE:
            raise ConflictError(
                f"the {self.name} runtime cannot pause or resume an agent",
                details={"runtime": self.name, "capability": "pause"},
            )

    async def cleanup(self, handle: RuntimeHandle) -> None:
        """Stop it if it still runs (its result comes home first), delete the remote side, then what the local
        runtime does: snapshot a dirty workspace, remove the worktree; the branch is kept."""
        record = self._owned(handle)
        if record is not None:
            if (await self.status(handle)).state in _LIVE:
                await self.terminate(handle)
            with contextlib.suppress(GodelError):
                await self._delete(record)
        await super().cleanup(dataclasses.replace(handle, pid=None, pid_started=None))


def _begin_run(log_dir: Path, files: Mapping[Path, str]) -> None:
    """A fresh log directory for a launch (an earlier attempt's files go to ``run-N/``), and the launch's files
    written here too: adapters read some back after the run, as with a local agent."""
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = [n for n in ("stdout.log", "stderr.log", "exit", RECORD) if (log_dir / n).exists()]
    if names:
        n = 1
        while (log_dir / f"run-{n}").exists():
            n += 1
        (log_dir / f"run-{n}").mkdir()
        for name in names:
            os.replace(log_dir / name, log_dir / f"run-{n}" / name)
    for stream in ("stdout.log", "stderr.log"):
        fd = os.open(log_dir / stream, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
    for path, content in files.items():
        write_private(path, content)


def _grow(path: Path, data: bytes) -> None:
    """Append what ``data`` has beyond the mirror's size: mirrors only ever grow (offsets into them stay valid)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if len(data) > size:
        _append(path, data[size:])


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


__all__ = ["TRANSFER_DIR", "Launched", "RemoteRuntime", "Seen", "check_gateway", "is_loopback"]
