"""Nodes that require signatures: real workflows run; forged, tampered, replayed and
unsigned messages are set aside and the workflow is unharmed."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.templates import load_template_file
from caroni.protocol import new_message_id, pb, seal
from caroni.store import create_db_engine, migrate
from caroni.store.tables import dead_letters, jobs
from caroni.transport.memory import MemoryBroker, MemoryTransport
from caroni.trust import NodeKey, TrustSettings, trust_key
from tests.waiting import eventually

WAIT = 120.0


@dataclass
class TrustedSite:
    manager: ManagerNode
    agent: AgentNode
    client: Client
    broker: MemoryBroker
    keys: dict[str, NodeKey]


def trust_all(db: str, keys: dict[str, NodeKey]) -> None:
    engine = create_db_engine(db)
    migrate(engine)
    with engine.begin() as conn:
        for name, key in keys.items():
            trust_key(conn, name, key.key_id, time.time())
    engine.dispose()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[TrustedSite]:
    keys = {
        name: NodeKey.generate(tmp_path / f"{name}.key") for name in ("manager", "agent", "user")
    }
    manager_db, agent_db = str(tmp_path / "manager.sqlite3"), str(tmp_path / "agent.sqlite3")
    trust_all(manager_db, keys)
    trust_all(agent_db, keys)
    broker = MemoryBroker()
    manager = ManagerNode(
        MemoryTransport(broker),
        manager_db,
        trust=TrustSettings(
            key_file=tmp_path / "manager.key",
            require_signatures=True,
            allowed_submitters=frozenset({"user"}),
        ),
    )
    agent = AgentNode(
        MemoryTransport(broker),
        agent_db,
        policy=Policy(site_identifier="trusted-agent"),
        workdir=tmp_path / "jobs",
        trust=TrustSettings(key_file=tmp_path / "agent.key", require_signatures=True),
    )
    for node in (manager, agent):
        await node.transport.connect()
        await node.start()
    await manager.add_template(load_template_file(demo_template_paths()["test_simple"]))
    for spec in load_job_types(DEMO_JOB_TYPES):
        await agent.add_job_type(spec)
    client_transport = MemoryTransport(broker)
    await client_transport.connect()
    async with Client(client_transport, manager.key, signer=keys["user"]) as client:
        yield TrustedSite(manager, agent, client, broker, keys)
    await client_transport.close()
    for node in (agent, manager):
        await node.stop()
        await node.transport.close()


def reasons(node: ManagerNode | AgentNode) -> list[str]:
    with node.engine.connect() as conn:
        return list(
            conn.execute(select(dead_letters.c.reason).order_by(dead_letters.c.id)).scalars()
        )


async def test_signed_nodes_run_a_workflow(site: TrustedSite) -> None:
    workflow_id = await site.client.submit("test_simple", {"start_message": "signed"})
    status = await site.client.wait(workflow_id, timeout=WAIT)
    assert status.state == "completed", status.reason
    assert [o.value for o in status.outputs] == ["prependSIGNED append"]
    assert reasons(site.manager) == [] and reasons(site.agent) == []


async def test_forged_tampered_replayed_and_unsigned_messages_are_set_aside(
    site: TrustedSite, tmp_path: Path
) -> None:
    workflow_id = await site.client.submit("test_simple", {"start_message": "target"})
    status = await site.client.wait(workflow_id, timeout=WAIT)
    assert status.state == "completed"
    # A job uuid of that workflow, as an attacker on the broker could see it.
    with site.agent.engine.connect() as conn:
        job_uuid = uuid.UUID(hex=conn.execute(select(jobs.c.job_uuid)).scalars().first())
    attacker = NodeKey.generate(tmp_path / "attacker.key")
    failed = pb.JobStatusUpdate(job_uuid=job_uuid.bytes, job_status=pb.JOB_STATUS_FAILED)
    forged = seal(failed, message_id=new_message_id(), signer=attacker)
    genuine = seal(failed, message_id=new_message_id(), signer=site.keys["agent"])
    envelope = pb.CaroniEnvelope()
    envelope.ParseFromString(genuine)
    envelope.payload.value = pb.JobStatusUpdate(
        job_uuid=job_uuid.bytes, job_status=pb.JOB_STATUS_RUNNING
    ).SerializeToString()
    tampered = envelope.SerializeToString()
    unsigned = seal(failed, message_id=new_message_id())
    stranger_create = seal(
        pb.WorkFlowCreate(template_name="test_simple"),
        message_id=new_message_id(),
        signer=site.keys["agent"],
    )
    transport = MemoryTransport(site.broker)
    await transport.connect()
    for body in (forged, tampered, unsigned, genuine, genuine, stranger_create):
        await transport.publish(site.manager.key, body, reply_to=site.agent.key)
    await transport.close()

    found = await eventually(
        lambda: len(reasons(site.manager)) >= 5 and reasons(site.manager), "dead letters"
    )
    assert found[0].startswith("unknown signer")
    assert found[1].startswith("bad signature")
    assert found[2].startswith("unsigned message")
    assert found[3].startswith("replay")  # the genuine one itself was applied, harmlessly late
    assert found[4] == "WorkFlowCreate from a submitter that is not allowed"
    status = await site.client.status(workflow_id)
    assert status.state == "completed"
    assert [o.value for o in status.outputs] == ["prependTARGET append"]
