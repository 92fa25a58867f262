"""Assembling nodes: a database, a transport, a role and the service shell.

``ManagerNode`` and ``AgentNode`` are what the CLI, the demo and the tests start;
each owns one database and one queue on the broker.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from caroni.agent.containment import Mechanism
from caroni.agent.jobtypes import JobTypeSpec, load_job_types
from caroni.agent.model import Policy
from caroni.agent.service import AgentRole
from caroni.key_roles import ROLE_CHOICES
from caroni.manager.handlers import DEFAULT_TIMINGS, Timings
from caroni.manager.model import DEFAULT_MAX_ATTEMPTS
from caroni.manager.service import DEFAULT_MAX_RUNNING, ManagerRole
from caroni.manager.templates import Template, load_template_file
from caroni.node.role import Role
from caroni.node.runtime import Node
from caroni.node.tx import Tx
from caroni.protocol import agent_key, manager_key, node_key_id
from caroni.protocol.extensions import SPOKEN
from caroni.store import node_uuid, open_node_db, refused_as_config_error
from caroni.transport.base import Transport
from caroni.trust import NodeKey, TrustPolicy, TrustSettings, bound_nodes, key_roles, trusted_keys

if TYPE_CHECKING:
    from fastapi import FastAPI

    from caroni.web import SiteServer

log = logging.getLogger("caroni")


class _NodeService:
    """What both kinds of node share: database set-up, identity and the shell."""

    role: Role
    node: Node
    engine: Engine
    node_uuid: uuid.UUID
    key: str

    def __init__(
        self,
        transport: Transport,
        db_url: str,
        http: str | None = None,
        trust: TrustSettings | None = None,
        speaks: frozenset[str] = SPOKEN,
    ) -> None:
        from caroni.web import parse_http

        self.transport = transport
        # The extensions of the conversation this node announces and uses with
        # peers that announce them too (none: only the shared protocol).
        self.speaks = speaks
        self.db_url = db_url
        self.trust = trust or TrustSettings()
        # Loaded now, so a missing or exposed key fails before anything starts.
        self.signing_key = NodeKey.load(self.trust.key_file) if self.trust.key_file else None
        # Where the node's web site listens ("HOST:PORT"; port 0 picks a free one),
        # or None for no site. Checked now so a typo fails before anything starts.
        self.http = parse_http(http)
        self.site: SiteServer | None = None

    def _open(self, role: Role, key_for: Callable[[uuid.UUID], str]) -> None:
        self.engine = open_node_db(self.db_url)
        with refused_as_config_error(self.engine, self.db_url):
            self.node_uuid = node_uuid(self.engine, role.name)
            with self.engine.connect() as conn:
                policy = self.trust.policy(
                    trusted_keys(conn), bound_nodes(conn), key_roles(conn), receiver=role.name
                )
        self._warn_about_keys_without_role(policy)
        self.key = key_for(self.node_uuid)
        self.node = Node(
            role,
            self.engine,
            self.transport,
            node_uuid=self.node_uuid,
            own_key=self.key,
            queue_name=f"caroni.{role.name}.{node_key_id(self.node_uuid)}",
            signer=self.signing_key,
            trust=policy,
            speaks=self.speaks,
        )

    def _warn_about_keys_without_role(self, policy: TrustPolicy) -> None:
        """Keys trusted before roles existed are refused once signatures are required."""
        if not policy.require_signatures:
            return
        for name, key_id in sorted(policy.trusted.items()):
            if key_id not in policy.roles:
                log.warning(
                    "trusted key %s has no role: what it signs is refused; add it again "
                    "with `caroni trust add %s %s --role %s`",
                    name,
                    name,
                    key_id,
                    ROLE_CHOICES,
                )

    def site_app(self) -> FastAPI:
        """This node's web site as an ASGI app (served on ``http``; tests call it directly)."""
        raise NotImplementedError

    async def _serve_site(self) -> None:
        if self.http is not None:
            from caroni.web import SiteServer

            self.site = SiteServer(self.site_app(), self.http)
            await self.site.start()

    @property
    def site_url(self) -> str:
        """The site's address once it serves ("" when it does not)."""
        return self.site.url if self.site is not None else ""

    async def stop(self) -> None:
        if self.site is not None:
            await self.site.stop()  # pages read through the node: stop them first
            self.site = None
        await self.node.stop()
        self.engine.dispose()
        # What this process did: with replicas sharing a database, each says its part.
        done = ", ".join(f"{name} {count}" for name, count in self.node.counters.items())
        log.info("%s %s stopped: %s", self.role.name, self.node_uuid, done)


class ManagerNode(_NodeService):
    """A workflow manager: owns templates and workflows."""

    role: ManagerRole

    def __init__(
        self,
        transport: Transport,
        db_url: str,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        name: str = "manager",
        http: str | None = None,
        trust: TrustSettings | None = None,
        timings: Timings = DEFAULT_TIMINGS,
        max_running: int = DEFAULT_MAX_RUNNING,
        speaks: frozenset[str] = SPOKEN,
        shared_requests: bool = False,
    ) -> None:
        super().__init__(transport, db_url, http, trust, speaks)
        self.name = name  # shown on its web site; peers never see it
        self.role = ManagerRole(
            default_max_attempts=max_attempts,
            timings=timings,
            max_running=max_running,
            signed=self.trust.require_signatures,
            shared_requests=shared_requests,
        )

    async def start(self) -> None:
        self._open(self.role, manager_key)
        await self.node.start()
        await self._serve_site()
        log.info("manager %s listening as %s", self.node_uuid, self.key)

    def site_app(self) -> FastAPI:
        from caroni.web.manager import create_manager_app

        return create_manager_app(self)

    async def add_template(self, template: Template) -> None:
        def write(tx: Tx) -> None:
            self.role.add_template(tx, template)

        await self.node.transact(write)

    async def add_template_file(self, path: Path, name: str | None = None) -> Template:
        template = load_template_file(path, name)
        await self.add_template(template)
        return template


class AgentNode(_NodeService):
    """An agent: owns a catalogue of job types and runs jobs of those types."""

    role: AgentRole

    def __init__(
        self,
        transport: Transport,
        db_url: str,
        *,
        policy: Policy | None = None,
        workdir: Path | None = None,
        http: str | None = None,
        trust: TrustSettings | None = None,
        containment: Mechanism | None = None,
        speaks: frozenset[str] = SPOKEN,
    ) -> None:
        super().__init__(transport, db_url, http, trust, speaks)
        if workdir is None:
            workdir = Path(tempfile.gettempdir()) / "caroni-jobs"
        workdir.mkdir(parents=True, exist_ok=True)
        self.role = AgentRole(policy or Policy(), workdir, containment)

    async def start(self) -> None:
        self._open(self.role, agent_key)
        await self.role.start(self.node)
        await self.node.start()
        await self._serve_site()
        log.info("agent %s listening as %s", self.node_uuid, self.key)

    async def stop(self) -> None:
        if self.site is not None:
            await self.site.stop()
            self.site = None
        await self.role.stop()
        await super().stop()

    def site_app(self) -> FastAPI:
        from caroni.web.agent import create_agent_app

        return create_agent_app(self)

    async def add_job_type(self, spec: JobTypeSpec) -> None:
        await self.role.put_job_type(spec)

    async def add_job_types_file(self, path: Path, only: set[str] | None = None) -> list[str]:
        added = []
        for spec in load_job_types(path):
            if only is None or spec.name in only:
                await self.add_job_type(spec)
                added.append(spec.name)
        return added
