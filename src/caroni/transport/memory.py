"""An in-process topic exchange with AMQP semantics, for embedded use and tests.

One :class:`MemoryBroker` plays the part of RabbitMQ for any number of
:class:`MemoryTransport` instances in the same process (one per node). Queues live in
the broker, so they outlive the consumers that declared them, exactly like durable
AMQP queues. Delivery is push-based like AMQP: a queue hands messages to its
consumers round-robin as soon as one has room under its prefetch limit, so there is
no polling and no added latency. Everything runs on the asyncio loop; no threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from caroni.errors import TransportError
from caroni.protocol.routing import topic_matches
from caroni.transport.base import Consumer, Delivery, OutgoingMessage, Transport

log = logging.getLogger(__name__)

# A consumer that always finds a delivery ready yields to the event loop once per this
# many, so a backlog cannot starve the other tasks of the process.
_FAIRNESS_BATCH = 16

# Routing keys whose matching queues are remembered at most (keys are mostly per node).
_ROUTE_CACHE_SIZE = 10_000


@dataclass(slots=True)
class _Message:
    """A message as stored in a queue; each queue gets its own copy."""

    routing_key: str
    body: bytes
    reply_to: str
    message_id: str
    redelivered: bool = False


class _Queue:
    """A named queue: its messages, bindings and the consumers reading it."""

    def __init__(self, name: str, durable: bool) -> None:
        self.name = name
        self.durable = durable
        self.bindings: set[str] = set()
        self.messages: deque[_Message] = deque()
        self.consumers: list[MemoryConsumer] = []
        self._next_consumer = 0

    def dispatch(self) -> None:
        """Hand waiting messages to consumers with room, round-robin."""
        consumers = self.consumers
        while self.messages and consumers:
            count = len(consumers)
            for step in range(count):
                consumer = consumers[(self._next_consumer + step) % count]
                if consumer._has_room():
                    self._next_consumer = (self._next_consumer + step + 1) % count
                    consumer._push(self.messages.popleft())
                    break
            else:
                return  # every consumer is at its prefetch limit


class MemoryBroker:
    """An in-process topic exchange and its queues, shared by several transports."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        # routing key -> queues it reaches; cleared whenever bindings change, so a
        # steady stream of publishes to a few keys never re-runs the matcher.
        self._routes: dict[str, tuple[_Queue, ...]] = {}

    def queue_names(self) -> list[str]:
        """Names of the queues that currently exist (for tests and tooling)."""
        return list(self._queues)

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not counting those held by consumers)."""
        found = self._queues.get(queue)
        return len(found.messages) if found is not None else 0

    def _declare(self, name: str, durable: bool) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name, durable)
        elif queue.durable != durable:
            # RabbitMQ answers PRECONDITION_FAILED here; keep the two backends alike.
            raise TransportError(
                f"queue {name!r} already exists with durable={queue.durable}, "
                f"cannot redeclare it with durable={durable}"
            )
        return queue

    def _bind(self, queue: _Queue, pattern: str) -> None:
        if pattern not in queue.bindings:
            queue.bindings.add(pattern)
            self._routes.clear()

    def _delete(self, name: str) -> None:
        queue = self._queues.pop(name, None)
        if queue is None:
            return
        self._routes.clear()
        for consumer in list(queue.consumers):
            consumer._detach(requeue=False)
        queue.messages.clear()

    def _route(self, routing_key: str) -> tuple[_Queue, ...]:
        queues = self._routes.get(routing_key)
        if queues is None:
            queues = tuple(
                queue
                for queue in self._queues.values()
                if any(topic_matches(pattern, routing_key) for pattern in queue.bindings)
            )
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()  # many one-off keys: start over rather than grow
            self._routes[routing_key] = queues
        return queues

    def _publish(self, message: OutgoingMessage) -> None:
        if len(message.routing_key) > 63 and len(message.routing_key.encode()) > 255:
            # AMQP's limit (a short string); refuse it here too so that code written
            # against the memory broker does not break on RabbitMQ.
            raise TransportError(
                f"cannot publish to {message.routing_key[:40]!r}...: "
                "routing key longer than 255 bytes"
            )
        message_id = message.message_id or uuid.uuid4().hex
        for queue in self._route(message.routing_key):
            queue.messages.append(
                _Message(message.routing_key, message.body, message.reply_to, message_id)
            )
            queue.dispatch()

    def _consumer_closed(self, consumer: MemoryConsumer) -> None:
        queue = consumer._queue
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if self._queues.get(queue.name) is not queue:
            return  # deleted meanwhile
        if not queue.durable and not queue.consumers:
            # Auto-delete, like the non-durable AMQP queue: gone with its last consumer.
            self._delete(queue.name)
        else:
            queue.dispatch()


class MemoryDelivery(Delivery):
    """A message held by one :class:`MemoryConsumer` until acked or rejected."""

    __slots__ = (
        "body",
        "routing_key",
        "reply_to",
        "message_id",
        "redelivered",
        "_message",
        "_consumer",
        "_tag",
        "_settled",
    )

    def __init__(self, message: _Message, consumer: MemoryConsumer, tag: int) -> None:
        self.body = message.body
        self.routing_key = message.routing_key
        self.reply_to = message.reply_to
        self.message_id = message.message_id
        self.redelivered = message.redelivered
        self._message = message
        self._consumer = consumer
        self._tag = tag
        self._settled = False

    def __repr__(self) -> str:
        return (
            f"MemoryDelivery(routing_key={self.routing_key!r}, "
            f"message_id={self.message_id!r}, redelivered={self.redelivered})"
        )

    async def ack(self) -> None:
        self._settle(requeue=None)

    async def reject(self, requeue: bool = True) -> None:
        self._settle(requeue=requeue)

    def _settle(self, requeue: bool | None) -> None:
        if self._settled:
            raise TransportError(f"{self!r} was already acked or rejected")
        self._settled = True
        self._consumer._settle(self, requeue)


class MemoryConsumer(Consumer):
    """Deliveries from one :class:`MemoryBroker` queue."""

    def __init__(
        self, broker: MemoryBroker, queue: _Queue, prefetch: int, owner: MemoryTransport
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._prefetch = prefetch
        self._owner = owner
        self._tags = itertools.count()
        # Everything pushed to us and not yet settled, in delivery order; includes the
        # deliveries still in ``_ready`` because prefetch counts those too (as in AMQP).
        self._unacked: dict[int, MemoryDelivery] = {}
        self._ready: deque[MemoryDelivery] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._streak = 0  # deliveries handed out in a row without waiting

    @property
    def queue(self) -> str:
        """Name of the queue this consumer reads."""
        return self._queue.name

    async def bind(self, pattern: str) -> None:
        self._broker._bind(self._queue, pattern)

    def _has_room(self) -> bool:
        return not self._closed and (self._prefetch == 0 or len(self._unacked) < self._prefetch)

    def _push(self, message: _Message) -> None:
        tag = next(self._tags)
        delivery = MemoryDelivery(message, self, tag)
        self._unacked[tag] = delivery
        self._ready.append(delivery)
        self._wakeup.set()

    def _settle(self, delivery: MemoryDelivery, requeue: bool | None) -> None:
        if self._unacked.pop(delivery._tag, None) is None:
            # This consumer closed and the message went back to its queue already;
            # a broker would have redelivered it too, so there is nothing to undo.
            log.warning(
                "ignoring ack/reject of %r: its consumer on queue %r closed and the "
                "message was returned to the queue",
                delivery,
                self._queue.name,
            )
            return
        queue = self._queue
        if requeue:
            message = delivery._message
            message.redelivered = True
            queue.messages.appendleft(message)
        queue.dispatch()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        if self._ready:
            # Acks refill the buffer synchronously, so a consumer working through a
            # backlog would otherwise never give the loop to anyone else.
            self._streak += 1
            if self._streak >= _FAIRNESS_BATCH:
                self._streak = 0
                await asyncio.sleep(0)
        while not self._ready:
            if self._closed:
                raise StopAsyncIteration
            self._streak = 0
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._ready.popleft()

    def _detach(self, requeue: bool) -> None:
        """Stop receiving; give every unsettled delivery back to the queue (in order)."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._ready.clear()
        unacked = list(self._unacked.values())
        self._unacked.clear()
        if requeue:
            for delivery in reversed(unacked):
                delivery._message.redelivered = True
                self._queue.messages.appendleft(delivery._message)
        self._owner._consumers.discard(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._detach(requeue=True)
        self._broker._consumer_closed(self)


class MemoryTransport(Transport):
    """One node's connection to a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._connected = False
        self._consumers: set[MemoryConsumer] = set()

    @property
    def broker(self) -> MemoryBroker:
        return self._broker

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        for consumer in list(self._consumers):
            await consumer.close()

    def _check_open(self) -> None:
        if not self._connected:
            raise TransportError("memory transport is not connected (call connect() first)")

    async def publish(
        self, routing_key: str, body: bytes, *, reply_to: str = "", message_id: str = ""
    ) -> None:
        self._check_open()
        self._broker._publish(OutgoingMessage(routing_key, body, reply_to, message_id))
        # Yield once, as a network publish would, so a tight publishing loop cannot
        # starve the consumers running on the same event loop.
        await asyncio.sleep(0)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self._check_open()
        for message in messages:
            self._broker._publish(message)
        await asyncio.sleep(0)

    async def consume(
        self,
        queue: str,
        bindings: Sequence[str],
        *,
        prefetch: int = 64,
        durable: bool = True,
    ) -> MemoryConsumer:
        self._check_open()
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (0 means unlimited), got {prefetch}")
        stored = self._broker._declare(queue, durable)
        for pattern in bindings:
            self._broker._bind(stored, pattern)
        consumer = MemoryConsumer(self._broker, stored, prefetch, self)
        self._consumers.add(consumer)
        stored.consumers.append(consumer)
        stored.dispatch()
        return consumer

    async def delete_queue(self, queue: str) -> None:
        self._check_open()
        self._broker._delete(queue)
