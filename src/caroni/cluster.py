"""A whole Caroni in one process: a manager and agents on the in-process broker.

Used by ``caroni demo`` and by tests; also handy for users who want to try
templates and job types without a broker::

    async with LocalCluster(tmp_dir, agents=1) as cluster:
        await cluster.manager.add_template_file(Path("my.cwl"))
        await cluster.agents[0].add_job_types_file(Path("job_types.json"))
        async with cluster.client() as client:
            workflow_id = await client.submit("my", {"x": "1"})
            status = await client.wait(workflow_id, timeout=60)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.manager.model import DEFAULT_MAX_ATTEMPTS
from caroni.transport.memory import MemoryBroker, MemoryTransport


class LocalCluster:
    """One manager and ``agents`` agents, each with its own SQLite file under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        agents: int = 1,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        policy: Policy | None = None,
        http: str | None = None,
    ) -> None:
        """``http``: serve every node's web site, the manager on this HOST:PORT and the
        agents on the ports after it (port 0: each node gets a free port)."""
        self.data_dir = data_dir
        self.broker = MemoryBroker()
        sites = _site_addresses(http, 1 + agents)
        self.manager = ManagerNode(
            MemoryTransport(self.broker),
            str(data_dir / "manager.sqlite3"),
            max_attempts=max_attempts,
            http=sites[0],
        )
        base = policy or Policy()
        self.agents = [
            AgentNode(
                MemoryTransport(self.broker),
                str(data_dir / f"agent-{number}.sqlite3"),
                policy=dataclasses.replace(base, site_identifier=f"agent-{number}"),
                workdir=data_dir / f"agent-{number}-jobs",
                http=sites[number],
            )
            for number in range(1, agents + 1)
        ]

    @property
    def nodes(self) -> list[ManagerNode | AgentNode]:
        return [self.manager, *self.agents]

    async def __aenter__(self) -> LocalCluster:
        await self.manager.transport.connect()
        await self.manager.start()
        for agent in self.agents:
            await agent.transport.connect()
            await agent.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for agent in self.agents:
            await agent.stop()
            await agent.transport.close()
        await self.manager.stop()
        await self.manager.transport.close()

    async def add_user(self, username: str, password: str) -> None:
        """Give every node's site this user (a password already set is replaced)."""
        from caroni.web import put_user

        for node in self.nodes:
            await put_user(node, username, password)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        transport = MemoryTransport(self.broker)
        await transport.connect()
        try:
            async with Client(transport, self.manager.key) as client:
                yield client
        finally:
            await transport.close()


def _site_addresses(http: str | None, count: int) -> list[str | None]:
    """One address per node: the given one, then the ports after it."""
    from caroni.web import parse_http

    address = parse_http(http)
    if address is None:
        return [None] * count
    step = 0 if address.port == 0 else 1
    host = f"[{address.host}]" if ":" in address.host else address.host
    return [f"{host}:{address.port + step * index}" for index in range(count)]
