"""Deliveries from one RabbitMQ queue, each on the consumer's own channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustQueue,
)
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    MessageProcessError,
)

from caroni.errors import TransportError
from caroni.transport.base import Consumer, Delivery

if TYPE_CHECKING:
    from caroni.transport.amqp import AmqpTransport

log = logging.getLogger(__name__)

# Errors meaning "the channel this delivery came on is gone": the broker has already
# put the message back in its queue, so an ack/reject that fails this way is moot.
_LOST_CHANNEL_ERRORS: tuple[type[BaseException], ...] = (
    ChannelInvalidStateError,
    ChannelClosed,
    AMQPConnectionError,
    ConnectionError,
)


class AmqpDelivery(Delivery):
    """One message from RabbitMQ, wrapping aio-pika's incoming message."""

    __slots__ = ("body", "routing_key", "reply_to", "message_id", "redelivered", "_message")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self.body = message.body
        self.routing_key = message.routing_key or ""
        self.reply_to = message.reply_to or ""
        self.message_id = message.message_id or ""
        self.redelivered = bool(message.redelivered)
        self._message = message

    def __repr__(self) -> str:
        return (
            f"AmqpDelivery(routing_key={self.routing_key!r}, "
            f"message_id={self.message_id!r}, redelivered={self.redelivered})"
        )

    async def ack(self) -> None:
        try:
            await self._message.ack()
        except MessageProcessError as exc:
            raise TransportError(f"{self!r} was already acked or rejected") from exc
        except _LOST_CHANNEL_ERRORS as exc:
            log.warning(
                "ack of %r did not reach the broker (its channel was lost: %s); "
                "the broker will redeliver the message",
                self,
                type(exc).__name__,
            )

    async def reject(self, requeue: bool = True) -> None:
        try:
            await self._message.reject(requeue=requeue)
        except MessageProcessError as exc:
            raise TransportError(f"{self!r} was already acked or rejected") from exc
        except _LOST_CHANNEL_ERRORS as exc:
            log.warning(
                "reject of %r did not reach the broker (its channel was lost: %s); "
                "the broker will redeliver the message",
                self,
                type(exc).__name__,
            )


_CLOSED: Any = object()  # wakes iterators when the consumer closes


class AmqpConsumer(Consumer):
    """Deliveries from one RabbitMQ queue, on a channel of its own."""

    def __init__(
        self,
        transport: AmqpTransport,
        channel: AbstractRobustChannel,
        queue: AbstractRobustQueue,
    ) -> None:
        self._transport = transport
        self._channel = channel
        self._queue = queue
        # Filled by aio-pika's consume callback; bounded in practice by the prefetch.
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._closed = False

    @property
    def queue(self) -> str:
        """Name of the queue this consumer reads."""
        return self._queue.name

    async def bind(self, pattern: str) -> None:
        # A robust queue re-binds what it was bound to after a reconnect.
        try:
            await self._queue.bind(self._transport._settings.exchange, pattern)
        except Exception as exc:  # noqa: BLE001 - explained to the caller
            raise TransportError(
                f"cannot bind queue {self._queue.name!r} to {pattern!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def _start(self) -> None:
        # robust=True (the default) makes aio-pika re-consume after a reconnect.
        await self._queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if not self._closed:
            self._buffer.put_nowait(message)
        # When closed, leave it unacked: closing the channel hands it back.

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            message = await self._buffer.get()
            if message is _CLOSED:
                self._buffer.put_nowait(_CLOSED)  # for any other waiting iterator
                raise StopAsyncIteration
            try:
                message.channel  # noqa: B018 - raises if the channel it came on is gone
            except ChannelInvalidStateError:
                # Taken before a connection loss: the broker has requeued it and will
                # deliver it again on the new channel, so handing it out would only
                # cause duplicate work.
                log.debug("dropping delivery from a lost channel: %r", message.message_id)
                continue
            return AmqpDelivery(message)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport._consumers.discard(self)
        self._buffer.put_nowait(_CLOSED)
        try:
            # Closing the channel (not just basic.cancel) makes the broker requeue
            # every delivery this consumer took and did not ack.
            await self._channel.close()
        except Exception as exc:  # noqa: BLE001 - the connection may be down; fine
            log.debug("closing consumer channel of %r: %r", self._queue.name, exc)
