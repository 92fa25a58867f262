"""Behaviour of the in-memory broker that the contract suite cannot see from outside."""

from __future__ import annotations

import asyncio
import logging

import pytest

from caroni.errors import TransportError
from caroni.transport import MemoryBroker, MemoryTransport, OutgoingMessage

from . import DEADLINE, Collector


@pytest.fixture
async def node() -> MemoryTransport:
    transport = MemoryTransport(MemoryBroker())
    await transport.connect()
    return transport


async def test_publish_needs_an_open_transport() -> None:
    transport = MemoryTransport(MemoryBroker())
    with pytest.raises(TransportError, match="not connected"):
        await transport.publish("k", b"")
    await transport.connect()
    await transport.publish("k", b"")
    await transport.close()
    with pytest.raises(TransportError):
        await transport.publish("k", b"")
    with pytest.raises(TransportError):
        await transport.publish_many([OutgoingMessage("k", b"")])
    with pytest.raises(TransportError):
        await transport.consume("q", ["k"])


async def test_unroutable_messages_are_dropped(node: MemoryTransport) -> None:
    await node.consume("q", ["a.*"])
    await node.publish("b.c", b"nowhere")
    assert node.broker.queue_depth("q") == 0


async def test_queue_keeps_messages_and_bindings_without_consumers(
    node: MemoryTransport,
) -> None:
    consumer = await node.consume("q", ["a.*", "b"])
    await consumer.close()
    await node.publish("a.x", b"1")
    await node.publish("b", b"2")
    await node.publish("c", b"3")
    assert node.broker.queue_names() == ["q"]
    assert node.broker.queue_depth("q") == 2


async def test_non_durable_queue_is_deleted_with_its_last_consumer(node: MemoryTransport) -> None:
    one = await node.consume("tmp", ["k"], durable=False)
    two = await node.consume("tmp", ["k"], durable=False)
    await one.close()
    assert "tmp" in node.broker.queue_names()
    await two.close()
    assert node.broker.queue_names() == []


async def test_prefetch_counts_deliveries_not_yet_iterated(node: MemoryTransport) -> None:
    await node.consume("q", ["k"], prefetch=2)
    await node.publish_many([OutgoingMessage("k", b"") for _ in range(5)])
    # Pushed to the consumer (even if nobody iterates it yet) count against prefetch.
    assert node.broker.queue_depth("q") == 3


async def test_prefetch_zero_means_unlimited(node: MemoryTransport) -> None:
    await node.consume("q", ["k"], prefetch=0)
    await node.publish_many([OutgoingMessage("k", b"") for _ in range(1000)])
    assert node.broker.queue_depth("q") == 0


async def test_negative_prefetch_is_refused(node: MemoryTransport) -> None:
    with pytest.raises(ValueError):
        await node.consume("q", ["k"], prefetch=-1)


async def test_round_robin_between_consumers(node: MemoryTransport) -> None:
    one = Collector(await node.consume("q", ["k"], prefetch=100), ack=True)
    two = Collector(await node.consume("q", ["k"], prefetch=100), ack=True)
    await node.publish_many([OutgoingMessage("k", b"", message_id=f"m{i}") for i in range(10)])
    first = await one.take(5)
    second = await two.take(5)
    assert [d.message_id for d in first] == [f"m{i}" for i in range(0, 10, 2)]
    assert [d.message_id for d in second] == [f"m{i}" for i in range(1, 10, 2)]


async def test_closing_returns_unacked_to_the_front_in_order(node: MemoryTransport) -> None:
    consumer = await node.consume("q", ["k"], prefetch=3)
    await node.publish_many([OutgoingMessage("k", b"", message_id=f"m{i}") for i in range(5)])
    iterator = aiter(consumer)
    taken = await anext(iterator)
    assert taken.message_id == "m0"
    await consumer.close()  # m0 was handed out, m1 and m2 were still buffered
    assert node.broker.queue_depth("q") == 5

    after = Collector(await node.consume("q", ["k"], prefetch=10), ack=True)
    deliveries = await after.take(5)
    assert [(d.message_id, d.redelivered) for d in deliveries] == [
        ("m0", True),
        ("m1", True),
        ("m2", True),
        ("m3", False),
        ("m4", False),
    ]


