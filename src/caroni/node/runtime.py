"""The service shell: the one place where messages meet the database.

Every delivery, whatever its type, goes through the same steps:

1. take a batch of deliveries from the transport;
2. in ONE database transaction, for each delivery: open the envelope, skip it if
   its message id is in the inbox (a duplicate), let the role's handler apply it
   (inside a savepoint), write the inbox row and the outgoing messages to the
   outbox; a delivery that cannot be opened or applied is stored as a dead letter
   with its reason instead;
3. commit, then ack the batch;
4. publish the outbox with broker confirms, deleting rows once confirmed.

A crash anywhere leaves either nothing done (the broker redelivers) or the change
committed with its messages in the outbox (published on restart; receivers drop
the duplicates by message id). Handlers therefore get crash safety and
idempotency without doing anything themselves.

All database work of a node runs on one thread, so handlers of one process never
race each other; transactions are short and batched (group commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from caroni.errors import EnvelopeError, SetAside
from caroni.protocol import Opened, Signer, new_message_id, open_envelope, seal
from caroni.store.retention import Retention, prune
from caroni.store.tables import dead_letters, inbox, message_log, outbox
from caroni.transport.base import Consumer, Delivery, OutgoingMessage, Transport
from caroni.trust import TrustPolicy

log = logging.getLogger("caroni.node")

T = TypeVar("T")

BATCH_SIZE = 64
OUTBOX_CHUNK = 500
MAX_TICK_INTERVAL = 1.0
# Timers act on silence ("no offer for 2 s", "the agent has said nothing for 30 s").
# While deliveries wait in the node's own queue it has not heard everything yet:
# firing then only piles rebroadcasts and polls onto a backlog that already holds
# the answers, the backlog grows, and under load the node never catches up again
# (congestion collapse). So timers wait for the deliveries taken to be handled,
# but never longer than this, so that a node that is never idle still fires them.
MAX_TIMER_DEFERRAL = 60.0
MAX_SUMMARY_CHARS = 4000
PRUNE_INTERVAL = 3600.0  # seconds between clean-ups of old inbox ids and traffic


@dataclass(frozen=True, slots=True)
class Send:
    """A message a pure handler wants sent: where to, and what."""

    to: str
    message: Message


@dataclass(frozen=True, slots=True)
class Incoming:
    """One opened delivery as a handler sees it."""

    opened: Opened
    reply_to: str
    routing_key: str

    @property
    def message(self) -> Any:
        return self.opened.message

    @property
    def type_name(self) -> str:
        return self.opened.type_name


@dataclass
class Tx:
    """What a handler may touch while its transaction is open.

    ``conn`` is the open connection; ``send`` queues a message into the outbox (it is
    published only if the transaction commits); ``after_commit`` registers work for
    the event loop once the change is durable (start a job, wake a scheduler).
    """

    conn: Connection
    now: float
    node_uuid: uuid.UUID
    own_key: str
    record_traffic: bool = True
    signer: Signer | None = None
    # The aggregate this transaction concerns (workflow id, job uuid): handlers
    # set it so that the traffic log can show one workflow's messages.
    subject: str = ""
    _outgoing: list[dict[str, Any]] = field(default_factory=list)
    _traffic: list[dict[str, Any]] = field(default_factory=list)
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    def send(self, to: str, message: Message) -> None:
        message_id = new_message_id()
        body = seal(message, message_id=message_id, sender=self.node_uuid, signer=self.signer)
        self.record("out", type(message).__name__, to, message_id, message)
        self._outgoing.append(
            {
                "routing_key": to,
                "body": body,
                "reply_to": self.own_key,
                "message_id": message_id,
                "created_at": self.now,
            }
        )

    def send_all(self, sends: Sequence[Send]) -> None:
        for item in sends:
            self.send(item.to, item.message)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def record(
        self, direction: str, type_name: str, peer: str, message_id: str, message: Message
    ) -> None:
        """Note a message in the traffic log (written by ``flush``)."""
        if not self.record_traffic:
            return
        summary = json.dumps(MessageToDict(message), separators=(",", ":"))
        self._traffic.append(
            {
                "at": self.now,
                "direction": direction,
                "type_name": type_name,
                "peer": peer,
                "message_id": message_id,
                "summary": summary[:MAX_SUMMARY_CHARS],
            }
        )

    def flush(self) -> None:
        """Write queued messages to the outbox and the traffic log."""
        if self._outgoing:
            self.conn.execute(outbox.insert(), self._outgoing)
            self._outgoing = []
        if self._traffic:
            for row in self._traffic:
                row["subject"] = self.subject
            self.conn.execute(message_log.insert(), self._traffic)
            self._traffic = []


class Role(Protocol):
    """What makes a node a manager or an agent: its bindings, handlers and timers."""

    name: str

    def bindings(self, own_key: str) -> list[str]:
        """Routing-key patterns this node's queue listens to."""
        ...

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        """Apply one message; raise SetAside to dead-letter it with a reason."""
        ...

    def tick(self, tx: Tx) -> float | None:
        """Fire due timers; return when to be called next (epoch seconds) or None."""
        ...


