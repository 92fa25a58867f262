"""Extensions are used only between nodes that both announce them. With three of
our agents serving one job type each: a manager speaking typed requests reaches
only the agents of each request's type and hears no decline; when either side
speaks only the shared protocol, requests go to the plain key, every agent hears
each, and the two that do not serve its type decline it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.protocol import FULFILLMENT_KEY, fulfillment_key_for
from caroni.protocol.extensions import CLAIMS, SPOKEN
from caroni.store.tables import message_log
from tests.embedded import federation
from tests.waiting import eventually

WORKFLOWS = 4
JOB_TYPES = ("foojob0", "foojob1", "foojob2")  # test_simple: one step of each
STEPS = len(JOB_TYPES)

NOTHING: frozenset[str] = frozenset()
# Claims would place most steps without any request: this test is about requests.
TYPED = SPOKEN - {CLAIMS}


def _logged(
    node: ManagerNode | AgentNode, direction: str, type_name: str, peer: str | None = None
) -> int:
    query = select(func.count()).where(
        message_log.c.direction == direction, message_log.c.type_name == type_name
    )
    if peer is not None:
        query = query.where(message_log.c.peer == peer)
    with node.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.mark.parametrize(
    ("manager_speaks", "agents_speak"),
    [(TYPED, TYPED), (NOTHING, TYPED), (TYPED, NOTHING)],
    ids=["both-announce", "manager-shared-only", "agents-shared-only"],
)
async def test_extensions_only_between_nodes_that_both_speak_them(
    tmp_path: Path, manager_speaks: frozenset[str], agents_speak: frozenset[str]
) -> None:
    policies = [Policy(site_identifier=f"agent-{n}") for n in range(3)]
    serves = [(job_type,) for job_type in JOB_TYPES]  # one job type each
    async with federation(
        tmp_path, policies, serves, manager_speaks=manager_speaks, agents_speak=agents_speak
    ) as (manager, agents, client):
        ids = [
            await client.submit("test_simple", {"start_message": f"x{n}"}) for n in range(WORKFLOWS)
        ]
        for workflow_id in ids:
            status = await client.wait(workflow_id, timeout=60)
            assert status.state == "completed", status.reason
        # What the manager sent where: to each type's key, and to the plain key.
        plain = _logged(manager, "out", "JobFulfillmentRequest", FULFILLMENT_KEY)
        typed = {
            job_type: _logged(
                manager, "out", "JobFulfillmentRequest", fulfillment_key_for(job_type)
            )
            for job_type in JOB_TYPES
        }
        both_typed = bool(manager_speaks) and bool(agents_speak)
        assert plain + sum(typed.values()) >= WORKFLOWS * STEPS
        if both_typed:
            assert sum(typed.values()) >= WORKFLOWS * STEPS, "first broadcasts are typed"
        # Each agent hears the plain copies, and those of its own type if it binds them.
        expected = [plain + (typed[job_type] if agents_speak else 0) for job_type in JOB_TYPES]

        def every_agent_heard_its_requests() -> bool:
            heard = [_logged(agent, "in", "JobFulfillmentRequest") for agent in agents]
            return heard == expected

        await eventually(every_agent_heard_its_requests, "every agent to hear its requests")
        declines = sum(_logged(agent, "out", "JobFulfillmentDecline") for agent in agents)
        assert declines == (0 if both_typed else 2 * plain)
