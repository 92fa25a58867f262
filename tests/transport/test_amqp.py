"""RabbitMQ-only behaviour: process death, connection loss, exchange flags, peers.

Faults are injected for real: a child process is SIGKILLed, and connections are cut by
routing the transport through :class:`tests.faults.FaultProxy`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from yarl import URL

from caroni.errors import TransportError
from caroni.transport import AmqpSettings, AmqpTransport, OutgoingMessage
from caroni.transport.amqp import mask_url
from tests.faults import FaultProxy

from . import DEADLINE, Collector

pytestmark = pytest.mark.amqp

MakeTransport = Callable[..., Awaitable[AmqpTransport]]


@pytest.fixture
async def make_transport(amqp_url: str) -> AsyncIterator[MakeTransport]:
    """Connected transports on this test's vhost; keyword arguments go to AmqpSettings."""
    made: list[AmqpTransport] = []

    async def make(**settings: object) -> AmqpTransport:
        settings.setdefault("url", amqp_url)
        transport = AmqpTransport(AmqpSettings(**settings))  # type: ignore[arg-type]
        await transport.connect()
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


def _proxied(amqp_url: str, proxy: FaultProxy) -> str:
    return str(URL(amqp_url).with_host(proxy.host).with_port(proxy.port))


def _rabbitmqctl_json(*args: str) -> list[dict[str, object]]:
    result = subprocess.run(
        ["rabbitmqctl", *args, "--formatter", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# A consumer in a process of its own: takes one message, reports it, never acks.
_CHILD = """
import asyncio, os
from caroni.transport import AmqpSettings, AmqpTransport

async def main():
    transport = AmqpTransport(AmqpSettings(url=os.environ["CARONI_TEST_AMQP_URL"]))
    await transport.connect()
    consumer = await transport.consume("worker", ["work"], prefetch=1)
    async for delivery in consumer:
        print("took", delivery.message_id, delivery.redelivered, flush=True)
        await asyncio.Event().wait()  # hold it unacked until killed

asyncio.run(main())
"""


async def test_delivery_held_by_killed_process_is_redelivered(
    amqp_url: str, make_transport: MakeTransport
) -> None:
    parent = await make_transport()
    await (await parent.consume("worker", ["work"])).close()  # declare queue + binding
    await parent.publish("work", b"job", message_id="job-1")

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        env={**os.environ, "CARONI_TEST_AMQP_URL": amqp_url},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), DEADLINE)
        assert line.decode().split() == ["took", "job-1", "False"]
    finally:
        child.send_signal(signal.SIGKILL)  # no goodbye to the broker
        await asyncio.wait_for(child.wait(), DEADLINE)
    assert child.returncode == -signal.SIGKILL

    delivery = await Collector(await parent.consume("worker", ["work"])).next()
    assert (delivery.message_id, delivery.body, delivery.redelivered) == ("job-1", b"job", True)
    await delivery.ack()


async def test_confirmed_publishing_survives_connection_loss(
    amqp_url: str, make_transport: MakeTransport
) -> None:
    sink = await make_transport()
    collector = Collector(await sink.consume("sink", ["data.#"], prefetch=200), ack=True)
    total = 300

    async with FaultProxy("127.0.0.1", 5672) as proxy:
        publisher = await make_transport(
            url=_proxied(amqp_url, proxy), reconnect_interval=0.2, publish_timeout=60.0
        )
        loop = asyncio.get_running_loop()
        for i in range(200):
            if i in (40, 90):
                assert proxy.sever() == 1
            if i == 140:
                # Drop the link and refuse reconnection for a while: publishes must
                # wait for the broker, not fail or get lost.
                proxy.pause()
                assert proxy.sever() == 1
                loop.call_later(0.5, proxy.resume)
            await publisher.publish(f"data.{i}", f"{i}".encode(), message_id=f"m{i}")

        # And once more in the middle of a pipelined batch.
        batch = publisher.publish_many(
            [
                OutgoingMessage(f"data.{i}", f"{i}".encode(), message_id=f"m{i}")
                for i in range(200, total)
            ]
        )
        batch_task = asyncio.create_task(batch)
        await asyncio.sleep(0)  # let the batch start writing; correctness does not depend on it
        proxy.sever()
        await asyncio.wait_for(batch_task, 90)
        assert proxy.accepted >= 4  # it really did reconnect each time
        await publisher.close()  # before the proxy goes, or it would try to reconnect

    seen: set[str] = set()
    async with asyncio.timeout(DEADLINE):
        while len(seen) < total:
            seen.add((await collector.next()).message_id)
    assert seen == {f"m{i}" for i in range(total)}  # at least once; duplicates allowed