class Node:
    """Runs one role: consumer, handler batches, outbox publisher and timers."""

    def __init__(
        self,
        role: Role,
        engine: Engine,
        transport: Transport,
        *,
        node_uuid: uuid.UUID,
        own_key: str,
        queue_name: str,
        prefetch: int = 256,
        record_traffic: bool = True,
        signer: Signer | None = None,
        trust: TrustPolicy | None = None,
    ) -> None:
        self.role = role
        self.engine = engine
        self.transport = transport
        self.node_uuid = node_uuid
        self.own_key = own_key
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.record_traffic = record_traffic
        self.signer = signer
        self.trust = trust or TrustPolicy()
        self.retention = Retention()
        self.counters: dict[str, int] = {
            "handled": 0,
            "duplicates": 0,
            "dead_lettered": 0,
            "published": 0,
        }
        self._db = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"caroni-db-{role.name}"
        )
        self._deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self._idle = asyncio.Event()  # set while no delivery waits to be handled
        self._idle.set()
        self.max_timer_deferral = MAX_TIMER_DEFERRAL
        self._outbox_wakeup = asyncio.Event()
        self._consumer: Consumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._consumer = await self.transport.consume(
            self.queue_name, self.role.bindings(self.own_key), prefetch=self.prefetch
        )
        self._outbox_wakeup.set()  # publish whatever a previous run left behind
        for coro in (
            self._receive_loop(),
            self._handle_loop(),
            self._publish_loop(),
            self._tick_loop(),
        ):
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        """Stop consuming; unacked deliveries return to the queue."""
        self._stopping = True
        if self._consumer is not None:
            await self._consumer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._db.shutdown(wait=True)

    # --- database work --------------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the node's database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def transact(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a transaction of its own with a Tx, then publish what it sent.

        For work that does not come from a delivery: a finished job, a user's edit,
        a timer.
        """
        result, callbacks = await self.db(self._transact_sync, fn)
        self._committed(callbacks)
        return result

    def _transact_sync(self, fn: Callable[[Tx], T]) -> tuple[T, list[Callable[[], None]]]:
        with self.engine.begin() as conn:
            tx = self._new_tx(conn)
            result = fn(tx)
            tx.flush()
        return result, tx._after_commit

    def _new_tx(self, conn: Connection) -> Tx:
        return Tx(
            conn=conn,
            now=time.time(),
            node_uuid=self.node_uuid,
            own_key=self.own_key,
            record_traffic=self.record_traffic,
            signer=self.signer,
        )

    def _committed(self, callbacks: list[Callable[[], None]]) -> None:
        self._outbox_wakeup.set()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")

    # --- receiving ------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._consumer is not None
        async for delivery in self._consumer:
            self._idle.clear()
            self._deliveries.put_nowait(delivery)

    async def _handle_loop(self) -> None:
        backoff = 0.1
        while True:
            batch = [await self._deliveries.get()]
            while len(batch) < BATCH_SIZE and not self._deliveries.empty():
                batch.append(self._deliveries.get_nowait())
            try:
                callbacks = await self.db(self._handle_batch, batch)
            except DBAPIError as exc:
                # The database is unreachable or refused the commit: nothing of the
                # batch took effect, so give it back and try again shortly.
                log.warning("database error, %d deliveries requeued: %s", len(batch), exc)
                for delivery in batch:
                    await delivery.reject(requeue=True)
                if self._deliveries.empty():
                    self._idle.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for delivery in batch:
                await delivery.ack()
            if self._deliveries.empty():
                self._idle.set()
            self._committed(callbacks)

    def _handle_batch(self, batch: list[Delivery]) -> list[Callable[[], None]]:
        callbacks: list[Callable[[], None]] = []
        with self.engine.begin() as conn:
            for delivery in batch:
                callbacks.extend(self._handle_one(conn, delivery))
        return callbacks

    def _handle_one(self, conn: Connection, delivery: Delivery) -> list[Callable[[], None]]:
        try:
            opened = open_envelope(delivery.body)
        except EnvelopeError as exc:
            self._dead_letter(conn, delivery, "", f"cannot open envelope: {exc}")
            return []
        message_id = opened.message_id or delivery.message_id
        # A duplicate is normally found by the inbox insert below (one query fewer
        # per message); a node that must name replays looks first.
        seen = bool(message_id) and self.trust.require_signatures and self._seen(conn, message_id)
        refusal = self.trust.refusal(opened, time.time(), seen)
        if refusal:
            # Not remembered in the inbox: a refused message changed nothing.
            self._dead_letter(conn, delivery, opened.type_name, refusal)
            return []
        incoming = Incoming(opened, delivery.reply_to, delivery.routing_key)
        savepoint = conn.begin_nested()
        tx = self._new_tx(conn)
        tx.record("in", opened.type_name, delivery.reply_to, message_id, opened.message)
        try:
            if message_id:  # raises IntegrityError for a message id handled before
                conn.execute(inbox.insert().values(message_id=message_id, received_at=tx.now))
            self.role.handle(tx, incoming)
            tx.flush()
            savepoint.commit()
        except IntegrityError as exc:
            savepoint.rollback()
            if message_id and self._seen(conn, message_id):
                # Handled before (a redelivery, or a replica sharing this database).
                self.counters["duplicates"] += 1
                log.debug("duplicate %s %s dropped", opened.type_name, message_id)
                return []
            self._dead_letter(conn, delivery, opened.type_name, f"integrity error: {exc.orig}")
            return []
        except SetAside as exc:
            savepoint.rollback()
            self._dead_letter(conn, delivery, opened.type_name, str(exc), message_id)
            return []
        except DBAPIError:
            savepoint.rollback()
            raise
        except Exception as exc:
            savepoint.rollback()
            log.exception("handler for %s failed", opened.type_name)
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reason = f"handler error: {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
            self._dead_letter(conn, delivery, opened.type_name, reason, message_id)
            return []
        self.counters["handled"] += 1
        return tx._after_commit

    def _seen(self, conn: Connection, message_id: str) -> bool:
        query = select(inbox.c.message_id).where(inbox.c.message_id == message_id)
        return conn.execute(query).first() is not None

    def _dead_letter(
        self,
        conn: Connection,
        delivery: Delivery,
        type_name: str,
        reason: str,
        message_id: str = "",
    ) -> None:
        self.counters["dead_lettered"] += 1
        log.warning("set aside %s from %r: %s", type_name or "delivery", delivery.reply_to, reason)
        now = time.time()
        conn.execute(
            dead_letters.insert().values(
                received_at=now,
                routing_key=delivery.routing_key or "",
                reply_to=delivery.reply_to or "",
                message_id=message_id or delivery.message_id or "",
                type_name=type_name,
                reason=reason,
                body=delivery.body,
            )
        )
        if message_id:
            # Remember it, so a redelivery is a duplicate rather than a second dead letter.
            conn.execute(inbox.insert().values(message_id=message_id, received_at=now))

    # --- publishing -------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        backoff = 0.1
        while True:
            await self._outbox_wakeup.wait()
            self._outbox_wakeup.clear()
            try:
                while True:
                    rows = await self.db(self._read_outbox)
                    if not rows:
                        break
                    await self.transport.publish_many(
                        [
                            OutgoingMessage(row.routing_key, row.body, row.reply_to, row.message_id)
                            for row in rows
                        ]
                    )
                    await self.db(self._delete_outbox, [row.id for row in rows])
                    self.counters["published"] += len(rows)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Broker or database trouble: the rows stay in the outbox; try again.
                log.warning("publishing the outbox failed, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._outbox_wakeup.set()

    def _read_outbox(self) -> list[Any]:
        with self.engine.connect() as conn:
            query = select(outbox).order_by(outbox.c.id).limit(OUTBOX_CHUNK)
            return list(conn.execute(query).all())

    def _delete_outbox(self, ids: list[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))

    # --- timers ---------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        pruned_at = 0.0
        while True:
            await self._until_idle()
            if time.time() - pruned_at >= PRUNE_INTERVAL:
                pruned_at = time.time()
                try:
                    removed = await self.transact(lambda tx: prune(tx.conn, tx.now, self.retention))
                    log.debug("pruned %s", removed)
                except Exception:
                    log.exception("pruning old records failed")
            try:
                next_at = await self.transact(self.role.tick)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer tick failed")
                next_at = None
            delay = MAX_TICK_INTERVAL
            if next_at is not None:
                delay = min(max(next_at - time.time(), 0.0), MAX_TICK_INTERVAL)
            await asyncio.sleep(delay)  # a timer period, not synchronization

    async def _until_idle(self) -> None:
        """Wait until no delivery waits to be handled, at most ``max_timer_deferral``."""
        if self._idle.is_set():
            return
        try:
            await asyncio.wait_for(self._idle.wait(), self.max_timer_deferral)
        except TimeoutError:
            log.info(
                "timers fire although deliveries still wait (busy for %.0fs)",
                self.max_timer_deferral,
            )
