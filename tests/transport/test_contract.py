"""The transport contract: one suite, run against every backend.

Whatever a node may rely on is tested here, so that swapping the in-memory broker for
RabbitMQ (or back) changes nothing but speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from caroni.errors import TransportError
from caroni.transport import (
    AmqpSettings,
    AmqpTransport,
    Delivery,
    MemoryBroker,
    MemoryTransport,
    OutgoingMessage,
    Transport,
)

from . import Collector, take_from

TransportFactory = Callable[[], Awaitable[Transport]]


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
async def transport_factory(request: pytest.FixtureRequest) -> AsyncIterator[TransportFactory]:
    """A callable making connected transports that share one broker (one per node)."""
    make: Callable[[], Transport]
    if request.param == "memory":
        broker = MemoryBroker()

        def make() -> Transport:
            return MemoryTransport(broker)

    else:
        url: str = request.getfixturevalue("amqp_url")

        def make() -> Transport:
            return AmqpTransport(AmqpSettings(url=url))

    made: list[Transport] = []

    async def factory() -> Transport:
        transport = make()
        await transport.connect()
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        await transport.close()


async def test_round_trip_keeps_body_and_properties(transport_factory: TransportFactory) -> None:
    sender = await transport_factory()
    receiver = await transport_factory()
    collector = Collector(await receiver.consume("node-b", ["wf.agent.b"]))
    bodies = [b"\x00\x01binary\xff\xfe", b"", bytes(range(256)) * 4096]  # last: 1 MiB

    for number, body in enumerate(bodies):
        await sender.publish("wf.agent.b", body, reply_to="wf.manager.a", message_id=f"id-{number}")

    for number, body in enumerate(bodies):
        delivery = await collector.next()
        assert delivery.body == body
        assert delivery.routing_key == "wf.agent.b"
        assert delivery.reply_to == "wf.manager.a"
        assert delivery.message_id == f"id-{number}"
        assert delivery.redelivered is False
        await delivery.ack()


async def test_connect_and_close_are_idempotent(transport_factory: TransportFactory) -> None:
    transport = await transport_factory()
    await transport.connect()
    await transport.close()
    await transport.close()


async def test_overlong_routing_key_is_refused(transport_factory: TransportFactory) -> None:
    node = await transport_factory()
    with pytest.raises(TransportError, match="cannot publish"):
        await node.publish("k" * 256, b"")
    await node.publish("k" * 255, b"")  # the limit itself is fine


async def test_topic_bindings_route_only_where_they_match(
    transport_factory: TransportFactory,
) -> None:
    node = await transport_factory()
    # Each queue is also bound to "end": published last, it marks the end of what the
    # queue will ever get from this test (a queue keeps publish order).
    bindings = {
        "q.star": ["wf.agent.*"],
        "q.hash": ["wf.#"],
        "q.exact": ["wf.agent.fulfillment"],
        "q.none": ["x.y"],
        "q.several": ["wf.agent.*", "wf.#", "wf.agent.fulfillment"],
    }
    collectors = {
        name: Collector(await node.consume(name, [*patterns, "end"]), ack=True)
        for name, patterns in bindings.items()
    }
    keys = ["wf.agent.fulfillment", "wf.agent.abc", "wf.manager.m1", "wf", "wf.agent.a.b"]
    for key in [*keys, "end"]:
        await node.publish(key, key.encode(), message_id=key)

    got = {
        name: [d.routing_key for d in await collector.until(lambda d: d.routing_key == "end")]
        for name, collector in collectors.items()
    }
    assert got == {
        "q.star": ["wf.agent.fulfillment", "wf.agent.abc", "end"],
        "q.hash": [*keys, "end"],
        "q.exact": ["wf.agent.fulfillment", "end"],
        "q.none": ["end"],
        "q.several": [*keys, "end"],  # several matching bindings, still one copy
    }


async def test_message_published_while_consumer_down_waits(
    transport_factory: TransportFactory,
) -> None:
    sender = await transport_factory()
    node = await transport_factory()
    await node.consume("node-down", ["wf.agent.down"])
    await node.close()  # the node goes away; its queue and binding stay

    await sender.publish("wf.agent.down", b"while you were out", message_id="late")

    revived = await transport_factory()
    delivery = await Collector(await revived.consume("node-down", ["wf.agent.down"])).next()
    assert (delivery.body, delivery.message_id) == (b"while you were out", "late")
    await delivery.ack()


async def test_non_durable_queue_goes_with_its_consumer(
    transport_factory: TransportFactory,
) -> None:
    node = await transport_factory()
    consumer = await node.consume("client-1", ["wf.client.1", "end"], durable=False)
    await consumer.close()
    await node.publish("wf.client.1", b"nobody hears this", message_id="lost")

    collector = Collector(await node.consume("client-1", ["end"], durable=False))
    await node.publish("end", b"", message_id="end")
    delivery = await collector.next()
    assert delivery.message_id == "end"  # the earlier message went with the old queue


async def test_redeclaring_a_queue_with_other_durability_is_refused(
    transport_factory: TransportFactory,
) -> None:
    node = await transport_factory()
    collector = Collector(await node.consume("q", ["k"]))
    with pytest.raises(TransportError, match="durable"):
        await node.consume("q", ["k"], durable=False)
    # The transport and its consumer are still usable afterwards.
    await node.publish("k", b"still fine")
    assert (await collector.next()).body == b"still fine"


@pytest.mark.parametrize("how", ["consumer closes", "node dies"])
async def test_unacked_delivery_is_redelivered(
    transport_factory: TransportFactory, how: str
) -> None:
    sender = await transport_factory()
    node = await transport_factory()
    consumer = await node.consume("workers", ["work"], prefetch=10)
    collector = Collector(consumer)
    await sender.publish("work", b"job", message_id="job-1", reply_to="wf.manager.m")
    taken = await collector.next()
    assert taken.redelivered is False

    if how == "consumer closes":
        await consumer.close()
    else:
        await node.close()
    # The consumer is gone; acking its stale delivery must not raise.
    await taken.ack()

    successor = await transport_factory()
    delivery = await Collector(await successor.consume("workers", ["work"])).next()
    assert (delivery.message_id, delivery.body, delivery.reply_to) == (
        "job-1",
        b"job",
        "wf.manager.m",
    )
    assert delivery.redelivered is True
    await delivery.ack()


async def test_reject_requeue_redelivers_and_reject_drop_drops(
    transport_factory: TransportFactory,
) -> None:
    node = await transport_factory()
    collector = Collector(await node.consume("rejects", ["r"]))
    await node.publish("r", b"first", message_id="m1")

    delivery = await collector.next()
    assert (delivery.message_id, delivery.redelivered) == ("m1", False)
    await delivery.reject(requeue=True)

    again = await collector.next()
    assert (again.message_id, again.redelivered) == ("m1", True)
    await again.reject(requeue=False)

    await node.publish("r", b"second", message_id="m2")
    following = await collector.next()
    assert following.message_id == "m2"  # m1 is gone for good
    await following.ack()


async def test_prefetch_limits_deliveries_in_flight(transport_factory: TransportFactory) -> None:
    node = await transport_factory()
    slow = Collector(await node.consume("limited", ["p"], prefetch=3))
    await node.publish_many([OutgoingMessage("p", b"", message_id=f"m{i}") for i in range(10)])
    held = await slow.take(3)

    # While the first consumer holds 3 unacked, the other 7 stay in the queue: a second
    # consumer gets exactly those (it would wait forever for a 7th if the first had
    # been handed more than its prefetch).
    other = await transport_factory()
    helper_consumer = await other.consume("limited", ["p"], prefetch=100)
    helper = Collector(helper_consumer, ack=True)
    rest = await helper.take(7)
    assert {d.message_id for d in held} | {d.message_id for d in rest} == {
        f"m{i}" for i in range(10)
    }
    await helper_consumer.close()

    # Acking one frees one slot: the next message goes to the first consumer.
    await held[0].ack()
    await node.publish("p", b"", message_id="m10")
    assert (await slow.next()).message_id == "m10"
    assert len(slow.received) == 4


async def test_competing_consumers_share_without_loss_or_duplicates(
    transport_factory: TransportFactory,
) -> None:
    sink: asyncio.Queue[tuple[Collector, Delivery]] = asyncio.Queue()
    first = await transport_factory()
    second = await transport_factory()
    one = Collector(await first.consume("shared", ["s.#"], prefetch=5), ack=True, sink=sink)
    two = Collector(await second.consume("shared", ["s.#"], prefetch=5), ack=True, sink=sink)

    publisher = await transport_factory()
    await publisher.publish_many(
        [OutgoingMessage(f"s.{i}", b"x", message_id=f"m{i}") for i in range(200)]
    )
    pairs = await take_from(sink, 200)

    ids = [delivery.message_id for _, delivery in pairs]
    assert sorted(ids) == sorted(f"m{i}" for i in range(200))  # none lost, none twice
    assert one.received and two.received  # both did some of the work


async def test_publish_many_delivers_each_exactly_once(
    transport_factory: TransportFactory,
) -> None:
    node = await transport_factory()
    collector = Collector(await node.consume("bulk", ["bulk.*"], prefetch=64), ack=True)
    await node.publish_many(
        [
            OutgoingMessage("bulk.item", f"{i}".encode(), reply_to="me", message_id=f"m{i}")
            for i in range(500)
        ]
    )
    await node.publish("bulk.end", b"", message_id="end")

    deliveries = await collector.until(lambda d: d.message_id == "end")
    ids = [d.message_id for d in deliveries[:-1]]
    assert len(ids) == 500
    assert set(ids) == {f"m{i}" for i in range(500)}
    assert all(d.body == d.message_id[1:].encode() for d in deliveries[:-1])


async def test_a_consumer_binds_more_keys_while_it_consumes(
    transport_factory: TransportFactory,
) -> None:
    node = await transport_factory()
    collector = Collector(await node.consume("growing", ["a.first"]), ack=True)
    await node.publish("a.later", b"", message_id="missed")  # not bound yet: dropped
    await node.publish("a.first", b"", message_id="one")
    assert (await collector.next()).message_id == "one"
    await collector.consumer.bind("a.later")
    await collector.consumer.bind("a.later")  # twice changes nothing
    await node.publish("a.later", b"", message_id="two")
    assert (await collector.next()).message_id == "two"
    assert [d.message_id for d in collector.received] == ["one", "two"]
