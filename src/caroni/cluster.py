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
from collections.abc import AsyncIterator
from pathlib import Path

from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.transport.memory import MemoryBroker, MemoryTransport


class LocalCluster:
    """One manager and ``agents`` agents, each with its own SQLite file under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        agents: int = 1,
        max_attempts: int = 5,
        policy: Policy | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.broker = MemoryBroker()
        self.manager = ManagerNode(
            MemoryTransport(self.broker),
            str(data_dir / "manager.sqlite3"),
            max_attempts=max_attempts,
        )
        base = policy or Policy()
        self.agents = [
            AgentNode(
                MemoryTransport(self.broker),
                str(data_dir / f"agent-{number}.sqlite3"),
                policy=Policy(
                    slots=base.slots,
                    max_reserved=base.max_reserved,
                    offer_ttl=base.offer_ttl,
                    site_identifier=f"agent-{number}",
                ),
                workdir=data_dir / f"agent-{number}-jobs",
            )
            for number in range(1, agents + 1)
        ]

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

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        transport = MemoryTransport(self.broker)
        await transport.connect()
        try:
            async with Client(transport, self.manager.key) as client:
                yield client
        finally:
            await transport.close()
