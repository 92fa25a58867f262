"""Nodes that require signatures: real workflows run; forged, tampered, replayed and
unsigned messages are set aside and the workflow is unharmed. Every node's key is
bound to its node, so one trusted node cannot speak for another either."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
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
from caroni.key_roles import KeyRole
from caroni.manager.templates import load_template_file
from caroni.protocol import Opened, new_message_id, open_envelope, pb, seal
from caroni.protocol.bundles import BUNDLE, parts_of
from caroni.store import create_db_engine, migrate, node_uuid
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
    nodes: dict[str, uuid.UUID]  # the node each bound key speaks for


def identity(db: str, role: str) -> uuid.UUID:
    """The node id a node of ``role`` will have in ``db`` (created now, kept on start)."""
    engine = create_db_engine(db)
    migrate(engine)
    found = node_uuid(engine, role)
    engine.dispose()
    return found


# The role of each key the test sites trust, by name.
ROLES = {
    "manager": KeyRole.MANAGER,
    "agent": KeyRole.AGENT,
    "agent-b": KeyRole.AGENT,
    "user": KeyRole.SUBMITTER,
    "user-b": KeyRole.SUBMITTER,
}


def trust_all(db: str, keys: dict[str, NodeKey], nodes: dict[str, uuid.UUID]) -> None:
    engine = create_db_engine(db)
    migrate(engine)
    with engine.begin() as conn:
        for name, key in keys.items():
            trust_key(conn, name, key.key_id, time.time(), nodes.get(name), role=ROLES[name])
    engine.dispose()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[TrustedSite]:
    # "agent-b" is a second agent both nodes trust, seen only through what it sends.
    keys = {
        name: NodeKey.generate(tmp_path / f"{name}.key")
        for name in ("manager", "agent", "user", "agent-b")
    }
    manager_db, agent_db = str(tmp_path / "manager.sqlite3"), str(tmp_path / "agent.sqlite3")
    nodes = {
        "manager": identity(manager_db, "manager"),
        "agent": identity(agent_db, "agent"),
        "agent-b": uuid.uuid4(),
    }  # the user's key stays unbound: each client run is a new node
    trust_all(manager_db, keys, nodes)
    trust_all(agent_db, keys, nodes)
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
        assert (manager.node_uuid, agent.node_uuid) == (nodes["manager"], nodes["agent"])
        yield TrustedSite(manager, agent, client, broker, keys, nodes)
    await client_transport.close()
    for node in (agent, manager):
        await node.stop()
        await node.transport.close()


def reasons(node: ManagerNode | AgentNode) -> list[str]:
    with node.engine.connect() as conn:
        return list(
            conn.execute(select(dead_letters.c.reason).order_by(dead_letters.c.id)).scalars()
        )


def refused_types(node: ManagerNode | AgentNode) -> set[str]:
    with node.engine.connect() as conn:
        return set(conn.execute(select(dead_letters.c.type_name)).scalars())


def at_least(node: ManagerNode | AgentNode, count: int) -> Callable[[], list[str]]:
    """A check for ``eventually``: the node's dead-letter reasons once there are ``count``."""

    def check() -> list[str]:
        found = reasons(node)
        return found if len(found) >= count else []

    return check


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


def opened_parts(body: bytes) -> list[Opened]:
    """What a watcher of the broker reads in a body: a bundle's parts, or the one message."""
    opened = open_envelope(body)
    if opened.type_name != BUNDLE:
        return [opened]
    return [open_envelope(part) for part in parts_of(opened)]


async def test_a_trusted_agent_cannot_speak_for_another(site: TrustedSite) -> None:
    """agent-b, trusted but bound to its own node, watches the broker and answers in
    the name of the real agent (its reply_to, even its sender id): offers for every
    request, a failure, forged outputs and a kill for every job. All are set aside
    with the reason, and the workflow completes as if they had never been sent."""
    forger, forger_node = site.keys["agent-b"], site.nodes["agent-b"]
    victim, victim_node = site.agent.key, site.agent.node_uuid
    transport = MemoryTransport(site.broker)
    await transport.connect()
    watch = await transport.consume("agent-b-watches", ["#"], durable=False)

    forged: list[str] = []

    async def forge(to: str, message: object, reply_to: str, sender: uuid.UUID) -> None:
        body = seal(message, message_id=new_message_id(), sender=sender, signer=forger)  # type: ignore[arg-type]
        await transport.publish(to, body, reply_to=reply_to)
        forged.append(type(message).__name__)

    async def impersonate() -> None:
        async for delivery in watch:
            await delivery.ack()
            for opened in opened_parts(delivery.body):
                await answer_as_victim(opened, delivery.reply_to)

    async def answer_as_victim(opened: Opened, reply_to: str) -> None:
        message = opened.message
        if opened.type_name == "JobFulfillmentRequest":
            offer = pb.JobFulfillmentOffer(
                request_uuid=message.request_uuid,  # type: ignore[attr-defined]
                offer_uuid=uuid.uuid4().bytes,
                site=pb.Site(site_identifier="trusted-agent", site_uuid=victim_node.bytes),
            )
            await forge(reply_to, offer, victim, forger_node)
        elif opened.type_name in ("JobAccepted", "JobAssignment"):
            job = message.job_uuid  # type: ignore[attr-defined]
            failed = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_FAILED)
            await forge(site.manager.key, failed, victim, victim_node)
            outputs = [pb.JobParameter(key=k, value="FORGED") for k in ("jobout", "outSB", "out")]
            data = pb.JobDataAvailable(job_uuid=job, parameters=outputs)
            await forge(site.manager.key, data, victim, forger_node)
            kill = pb.JobKill(job_uuid=job, kill_info="forged")
            await forge(victim, kill, site.manager.key, site.manager.node_uuid)

    impersonator = asyncio.create_task(impersonate())
    try:
        workflow_id = await site.client.submit("test_simple", {"start_message": "genuine"})
        status = await site.client.wait(workflow_id, timeout=WAIT)
        # A forged offer for each request, and a failure and outputs for each job,
        # placed by offer or assigned under a claim.
        await eventually(lambda: forged.count("JobKill") >= 3, "every job forged")
        to_manager = len(forged) - forged.count("JobKill")
        refused = await eventually(
            at_least(site.manager, to_manager), "the manager to set aside agent-b's messages"
        )
        refused_kills = await eventually(
            at_least(site.agent, 3), "the agent to set aside agent-b's kills"
        )
    finally:
        impersonator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await impersonator
        await watch.close()
        await transport.close()

    assert status.state == "completed", status.reason
    assert [o.value for o in status.outputs] == ["prependGENUINE append"]
    assert [step.attempts for step in status.steps] == [1, 1, 1]
    # (A request rebroadcast on a slow machine would only add more of the same.)
    assert set(refused) == {
        f"signed by agent-b but claims to be node {victim_node} "
        f"(reply_to {victim!r}) bound to agent"
    }
    assert refused_types(site.manager) == {
        "JobFulfillmentOffer",
        "JobStatusUpdate",
        "JobDataAvailable",
    }
    # Its role refuses them even before its binding would.
    assert set(refused_kills) == {
        "JobKill signed by agent-b, whose role is agent: an agent sends nothing to an agent"
    }
    assert refused_types(site.agent) == {"JobKill"}
