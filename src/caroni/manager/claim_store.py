"""Reading and writing the claims a manager holds (see :mod:`caroni.manager.claims`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from caroni.manager.claims import ClaimBook, HeldClaim
from caroni.store.tables import held_claims

_LIVE = select(held_claims).where(held_claims.c.expires_at > bindparam("now"))
_COUNT = (
    update(held_claims)
    .where(held_claims.c.claim_uuid == bindparam("b_claim_uuid"))
    .values(in_use=held_claims.c.in_use + bindparam("delta"))
)
_KEPT_AFTER_EXPIRY = 3600.0  # seconds an expired claim stays listed on the site


class ClaimStore:
    def live(self, conn: Connection, now: float) -> ClaimBook:
        rows = conn.execute(_LIVE, {"now": now})
        return ClaimBook({row.claim_uuid: _claim(row) for row in rows})

    def write(self, conn: Connection, book: ClaimBook, in_use: Mapping[str, int]) -> None:
        """Write the claims granted and dropped, and change the counts of jobs under
        claims by ``in_use`` (claim uuid -> jobs more, or fewer, than before)."""
        if book.dropped:
            conn.execute(delete(held_claims).where(held_claims.c.claim_uuid.in_(book.dropped)))
        upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        for claim_uuid in sorted(book.granted):
            claim = book.claims[claim_uuid]
            values = {
                "agent_key": claim.agent_key,
                "agent_site": claim.agent_site,
                "job_types": json.dumps(sorted(claim.job_types)),
                "capacity": claim.capacity,
                "expires_at": claim.expires_at,
            }
            conn.execute(
                upsert(held_claims)
                .values(claim_uuid=claim_uuid, in_use=0, **values)
                .on_conflict_do_update(index_elements=[held_claims.c.claim_uuid], set_=values)
            )
        changes = [
            {"b_claim_uuid": claim_uuid, "delta": delta}
            for claim_uuid, delta in sorted(in_use.items())
            if delta
        ]
        if changes:
            conn.execute(_COUNT, changes)
        book.granted.clear()
        book.dropped.clear()
        book.stored(in_use)

    def forget_expired(self, conn: Connection, now: float) -> None:
        conn.execute(delete(held_claims).where(held_claims.c.expires_at < now - _KEPT_AFTER_EXPIRY))

    def all(self, conn: Connection) -> list[HeldClaim]:
        """Every claim held, live or lately expired, the latest to expire first (pages)."""
        rows = conn.execute(select(held_claims).order_by(held_claims.c.expires_at.desc()))
        return [_claim(row) for row in rows]


def _claim(row: Any) -> HeldClaim:
    return HeldClaim(
        claim_uuid=row.claim_uuid,
        agent_key=row.agent_key,
        agent_site=row.agent_site,
        job_types=frozenset(json.loads(row.job_types)),
        capacity=row.capacity,
        expires_at=row.expires_at,
        in_use=max(row.in_use, 0),  # a count that drifted below zero means none
    )
