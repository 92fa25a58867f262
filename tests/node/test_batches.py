"""The service shell applies deliveries in batches: one transaction, a few bulk
statements, one read and write per aggregate. These tests check that batching
changes nothing a handler or a peer can see: every message is applied once, a bad
one costs only itself, every outgoing message is published once and its outbox
row goes away, and the traffic log files each message under its own subject.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from sqlalchemy import Engine, func, insert, select

from caroni.node import outbox as outbox_module
from caroni.node.runtime import Node
from caroni.protocol import new_message_id, open_envelope, pb, seal
from caroni.store.tables import dead_letters, message_log, outbox
from caroni.transport.base import Delivery
from caroni.transport.memory import MemoryTransport
from tests.node.echo import BAD, KEY, PEER, QUEUE, UNWRITABLE, Echo, count_rows, request
from tests.waiting import eventually


async def test_a_batch_applies_each_message_once_and_sets_aside_only_the_bad_one(
    node: Node, transport: MemoryTransport, engine: Engine
) -> None:
    replies: list[Delivery] = []
    peer = await transport.consume("peer-queue", [PEER])
    await (await transport.consume(QUEUE, [KEY])).close()  # queue and binding, no consumer
    jobs = [uuid.uuid4().bytes for _ in range(150)]
    repeated = new_message_id()
    for number, job in enumerate(jobs):
        await request(transport, job, repeated if number == 0 else new_message_id())
        if number == 70:
            await request(transport, BAD, new_message_id())
    await request(transport, jobs[0], repeated)  # a redelivery of the first
    await node.start()  # the whole backlog waits: full batches from the start

    async def collect() -> None:
        async for delivery in peer:
            replies.append(delivery)
            await delivery.ack()
            if len(replies) == len(jobs):
                return

    await eventually(lambda: node.counters["handled"] == len(jobs), "every request handled")
    await collect()
    answered = [open_envelope(d.body).message.job_uuid for d in replies]
    assert sorted(answered) == sorted(jobs), "each request answered exactly once"
    assert node.counters["dead_lettered"] == 1
    assert node.counters["duplicates"] == 1
    with engine.connect() as conn:
        reasons = list(conn.execute(select(dead_letters.c.reason)).scalars())
        assert reasons == ["this job is refused"]
        # Each message is filed under its own job, in and out.
        rows = conn.execute(select(message_log.c.subject, message_log.c.summary)).all()
    assert len(rows) == 2 * len(jobs)
    for subject, summary in rows:
        named = base64.b64decode(json.loads(summary)["jobUuid"])
        assert uuid.UUID(hex=subject).bytes == named
    role = node.role
    assert isinstance(role, Echo)
    # Batches were applied together (more than one message per transaction), and the
    # tallies written once per transaction add up to each message once, although
    # the batch holding the bad message was applied twice (together, then alone).
    assert max(role.tallies) > 1
    assert sum(role.tallies) == len(jobs)
    await eventually(
        lambda: count_rows(engine, select(func.count()).select_from(outbox)) == 0,
        "published rows deleted",
    )
    await peer.close()


async def test_rows_a_previous_run_left_in_the_outbox_are_published_at_start(
    node: Node, transport: MemoryTransport, engine: Engine
) -> None:
    peer = await transport.consume("peer-queue", [PEER])
    left = [new_message_id() for _ in range(3)]
    with engine.begin() as conn:
        for message_id in left:
            body = seal(pb.JobStatusRequest(job_uuid=uuid.uuid4().bytes), message_id=message_id)
            conn.execute(
                insert(outbox).values(
                    routing_key=PEER, body=body, reply_to=KEY, message_id=message_id, created_at=0
                )
            )
    await node.start()
    seen: list[str] = []
    async for delivery in peer:
        seen.append(open_envelope(delivery.body).message_id)
        await delivery.ack()
        if len(seen) == len(left):
            break
    assert seen == left, "published once each, oldest first"
    await eventually(
        lambda: count_rows(engine, select(func.count()).select_from(outbox)) == 0,
        "published rows deleted",
    )
    await peer.close()


async def test_rows_another_process_left_behind_are_published_while_running(
    node: Node, transport: MemoryTransport, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica sharing the database died after committing, before publishing:
    a running node publishes such stale rows (and leaves fresh ones to their writer)."""
    monkeypatch.setattr(outbox_module, "STALE_OUTBOX_INTERVAL", 0.1)
    peer = await transport.consume("peer-queue", [PEER])
    await node.start()
    now = time.time()
    stale, fresh = new_message_id(), new_message_id()
    with engine.begin() as conn:
        for message_id, created_at in (
            (fresh, now),
            (stale, now - 2 * outbox_module.STALE_OUTBOX_AGE),
        ):
            body = seal(pb.JobStatusRequest(job_uuid=uuid.uuid4().bytes), message_id=message_id)
            conn.execute(
                insert(outbox).values(
                    routing_key=PEER,
                    body=body,
                    reply_to=KEY,
                    message_id=message_id,
                    created_at=created_at,
                )
            )
    async for delivery in peer:
        assert open_envelope(delivery.body).message_id == stale
        await delivery.ack()
        break
    with engine.connect() as conn:
        left = list(conn.execute(select(outbox.c.message_id)).scalars())
    assert fresh in left, "a fresh row is its writer's to publish"
    await peer.close()


async def test_a_write_back_that_fails_costs_only_its_own_message(
    node: Node, transport: MemoryTransport, engine: Engine
) -> None:
    """A role's write-back failing (as when another process changed its aggregate)
    rolls the batch back; applied again one by one, only that message is set aside."""
    peer = await transport.consume("peer-queue", [PEER])
    await (await transport.consume(QUEUE, [KEY])).close()
    jobs = [uuid.uuid4().bytes for _ in range(20)]
    for number, job in enumerate(jobs):
        await request(transport, job, new_message_id())
        if number == 10:
            await request(transport, UNWRITABLE, new_message_id())
    await node.start()
    answered = []
    async for delivery in peer:
        answered.append(open_envelope(delivery.body).message.job_uuid)
        await delivery.ack()
        if len(answered) == len(jobs):
            break
    assert sorted(answered) == sorted(jobs)
    await eventually(lambda: node.counters["dead_lettered"] == 1, "the one set aside")
    with engine.connect() as conn:
        reasons = list(conn.execute(select(dead_letters.c.reason)).scalars())
    assert len(reasons) == 1 and "the aggregate changed under us" in reasons[0]
    await peer.close()
