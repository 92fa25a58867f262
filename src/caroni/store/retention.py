"""Forgetting what a node no longer needs, so its database does not grow forever."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete

from caroni.store.tables import inbox, message_log

DAY = 24 * 3600.0


@dataclass(frozen=True)
class Retention:
    """How long records are kept (seconds).

    Handled message ids must outlive any redelivery and the trust policy's
    ``max_age`` (24 h by default): a message older than that is refused by its age,
    younger ones by the id remembered here.
    """

    inbox: float = 2 * DAY
    message_log: float = 7 * DAY


def prune(conn: Connection, now: float, retention: Retention) -> dict[str, int]:
    """Delete inbox ids and traffic log rows older than their retention."""
    removed_ids = conn.execute(delete(inbox).where(inbox.c.received_at < now - retention.inbox))
    removed_log = conn.execute(
        delete(message_log).where(message_log.c.at < now - retention.message_log)
    )
    return {"inbox": removed_ids.rowcount or 0, "message_log": removed_log.rowcount or 0}