async def test_settling_twice_is_an_error(node: MemoryTransport) -> None:
    collector = Collector(await node.consume("q", ["k"]))
    await node.publish("k", b"")
    delivery = await collector.next()
    await delivery.ack()
    with pytest.raises(TransportError, match="already"):
        await delivery.ack()
    with pytest.raises(TransportError, match="already"):
        await delivery.reject()


async def test_ack_after_consumer_closed_is_logged_and_ignored(
    node: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = await node.consume("q", ["k"])
    await node.publish("k", b"", message_id="m")
    delivery = await anext(aiter(consumer))
    await consumer.close()
    with caplog.at_level(logging.WARNING, logger="caroni.transport.memory"):
        await delivery.ack()
    assert "ignoring ack" in caplog.text
    assert node.broker.queue_depth("q") == 1  # still there for the next consumer


async def test_closing_wakes_a_waiting_iterator(node: MemoryTransport) -> None:
    consumer = await node.consume("q", ["k"])
    collector = Collector(consumer)
    await asyncio.sleep(0)  # one loop turn: the collector task is now blocked waiting
    await node.close()
    await asyncio.wait_for(collector.finished.wait(), DEADLINE)
    assert collector.received == []


async def test_delete_queue_drops_messages_and_stops_consumers(node: MemoryTransport) -> None:
    consumer = await node.consume("q", ["k"], prefetch=1)
    collector = Collector(consumer)
    await node.publish_many([OutgoingMessage("k", b"") for _ in range(3)])
    await node.delete_queue("q")
    await asyncio.wait_for(collector.finished.wait(), DEADLINE)
    assert node.broker.queue_names() == []
    await node.publish("k", b"")  # no queue any more: dropped, no error


async def test_missing_message_id_gets_one(node: MemoryTransport) -> None:
    # Like aiormq, which fills an empty message_id, so both backends look the same.
    collector = Collector(await node.consume("q", ["k"]))
    await node.publish("k", b"")
    delivery = await collector.next()
    assert len(delivery.message_id) == 32


async def test_transports_on_one_broker_see_each_other() -> None:
    broker = MemoryBroker()
    manager, agent = MemoryTransport(broker), MemoryTransport(broker)
    await manager.connect()
    await agent.connect()
    requests = Collector(await agent.consume("agent", ["wf.agent.fulfillment"]), ack=True)
    replies = Collector(await manager.consume("manager", ["wf.manager.m"]), ack=True)

    await manager.publish("wf.agent.fulfillment", b"want", reply_to="wf.manager.m")
    request = await requests.next()
    await agent.publish(request.reply_to, b"offer", reply_to="wf.agent.a")
    reply = await replies.next()
    assert (reply.body, reply.reply_to) == (b"offer", "wf.agent.a")


async def test_many_messages_flow_without_polling(node: MemoryTransport) -> None:
    # 20k messages through a prefetch-limited consumer: with any polling interval in
    # the delivery path this would take minutes, with push delivery well under a second.
    collector = Collector(await node.consume("q", ["k"], prefetch=64), ack=True)
    count = 20_000
    await node.publish_many([OutgoingMessage("k", b"x") for _ in range(count)])
    deliveries = await collector.take(count)
    assert len(deliveries) == count


async def test_backlog_does_not_starve_other_tasks(node: MemoryTransport) -> None:
    consumer = await node.consume("q", ["k"], prefetch=10)
    await node.publish_many([OutgoingMessage("k", b"") for _ in range(1000)])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    handled = 0
    async for delivery in consumer:
        await delivery.ack()  # refills the buffer at once: never has to wait
        handled += 1
        if handled == 1000:
            break
    ticking.cancel()
    assert ticks >= 1000 // 16 - 1  # the ticker ran while the backlog was worked off
