"""Publishing what transactions committed to the outbox, with broker confirms.

Normally straight from memory, as each transaction hands its messages over; their
rows are deleted by a later transaction (the ids of published rows are handed back
to the node's next write). After a start or a failure, from the outbox table
instead, which holds everything not yet confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine, select

from caroni.backoff import Backoff
from caroni.protocol.bundles import group_for_bundles, seal_bundle
from caroni.protocol.extensions import BUNDLES
from caroni.store.tables import outbox
from caroni.transport.base import OutgoingMessage, Transport

log = logging.getLogger("caroni.node")

OUTBOX_CHUNK = 500
# A process publishes what it committed itself. Rows older than this are left by a
# process that died before publishing them (a replica sharing the database):
# any replica publishes them, looking this often.
STALE_OUTBOX_AGE = 30.0
STALE_OUTBOX_INTERVAL = 10.0

Rows = list[tuple[int, OutgoingMessage]]  # outbox row ids and their messages


class Publisher:
    """Publishes one node's outbox."""

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        db: Callable[..., Awaitable[Any]],
        counters: dict[str, int],
        *,
        bundles: bool = True,
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.db = db  # runs a function on the node's database thread
        self.counters = counters
        self._bundling = Bundling() if bundles else None
        self._wakeup = asyncio.Event()
        # Committed messages waiting to be published, with their outbox row ids; and
        # ids of rows published since, which the next transaction deletes.
        self._unpublished: Rows = []
        self._published_ids: list[int] = []
        self._published_lock = threading.Lock()
        self._sweep_before: float | None = None  # publish older rows from the table first

    def sweep_first(self) -> None:
        """Publish what a previous run left in the table before anything else."""
        self._sweep_before = time.time()
        self._wakeup.set()

    def hand_over(self, rows: Rows) -> None:
        """A transaction committed these rows: publish them."""
        if rows:
            self._unpublished.extend(rows)
            self._wakeup.set()

    def heard(self, announced: dict[str, frozenset[str]]) -> None:
        """Peers announced these extensions (by their own keys): whether to bundle
        what goes to them."""
        if self._bundling is not None and announced:
            self._bundling.heard(announced)

    def take_published_ids(self) -> list[int]:
        """The ids of rows published since the last call, for a transaction to delete."""
        with self._published_lock:
            done, self._published_ids = self._published_ids, []
        return done

    def give_back_published_ids(self, ids: list[int]) -> None:
        """The transaction that was to delete these rows did not commit."""
        with self._published_lock:
            self._published_ids.extend(ids)

    async def run(self) -> None:
        """Publish committed messages with broker confirms.

        Normally straight from memory, as each transaction hands them over; the rows
        are deleted by a later transaction. After a start or a failure, from the
        outbox table instead (``_sweep``), which holds everything not yet confirmed.
        """
        backoff = Backoff(most=10.0)
        swept_stale_at = time.monotonic()
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that meets the wakeup, and stop() then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STALE_OUTBOX_INTERVAL):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                if self._sweep_before is not None:
                    await self._sweep(older_than=self._sweep_before)
                    self._sweep_before = None
                elif time.monotonic() - swept_stale_at >= STALE_OUTBOX_INTERVAL:
                    await self._sweep(older_than=time.time() - STALE_OUTBOX_AGE)
                    swept_stale_at = time.monotonic()
                while self._unpublished:
                    rows, self._unpublished = self._unpublished, []
                    messages = [message for _, message in rows]
                    if self._bundling is not None:
                        messages = self._bundling.bundle(messages, self.counters)
                    await self.transport.publish_many(messages)
                    self._confirmed([row_id for row_id, _ in rows])
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Broker or database trouble: the rows stay in the outbox; try again.
                pause = backoff.next()
                log.warning("publishing the outbox failed, retrying in %.1fs: %s", pause, exc)
                self._sweep_before = time.time()
                await asyncio.sleep(pause)  # a retry pause, not synchronization
                self._wakeup.set()

    async def _sweep(self, older_than: float) -> None:
        """Publish the rows in the outbox table created before ``older_than``, oldest
        first."""
        swept: set[int] = set()
        after = 0
        while True:
            rows = await self.db(self._read_outbox, after, older_than)
            if not rows:
                break
            await self.transport.publish_many(
                [OutgoingMessage(r.routing_key, r.body, r.reply_to, r.message_id) for r in rows]
            )
            ids = [row.id for row in rows]
            self._confirmed(ids)
            swept.update(ids)
            after = max(ids)
        # What transactions handed over meanwhile was either swept just now or is
        # still to publish.
        self._unpublished = [row for row in self._unpublished if row[0] not in swept]

    def _confirmed(self, ids: list[int]) -> None:
        with self._published_lock:
            self._published_ids.extend(ids)
        self.counters["published"] += len(ids)

    def _read_outbox(self, after: int, older_than: float) -> list[Any]:
        query = (
            select(outbox)
            .where(outbox.c.id > after, outbox.c.created_at < older_than)
            .order_by(outbox.c.id)
            .limit(OUTBOX_CHUNK)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())


class Bundling:
    """Which peers read bundles, and putting what goes to each of them at once into
    bundles.

    Learnt from what peers send (the extensions announced in every envelope), kept
    for the most recent ``MAX_PEERS`` peers in memory only: after a restart the node
    publishes one message at a time to a peer until it hears from that peer again.
    A peer that stops announcing bundles (an older version started in its place) is
    forgotten with its first message. Only the live path bundles; the outbox sweep
    after a failure publishes message by message, which every peer reads.
    """

    MAX_PEERS = 10_000

    def __init__(self) -> None:
        self._peers: OrderedDict[str, None] = OrderedDict()

    def heard(self, announced: dict[str, frozenset[str]]) -> None:
        """Note the extensions peers announced, by their own (reply-to) keys."""
        for key, extensions in announced.items():
            if BUNDLES in extensions:
                self._peers[key] = None
                self._peers.move_to_end(key)
                if len(self._peers) > self.MAX_PEERS:
                    self._peers.popitem(last=False)
            else:
                self._peers.pop(key, None)

    def bundle(
        self, messages: list[OutgoingMessage], counters: dict[str, int]
    ) -> list[OutgoingMessage]:
        """``messages`` with those for each peer that reads bundles put into bundles;
        the order of the messages for one peer is kept."""
        for_peer: dict[tuple[str, str], list[OutgoingMessage]] = {}
        out: list[OutgoingMessage] = []
        for message in messages:
            if message.routing_key in self._peers:
                for_peer.setdefault((message.routing_key, message.reply_to), []).append(message)
            else:
                out.append(message)
        for (key, reply_to), several in for_peer.items():
            for run in group_for_bundles([len(m.body) for m in several]):
                if len(run) == 1:
                    out.append(several[run[0]])
                    continue
                body = seal_bundle([several[i].body for i in run])
                out.append(OutgoingMessage(key, body, reply_to))
                counters["bundles_published"] += 1
        return out
