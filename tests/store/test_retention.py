"""Old inbox ids and traffic are pruned; recent ones are kept."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from caroni.store import create_db_engine, migrate
from caroni.store.retention import DAY, Retention, prune
from caroni.store.tables import inbox, message_log, offers

NOW = 1_800_000_000.0


def test_prune_forgets_only_what_is_older_than_its_retention(tmp_path: Path) -> None:
    engine = create_db_engine(str(tmp_path / "node.sqlite3"))
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            inbox.insert(),
            [
                {"message_id": "old", "received_at": NOW - 3 * DAY},
                {"message_id": "recent", "received_at": NOW - DAY},
            ],
        )
        log_row = {"direction": "in", "type_name": "X", "peer": "p", "summary": "{}"}
        conn.execute(
            message_log.insert(),
            [{**log_row, "at": NOW - 8 * DAY}, {**log_row, "at": NOW - 6 * DAY}],
        )
        offer = {
            "request_uuid": "r",
            "job_type": "t",
            "manager_key": "m",
            "parameters": "[]",
            "created_at": NOW - 3 * DAY,
            "expires_at": NOW,
        }
        conn.execute(
            offers.insert(),
            [
                {**offer, "offer_uuid": "old-closed", "state": "accepted"},
                {**offer, "offer_uuid": "old-open", "state": "open"},
                {**offer, "offer_uuid": "recent-closed", "state": "expired", "created_at": NOW},
            ],
        )
        removed = prune(conn, NOW, Retention())
    assert removed == {"inbox": 1, "message_log": 1, "offers": 1}
    with engine.connect() as conn:
        assert list(conn.execute(select(inbox.c.message_id)).scalars()) == ["recent"]
        assert conn.execute(select(func.count()).select_from(message_log)).scalar_one() == 1
        kept = set(conn.execute(select(offers.c.offer_uuid)).scalars())
        assert kept == {"old-open", "recent-closed"}
    engine.dispose()
