"""The RabbitMQ backend, on aio-pika's robust (auto-reconnecting) connection.

Layout on the broker: one topic exchange (durable unless ``compat`` asks for the
non-durable one existing peers declare); one named queue per consumer, durable and
non-exclusive so messages wait while a node is down and several processes may
compete on it; persistent messages; publisher confirms on a dedicated channel.

Each consumer gets a channel of its own: ``basic.qos`` is then exactly that
consumer's prefetch, and closing the channel makes the broker requeue everything the
consumer took and did not ack, which is what :meth:`Consumer.close` promises.

After a lost connection aio-pika reconnects in the background, redeclares the
exchange, queues and bindings and re-consumes. What it does not do, and this module
adds: publishes that failed or whose confirm was lost are retried until the broker
confirms them (at-least-once: a retry may duplicate a message the broker had already
taken), and acking a delivery from the dead channel is logged and ignored, because
the broker redelivers it anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import aio_pika
from aio_pika.abc import (
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    ChannelPreconditionFailed,
)
from yarl import URL

from caroni.errors import TransportError
from caroni.transport.amqp_consumer import AmqpConsumer, AmqpDelivery
from caroni.transport.amqp_settings import AmqpSettings, check_tls, mask_url, scrub
from caroni.transport.base import OutgoingMessage, Transport

log = logging.getLogger(__name__)


# Publish failures worth retrying after a reconnect: aio-pika's own list of what a
# lost connection or channel raises (ChannelInvalidStateError is a RuntimeError), plus
# broker nacks (an AMQPError).
_RETRYABLE_ERRORS: tuple[type[BaseException], ...] = CONNECTION_EXCEPTIONS

# How many publishes publish_many keeps waiting for confirmation at once; enough to
# keep the pipe full, small enough not to hold a huge batch in memory as tasks.
_PIPELINE_WINDOW = 1000


class AmqpTransport(Transport):
    """A :class:`Transport` over RabbitMQ.

    ``await AmqpTransport(AmqpSettings(url=...)).connect()`` opens the connection and
    declares the exchange; :class:`TransportError` if the broker is unreachable or the
    exchange exists with other flags.
    """

    def __init__(self, settings: AmqpSettings | None = None) -> None:
        self._settings = settings if settings is not None else AmqpSettings()
        # Scrubbed from error messages; replaced by the file's when there is one.
        self._password = URL(self._settings.url).password
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._consumers: set[AmqpConsumer] = set()
        self._connect_lock = asyncio.Lock()
        self._closed_event = asyncio.Event()

    @property
    def settings(self) -> AmqpSettings:
        return self._settings

    def _connection_url(self) -> URL:
        settings = self._settings
        url = URL(settings.url)
        if settings.password_file:
            url = url.with_password(Path(settings.password_file).read_text().strip())
            self._password = url.password
        extra: dict[str, str] = {}
        for option, value in (
            ("cafile", settings.ca_file),
            ("certfile", settings.cert_file),
            ("keyfile", settings.key_file),
        ):
            if value and option not in url.query:
                extra[option] = value
        if "heartbeat" not in url.query:
            extra["heartbeat"] = str(self._settings.heartbeat)
        if "reconnect_interval" not in url.query:
            extra["reconnect_interval"] = str(self._settings.reconnect_interval)
        return url.update_query(extra) if extra else url

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._connection is not None:
                return
            settings = self._settings
            where = mask_url(settings.url)
            url = self._connection_url()
            check_tls(url)
            try:
                connection = await asyncio.wait_for(
                    aio_pika.connect_robust(url, timeout=settings.connect_timeout),
                    settings.connect_timeout + 1.0,
                )
            except TimeoutError as exc:
                raise TransportError(
                    f"cannot connect to AMQP broker at {where}: "
                    f"no answer within {settings.connect_timeout}s"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - any connect failure, explained
                message = scrub(f"{type(exc).__name__}: {exc}", self._password)
                raise TransportError(
                    f"cannot connect to AMQP broker at {where}: {message}"
                ) from exc
            try:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.declare_exchange(
                    settings.exchange,
                    aio_pika.ExchangeType.TOPIC,
                    durable=settings.declare_exchange_durable,
                )
            except ChannelPreconditionFailed as exc:
                await connection.close()
                raise TransportError(self._exchange_mismatch_message(exc)) from exc
            except BaseException as exc:
                await connection.close()
                if isinstance(exc, Exception):
                    raise TransportError(
                        f"cannot declare exchange {settings.exchange!r} on {where}: "
                        + scrub(f"{type(exc).__name__}: {exc}", self._password)
                    ) from exc
                raise
            connection.close_callbacks.add(self._on_connection_lost)
            connection.reconnect_callbacks.add(self._on_reconnected)
            self._connection, self._channel, self._exchange = connection, channel, exchange
            self._closed_event.clear()
            log.info(
                "connected to %s, topic exchange %r (durable=%s)",
                where,
                settings.exchange,
                settings.declare_exchange_durable,
            )

    def _exchange_mismatch_message(self, exc: BaseException) -> str:
        settings = self._settings
        return (
            f"exchange {settings.exchange!r} already exists on the broker with other "
            f"flags than ours (we declared durable={settings.declare_exchange_durable}); "
            "RabbitMQ refused with PRECONDITION_FAILED. Existing Caroni peers declare it "
            "non-durable: to share their exchange set CARONI_AMQP_COMPAT=1 "
            "(AmqpSettings(compat=True)), otherwise unset it or use a different exchange "
            f"name. Broker said: {exc}"
        )

    def _on_connection_lost(self, _sender: object, exc: BaseException | None) -> None:
        if self._connection is not None and not self._connection.is_closed:
            log.warning(
                "lost connection to %s (%s); reconnecting",
                mask_url(self._settings.url),
                scrub(repr(exc), self._password),
            )

    def _on_reconnected(self, _sender: object) -> None:
        # As loud as the loss it ends: an operator who saw one should see the other.
        log.warning("reconnected to %s", mask_url(self._settings.url))

    async def close(self) -> None:
        async with self._connect_lock:
            connection = self._connection
            if connection is None:
                return
            self._connection = self._channel = self._exchange = None
            self._closed_event.set()
            for consumer in list(self._consumers):
                await consumer.close()
            try:
                await connection.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken connection
                log.debug("closing connection: %r", exc)

    def _require_exchange(self) -> tuple[AbstractRobustChannel, AbstractRobustExchange]:
        if self._channel is None or self._exchange is None:
            raise TransportError("AMQP transport is not connected (call connect() first)")
        return self._channel, self._exchange

    async def publish(
        self, routing_key: str, body: bytes, *, reply_to: str = "", message_id: str = ""
    ) -> None:
        deadline = asyncio.get_running_loop().time() + self._settings.publish_timeout
        await self._publish_confirmed(
            OutgoingMessage(routing_key, body, reply_to, message_id), deadline
        )

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, len(messages), _PIPELINE_WINDOW):
            window = messages[start : start + _PIPELINE_WINDOW]
            deadline = loop.time() + self._settings.publish_timeout
            # Publish the whole window before waiting for any confirm: the broker
            # confirms in batches, so this is many times faster than one by one.
            results = await asyncio.gather(
                *(self._publish_confirmed(message, deadline) for message in window),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _publish_confirmed(self, message: OutgoingMessage, deadline: float) -> None:
        """Publish until the broker confirms, across reconnects, or until ``deadline``."""
        channel, exchange = self._require_exchange()
        amqp_message = aio_pika.Message(
            message.body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            reply_to=message.reply_to or None,
            message_id=message.message_id or None,
        )
        loop = asyncio.get_running_loop()
        attempt = 0
        last_error: BaseException | None = None
        while True:
            if self._closed_event.is_set():
                raise TransportError("AMQP transport closed while publishing")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(
                    f"broker did not confirm message to {message.routing_key!r} within "
                    f"{self._settings.publish_timeout}s (last error: "
                    f"{scrub(repr(last_error), self._password)})"
                ) from last_error
            try:
                async with asyncio.timeout(remaining):
                    if attempt:
                        await self._wait_ready(channel)
                    await exchange.publish(amqp_message, message.routing_key, mandatory=False)
                return
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller cancelled us
                # aiormq cancels pending confirms when their channel dies.
                last_error = exc
            except TimeoutError as exc:
                last_error = last_error or exc  # the deadline check above raises
            except _RETRYABLE_ERRORS as exc:  # lost channel or connection, or a nack
                last_error = exc
            except Exception as exc:  # noqa: BLE001 - e.g. a routing key over 255 bytes
                raise TransportError(
                    f"cannot publish to {message.routing_key!r}: {type(exc).__name__}: {exc}"
                ) from exc
            attempt += 1
            log.debug(
                "publish to %r failed (attempt %d): %r; retrying",
                message.routing_key,
                attempt,
                last_error,
            )
            # Pace retries that fail without waiting (e.g. a nack on a live channel).
            await asyncio.sleep(min(0.05 * attempt, 1.0))

    async def _wait_ready(self, channel: AbstractRobustChannel) -> None:
        """Wait until the channel is restored after a reconnect, or the transport closes."""
        ready = asyncio.ensure_future(channel.ready())
        closed = asyncio.ensure_future(self._closed_event.wait())
        try:
            await asyncio.wait((ready, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, closed):
                task.cancel()
            await asyncio.gather(ready, closed, return_exceptions=True)

    async def consume(
        self,
        queue: str,
        bindings: Sequence[str],
        *,
        prefetch: int = 64,
        durable: bool = True,
    ) -> AmqpConsumer:
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (0 means unlimited), got {prefetch}")
        self._require_exchange()
        connection = self._connection
        assert connection is not None
        try:
            # During a reconnect there is no connection to open a channel on yet.
            await asyncio.wait_for(connection.ready(), self._settings.connect_timeout)
        except TimeoutError as exc:
            raise TransportError(
                f"cannot consume from queue {queue!r}: not connected to "
                f"{mask_url(self._settings.url)} (reconnecting)"
            ) from exc
        channel = connection.channel(publisher_confirms=False)
        try:
            await channel.initialize()
            await channel.set_qos(prefetch_count=prefetch)
            # Durable, non-exclusive: messages wait while the node is down and several
            # processes may share the queue. Non-durable queues are auto-delete so a
            # short-lived client leaves nothing behind.
            amqp_queue = await channel.declare_queue(
                queue, durable=durable, auto_delete=not durable
            )
            for pattern in bindings:
                await amqp_queue.bind(self._settings.exchange, pattern)
            consumer = AmqpConsumer(self, channel, amqp_queue)
            await consumer._start()
        except BaseException as exc:
            await self._close_quietly(channel)
            if isinstance(exc, ChannelPreconditionFailed):
                raise TransportError(
                    f"queue {queue!r} already exists with other flags than ours "
                    f"(durable={durable}, auto_delete={not durable}); delete it or use "
                    f"another name. Broker said: {exc}"
                ) from exc
            if isinstance(exc, Exception):
                raise TransportError(
                    f"cannot consume from queue {queue!r}: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        self._consumers.add(consumer)
        return consumer

    @staticmethod
    async def _close_quietly(channel: AbstractRobustChannel) -> None:
        try:
            await channel.close()
        except Exception as exc:  # noqa: BLE001 - already closed by the broker
            log.debug("closing failed channel: %r", exc)

    async def delete_queue(self, queue: str) -> None:
        channel, _ = self._require_exchange()
        try:
            await channel.queue_delete(queue)
        except Exception as exc:  # noqa: BLE001
            raise TransportError(f"cannot delete queue {queue!r}: {exc}") from exc


__all__ = ["AmqpConsumer", "AmqpDelivery", "AmqpSettings", "AmqpTransport", "mask_url"]
