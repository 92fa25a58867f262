"""Forgetting what a node no longer needs, so its database does not grow forever."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete

from caroni.store.tables import inbox, message_log, offers

DAY = 24 * 3600.0
OPEN = "open"  # an agent's offer still standing (agent.model.OfferState.OPEN)


@dataclass(frozen=True)
class Retention:
    """How long records are kept (seconds).

    Handled message ids must outlive any redelivery and the trust policy's
    ``max_age`` (24 h by default): a message older than that is refused by its age,
    younger ones by the id remembered here.
    """

    inbox: float = 2 * DAY
    message_log: float = 7 * DAY
    # An agent's offers once they are no longer open (accepted, rejected, expired):
    # kept as long as message ids, so a late repeat of an accept still finds its job.
    offers: float = 2 * DAY


def prune(conn: Connection, now: float, retention: Retention) -> dict[str, int]:
    """Delete inbox ids, traffic log rows and closed offers older than their retention."""
    removed_ids = conn.execute(delete(inbox).where(inbox.c.received_at < now - retention.inbox))
    removed_log = conn.execute(
        delete(message_log).where(message_log.c.at < now - retention.message_log)
    )
    removed_offers = conn.execute(
        delete(offers).where(offers.c.state != OPEN, offers.c.created_at < now - retention.offers)
    )
    return {
        "inbox": removed_ids.rowcount or 0,
        "message_log": removed_log.rowcount or 0,
        "offers": removed_offers.rowcount or 0,
    }
