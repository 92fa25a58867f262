"""A transaction as roles see it: its connection and clock, what it sends, and the
role's unit of work that reads once and writes once for all its messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy import Connection

from caroni.core import Incoming, NewId, Send, random_ids
from caroni.node.shell_sql import ShellStatements
from caroni.protocol import Signer, new_message_id, seal
from caroni.transport.base import OutgoingMessage

MAX_SUMMARY_CHARS = 4000


class UnitOfWork(Protocol):
    """What a role keeps for one transaction (the aggregates its messages concern),
    read once for all of them and written back once, before the transaction's own
    rows are written."""

    def prefetch(self, incoming: Sequence[Incoming]) -> None:
        """Read what a batch of messages concerns in a few statements, before they are
        applied together."""
        ...

    def write(self) -> None:
        """Write back what the transaction changed."""
        ...

    def after_commit(self) -> None:
        """The transaction committed: keep what is now durable (caches)."""
        ...


class NoWork:
    """The unit of work of a role that keeps nothing per transaction."""

    def prefetch(self, incoming: Sequence[Incoming]) -> None:
        pass

    def write(self) -> None:
        pass

    def after_commit(self) -> None:
        pass


@dataclass
class Batch:
    """What the messages of one transaction leave to be written at its end.

    Handlers queue rows here instead of writing them one by one, so a batch of
    deliveries costs a few bulk statements instead of several per message.
    """

    outgoing: list[dict[str, Any]] = field(default_factory=list)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # The extensions each peer (by its reply-to key) announced in what was applied.
    heard: dict[str, frozenset[str]] = field(default_factory=dict)
    # The role's unit of work for this transaction, once a handler has asked for it.
    work: UnitOfWork | None = None

    def write(
        self, conn: Connection, statements: ShellStatements, published_ids: list[int]
    ) -> list[tuple[int, OutgoingMessage]]:
        """Write everything queued and forget the outbox rows published since the last
        write, as the transaction's last statements (they may commit it); return the
        outgoing messages with their outbox ids."""
        if self.work is not None:
            self.work.write()
        ids = statements.write(
            conn,
            published_ids=published_ids,
            outgoing=self.outgoing,
            traffic=self.traffic,
            commit=True,
        )
        return outbox_rows(ids, self.outgoing)


def outbox_rows(ids: list[int], rows: list[dict[str, Any]]) -> list[tuple[int, OutgoingMessage]]:
    """Outgoing messages with the outbox row ids they were written under."""
    return [
        (row_id, OutgoingMessage(r["routing_key"], r["body"], r["reply_to"], r["message_id"]))
        for row_id, r in zip(ids, rows, strict=True)
    ]


@dataclass
class Tx:
    """What a handler may touch while its transaction is open.

    ``conn`` is the open connection; ``send`` queues a message into the outbox (it is
    published only if the transaction commits); ``after_commit`` registers work for
    the event loop once the change is durable (start a job, wake a scheduler);
    ``work`` is the role's unit of work for the transaction (opened on first use).
    """

    conn: Connection
    now: float
    node_uuid: uuid.UUID
    own_key: str
    new_id: NewId = random_ids  # fresh ids for what handlers create
    record_traffic: bool = True
    signer: Signer | None = None
    speaks: frozenset[str] = frozenset()  # extensions announced on every message sent
    batch: Batch = field(default_factory=Batch)
    # Opens the role's unit of work; set by the node that makes this Tx.
    opener: Callable[[Tx], UnitOfWork] = field(default=lambda tx: NoWork())
    # The aggregate this transaction concerns (workflow id, job uuid): handlers
    # set it so that the traffic log can show one workflow's messages.
    subject: str = ""
    _unmarked: int = 0  # traffic rows from here on do not have their subject yet

    def __post_init__(self) -> None:
        self._unmarked = len(self.batch.traffic)  # earlier messages' rows have theirs

    @property
    def work(self) -> UnitOfWork:
        """The role's unit of work for this transaction: what it read once for all
        the transaction's messages and writes back once at its end."""
        if self.batch.work is None:
            self.batch.work = self.opener(self)
        return self.batch.work

    def uses(self, extension: str, incoming: Incoming) -> bool:
        """Whether this node uses ``extension`` with the sender of ``incoming``: only
        when both have announced it."""
        return extension in self.speaks and extension in incoming.opened.extensions

    def send(self, to: str, message: Message) -> None:
        message_id = new_message_id()
        body = seal(
            message,
            message_id=message_id,
            sender=self.node_uuid,
            signer=self.signer,
            extensions=self.speaks,
        )
        self.record("out", type(message).__name__, to, message_id, message)
        self.batch.outgoing.append(
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
        self.batch.after_commit.append(callback)

    def record(
        self, direction: str, type_name: str, peer: str, message_id: str, message: Message
    ) -> None:
        """Note a message in the traffic log (its subject is filled in by ``tag_traffic``)."""
        if not self.record_traffic:
            return
        summary = json.dumps(MessageToDict(message), separators=(",", ":"))
        self.batch.traffic.append(
            {
                "at": self.now,
                "direction": direction,
                "type_name": type_name,
                "peer": peer,
                "message_id": message_id,
                "summary": summary[:MAX_SUMMARY_CHARS],
                "subject": "",
            }
        )

    def tag_traffic(self) -> None:
        """File the traffic noted since the last call under the current ``subject``
        (call it before moving on to another subject in the same transaction)."""
        rows = self.batch.traffic
        for row in rows[self._unmarked :]:
            row["subject"] = self.subject
        self._unmarked = len(rows)
