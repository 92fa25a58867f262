"""Applying a batch of deliveries in one transaction, and setting aside what cannot
be applied.

First all at once, without a savepoint per message. Should any handler set its
message aside or fail, or another process have handled one of them meanwhile, the
transaction is rolled back and the batch applied again one savepoint per message
(its rows written inside it), so that one bad message costs only itself. A
database outage is not contained: it goes up to the node, which gives the
deliveries back (see ``failures``).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from caroni.core import Incoming
from caroni.errors import EnvelopeError, SetAside
from caroni.node.failures import is_outage
from caroni.node.role import Role
from caroni.node.shell_sql import ShellStatements
from caroni.node.tx import Batch, Tx, outbox_rows
from caroni.protocol import Opened, open_envelope
from caroni.protocol.bounds import check_delivery_fields
from caroni.protocol.bundles import BUNDLE, parts_of
from caroni.store.tables import dead_letters, inbox
from caroni.transport.base import Delivery, OutgoingMessage
from caroni.trust import TrustPolicy

log = logging.getLogger("caroni.node")

MAX_DEAD_LETTER_BODY = 64 * 1024  # bytes of a dead letter's body kept
MAX_REASON = 8000  # characters of a dead letter's reason kept

Written = list[tuple[int, OutgoingMessage]]  # outbox rows: id and message


class _ApplyOneByOne(Exception):
    """A message of a batch failed: apply the batch again one message at a time."""


@dataclass
class Applier:
    """Applies batches of deliveries for one node (on its database thread)."""

    engine: Engine
    role: Role
    trust: TrustPolicy
    statements: ShellStatements
    counters: dict[str, int]
    new_tx: Callable[[Connection, Batch], Tx]
    write: Callable[[Connection, Batch], Written]

    def apply(self, deliveries: list[Delivery]) -> tuple[Batch, list[tuple[int, OutgoingMessage]]]:
        """Apply a batch of deliveries in one transaction.

        First all at once, without a savepoint per message. Should any handler set
        its message aside or fail, or another process have handled one of them
        meanwhile, that transaction is rolled back and the batch applied again one
        savepoint per message, so that one bad message costs only itself.
        """
        deliveries, opened = self.open_all(deliveries)
        # A rolled-back attempt must not count. Only what applying counts is restored:
        # "published" moves on the event loop meanwhile.
        counters = {key: self.counters[key] for key in ("handled", "duplicates", "dead_lettered")}
        try:
            with self.engine.begin() as conn:
                batch = Batch()
                self._apply_together(conn, batch, deliveries, opened)
                published = self.write(conn, batch)
            return batch, published
        except DBAPIError as exc:
            self.counters.update(counters)
            if is_outage(exc):
                raise  # the database itself is in trouble: the batch goes back
            log.debug("batch applied again one message at a time: %s", exc)
        except Exception as exc:
            # A message set aside or failing, or writing back failing (another
            # process changed an aggregate): each message is tried on its own.
            self.counters.update(counters)
            log.debug("batch applied again one message at a time: %s", exc)
        except BaseException:
            self.counters.update(counters)
            raise
        with self.engine.begin() as conn:
            batch = Batch()
            written: list[tuple[int, OutgoingMessage]] = []
            for delivery, item in zip(deliveries, opened, strict=True):
                written += self._apply_alone(conn, batch, delivery, item)
            published = self.write(conn, batch)
        return batch, written + published

    def open_all(
        self, deliveries: list[Delivery]
    ) -> tuple[list[Delivery], list[Opened | EnvelopeError]]:
        """Open every delivery, a bundle into its parts: each part is then applied,
        refused or set aside as if it had come alone."""
        received: list[Delivery] = []
        opened: list[Opened | EnvelopeError] = []
        for delivery in deliveries:
            item = self.open(delivery)
            if isinstance(item, Opened) and item.type_name == BUNDLE:
                self.counters["bundles_received"] += 1
                try:
                    bodies = parts_of(item)
                except EnvelopeError as exc:
                    received.append(delivery)
                    opened.append(exc)
                    continue
                for body in bodies:
                    part = BundlePart(body, delivery.routing_key, delivery.reply_to)
                    received.append(part)
                    opened.append(self.open(part, in_bundle=True))
            else:
                received.append(delivery)
                opened.append(item)
        return received, opened

    def open(self, delivery: Delivery, *, in_bundle: bool = False) -> Opened | EnvelopeError:
        try:
            opened = open_envelope(delivery.body)
            check_delivery_fields(delivery.message_id or "", delivery.reply_to or "")
        except EnvelopeError as exc:
            return exc
        if in_bundle and opened.type_name == BUNDLE:
            return EnvelopeError("a bundle inside a bundle")
        return opened

    def _apply_together(
        self,
        conn: Connection,
        batch: Batch,
        deliveries: list[Delivery],
        opened: list[Opened | EnvelopeError],
    ) -> None:
        accepted: list[tuple[Delivery, Opened, str]] = []
        in_batch: set[str] = set()
        for delivery, item in zip(deliveries, opened, strict=True):
            if isinstance(item, EnvelopeError):
                self.dead_letter(conn, delivery, "", f"cannot open envelope: {item}")
                continue
            message_id = item.message_id or delivery.message_id
            # A node that must name replays looks for them first (in this batch too);
            # otherwise the claim below finds the duplicates.
            replay = self.trust.require_signatures and bool(message_id)
            seen = replay and (message_id in in_batch or self._seen(conn, message_id))
            if self._refused(conn, delivery, item, seen):
                continue
            in_batch.add(message_id)
            accepted.append((delivery, item, message_id))
        fresh = self._claim_ids(conn, [message_id for _, _, message_id in accepted if message_id])
        todo = []
        for delivery, item, message_id in accepted:
            if message_id:
                if message_id not in fresh:
                    self.counters["duplicates"] += 1
                    continue
                fresh.discard(message_id)  # the same message twice in one batch
            todo.append((delivery, item, message_id))
        if len(todo) > 1:
            incoming = [Incoming(o, d.reply_to, d.routing_key) for d, o, _ in todo]
            self.new_tx(conn, batch).work.prefetch(incoming)
        for delivery, item, message_id in todo:
            try:
                self._apply(self.new_tx(conn, batch), delivery, item, message_id)
            except DBAPIError:
                raise
            except Exception as exc:
                raise _ApplyOneByOne(f"{item.type_name}: {type(exc).__name__}: {exc}") from exc
            self.counters["handled"] += 1

    def _claim_ids(self, conn: Connection, message_ids: list[str]) -> set[str]:
        """Note these message ids in the inbox; return those not noted before.

        One statement; a replica sharing the database that handles one of them at
        the same moment makes it wait, then skip the id as noted.
        """
        if not message_ids:
            return set()
        return self.statements.claim(conn, message_ids, time.time())

    def _apply(self, tx: Tx, delivery: Delivery, opened: Opened, message_id: str) -> None:
        """Apply one message (traffic, the role's handler); raises what the handler raises."""
        tx.record("in", opened.type_name, delivery.reply_to, message_id, opened.message)
        if delivery.reply_to:
            tx.batch.heard[delivery.reply_to] = opened.extensions
        self.role.handle(tx, Incoming(opened, delivery.reply_to, delivery.routing_key))
        tx.tag_traffic()

    def _refused(self, conn: Connection, delivery: Delivery, opened: Opened, seen: bool) -> bool:
        """Dead-letter a message the trust policy refuses; True when it did."""
        refusal = self.trust.refusal(
            opened, time.time(), seen and self.trust.require_signatures, delivery.reply_to
        )
        if refusal:
            # Not remembered in the inbox: a refused message changed nothing.
            self.dead_letter(conn, delivery, opened.type_name, refusal)
        return bool(refusal)

    def _apply_alone(
        self,
        conn: Connection,
        batch: Batch,
        delivery: Delivery,
        opened: Opened | EnvelopeError,
    ) -> list[tuple[int, OutgoingMessage]]:
        """Apply one delivery inside a savepoint of its own, its rows written there
        too; what fails is set aside. Returns the outbox rows it wrote."""
        if isinstance(opened, EnvelopeError):
            self.dead_letter(conn, delivery, "", f"cannot open envelope: {opened}")
            return []
        message_id = opened.message_id or delivery.message_id
        seen = bool(message_id) and self._seen(conn, message_id)
        if self._refused(conn, delivery, opened, seen):
            return []
        if seen:
            self.counters["duplicates"] += 1
            log.debug("duplicate %s %s dropped", opened.type_name, message_id)
            return []
        savepoint = conn.begin_nested()
        alone = Batch()
        try:
            if message_id:  # raises IntegrityError for a message id handled meanwhile
                conn.execute(inbox.insert().values(message_id=message_id, received_at=time.time()))
            self._apply(self.new_tx(conn, alone), delivery, opened, message_id)
            if alone.work is not None:
                alone.work.write()
            ids = self.statements.write(
                conn, published_ids=[], outgoing=alone.outgoing, traffic=alone.traffic
            )
            savepoint.commit()
        except IntegrityError as exc:
            savepoint.rollback()
            if message_id and self._seen(conn, message_id):
                # Handled meanwhile by a replica sharing this database.
                self.counters["duplicates"] += 1
                return []
            self.dead_letter(conn, delivery, opened.type_name, f"integrity error: {exc.orig}")
            return []
        except SetAside as exc:
            savepoint.rollback()
            self.dead_letter(conn, delivery, opened.type_name, str(exc), message_id)
            return []
        except DBAPIError as exc:
            savepoint.rollback()
            if is_outage(exc):
                raise
            # What the message carries made the database refuse it.
            reason = f"the database refused it: {type(exc.orig).__name__}: {exc.orig}"
            self.dead_letter(conn, delivery, opened.type_name, reason, message_id)
            return []
        except Exception as exc:
            savepoint.rollback()
            log.exception("handler for %s failed", opened.type_name)
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reason = f"handler error: {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
            self.dead_letter(conn, delivery, opened.type_name, reason, message_id)
            return []
        self.counters["handled"] += 1
        if alone.work is not None:
            batch.after_commit.append(alone.work.after_commit)
        batch.after_commit += alone.after_commit
        batch.heard.update(alone.heard)
        return outbox_rows(ids, alone.outgoing)

    def _seen(self, conn: Connection, message_id: str) -> bool:
        query = select(inbox.c.message_id).where(inbox.c.message_id == message_id)
        return conn.execute(query).first() is not None

    def dead_letter(
        self,
        conn: Connection,
        delivery: Delivery,
        type_name: str,
        reason: str,
        message_id: str = "",
    ) -> None:
        """Store a delivery that is set aside. Whatever the delivery holds, this must
        not fail: every text is cut to its column and cleared of NUL, and the body is
        kept up to ``MAX_DEAD_LETTER_BODY`` bytes (the reason says when it was cut)."""
        self.counters["dead_lettered"] += 1
        log.warning("set aside %s from %r: %s", type_name or "delivery", delivery.reply_to, reason)
        body = bytes(delivery.body)
        if len(body) > MAX_DEAD_LETTER_BODY:
            reason += f" (body cut to {MAX_DEAD_LETTER_BODY} of {len(body)} bytes)"
            body = body[:MAX_DEAD_LETTER_BODY]
        now = time.time()
        conn.execute(
            dead_letters.insert().values(
                received_at=now,
                routing_key=_storable(delivery.routing_key, "routing_key"),
                reply_to=_storable(delivery.reply_to, "reply_to"),
                message_id=_storable(message_id or delivery.message_id, "message_id"),
                type_name=_storable(type_name, "type_name"),
                reason=_storable(reason, "reason"),
                body=body,
            )
        )
        if message_id:
            # Remember it, so a redelivery is a duplicate rather than a second dead letter.
            conn.execute(inbox.insert().values(message_id=message_id, received_at=now))


class BundlePart(Delivery):
    """One envelope of a bundle, handled like a delivery of its own; only the bundle,
    the broker's delivery, is acked or given back, once all its parts are handled."""

    def __init__(self, body: bytes, routing_key: str, reply_to: str) -> None:
        self.body = body
        self.routing_key = routing_key
        self.reply_to = reply_to
        self.message_id = ""  # each part's own is in its envelope
        self.redelivered = False

    async def ack(self) -> None:
        raise RuntimeError("a part of a bundle is settled with its bundle")

    async def reject(self, requeue: bool = True) -> None:
        raise RuntimeError("a part of a bundle is settled with its bundle")


def _storable(text: str | None, column: str) -> str:
    """``text`` as the dead-letter ``column`` can hold it (its declared length; the
    unbounded reason up to ``MAX_REASON``), NUL shown as an escape."""
    limit = getattr(dead_letters.c[column].type, "length", None) or MAX_REASON
    return (text or "").replace("\x00", "\\0")[:limit]
