"""An agent node driven by a manager that speaks only the wire protocol.

The test plays a peer manager by hand over the in-process broker: it broadcasts
requests, accepts offers and sends data, the way any Caroni manager would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import Policy
from caroni.app import AgentNode
from caroni.protocol import (
    FULFILLMENT_KEY,
    new_message_id,
    node_key_id,
    open_envelope,
    pb,
    seal,
)
from caroni.store.tables import offers
from caroni.transport.base import Consumer
from caroni.transport.memory import MemoryBroker, MemoryTransport
from tests.waiting import eventually

MANAGER = "wf.manager.PEERPEERPEERPEERPEERPE"
WAIT = 60.0


class PeerManager:
    """Sends protocol messages to agents and collects what they answer."""

    def __init__(self, broker: MemoryBroker, key: str = MANAGER) -> None:
        self.key = key
        self.transport = MemoryTransport(broker)
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self._consumer: Consumer | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.transport.connect()
        self._consumer = await self.transport.consume(f"peer-{self.key}", [self.key])
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        async for delivery in self._consumer:
            await delivery.ack()
            self.inbox.put_nowait(open_envelope(delivery.body).message)

    async def stop(self) -> None:
        assert self._reader is not None and self._consumer is not None
        self._reader.cancel()
        await self._consumer.close()
        await self.transport.close()

    async def send(self, to: str, message: object) -> None:
        body = seal(message, message_id=new_message_id())  # type: ignore[arg-type]
        await self.transport.publish(to, body, reply_to=self.key)

    async def expect(self, kind: type, match=lambda m: True):  # type: ignore[no-untyped-def]
        """The next answer of ``kind`` satisfying ``match`` (others are kept for later)."""
        kept: list[object] = []
        try:
            while True:
                message = await asyncio.wait_for(self.inbox.get(), WAIT)
                if isinstance(message, kind) and match(message):
                    return message
                kept.append(message)
        finally:
            for message in kept:
                self.inbox.put_nowait(message)

    async def place(self, job_type: str, inputs: list[str]) -> tuple[bytes, str]:
        """Request, take the offer, and return (job uuid, agent key)."""
        request_uuid = uuid.uuid4().bytes
        await self.send(
            FULFILLMENT_KEY,
            pb.JobFulfillmentRequest(
                request_uuid=request_uuid,
                job_type_name=job_type,
                parameters=[pb.JobParameter(key=k) for k in inputs],
            ),
        )
        offer = await self.expect(pb.JobFulfillmentOffer, lambda m: m.request_uuid == request_uuid)
        agent_key = "wf.agent." + _key_id(offer.site.site_uuid)
        await self.send(
            agent_key,
            pb.JobFulfillmentOfferAccept(request_uuid=request_uuid, offer_uuid=offer.offer_uuid),
        )
        accepted = await self.expect(pb.JobAccepted, lambda m: m.offer_uuid == offer.offer_uuid)
        return accepted.job_uuid, agent_key


def _key_id(raw: bytes) -> str:
    return node_key_id(uuid.UUID(bytes=raw))


@pytest.fixture
async def one_slot_agent(tmp_path: Path) -> AsyncIterator[tuple[AgentNode, PeerManager, Path]]:
    broker = MemoryBroker()
    agent = AgentNode(
        MemoryTransport(broker),
        str(tmp_path / "agent.sqlite3"),
        policy=Policy(slots=1, site_identifier="solo"),
        workdir=tmp_path / "jobs",
    )
    await agent.transport.connect()
    await agent.start()
    order = tmp_path / "order"
    await agent.add_job_type(
        JobTypeSpec(
            "record",
            ("name",),
            ("out",),
            f'echo "$CARONI_ENV_name" >> \'{order}\'; printf \'{{"out": "done"}}\'',
        )
    )
    manager = PeerManager(broker)
    await manager.start()
    yield agent, manager, order
    await manager.stop()
    await agent.stop()
    await agent.transport.close()


async def test_a_job_waiting_for_data_does_not_hold_the_only_slot(one_slot_agent) -> None:  # type: ignore[no-untyped-def]
    agent, manager, order = one_slot_agent
    waiting, agent_key = await manager.place("record", ["name"])
    ready_jobs = [await manager.place("record", ["name"]) for _ in range(3)]
    for number, (job, key) in enumerate(ready_jobs):
        data = pb.JobDataAvailable(
            job_uuid=job, parameters=[pb.JobParameter(key="name", value=f"job{number}")]
        )
        await manager.send(key, data)
    for job, _ in ready_jobs:
        await manager.expect(
            pb.JobStatusUpdate,
            lambda m, job=job: m.job_uuid == job and m.job_status == pb.JOB_STATUS_COMPLETED,
        )
    # Ready jobs ran one at a time, in the order their inputs arrived.
    assert order.read_text().split() == ["job0", "job1", "job2"]
    await manager.send(agent_key, pb.JobStatusRequest(job_uuid=waiting))
    status = await manager.expect(pb.JobStatusUpdate, lambda m: m.job_uuid == waiting)
    assert status.job_status == pb.JOB_STATUS_PENDING


async def test_outputs_reach_the_owner_before_completed(one_slot_agent) -> None:  # type: ignore[no-untyped-def]
    _, manager, _ = one_slot_agent
    job, key = await manager.place("record", ["name"])
    await manager.send(
        key, pb.JobDataAvailable(job_uuid=job, parameters=[pb.JobParameter(key="name", value="x")])
    )
    data = await manager.expect(pb.JobDataAvailable, lambda m: m.job_uuid == job)
    assert [(p.key, p.value) for p in data.parameters] == [("out", "done")]
    done = await manager.expect(
        pb.JobStatusUpdate, lambda m: m.job_uuid == job and m.job_status == pb.JOB_STATUS_COMPLETED
    )
    assert done.job_uuid == job


async def test_only_the_owning_manager_may_send_data_or_kill(one_slot_agent) -> None:  # type: ignore[no-untyped-def]
    agent, manager, _ = one_slot_agent
    job, key = await manager.place("record", ["name"])
    stranger = MemoryTransport(manager.transport.broker)
    await stranger.connect()
    kill = seal(pb.JobKill(job_uuid=job, kill_info="hostile"), message_id=new_message_id())
    await stranger.publish(key, kill, reply_to="wf.manager.STRANGERSTRANGERSTRANG")
    await stranger.close()
    # The agent sets the kill aside; the job is untouched and answers its owner.
    await manager.send(key, pb.JobStatusRequest(job_uuid=job))
    status = await manager.expect(pb.JobStatusUpdate, lambda m: m.job_uuid == job)
    assert status.job_status == pb.JOB_STATUS_PENDING
    assert agent.node.counters["dead_lettered"] == 1


def _request(job_type: str = "record") -> pb.JobFulfillmentRequest:
    return pb.JobFulfillmentRequest(
        request_uuid=uuid.uuid4().bytes,
        job_type_name=job_type,
        parameters=[pb.JobParameter(key="name")],
    )


@asynccontextmanager
async def running_agent(
    tmp_path: Path, policy: Policy, spec: JobTypeSpec
) -> AsyncIterator[tuple[AgentNode, MemoryBroker]]:
    """A started agent serving ``spec`` on a broker of its own."""
    broker = MemoryBroker()
    agent = AgentNode(
        MemoryTransport(broker),
        str(tmp_path / "agent.sqlite3"),
        policy=policy,
        workdir=tmp_path / "jobs",
    )
    await agent.transport.connect()
    await agent.start()
    try:
        await agent.add_job_type(spec)
        yield agent, broker
    finally:
        await agent.stop()
        await agent.transport.close()


async def test_a_flood_from_one_manager_holds_at_most_the_cap_and_others_still_get_offers(
    tmp_path: Path,
) -> None:
    async with running_agent(
        tmp_path,
        Policy(max_offers_per_manager=5),
        JobTypeSpec("record", ("name",), ("out",), "true"),
    ) as (agent, broker):
        await _flood(agent, broker)


async def _flood(agent: AgentNode, broker: MemoryBroker) -> None:
    flooder = PeerManager(broker, "wf.manager.FLOODFLOODFLOODFLOODFL")
    other = PeerManager(broker)
    await flooder.start()
    await other.start()
    try:
        for _ in range(40):
            await flooder.send(FULFILLMENT_KEY, _request())
        answers = [
            await flooder.expect((pb.JobFulfillmentOffer, pb.JobFulfillmentDecline))
            for _ in range(40)
        ]
        offers = [a for a in answers if isinstance(a, pb.JobFulfillmentOffer)]
        declines = [a for a in answers if isinstance(a, pb.JobFulfillmentDecline)]
        assert len(offers) == 5
        assert {d.decline_message for d in declines} == {
            "too many open offers to this manager: 5 (limit 5 per manager)"
        }
        with agent.engine.connect() as conn:
            assert agent.role.store.open_offers(conn) == {flooder.key: 5}

        # Another manager is still served while the flooder's offers stand.
        await other.send(FULFILLMENT_KEY, _request())
        assert isinstance(
            await other.expect((pb.JobFulfillmentOffer, pb.JobFulfillmentDecline)),
            pb.JobFulfillmentOffer,
        )
        # The cap is on offers open at a time: one rejected makes room for one more.
        agent_key = "wf.agent." + _key_id(offers[0].site.site_uuid)
        reject = pb.JobFulfillmentOfferReject(
            request_uuid=offers[0].request_uuid, offer_uuid=offers[0].offer_uuid
        )
        await flooder.send(agent_key, reject)
        await eventually(
            lambda: _open_offers(agent).get(flooder.key) == 4, "the rejected offer closed"
        )
        await flooder.send(FULFILLMENT_KEY, _request())
        assert isinstance(
            await flooder.expect((pb.JobFulfillmentOffer, pb.JobFulfillmentDecline)),
            pb.JobFulfillmentOffer,
        )
    finally:
        await flooder.stop()
        await other.stop()


def _open_offers(agent: AgentNode) -> dict[str, int]:
    with agent.engine.connect() as conn:
        return agent.role.store.open_offers(conn)


async def test_an_idle_agent_runs_its_timers_rarely_and_an_offer_still_expires_in_time(
    tmp_path: Path,
) -> None:
    async with running_agent(
        tmp_path,
        Policy(site_identifier="idle", offer_ttl=0.3),
        JobTypeSpec("noop", ("x",), ("out",), "true"),
    ) as (agent, broker):
        manager = PeerManager(broker)
        await manager.start()
        try:
            await _idle_then_offer(agent, manager)
        finally:
            await manager.stop()


async def _idle_then_offer(agent: AgentNode, manager: PeerManager) -> None:
    ticks = 0
    tick = agent.role.tick

    def counting_tick(tx):  # type: ignore[no-untyped-def]
        nonlocal ticks
        ticks += 1
        return tick(tx)

    agent.role.tick = counting_tick  # type: ignore[method-assign]
    # With nothing to expire, no timer transaction every second (a window to see
    # that something does not happen, not a synchronisation).
    await asyncio.sleep(1.5)
    assert ticks <= 1
    request = pb.JobFulfillmentRequest(
        request_uuid=uuid.uuid4().bytes,
        job_type_name="noop",
        parameters=[pb.JobParameter(key="x")],
    )
    await manager.send(FULFILLMENT_KEY, request)
    offer = await manager.expect(pb.JobFulfillmentOffer)
    offer_uuid = uuid.UUID(bytes=offer.offer_uuid).hex

    def state() -> str:
        with agent.engine.connect() as conn:
            query = select(offers.c.state).where(offers.c.offer_uuid == offer_uuid)
            return str(conn.execute(query).scalar_one())

    # The new offer woke the timers: it expires after its 0.3 s, not at the next
    # idle pass 30 s away.
    await eventually(lambda: state() == "expired", "the offer expired", timeout=5.0)
