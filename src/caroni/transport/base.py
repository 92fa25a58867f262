"""The one transport interface every backend implements.

A transport moves opaque bodies between nodes through a topic exchange with AMQP
semantics: a consumer owns a named queue bound to routing-key patterns (``*``
matches one dot-separated word, ``#`` zero or more); a published message is copied
into every queue with a matching binding; a queue keeps its messages while nobody
reads it; a delivery taken but not acked goes back to its queue when its consumer
goes away.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready to publish: body plus the AMQP properties Caroni uses."""

    routing_key: str
    body: bytes
    reply_to: str = ""
    message_id: str = ""


class Delivery(abc.ABC):
    """One message handed to a consumer; it must be acked or rejected exactly once."""

    body: bytes
    routing_key: str
    reply_to: str
    message_id: str
    redelivered: bool

    @abc.abstractmethod
    async def ack(self) -> None:
        """The message is handled; the broker forgets it."""

    @abc.abstractmethod
    async def reject(self, requeue: bool = True) -> None:
        """Give the message back (``requeue=True``) or drop it."""


class Consumer(abc.ABC):
    """An async iterator of deliveries from one queue; ``close()`` stops consuming.

    Closing returns every delivery that was taken but not acked to the queue, like a
    consumer process that died.
    """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def bind(self, pattern: str) -> None:
        """Also route messages whose key matches ``pattern`` to this queue (kept across
        reconnects; binding a pattern twice changes nothing)."""

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Transport(abc.ABC):
    """Publish to and consume from one topic exchange."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection and declare the exchange. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every consumer and the connection. Idempotent."""

    @abc.abstractmethod
    async def publish(
        self, routing_key: str, body: bytes, *, reply_to: str = "", message_id: str = ""
    ) -> None:
        """Publish one message; returns once the broker has confirmed it."""

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish several messages; returns once all are confirmed.

        Backends override this to pipeline confirms instead of waiting for each.
        """
        for message in messages:
            await self.publish(
                message.routing_key,
                message.body,
                reply_to=message.reply_to,
                message_id=message.message_id,
            )

    @abc.abstractmethod
    async def consume(
        self,
        queue: str,
        bindings: Sequence[str],
        *,
        prefetch: int = 64,
        durable: bool = True,
    ) -> Consumer:
        """Declare ``queue`` (durable unless told otherwise), bind it to each pattern
        in ``bindings`` on the exchange, and start consuming with at most ``prefetch``
        unacked deliveries in flight. A non-durable queue is removed when its
        consumer closes (for short-lived clients such as ``caroni submit --wait``).
        """

    async def delete_queue(self, queue: str) -> None:  # pragma: no cover - optional
        """Remove a queue and its messages (tests and tooling)."""
        raise NotImplementedError
