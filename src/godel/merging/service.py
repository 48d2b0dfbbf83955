"""Merge runs as server-side jobs: started by the API, followed by polling, recorded as events.

``MergeService.submit`` validates a request (400/409 before anything is touched), publishes ``merge:started``
and runs the queue in a task; each branch's result is published as ``merge:branch`` and the whole report as
``merge:completed``. Jobs are kept in memory while the server runs (the most recent ones after they end); a
job that is not (the server restarted since) is rebuilt from its events, which carry the run's id as their
correlation id. A run the server did not finish (it stopped or died meanwhile) reads back as ``failed``, with
the results it had published.

Runs of one repository into one integration branch take turns (a lock per pair); others run side by side.
When the server stops, its running jobs are cancelled: each removes its worktree and records that it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from godel.core.events import Event, EventFilter
from godel.core.ids import new_id
from godel.core.ports import EventQuery
from godel.errors import FieldError, GodelError, MergeNotFoundError, ValidationError
from godel.merging.engine import MergeListener, MergeQueue
from godel.merging.lifecycle import MERGES, JobStatus, JobTrigger
from godel.merging.plan import DEFAULT_VERIFY_TIMEOUT, Candidate, MergePlan, make_plan
from godel.merging.refinery import AgentResolver, RefineryConfig
from godel.merging.resolver import CommandResolver, Resolver
from godel.merging.results import BranchResult, BranchStatus, summarize
from godel.merging.sources import team_candidates, workflow_candidates
from godel.runtimes.git import git, repo_root
from godel.runtimes.paths import within_roots
from godel.scheduler.plane import ControlPlane
from godel.store import SqlStore
from godel.store.merging import merge_events

log = structlog.get_logger("godel.merging")

KEEP_FINISHED = 100  # finished jobs kept in memory; older ones are read back from their events
_ID_COLUMN = 36  # event metadata team/workflow ids are uuid columns: longer values are not recorded there


@dataclass
class MergeRequest:
    repo: Path
    into: str
    branches: list[str] = field(default_factory=list)
    team_id: str | None = None
    workflow_id: str | None = None
    base: str | None = None
    verify: str | None = None
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    batch: bool = False
    resolve: str | None = None  # a shell command that resolves conflicts on a refinery branch
    refinery: RefineryConfig | None = None  # or an agent that does (see godel.merging.refinery)
    owner: str | None = None  # who asked for it ("user:alice"): its events are theirs, and so is the job (RBAC)


@dataclass
class MergeJob:
    id: str
    plan: MergePlan
    request: MergeRequest
    created_at: datetime
    status: JobStatus = JobStatus.QUEUED
    results: list[BranchResult] = field(default_factory=list)
    queue: MergeQueue | None = None  # once it runs: its live results, bisections and integration head
    current: dict[str, Any] | None = None  # {"branch", "phase"} while a branch is being worked on
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    task: asyncio.Task[None] | None = None

    def as_json(self) -> dict[str, Any]:
        plan, request, queue = self.plan, self.request, self.queue
        bisections = queue.bisections if queue is not None else []
        return {
            "id": self.id,
            "status": self.status.value,
            "repo": str(plan.repo),
            "into": plan.into,
            "base": queue.start if queue is not None else plan.start,
            "createdInto": plan.create_into,
            "head": queue.head if queue is not None else plan.start,
            "verify": plan.verify,
            "verifyTimeout": plan.verify_timeout,
            "batch": plan.batch,
            "resolve": request.resolve,
            "refinery": dataclasses.asdict(request.refinery) if request.refinery else None,
            "teamId": request.team_id,
            "workflowId": request.workflow_id,
            "owner": request.owner,
            "branches": plan.names,
            "current": self.current,
            "results": [r.as_json() for r in self.results],
            "summary": summarize(self.results),
            "bisections": [b.as_json() for b in bisections],
            "error": self.error,
            "createdAt": self.created_at.isoformat(),
            "startedAt": self.started_at.isoformat() if self.started_at else None,
            "completedAt": self.completed_at.isoformat() if self.completed_at else None,
        }


ResolverFactory = Callable[[MergeJob], Resolver | None]


class _Listener(MergeListener):
    def __init__(self, service: MergeService, job: MergeJob) -> None:
        self.service, self.job = service, job

    async def phase(self, branch: str | None, phase: str) -> None:
        self.job.current = {"branch": branch, "phase": phase}

    async def result(self, index: int, result: BranchResult) -> None:
        self.job.current = None
        await self.service.publish(self.job, "merge:branch", {"index": index, **result.as_json()}, required=False)


class MergeService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.jobs: dict[str, MergeJob] = {}
        # The refinery hook: the server may install a factory that hands conflicts to an agent. A request's own
        # ``resolve`` command wins over it.
        self.resolver_factory: ResolverFactory | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._keeper = False

    @property
    def _confining(self) -> object:
        """What confines gates and resolvers: the server's default runtime, unless ``merge_gate_confined`` is off."""
        return self.plane.runtimes.default if self.plane.settings.merge_gate_confined else None

    @property
    def workdir(self) -> Path:
        return self.plane.settings.home / "merges"

    # --------------------------------------------------------------------------------------------- start

    async def submit(self, request: MergeRequest) -> MergeJob:
        roots = self.plane.settings.repo_roots
        root = within_roots(await repo_root(within_roots(request.repo, roots)), roots)
        branches_field, candidates = await self._candidates(root, request)
        plan = await make_plan(
            root, request.into, candidates, base=request.base, verify=request.verify,
            verify_timeout=request.verify_timeout, batch=request.batch, branches_field=branches_field,
        )  # fmt: skip
        job = MergeJob(id=new_id(), plan=plan, request=request, created_at=self.plane.clock.now())
        job.results = [BranchResult(c.name, c.tip, agent_id=c.agent_id) for c in plan.candidates]
        await self.publish(job, "merge:started", job.as_json())
        self.jobs[job.id] = job
        self._forget_finished()
        self._keep_running()
        job.task = asyncio.create_task(self._run(job), name=f"godel:merge:{job.id}")
        return job

    async def _candidates(self, root: Path, request: MergeRequest) -> tuple[str, list[str | Candidate]]:
        given = [name for name, value in (("branches", request.branches), ("teamId", request.team_id),
                                          ("workflowId", request.workflow_id)) if value]  # fmt: skip
        if len(given) > 1:
            raise ValidationError(
                f"{' and '.join(given)} exclude each other: give branches, a team or a workflow",
                [FieldError(name, "give only one of branches, teamId, workflowId") for name in given],
            )
        if request.team_id:
            return "teamId", list(await team_candidates(self.plane.store, root, request.team_id))
        if request.workflow_id:
            return "workflowId", list(await workflow_candidates(self.plane.store, root, request.workflow_id))
        return "branches", list(request.branches)

    def _keep_running(self) -> None:
        """Register, once, the supervised task that cancels running jobs when the server stops."""
        if not self._keeper:
            self._keeper = True
            self.plane.tasks.start("merges", self._cancel_on_stop, why="stop merge runs cleanly with the server")

    async def _cancel_on_stop(self) -> None:
        try:
            await asyncio.Event().wait()  # until the server's task supervisor cancels it
        finally:
            running = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    # ----------------------------------------------------------------------------------------------- run

    async def _run(self, job: MergeJob) -> None:
        plan = job.plan
        final = JobTrigger.FAIL
        try:
            async with self._locks.setdefault((str(plan.repo), plan.into), asyncio.Lock()):
                job.status = MERGES.plan(job.id, job.status, JobTrigger.START).to_state
                job.started_at = self.plane.clock.now()
                await self._sweep(plan.repo)
                queue = MergeQueue(plan, workdir=self.workdir, resolver=self._resolver(job),
                                   listener=_Listener(self, job), run_id=job.id, runtime=self._confining)  # fmt: skip
                job.queue, job.results = queue, queue.results
                await queue.run()
            final = JobTrigger.COMPLETE
        except asyncio.CancelledError:
            job.error = {"code": "CANCELLED", "message": "the server stopped before the merge finished"}
            raise
        except Exception as exc:
            job.error = _error_json(exc)
            log.warning("merge run failed", merge=job.id, error=job.error["message"])
        finally:
            job.current = None
            job.completed_at = self.plane.clock.now()
            for result in job.results:
                if result.status is BranchStatus.PENDING:
                    result.status, result.reason = BranchStatus.SKIPPED, "not reached: the run stopped"
            # The run reads as ended only once its end is recorded: whoever sees it ended finds the event too.
            move = MERGES.plan(job.id, job.status, final)
            await self.publish(job, move.event, {**job.as_json(), "status": move.to_state.value}, required=False)
            job.status = move.to_state

    def _resolver(self, job: MergeJob) -> Resolver | None:
        if job.request.resolve:
            return CommandResolver(job.request.resolve, self.workdir / f"{job.id}-refinery",
                                   timeout=job.plan.verify_timeout, runtime=self._confining)  # fmt: skip
        if job.request.refinery is not None:
            return AgentResolver(self.plane, job.request.refinery, team_id=job.request.team_id)
        return self.resolver_factory(job) if self.resolver_factory else None

    async def _sweep(self, repo: Path) -> None:
        """Remove worktrees a killed server left in the merges directory (they are detached, so they block
        nothing, but they take disk space and show in ``git worktree list``)."""
        if not self.workdir.is_dir():
            return
        live = {j.id for j in self.jobs.values() if j.status is JobStatus.RUNNING}
        stale = [p for p in self.workdir.iterdir() if p.name[:36] not in live]
        for path in stale:
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
        if stale:
            await git("worktree", "prune", cwd=repo, check=False)

    def _forget_finished(self) -> None:
        finished = [j for j in self.jobs.values() if j.task is not None and j.task.done()]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[job.id]

    async def publish(self, job: MergeJob, type_: str, payload: dict[str, Any], *, required: bool = True) -> None:
        metadata: dict[str, Any] = {"correlationId": job.id}
        for key, value in (("teamId", job.request.team_id), ("workflowId", job.request.workflow_id)):
            if value and len(value) <= _ID_COLUMN:
                metadata[key] = value
        try:
            actor = job.request.owner or "merging"
            await self.plane.publish(type_, {"mergeId": job.id, **payload}, metadata, actor=actor)
        except GodelError as exc:
            if required:
                raise
            # The run goes on: its live state is in memory, and merge:completed repeats every result.
            log.warning("could not record a merge event", merge=job.id, type=type_, error=exc.message)

    # ------------------------------------------------------------------------------------------- reading

    async def get(self, merge_id: str) -> dict[str, Any]:
        job = self.jobs.get(merge_id)
        if job is not None:
            return job.as_json()
        events = await merge_events(self.plane.store, merge_id) if isinstance(self.plane.store, SqlStore) else []
        report = rebuild(events)
        if report is None:
            raise MergeNotFoundError(merge_id)
        return report

    async def list(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs, newest first (from the event log, so runs before a restart are there too)."""
        query = EventQuery(filter=EventFilter(patterns=("merge:started",)), limit=limit, descending=True)
        ids = [str(e.payload.get("mergeId")) for e in await self.plane.events(query)]
        return [await self.get(merge_id) for merge_id in ids]


def rebuild(events: list[Event]) -> dict[str, Any] | None:
    """A run's report from its events: the one ``merge:completed`` carries, or, when the server died before it,
    ``merge:started``'s with the ``merge:branch`` results that were published, as a failed run."""
    started = completed = None
    results: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.type == "merge:started":
            started = event.payload
        elif event.type == "merge:completed":
            completed = event.payload
        elif event.type == "merge:branch" and isinstance(event.payload.get("index"), int):
            results[event.payload["index"]] = {k: v for k, v in event.payload.items() if k not in ("mergeId", "index")}
    if completed is not None:
        return _without_id(completed)
    if started is None:
        return None
    report = _without_id(started)
    rows = [BranchResult.from_json(results.get(i, row)) for i, row in enumerate(report.get("results", []))]
    for row in rows:
        if row.status is BranchStatus.PENDING:
            row.status, row.reason = BranchStatus.SKIPPED, "not reached: the server stopped during the run"
    report.update(
        status=JobStatus.FAILED.value,
        current=None,
        results=[r.as_json() for r in rows],
        summary=summarize(rows),
        error={"code": "INTERRUPTED", "message": "the server stopped before the merge finished"},
    )
    return report


def _without_id(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "mergeId"}


def _error_json(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GodelError):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    return {"code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}", "details": None}
