"""A manager and agents on the in-process broker, each with its own SQLite file,
the demo template and the demo job types each agent is given: what the tests of the
conversation between our own nodes run on."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.handlers import DEFAULT_TIMINGS, Timings
from caroni.manager.templates import load_template_file
from caroni.protocol.extensions import SPOKEN
from caroni.transport.memory import MemoryBroker, MemoryTransport


@asynccontextmanager
async def federation(
    tmp_path: Path,
    policies: list[Policy],
    serves: list[tuple[str, ...]],
    *,
    timings: Timings = DEFAULT_TIMINGS,
    manager_speaks: frozenset[str] = SPOKEN,
    agents_speak: frozenset[str] = SPOKEN,
    slow: Mapping[str, float] | None = None,
) -> AsyncIterator[tuple[ManagerNode, list[AgentNode], Client]]:
    """Started nodes: a manager with test_simple, an agent per policy serving the
    demo job types named beside it, and a client of the manager. ``slow``: job
    types whose body first sleeps this many seconds."""
    broker = MemoryBroker()
    manager = ManagerNode(
        MemoryTransport(broker),
        str(tmp_path / "manager.sqlite3"),
        timings=timings,
        speaks=manager_speaks,
    )
    agents = [
        AgentNode(
            MemoryTransport(broker),
            str(tmp_path / f"agent-{n}.sqlite3"),
            policy=policy,
            workdir=tmp_path / f"jobs-{n}",
            speaks=agents_speak,
        )
        for n, policy in enumerate(policies)
    ]
    nodes = [manager, *agents]
    client_transport = MemoryTransport(broker)
    await client_transport.connect()
    for node in nodes:
        await node.transport.connect()
        await node.start()
    try:
        await manager.add_template(load_template_file(demo_template_paths()["test_simple"]))
        specs = {spec.name: spec for spec in load_job_types(DEMO_JOB_TYPES)}
        for name, seconds in (slow or {}).items():
            specs[name] = dataclasses.replace(
                specs[name], body=f"sleep {seconds}\n{specs[name].body}"
            )
        for agent, names in zip(agents, serves, strict=True):
            for name in names:
                await agent.add_job_type(specs[name])
        async with Client(client_transport, manager.key) as client:
            yield manager, agents, client
    finally:
        await client_transport.close()
        for node in reversed(nodes):
            await node.stop()
            await node.transport.close()
