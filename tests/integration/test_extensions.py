"""Extensions are used only between nodes that both announce them: with three of
our agents serving one job type each, a manager that announces silent declines
hears no decline, and one that speaks only the shared protocol hears them all."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.templates import load_template_file
from caroni.protocol.extensions import SPOKEN
from caroni.store.tables import message_log
from caroni.transport.memory import MemoryBroker, MemoryTransport
from tests.waiting import eventually

WORKFLOWS = 4
STEPS = 3  # test_simple: one step of each of the three job types

NOTHING: frozenset[str] = frozenset()


def _logged(node: ManagerNode | AgentNode, direction: str, type_name: str) -> int:
    query = select(func.count()).where(
        message_log.c.direction == direction, message_log.c.type_name == type_name
    )
    with node.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.mark.parametrize(
    ("manager_speaks", "agents_speak", "declines_per_request"),
    [(SPOKEN, SPOKEN, 0), (NOTHING, SPOKEN, 2), (SPOKEN, NOTHING, 2)],
    ids=["both-announce", "manager-shared-only", "agents-shared-only"],
)
async def test_silent_declines_only_between_nodes_that_both_speak_them(
    tmp_path: Path,
    manager_speaks: frozenset[str],
    agents_speak: frozenset[str],
    declines_per_request: int,
) -> None:
    broker = MemoryBroker()
    manager = ManagerNode(
        MemoryTransport(broker), str(tmp_path / "manager.sqlite3"), speaks=manager_speaks
    )
    agents = [
        AgentNode(
            MemoryTransport(broker),
            str(tmp_path / f"agent-{n}.sqlite3"),
            policy=Policy(site_identifier=f"agent-{n}"),
            workdir=tmp_path / f"jobs-{n}",
            speaks=agents_speak,
        )
        for n in range(3)
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
        for agent, job_type in zip(agents, ("foojob0", "foojob1", "foojob2"), strict=True):
            await agent.add_job_type(specs[job_type])  # one job type each
        async with Client(client_transport, manager.key) as client:
            ids = [
                await client.submit("test_simple", {"start_message": f"x{n}"})
                for n in range(WORKFLOWS)
            ]
            for workflow_id in ids:
                status = await client.wait(workflow_id, timeout=60)
                assert status.state == "completed", status.reason
        requests = _logged(manager, "out", "JobFulfillmentRequest")
        assert requests >= WORKFLOWS * STEPS

        def every_agent_heard_every_request() -> bool:
            heard = [_logged(agent, "in", "JobFulfillmentRequest") for agent in agents]
            return heard == [requests] * len(agents)

        await eventually(every_agent_heard_every_request, "every request handled by every agent")
        declines = sum(_logged(agent, "out", "JobFulfillmentDecline") for agent in agents)
        assert declines == declines_per_request * requests
    finally:
        await client_transport.close()
        for node in reversed(nodes):
            await node.stop()
            await node.transport.close()
