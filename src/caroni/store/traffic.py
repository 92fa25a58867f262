"""Reading a node's traffic: the message log and the dead letters.

The shell writes both (``node/shell_sql.py``, ``node/runtime.py``) and retention
prunes the log (``store/retention.py``); the pages, the diagrams and ``caroni
status`` read them here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from caroni.store.tables import dead_letters, message_log


@dataclass(frozen=True)
class LoggedMessage:
    """One row of a node's ``message_log``."""

    at: float
    direction: str  # "in" or "out"
    type_name: str
    peer: str  # sender's key (in) or routing key (out)
    summary: str = ""  # the message as JSON (protobuf's JSON mapping)


def messages_about(
    conn: Connection, subjects: Collection[str], limit: int
) -> tuple[list[LoggedMessage], int]:
    """The first ``limit`` logged messages about these subjects (workflow ids on a
    manager, request and job uuids on an agent), and how many there are."""
    where = message_log.c.subject.in_(list(subjects))
    total = conn.execute(select(func.count()).select_from(message_log).where(where)).scalar_one()
    query = (
        select(
            message_log.c.at,
            message_log.c.direction,
            message_log.c.type_name,
            message_log.c.peer,
            message_log.c.summary,
        )
        .where(where)
        .order_by(message_log.c.id)
        .limit(limit)
    )
    return [LoggedMessage(*row) for row in conn.execute(query).all()], total


def last_message_id(conn: Connection, subject: str) -> int | None:
    """The id of the latest logged message about ``subject`` (it grows with each)."""
    return conn.execute(
        select(func.max(message_log.c.id)).where(message_log.c.subject == subject)
    ).scalar_one_or_none()


def count_dead_letters(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(dead_letters)).scalar_one()


def recent_dead_letters(conn: Connection, limit: int) -> list[tuple[float, str, str, str]]:
    """The latest dead letters, newest first: when, message type, sender, reason."""
    latest = conn.execute(
        select(
            dead_letters.c.received_at,
            dead_letters.c.type_name,
            dead_letters.c.reply_to,
            dead_letters.c.reason,
        )
        .order_by(dead_letters.c.id.desc())
        .limit(limit)
    ).all()
    return [(at, type_name, sender, reason) for at, type_name, sender, reason in latest]
