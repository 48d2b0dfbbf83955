from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from godel.merging.service import MergeService
from godel.scheduler.plane import ControlPlane


def _plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.plane
    return plane


Plane = Annotated[ControlPlane, Depends(_plane)]


def _merges(request: Request) -> MergeService:
    merges: MergeService = request.app.state.merges
    return merges


Merges = Annotated[MergeService, Depends(_merges)]
