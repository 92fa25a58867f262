"""Poison sent to a manager and two agents on RabbitMQ and PostgreSQL while real
workflows run: every workflow completes with the right output, and every poison
message is set aside as a dead letter with its reason, signed mode or not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.key_roles import KeyRole
from caroni.manager.templates import load_template_file
from caroni.protocol import FULFILLMENT_KEY
from caroni.store import create_db_engine, migrate
from caroni.store.tables import dead_letters
from caroni.transport.amqp import AmqpSettings, AmqpTransport
from caroni.trust import NodeKey, TrustSettings, trust_key
from tests.demo_runs import expected
from tests.poison import NOT_OVER_AMQP, POISONS
from tests.waiting import eventually

pytestmark = [pytest.mark.amqp, pytest.mark.postgres, pytest.mark.slow]

WORKFLOWS = 20
WAIT = 180.0
KINDS = sorted(set(POISONS) - NOT_OVER_AMQP)
Node = ManagerNode | AgentNode
ROLES = {
    "manager": KeyRole.MANAGER,
    "agent-1": KeyRole.AGENT,
    "agent-2": KeyRole.AGENT,
    "user": KeyRole.SUBMITTER,
}


def _dead_letters(node: Node) -> int:
    with node.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(dead_letters)).scalar_one())


def _trust(db: str, keys: dict[str, NodeKey]) -> None:
    """Make ``db`` a node database that trusts every key in its role (unbound, for
    brevity)."""
    engine = create_db_engine(db)
    migrate(engine)
    with engine.begin() as conn:
        for name, key in keys.items():
            trust_key(conn, name, key.key_id, time.time(), None, role=ROLES[name])
    engine.dispose()


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_poison_costs_only_itself_while_real_workflows_run(
    tmp_path: Path, amqp_url: str, postgres_url_factory: Callable[[], str], signed: bool
) -> None:
    keys = {name: NodeKey.generate(tmp_path / f"{name}.key") for name in ROLES}
    dbs = {name: postgres_url_factory() for name in ("manager", "agent-1", "agent-2")}

    def trust(name: str) -> TrustSettings | None:
        if not signed:
            return None
        _trust(dbs[name], keys)
        return TrustSettings(key_file=tmp_path / f"{name}.key", require_signatures=True)

    def transport() -> AmqpTransport:
        return AmqpTransport(AmqpSettings(url=amqp_url))

    manager = ManagerNode(transport(), dbs["manager"], trust=trust("manager"))
    agents = [
        AgentNode(
            transport(),
            dbs[name],
            policy=Policy(site_identifier=name),
            workdir=tmp_path / name,
            trust=trust(name),
        )
        for name in ("agent-1", "agent-2")
    ]
    nodes: list[Node] = [manager, *agents]
    for node in nodes:
        await node.transport.connect()
        await node.start()
    await manager.add_template(load_template_file(demo_template_paths()["test_simple"]))
    for agent in agents:
        for spec in load_job_types(DEMO_JOB_TYPES):
            await agent.add_job_type(spec)
    poisoner = transport()
    await poisoner.connect()
    client_transport = transport()
    await client_transport.connect()
    try:
        signer = keys["user"] if signed else None
        async with Client(client_transport, manager.key, signer=signer) as client:
            submitted = {}
            for number in range(WORKFLOWS):
                message = f"poisoned{number}"
                submitted[await client.submit("test_simple", {"start_message": message})] = message
                # Poison between the submissions, for every node, each kind once.
                kind = KINDS[number % len(KINDS)]
                for key in (manager.key, *(agent.key for agent in agents), FULFILLMENT_KEY):
                    poison = POISONS[kind]()
                    await poisoner.publish(key, poison.body, **poison.properties)
            sent_to_each = WORKFLOWS  # one poison per submission
            statuses = await asyncio.gather(
                *(client.wait(workflow_id, timeout=WAIT) for workflow_id in submitted)
            )
        for status, message in zip(statuses, submitted.values(), strict=True):
            assert status.state == "completed", status.reason
            assert [output.value for output in status.outputs] == [expected(message)]
        # Every node set aside each poison sent to it: agents get theirs twice (their
        # own key and the broadcast).
        await eventually(lambda: _dead_letters(manager) >= sent_to_each, "manager's poison")
        for agent in agents:
            await eventually(lambda a=agent: _dead_letters(a) >= 2 * sent_to_each, "agent's poison")
        assert _dead_letters(manager) == sent_to_each
        assert [_dead_letters(agent) for agent in agents] == [2 * sent_to_each] * 2
    finally:
        await client_transport.close()
        await poisoner.close()
        for node in reversed(nodes):
            await node.stop()
            await node.transport.close()
