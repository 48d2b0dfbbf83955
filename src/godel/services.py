"""The one place that builds Godel's services and starts and stops them in order, for the server (``godel.api.app``
puts HTTP in front of them), the tests and embedding.

    services = Services.build(Settings(home=...))
    await services.start()
    agent = await services.plane.spawn(SpawnRequest(...))
    ...
    await services.stop()

Each service gets what it needs in its constructor; nothing is stashed on another object, and no module keeps state
in a global. Start order: the control plane (store, bus, supervisor, gateway), the first administrator, webhook
deliveries left pending, then the workflows and teams that were running; stop is the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from godel.auth.accounts import Accounts
from godel.auth.audit import AuditLog
from godel.auth.oidc import OidcLogin
from godel.merging.service import MergeService
from godel.scheduler.plane import ControlPlane
from godel.settings import Settings
from godel.teams import TeamOrchestrator
from godel.webhooks import DeliveryPolicy, WebhookDispatcher
from godel.workflow.engine import WorkflowEngine

log = structlog.get_logger("godel.services")
LAST_USED_FLUSH_SECONDS = 10.0


@dataclass
class Services:
    settings: Settings
    plane: ControlPlane  # store, bus, runtime, supervisor, gateway, identities
    workflows: WorkflowEngine
    teams: TeamOrchestrator
    merges: MergeService
    accounts: Accounts
    sso: OidcLogin | None  # None unless single sign-on is configured
    audit: AuditLog
    webhooks: WebhookDispatcher
    owns_plane: bool  # False when the caller built the plane and owns its lifecycle (tests)
    _flusher: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings | None = None, *, plane: ControlPlane | None = None) -> Services:
        owns = plane is None
        plane = plane or ControlPlane(settings or Settings())
        settings = plane.settings
        accounts = Accounts(plane.auth)
        return cls(
            settings=settings,
            plane=plane,
            workflows=WorkflowEngine(plane),
            teams=TeamOrchestrator(plane),
            merges=MergeService(plane),
            accounts=accounts,
            sso=OidcLogin.from_settings(settings, accounts),
            audit=AuditLog(plane.store, plane.clock),
            webhooks=WebhookDispatcher(plane.store, plane.bus, plane.auth, clock=plane.clock,
                                       policy=DeliveryPolicy.from_settings(settings), secrets=plane.secrets),
            owns_plane=owns,
        )  # fmt: skip

    async def start(self) -> None:
        if self.owns_plane:
            await self.plane.start()
        if self.settings.auth_enabled:
            made = await self.accounts.bootstrap(self.settings.home, self.settings.local_url)
            if made is not None:
                log.info("created the first administrator; its API key is in the credentials file", path=str(made))
        self._flusher = asyncio.create_task(self._flush_last_used(), name="auth last-used")
        await self.webhooks.start()  # deliveries left pending by the last run go out again
        await self.workflows.start()  # carries on the workflows that were running when the server stopped
        await self.teams.start()  # and the teams

    async def stop(self) -> None:
        await self.teams.stop()
        await self.workflows.stop()
        await self.webhooks.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.plane.auth.flush_last_used()
        await self.plane.gateway.settle()  # usage of responses that just ended is recorded before the store closes
        if self.owns_plane:
            await self.plane.stop()

    async def _flush_last_used(self) -> None:
        while True:
            await asyncio.sleep(LAST_USED_FLUSH_SECONDS)  # a batch of "last used" times per interval, not a write each
            try:
                await self.plane.auth.flush_last_used()
            except Exception:
                log.exception("could not record when API keys were last used")