async def test_consumer_resumes_after_connection_loss_and_stale_ack_is_harmless(
    amqp_url: str, make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await make_transport()
    async with FaultProxy("127.0.0.1", 5672) as proxy:
        node = await make_transport(url=_proxied(amqp_url, proxy), reconnect_interval=0.2)
        collector = Collector(await node.consume("node", ["wf.agent.n"], prefetch=10))
        await publisher.publish("wf.agent.n", b"one", message_id="s1")
        taken = await collector.next()
        assert not taken.redelivered

        assert proxy.sever() == 1
        # The broker requeues what the lost connection held; the consumer resumes on a
        # new connection and gets it again.
        again = await collector.next()
        assert (again.message_id, again.redelivered) == ("s1", True)

        # The first copy came on the dead channel: acking it must log, not raise.
        with caplog.at_level(logging.WARNING, logger="caroni.transport.amqp"):
            await taken.ack()
        assert "did not reach the broker" in caplog.text
        await again.ack()

        await publisher.publish("wf.agent.n", b"two", message_id="s2")
        after = await collector.next()
        assert (after.message_id, after.redelivered) == ("s2", False)
        await after.ack()
        await node.close()


async def test_publish_gives_up_after_publish_timeout(
    amqp_url: str, make_transport: MakeTransport
) -> None:
    async with FaultProxy("127.0.0.1", 5672) as proxy:
        publisher = await make_transport(
            url=_proxied(amqp_url, proxy), reconnect_interval=0.2, publish_timeout=1.0
        )
        proxy.pause()
        proxy.sever()
        with pytest.raises(TransportError, match="did not confirm"):
            await publisher.publish("k", b"lost in the void")
        await publisher.close()


async def test_existing_exchange_with_other_flags_gives_clear_error(amqp_url: str) -> None:
    peer = await aio_pika.connect(amqp_url)
    try:
        channel = await peer.channel()
        await channel.declare_exchange("caroni_exchange", aio_pika.ExchangeType.TOPIC)
        transport = AmqpTransport(AmqpSettings(url=amqp_url))  # durable by default
        with pytest.raises(TransportError) as caught:
            await transport.connect()
        message = str(caught.value)
        assert "'caroni_exchange'" in message
        assert "PRECONDITION_FAILED" in message
        assert "CARONI_AMQP_COMPAT=1" in message
        assert "compat=True" in message
        assert "different exchange name" in message
        await transport.close()
    finally:
        await peer.close()


async def test_compat_interoperates_with_peers_non_durable_exchange(
    amqp_url: str, make_transport: MakeTransport
) -> None:
    # A peer as existing implementations behave: non-durable exchange, its own queue.
    peer = await aio_pika.connect(amqp_url)
    try:
        channel = await peer.channel()
        exchange = await channel.declare_exchange(
            "caroni_exchange", aio_pika.ExchangeType.TOPIC, durable=False
        )
        agent_queue = await channel.declare_queue("peer-agent", durable=True)
        await agent_queue.bind(exchange, "wf.agent.fulfillment")

        ours = await make_transport(compat=True, exchange_durable=True)  # compat wins
        replies = Collector(await ours.consume("our-manager", ["wf.manager.us"]), ack=True)
        await ours.publish(
            "wf.agent.fulfillment", b"request", reply_to="wf.manager.us", message_id="r1"
        )

        async with asyncio.timeout(DEADLINE):
            async with agent_queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    break
        assert message.body == b"request"
        assert message.reply_to == "wf.manager.us"
        assert message.message_id == "r1"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT

        await exchange.publish(
            aio_pika.Message(b"offer", reply_to="wf.agent.peer"), routing_key=message.reply_to
        )
        reply = await replies.next()
        assert (reply.body, reply.reply_to) == (b"offer", "wf.agent.peer")
    finally:
        await peer.close()


async def test_broker_layout(amqp_url: str, make_transport: MakeTransport) -> None:
    vhost = URL(amqp_url).path.lstrip("/")
    node = await make_transport()
    await node.consume("durable-node", ["wf.agent.x"])
    await node.consume("short-client", ["wf.client.x"], durable=False)

    exchanges = {
        e["name"]: e
        for e in _rabbitmqctl_json("list_exchanges", "-p", vhost, "name", "type", "durable")
    }
    assert exchanges["caroni_exchange"]["type"] == "topic"
    assert exchanges["caroni_exchange"]["durable"] is True
    queues = {
        q["name"]: q
        for q in _rabbitmqctl_json(
            "list_queues", "-p", vhost, "name", "durable", "auto_delete", "exclusive"
        )
    }
    assert queues["durable-node"] == {
        "name": "durable-node",
        "durable": True,
        "auto_delete": False,
        "exclusive": False,
    }
    assert queues["short-client"]["durable"] is False
    assert queues["short-client"]["auto_delete"] is True


async def test_unreachable_broker_error_hides_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.pause()
        url = f"amqp://guest:sup3rsecret@127.0.0.1:{proxy.port}/"
        transport = AmqpTransport(AmqpSettings(url=url, connect_timeout=5.0))
        with caplog.at_level(logging.DEBUG), pytest.raises(TransportError) as caught:
            await transport.connect()
    assert "127.0.0.1" in str(caught.value)
    assert "sup3rsecret" not in str(caught.value)
    assert "sup3rsecret" not in caplog.text


def test_settings_and_url_masking() -> None:
    assert AmqpSettings().declare_exchange_durable is True
    assert AmqpSettings(compat=True).declare_exchange_durable is False
    assert AmqpSettings(exchange_durable=False).declare_exchange_durable is False
    assert mask_url("amqp://user:pw@host:5672/v") == "amqp://user:******@host:5672/v"
    assert mask_url("amqp://host/") == "amqp://host/"
    shown = repr(AmqpSettings(url="amqp://u:hunter2@host/v", compat=True))
    assert "hunter2" not in shown and "compat=True" in shown
    with pytest.raises(AttributeError):
        AmqpSettings().compat = True  # type: ignore[misc]
