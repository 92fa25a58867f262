"""The service shell: the one place where messages meet the database.

Every delivery, whatever its type, goes through the same steps:

1. take a batch of deliveries from the transport;
2. in ONE database transaction: open the envelopes, note their message ids in the
   inbox (an id noted before is a duplicate and skipped), let the role's handler
   apply each message, write the outgoing messages to the outbox (the shell's own
   statements are in ``shell_sql``, the applying in ``apply``); a delivery that
   cannot be opened or applied is stored as a dead letter with its reason instead
   (the batch is then applied again one savepoint per message, so that it costs
   only itself); a database outage gives the batch back (``failures``);
3. commit, then ack the batch;
4. publish the outbox with broker confirms (``outbox``); the next transaction
   deletes the rows published since.

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
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from caroni.backoff import Backoff
from caroni.core import NewId, random_ids
from caroni.node.apply import Applier
from caroni.node.failures import GiveBacks, is_outage
from caroni.node.outbox import Publisher
from caroni.node.role import Role
from caroni.node.shell_sql import ShellStatements
from caroni.node.tx import Batch, Tx
from caroni.protocol import Signer
from caroni.protocol.extensions import BUNDLES, SPOKEN
from caroni.store.retention import Retention, prune
from caroni.store.vacuum import vacuum_loop
from caroni.transport.base import Consumer, Delivery, OutgoingMessage, Transport
from caroni.trust import TrustPolicy

log = logging.getLogger("caroni.node")

T = TypeVar("T")

BATCH_SIZE = 64
# Timers act on silence ("no offer for 2 s", "the agent has said nothing for 30 s").
# While deliveries wait in the node's own queue it has not heard everything yet:
# firing then only piles rebroadcasts and polls onto a backlog that already holds
# the answers, the backlog grows, and under load the node never catches up again
# (congestion collapse). So timers wait for the deliveries taken to be handled,
# but never longer than this, so that a node that is never idle still fires them.
MAX_TIMER_DEFERRAL = 60.0
PRUNE_INTERVAL = 3600.0  # seconds between clean-ups of old inbox ids and traffic


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
        speaks: frozenset[str] = SPOKEN,
        trust: TrustPolicy | None = None,
        new_id: NewId = random_ids,
    ) -> None:
        self.role = role
        self.new_id = new_id  # where handlers' fresh ids come from
        self.engine = engine
        self.transport = transport
        self.node_uuid = node_uuid
        self.own_key = own_key
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.record_traffic = record_traffic
        self.signer = signer
        self.speaks = speaks  # the extensions this node announces (protocol.extensions)
        self.trust = trust or TrustPolicy()
        self.retention = Retention()
        self._statements = ShellStatements(engine.dialect.name)
        self.counters: dict[str, int] = {
            "handled": 0,
            "duplicates": 0,
            "dead_lettered": 0,
            "published": 0,
            "bundles_published": 0,
            "bundles_received": 0,
        }
        self._applier = Applier(
            engine,
            role,
            self.trust,
            self._statements,
            self.counters,
            new_tx=self._new_tx,
            write=self._write,
        )
        self._db = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"caroni-db-{role.name}"
        )
        self._deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self._idle = asyncio.Event()  # set while no delivery waits to be handled
        self._idle.set()
        self._tick_now = asyncio.Event()  # a new deadline: run the timers again
        self.max_timer_deferral = MAX_TIMER_DEFERRAL
        self.publisher = Publisher(
            engine, transport, self.db, self.counters, bundles=BUNDLES in speaks
        )
        self._backoff = Backoff()  # between tries of deliveries given back
        self._give_backs = GiveBacks()
        self._consumer: Consumer | None = None
        self._bindings: set[str] = set()  # routing patterns the node's queue is bound to
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._bindings = set(self.role.bindings(self.own_key))
        self._consumer = await self.transport.consume(
            self.queue_name, sorted(self._bindings), prefetch=self.prefetch
        )
        # Publish what a previous run left behind; what is committed from now on is
        # handed over in memory.
        self.publisher.sweep_first()
        for coro in (
            self._receive_loop(),
            self._handle_loop(),
            self.publisher.run(),
            self._tick_loop(),
            vacuum_loop(self.engine),
        ):
            self._tasks.append(asyncio.create_task(coro))

    async def listen_to(self, pattern: str) -> None:
        """Also receive what is routed by ``pattern`` from now on (a job type an agent
        has begun to serve)."""
        if pattern in self._bindings:
            return
        self._bindings.add(pattern)
        if self._consumer is not None:
            await self._consumer.bind(pattern)

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
        done: tuple[T, Batch, list[tuple[int, OutgoingMessage]]]
        done = await self.db(self._transact_sync, fn)
        result, batch, published = done
        self._committed(batch, published)
        return result

    def _transact_sync(
        self, fn: Callable[[Tx], T]
    ) -> tuple[T, Batch, list[tuple[int, OutgoingMessage]]]:
        with self.engine.begin() as conn:
            tx = self._new_tx(conn, Batch())
            result = fn(tx)
            tx.tag_traffic()
            published = self._write(conn, tx.batch)
        return result, tx.batch, published

    def _new_tx(self, conn: Connection, batch: Batch) -> Tx:
        return Tx(
            conn=conn,
            now=time.time(),
            node_uuid=self.node_uuid,
            own_key=self.own_key,
            new_id=self.new_id,
            opener=self.role.open,
            record_traffic=self.record_traffic,
            signer=self.signer,
            speaks=self.speaks,
            batch=batch,
        )

    def _write(self, conn: Connection, batch: Batch) -> list[tuple[int, OutgoingMessage]]:
        """End a transaction: write its queued rows, and delete outbox rows published
        since the last write (should this transaction roll back, they are deleted by a
        later one). Nothing may run in the transaction after this."""
        done = self.publisher.take_published_ids()
        try:
            return batch.write(conn, self._statements, done)
        except BaseException:
            self.publisher.give_back_published_ids(done)
            raise

    def _committed(self, batch: Batch, published: list[tuple[int, OutgoingMessage]]) -> None:
        """After a commit: hand its messages to the publisher, run its callbacks."""
        self.publisher.heard(batch.heard)
        self.publisher.hand_over(published)
        callbacks = list(batch.after_commit)
        if batch.work is not None:
            callbacks.insert(0, batch.work.after_commit)
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
        while True:
            batch = [await self._deliveries.get()]
            # One pass of the event loop lets deliveries that arrived together (a job's
            # data and its status) be taken together.
            await asyncio.sleep(0)
            while len(batch) < BATCH_SIZE and not self._deliveries.empty():
                batch.append(self._deliveries.get_nowait())
            await self._handle(batch)
            if self._deliveries.empty():
                self._idle.set()

    async def _handle(self, batch: list[Delivery]) -> None:
        """Apply a batch of deliveries and ack them; or give them back to the broker.

        A database outage gives the batch back, to come again once the database
        answers. Any other failure (a bug, or something a message carries that no
        savepoint could contain) is narrowed down: the deliveries are applied one by
        one, and one that fails on its own while the database answers is given back
        at most ``MAX_GIVE_BACKS`` times, then set aside with the last error.
        """
        try:
            committed, published = await self.db(self._applier.apply, batch)
        except Exception as exc:
            if not await self._outage(exc):
                if len(batch) > 1:
                    log.warning(
                        "%d deliveries failed together, one by one now: %s", len(batch), exc
                    )
                    for delivery in batch:
                        await self._handle([delivery])
                    return
                if await self._set_aside_after_give_backs(batch[0], exc):
                    return
            for delivery in batch:
                await delivery.reject(requeue=True)
            await asyncio.sleep(self._backoff.next())  # not synchronization: a retry pause
            return
        self._backoff.reset()
        if self._give_backs:  # only after failures: no key is hashed on the usual path
            for delivery in batch:
                self._give_backs.forget(_delivery_key(delivery))
        self._committed(committed, published)  # publishing starts before the acks
        for delivery in batch:
            await delivery.ack()

    async def _outage(self, exc: Exception) -> bool:
        """Whether ``exc`` came from a database outage (logged as such); a failure that
        does not say so is one only if the database does not answer a probe now."""
        outage = is_outage(exc)
        if not outage:
            try:
                await self.db(self._probe)
            except Exception:  # noqa: BLE001 - any failure to answer is an outage
                outage = True
        if outage:
            log.warning("database unavailable, deliveries given back: %s", _first_line(exc))
        return outage

    def _probe(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    async def _set_aside_after_give_backs(self, delivery: Delivery, exc: Exception) -> bool:
        """Count one more failure of ``delivery``; set it aside (and ack it) once it
        has failed ``MAX_GIVE_BACKS`` times. True when it was set aside."""
        key = _delivery_key(delivery)
        if not self._give_backs.failed(key):
            log.warning("applying a delivery failed, given back: %s", _first_line(exc))
            return False
        reason = (
            f"failed {self._give_backs.limit} times while the database answered;"
            f" last error: {type(exc).__name__}: {exc}"
        )

        def set_aside() -> None:
            with self.engine.begin() as conn:
                self._applier.dead_letter(conn, delivery, "", reason)

        try:
            await self.db(set_aside)
        except Exception:
            log.exception("setting aside a delivery failed; given back")
            return False
        self._give_backs.forget(key)
        await delivery.ack()
        return True

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
            self._tick_now.clear()  # a deadline set from here on runs the timers again
            try:
                next_at = await self.transact(self.role.tick)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer tick failed")
                next_at = None
            delay = self.role.max_tick_interval
            if next_at is not None:
                delay = min(max(next_at - time.time(), 0.0), delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_now.wait(), delay)  # a timer period

    def tick_soon(self) -> None:
        """Run the timers now: a transaction set a deadline they do not know yet."""
        self._tick_now.set()

    async def _until_idle(self) -> None:
        """Wait until no delivery waits to be handled, at most ``max_timer_deferral``."""
        if self._idle.is_set():
            return
        try:
            async with asyncio.timeout(self.max_timer_deferral):  # see _publish_loop
                await self._idle.wait()
        except TimeoutError:
            log.info(
                "timers fire although deliveries still wait (busy for %.0fs)",
                self.max_timer_deferral,
            )


def _delivery_key(delivery: Delivery) -> str:
    """What tells a delivery's redeliveries apart from other deliveries."""
    if delivery.message_id:
        return "id:" + delivery.message_id
    return "body:" + hashlib.sha256(delivery.body).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
