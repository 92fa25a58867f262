"""Trusted keys have roles: over real RabbitMQ, with each node's own PostgreSQL
database, a submitter's key cannot act as an agent, and only a workflow's
submitter may cancel it by message."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.templates import load_template_file
from caroni.protocol import Opened, agent_key, new_message_id, pb, seal
from caroni.transport.amqp import AmqpSettings, AmqpTransport
from caroni.trust import NodeKey, TrustSettings
from tests.integration.test_trusted_nodes import (
    WAIT,
    at_least,
    identity,
    opened_parts,
    reasons,
    refused_types,
    trust_all,
)
from tests.processes import run_caroni
from tests.waiting import eventually

pytestmark = [pytest.mark.amqp, pytest.mark.postgres]


@dataclass
class RolesSite:
    amqp_url: str
    manager: ManagerNode
    agent: AgentNode
    transport: AmqpTransport  # for clients and the forger
    keys: dict[str, NodeKey]
    key_files: dict[str, Path]
    started: list[ManagerNode | AgentNode] = field(default_factory=list)

    async def start_agent(self) -> None:
        await self.agent.transport.connect()
        await self.agent.start()
        self.started.append(self.agent)
        for spec in load_job_types(DEMO_JOB_TYPES):
            await self.agent.add_job_type(spec)

    def client(self, key_name: str) -> Client:
        return Client(self.transport, self.manager.key, signer=self.keys[key_name])


@pytest.fixture
async def roles_site(
    tmp_path: Path, amqp_url: str, postgres_url_factory: Callable[[], str]
) -> AsyncIterator[RolesSite]:
    """A manager and an agent requiring signatures, every key trusted for its role:
    "user" and "user-b" are submitters, "agent-b" a second agent
    bound to a node of its own. The agent is started by the test (``start_agent``),
    so that a workflow can be held running while strangers try to cancel it."""
    names = ("manager", "agent", "user", "user-b", "agent-b")
    key_files = {name: tmp_path / f"{name}.key" for name in names}
    keys = {name: NodeKey.generate(path) for name, path in key_files.items()}
    manager_db, agent_db = postgres_url_factory(), postgres_url_factory()
    nodes = {
        "manager": identity(manager_db, "manager"),
        "agent": identity(agent_db, "agent"),
        "agent-b": uuid.uuid4(),
    }
    trust_all(manager_db, keys, nodes)
    trust_all(agent_db, keys, nodes)

    def amqp() -> AmqpTransport:
        return AmqpTransport(AmqpSettings(url=amqp_url))

    manager = ManagerNode(
        amqp(),
        manager_db,
        # No allowed_submitters list: what is checked here is the role and the
        # workflow's submitter key, not that list (unit tests cover it for cancels).
        trust=TrustSettings(key_file=key_files["manager"], require_signatures=True),
    )
    agent = AgentNode(
        amqp(),
        agent_db,
        policy=Policy(site_identifier="trusted-agent"),
        workdir=tmp_path / "jobs",
        trust=TrustSettings(key_file=key_files["agent"], require_signatures=True),
    )
    transport = amqp()
    site = RolesSite(amqp_url, manager, agent, transport, keys, key_files)
    await manager.transport.connect()
    await manager.start()
    site.started.append(manager)
    await manager.add_template(load_template_file(demo_template_paths()["test_simple"]))
    await transport.connect()
    try:
        yield site
    finally:
        await transport.close()
        for node in reversed(site.started):
            await node.stop()
            await node.transport.close()


def role_refusal(type_name: str, signer: str, role: str, may: str) -> str:
    who = f"{type_name} signed by {signer}, whose role is {role}"
    return f"{who}: a {role} sends to a manager only {may}"


SUBMITTER_MAY = "WorkFlowCancel, WorkFlowCreate, WorkFlowStatusRequest"


async def test_a_submitters_key_cannot_act_as_an_agent(roles_site: RolesSite) -> None:
    """The submitter "user" watches the broker and answers every request with an
    offer of its own (as an agent nobody bound), and reports every job (placed by
    offer or assigned under a claim) as completed with forged outputs in the real
    agent's name. Each of them is set aside for its role; the real agent runs every
    step and the result is the genuine one."""
    site = roles_site
    await site.start_agent()
    forger = site.keys["user"]
    fake_agent = uuid.uuid4()
    watch = await site.transport.consume("user-watches", ["#"], durable=False)

    forged: list[str] = []

    async def forge(to: str, message: object, reply_to: str) -> None:
        body = seal(message, message_id=new_message_id(), sender=fake_agent, signer=forger)  # type: ignore[arg-type]
        forged.append(type(message).__name__)
        await site.transport.publish(to, body, reply_to=reply_to)

    async def act_as_agent() -> None:
        async for delivery in watch:
            await delivery.ack()
            for opened in opened_parts(delivery.body):
                await answer_as_agent(opened, delivery.reply_to)

    async def answer_as_agent(opened: Opened, reply_to: str) -> None:
        message = opened.message
        if opened.type_name == "JobFulfillmentRequest":
            offer = pb.JobFulfillmentOffer(
                request_uuid=message.request_uuid,  # type: ignore[attr-defined]
                offer_uuid=uuid.uuid4().bytes,
                site=pb.Site(site_identifier="forged-agent", site_uuid=fake_agent.bytes),
            )
            await forge(reply_to, offer, agent_key(fake_agent))
        elif opened.type_name in ("JobAccepted", "JobAssignment"):
            job = message.job_uuid  # type: ignore[attr-defined]
            outputs = [pb.JobParameter(key=k, value="FORGED") for k in ("jobout", "outSB", "out")]
            data = pb.JobDataAvailable(job_uuid=job, parameters=outputs)
            await forge(site.manager.key, data, site.agent.key)
            done = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED)
            await forge(site.manager.key, done, site.agent.key)

    forging = asyncio.create_task(act_as_agent())
    try:
        async with site.client("user") as client:
            workflow_id = await client.submit("test_simple", {"start_message": "genuine"})
            status = await client.wait(workflow_id, timeout=WAIT)
        # An offer for each request, outputs and a completion for each job (with
        # claims, some steps are assigned without a request).
        await eventually(lambda: forged.count("JobStatusUpdate") >= 3, "every job forged")
        count = len(forged)
        refused = await eventually(at_least(site.manager, count), "the forged messages set aside")
    finally:
        forging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forging
        await watch.close()

    assert status.state == "completed", status.reason
    assert [o.value for o in status.outputs] == ["prependGENUINE append"]
    assert [(step.agent, step.attempts) for step in status.steps] == [("trusted-agent", 1)] * 3
    assert forged.count("JobDataAvailable") == forged.count("JobStatusUpdate") == 3
    assert set(refused) == {
        role_refusal(kind, "user", "submitter", SUBMITTER_MAY) for kind in set(forged)
    }
    assert refused_types(site.manager) == set(forged)


async def test_strangers_cannot_cancel_a_workflow_and_it_completes(roles_site: RolesSite) -> None:
    """An agent's key and another submitter's key each send a WorkFlowCancel for
    user's workflow while it waits for an agent: both are set aside with the reason,
    and once the agent comes the workflow completes."""
    site = roles_site
    async with site.client("user") as client:
        workflow_id = await client.submit("test_simple", {"start_message": "kept"})
        waiting = await client.status(workflow_id)
        assert waiting.state in ("running", "stalled"), waiting.reason
        for stranger in ("agent-b", "user-b"):
            async with site.client(stranger) as other:
                await other.cancel(workflow_id, f"{stranger} wants it gone")
        refused = await eventually(at_least(site.manager, 2), "both cancels set aside")
        assert (await client.status(workflow_id)).state in ("running", "stalled")
        await site.start_agent()
        status = await client.wait(workflow_id, timeout=WAIT)

    assert status.state == "completed", status.reason
    assert [o.value for o in status.outputs] == ["prependKEPT append"]
    assert refused == [
        "WorkFlowCancel signed by agent-b, whose role is agent: an agent sends to a manager "
        "only Claim, JobAccepted, JobAssignmentRefusal, JobDataAvailable, JobFinished, "
        "JobFulfillmentDecline, JobFulfillmentOffer, JobStatusUpdate",
        f"WorkFlowCancel for workflow {workflow_id.hex} signed by {site.keys['user-b'].key_id}, "
        f"not by the key that submitted it ({site.keys['user'].key_id})",
    ]
    assert refused_types(site.manager) == {"WorkFlowCancel"}


async def test_the_submitter_cancels_with_caroni_cancel_key(
    roles_site: RolesSite, tmp_path: Path
) -> None:
    """`caroni cancel --key` and `caroni status --key` sign as the submitter: the
    cancel is taken and the status answered; unsigned, the manager refuses both."""
    site = roles_site
    common = ["--manager", site.manager.key, "--amqp", site.amqp_url]
    user_key = ["--key", str(site.key_files["user"])]
    async with site.client("user") as client:
        workflow_id = await client.submit("test_simple", {"start_message": "stop"})
        assert (await client.status(workflow_id)).state in ("running", "stalled")

        unsigned = await asyncio.to_thread(
            run_caroni, ["cancel", workflow_id.hex, *common], cwd=tmp_path
        )
        assert unsigned.returncode == 0, unsigned.stderr  # sent; the manager sets it aside
        assert await eventually(at_least(site.manager, 1), "the unsigned cancel set aside") == [
            "unsigned message (this node requires signatures)"
        ]

        cancelled = await asyncio.to_thread(
            run_caroni,
            ["cancel", workflow_id.hex, *common, "--reason", "not needed", *user_key],
            cwd=tmp_path,
        )
        assert cancelled.returncode == 0, cancelled.stderr
        status = await client.wait(workflow_id, timeout=WAIT)
    assert status.state == "cancelled"
    assert status.reason == "not needed"

    shown = await asyncio.to_thread(
        run_caroni, ["status", workflow_id.hex, *common, *user_key], cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert "cancelled" in shown.stdout
    assert reasons(site.manager) == ["unsigned message (this node requires signatures)"]
