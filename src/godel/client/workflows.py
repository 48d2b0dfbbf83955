"""Workflows (DAG runs from a YAML or JSON file, docs/workflows.md) and the merge queue (docs/merging.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, overload
from urllib.parse import quote

from godel.client.calls import API, JSON, Calls, Deferred, R, camelize, patterns_param
from godel.client.models import Page, Workflow


def workflow_path(workflow_id: str, *rest: str) -> str:
    return "/".join((f"{API}/workflows/{quote(workflow_id, safe='')}", *(quote(r, safe="") for r in rest)))


class WorkflowCalls(Calls[R]):
    @overload
    def submit_workflow(
        self: WorkflowCalls[JSON], source: str, *, repo: str, base_ref: str | None = None,
        variables: Mapping[str, Any] | None = None, filename: str | None = None, team_id: str | None = None,
        start: bool | None = None,
    ) -> Workflow: ...  # fmt: skip
    @overload
    def submit_workflow(
        self: WorkflowCalls[Deferred], source: str, *, repo: str, base_ref: str | None = None,
        variables: Mapping[str, Any] | None = None, filename: str | None = None, team_id: str | None = None,
        start: bool | None = None,
    ) -> Awaitable[Workflow]: ...  # fmt: skip
    def submit_workflow(
        self, source: str, *, repo: str, base_ref: str | None = None, variables: Mapping[str, Any] | None = None,
        filename: str | None = None, team_id: str | None = None, start: bool | None = None,
    ) -> Any:  # fmt: skip
        """Submit a workflow file's text (YAML or JSON); invalid files come back with every error's line."""
        body = camelize({"source": source, "repo": repo, "base_ref": base_ref, "variables": variables,
                         "filename": filename, "team_id": team_id, "start": start})  # fmt: skip
        return self._call("POST", f"{API}/workflows", json=body, into=Workflow.parse)

    @overload
    def list_workflows(
        self: WorkflowCalls[JSON], *, status: str | Sequence[str] | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Workflow]: ...  # fmt: skip
    @overload
    def list_workflows(
        self: WorkflowCalls[Deferred], *, status: str | Sequence[str] | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> Awaitable[Page[Workflow]]: ...  # fmt: skip
    def list_workflows(
        self, *, status: str | Sequence[str] | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Any:
        query = camelize({"status": patterns_param(status) or None, "limit": limit, "cursor": cursor})
        return self._call("GET", f"{API}/workflows", params=query, into=Page.of(Workflow))

    @overload
    def get_workflow(self: WorkflowCalls[JSON], workflow_id: str) -> Workflow: ...
    @overload
    def get_workflow(self: WorkflowCalls[Deferred], workflow_id: str) -> Awaitable[Workflow]: ...
    def get_workflow(self, workflow_id: str) -> Any:
        """One workflow with its ``steps``."""
        return self._call("GET", workflow_path(workflow_id), into=Workflow.parse)

    def delete_workflow(self, workflow_id: str, *, force: bool = False) -> R:
        return self._call("DELETE", workflow_path(workflow_id), params={"force": "true"} if force else None)

    @overload
    def workflow_action(self: WorkflowCalls[JSON], workflow_id: str, action: str) -> Workflow: ...
    @overload
    def workflow_action(self: WorkflowCalls[Deferred], workflow_id: str, action: str) -> Awaitable[Workflow]: ...
    def workflow_action(self, workflow_id: str, action: str) -> Any:
        """``start``, ``pause``, ``resume`` or ``cancel``."""
        return self._call("POST", workflow_path(workflow_id, action), into=Workflow.parse)

    # Merge queue
    def merge(
        self,
        repo: str,
        into: str,
        branches: Sequence[str] | None = None,
        *,
        team_id: str | None = None,
        workflow_id: str | None = None,
        base: str | None = None,
        verify: str | None = None,
        verify_timeout: float | None = None,
        batch: bool | None = None,
        resolve: str | None = None,
        refinery_agent: str | None = None,
        refinery_model: str | None = None,
    ) -> R:
        """``POST /merges``: merge ``branches`` (or a team's or a workflow's agent branches) into ``into``, each
        behind the ``verify`` command; answers 202 with the job, to follow with ``get_merge``. A conflict goes to
        the ``resolve`` command, or to a refinery agent of kind ``refinery_agent``."""
        refinery = {"agent": refinery_agent, "model": refinery_model or ""} if refinery_agent else None
        body = camelize(
            {
                "repo": repo,
                "into": into,
                "branches": list(branches) if branches else None,
                "team_id": team_id,
                "workflow_id": workflow_id,
                "base": base,
                "verify": verify,
                "verify_timeout": verify_timeout,
                "batch": batch,
                "resolve": resolve,
                "refinery": refinery,
            }
        )
        return self._call("POST", f"{API}/merges", json=body)

    def get_merge(self, merge_id: str) -> R:
        return self._call("GET", f"{API}/merges/{quote(merge_id, safe='')}")

    def list_merges(self, *, limit: int | None = None) -> R:
        return self._call("GET", f"{API}/merges", params=camelize({"limit": limit}))
