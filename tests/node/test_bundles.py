"""Bundles between our nodes: what one node publishes at once to a peer that reads
bundles travels as one broker message, and the receiver applies its parts in one
transaction, each part as if it had come alone (refused, set aside or dropped as a
duplicate on its own)."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, select

from caroni.node.runtime import Node
from caroni.protocol import new_message_id, open_envelope, pb, seal
from caroni.protocol.bundles import BUNDLE, parts_of, seal_bundle
from caroni.protocol.extensions import BUNDLES
from caroni.store.tables import dead_letters
from caroni.transport.base import Consumer
from caroni.transport.memory import MemoryTransport
from tests.node.echo import BAD, KEY, PEER, QUEUE, Echo
from tests.waiting import eventually


def _status_request(job_uuid: bytes, *, reads_bundles: bool = True) -> bytes:
    extensions = [BUNDLES] if reads_bundles else []
    return seal(
        pb.JobStatusRequest(job_uuid=job_uuid),
        message_id=new_message_id(),
        extensions=extensions,
    )


async def _send(transport: MemoryTransport, parts: list[bytes]) -> None:
    """Publish ``parts`` to the node in one bundle, from PEER (the node's queue is
    declared first, so that it keeps the bundle until the node starts)."""
    await (await transport.consume(QUEUE, [KEY])).close()
    await transport.publish(KEY, seal_bundle(parts), reply_to=PEER)


async def _take(consumer: Consumer, count: int) -> list[bytes]:
    """The bodies of the next ``count`` deliveries."""
    bodies = []
    async for delivery in consumer:
        bodies.append(delivery.body)
        await delivery.ack()
        if len(bodies) == count:
            break
    return bodies


async def test_a_bundle_is_applied_in_one_transaction(
    node: Node, transport: MemoryTransport
) -> None:
    jobs = [uuid.uuid4().bytes for _ in range(20)]
    await _send(transport, [_status_request(job) for job in jobs])
    await node.start()
    await eventually(lambda: node.counters["handled"] == len(jobs), "every part handled")
    assert node.counters["bundles_received"] == 1
    assert isinstance(node.role, Echo)
    assert node.role.tallies == [len(jobs)], "one transaction for the whole bundle"


async def test_each_part_is_refused_set_aside_or_dropped_on_its_own(
    node: Node, transport: MemoryTransport, engine: Engine
) -> None:
    peer = await transport.consume("peer-queue", [PEER])
    jobs = [uuid.uuid4().bytes for _ in range(5)]
    parts = [_status_request(job) for job in jobs]
    nested = seal_bundle([_status_request(uuid.uuid4().bytes)])
    bad_parts = [_status_request(BAD), b"\xff not an envelope", nested]
    bundle = parts[:3] + bad_parts + parts[3:] + [parts[0]]
    await _send(transport, bundle)
    await node.start()
    await eventually(lambda: node.counters["dead_lettered"] == len(bad_parts), "bad parts aside")
    assert node.counters["handled"] == len(jobs)
    assert node.counters["duplicates"] == 1, "the part sent twice"
    with engine.connect() as conn:
        aside = conn.execute(select(dead_letters.c.reason, dead_letters.c.body)).all()
    reasons = sorted(reason for reason, _ in aside)
    assert reasons[0] == "cannot open envelope: a bundle inside a bundle"
    assert reasons[1].startswith("cannot open envelope: body is not a CaroniEnvelope")
    assert reasons[2] == "this job is refused"
    # Each dead letter keeps its own part, not the whole bundle.
    assert sorted(body for _, body in aside) == sorted(bad_parts)
    answers = [open_envelope(body) for body in await _take(peer, 1)]
    answered = [open_envelope(p).message.job_uuid for a in answers for p in parts_of(a)]
    assert sorted(answered) == sorted(jobs), "every good part answered once"

    # The same bundle again (a redelivery): every part with a message id is a
    # duplicate, the refused one too; those without one are set aside again.
    await _send(transport, bundle)
    await eventually(lambda: node.counters["dead_lettered"] == len(bad_parts) + 2, "set aside")
    assert node.counters["duplicates"] == 1 + len(jobs) + 1 + 1
    assert node.counters["handled"] == len(jobs)
    await peer.close()


async def test_replies_to_a_peer_that_reads_bundles_go_in_one(
    node: Node, transport: MemoryTransport
) -> None:
    peer = await transport.consume("peer-queue", [PEER])
    jobs = [uuid.uuid4().bytes for _ in range(10)]
    await _send(transport, [_status_request(job) for job in jobs])
    await node.start()
    (body,) = await _take(peer, 1)
    bundle = open_envelope(body)
    assert bundle.type_name == BUNDLE
    replies = [open_envelope(part) for part in parts_of(bundle)]
    assert [reply.message.job_uuid for reply in replies] == jobs, "in the order sent"
    assert all(reply.message_id for reply in replies), "each part keeps its message id"
    assert node.counters["bundles_published"] == 1
    await eventually(lambda: node.counters["published"] == len(jobs), "every reply confirmed")

    # The peer restarted as a version that does not read bundles: from its first
    # message on, it gets one message at a time.
    old = [uuid.uuid4().bytes for _ in range(3)]
    parts = [_status_request(job, reads_bundles=False) for job in old]
    await _send(transport, parts)
    singles = [open_envelope(body) for body in await _take(peer, len(old))]
    assert [single.type_name for single in singles] == ["JobStatusUpdate"] * len(old)
    assert node.counters["bundles_published"] == 1
    await peer.close()


async def test_a_node_that_speaks_only_the_shared_protocol_never_bundles(
    engine: Engine, transport: MemoryTransport
) -> None:
    node = Node(
        Echo(),
        engine,
        transport,
        node_uuid=uuid.uuid4(),
        own_key=KEY,
        queue_name=QUEUE,
        speaks=frozenset(),
    )
    peer = await transport.consume("peer-queue", [PEER])
    jobs = [uuid.uuid4().bytes for _ in range(4)]
    await _send(transport, [_status_request(job) for job in jobs])
    await node.start()
    try:
        replies = [open_envelope(body) for body in await _take(peer, len(jobs))]
        assert sorted(reply.message.job_uuid for reply in replies) == sorted(jobs)
        assert node.counters["bundles_published"] == 0
    finally:
        await node.stop()
        await peer.close()
