"""A node vacuums its busy tables itself when the PostgreSQL server's autovacuum is
off (this machine's server runs so), and never on SQLite."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, insert, text

from caroni.store import create_db_engine, migrate
from caroni.store.tables import outbox
from caroni.store.vacuum import BUSY_TABLES, needs_vacuuming, vacuum_busy_tables


def test_sqlite_is_never_vacuumed(tmp_path: Path) -> None:
    engine = create_db_engine(str(tmp_path / "node.sqlite3"))
    assert needs_vacuuming(engine) is False
    engine.dispose()


def test_busy_tables_are_vacuumed(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    with engine.connect() as conn:
        setting = conn.execute(text("SHOW autovacuum")).scalar_one()
    assert needs_vacuuming(engine) is (setting == "off")
    rows = [
        {"routing_key": "k", "body": b"x", "reply_to": "", "message_id": str(n), "created_at": 1.0}
        for n in range(500)
    ]
    with engine.begin() as conn:
        conn.execute(insert(outbox), rows)
    with engine.begin() as conn:
        conn.execute(delete(outbox))

    vacuumed = vacuum_busy_tables(engine)

    assert set(vacuumed) == set(BUSY_TABLES)  # a migrated database has both roles' tables
    # The vacuuming backend reports its VACUUM at once (dead-row counts, which other
    # backends report up to a second late, would make a flaky test).
    # (On a server with autovacuum on, a table it is vacuuming meanwhile is skipped.)
    stats = text(
        "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'"
    )
    with engine.connect() as conn:
        assert conn.execute(stats).scalar_one() >= 1
    engine.dispose()
