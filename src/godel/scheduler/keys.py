"""The credentials of one run: a gateway key for its model calls and an API credential for reporting on itself.

Both are made when the run is launched and revoked when it ends; a new run revokes its predecessor's first. A launch
that fails revokes the ones it made itself (``LaunchCredentials``), never the agent's: they may be a newer launch's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import structlog

from godel.auth.service import AuthService
from godel.core.models import Agent
from godel.core.ports import LaunchRequest
from godel.core.runs import RunContext
from godel.gateway.service import Gateway
from godel.scheduler.egress import EgressTokens
from godel.settings import Settings

log = structlog.get_logger("godel.runs")

GATEWAY_WIRES = ("openai-chat", "openai-responses", "anthropic", "gemini")  # what /proxy speaks


@dataclass
class LaunchCredentials:
    """What one launch was given, filled in as it is made: a launch cut off half-way takes back exactly that."""

    gateway_key: str | None = None  # the virtual key's id
    api_credential: str | None = None  # the credential's text (it names its id)


class RunKeys:
    def __init__(self, settings: Settings, gateway: Gateway | None = None, auth: AuthService | None = None) -> None:
        self.settings = settings
        self.gateway = gateway  # when set (and settings.use_gateway), agents reach their models through it
        self.auth = auth  # when set, each run gets its own least-privilege API credential (GODEL_API_KEY)
        self._egress: EgressTokens | None = None

    def egress_credential(self, agent_id: str) -> str:
        """``AGENT-ID:TOKEN``, the agent's credential for the egress proxy (``godel.scheduler.egress``)."""
        if self._egress is None:
            self._egress = EgressTokens.in_home(self.settings.home)
        return f"{agent_id}:{self._egress.token(agent_id)}"

    async def through_gateway(
        self, agent: Agent, request: LaunchRequest, made: LaunchCredentials | None = None
    ) -> LaunchRequest:
        """Point the run at Godel's gateway instead of the provider: the CLI gets a virtual key scoped to this
        agent and its route, so the provider's key never enters its environment, config or workspace. The run's
        earlier keys are revoked first."""
        ep = request.endpoint
        if self.gateway is None or not self.settings.use_gateway or ep is None or ep.kind not in GATEWAY_WIRES:
            return request
        await self.gateway.revoke_scope("agent", agent.id)
        # The model of this attempt first: the gateway routes a bare model id to the key's first provider serving it.
        models = RunContext.of(agent).route_from_current()
        text, key = await self.gateway.issue("agent", agent.id, models=models, metadata={"teamId": agent.team_id})
        if made is not None:
            made.gateway_key = key.id
        root = self.settings.agent_gateway_url + "/proxy"
        base = root if ep.kind in ("anthropic", "gemini") else f"{root}/v1"  # their clients add the version
        return dataclasses.replace(request, endpoint=dataclasses.replace(ep, base_url=base, api_key=text))

    async def with_api_credential(
        self, agent: Agent, request: LaunchRequest, made: LaunchCredentials | None = None
    ) -> LaunchRequest:
        """Give the run its own API credential (``GODEL_API_KEY``, with ``GODEL_URL``): role ``agent``, scoped to
        this agent, so what runs inside can report on itself but never read or steer others, mint keys or change
        budgets. The run's earlier credentials are revoked first."""
        if self.auth is None:
            return request
        await self.auth.revoke_agent_credentials(agent.id)
        text = await self.auth.issue_agent_credential(agent.id, allow_spawn=bool(agent.metadata.get("allowSubagents")))
        if made is not None:
            made.api_credential = text
        env = {**request.options.get("env", {}), "GODEL_API_KEY": text, "GODEL_URL": self.settings.agent_gateway_url}
        return dataclasses.replace(request, options={**request.options, "env": env})

    async def revoke(self, agent_id: str) -> None:
        """The run is over: its gateway keys and its API credential stop working."""
        if self.gateway is not None:
            try:
                await self.gateway.revoke_scope("agent", agent_id)
            except Exception:  # the run is over either way; a key left live is logged, and revoked by the next run
                log.exception("could not revoke the agent's gateway keys", agent=agent_id)
        if self.auth is not None:
            try:
                await self.auth.revoke_agent_credentials(agent_id)
            except Exception:  # as above: revoked by the next run, and it names only this agent
                log.exception("could not revoke the agent's API credential", agent=agent_id)

    async def revoke_made(self, agent_id: str, made: LaunchCredentials) -> None:
        """A launch failed or was abandoned: the keys it made stop working, and only those."""
        try:
            if self.gateway is not None and made.gateway_key is not None:
                await self.gateway.revoke(made.gateway_key)
            if self.auth is not None and made.api_credential is not None:
                await self.auth.revoke_agent_credential(made.api_credential)
        except Exception:  # logged; a restart's reconciliation or the agent's next run revokes it
            log.exception("could not revoke a failed launch's credentials", agent=agent_id)
