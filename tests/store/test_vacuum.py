"""A node vacuums its busy tables itself when the PostgreSQL server's autovacuum is
off (this machine's server runs so), and never on SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, text

from caroni.core import Incoming
from caroni.node import NoWork, Tx
from caroni.node.runtime import Node
from caroni.store import create_db_engine, migrate, vacuum
from caroni.store.tables import outbox
from caroni.store.vacuum import BUSY_TABLES, needs_vacuuming, vacuum_busy_tables
from caroni.transport.memory import MemoryTransport
from tests.waiting import eventually


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

    stats = text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'")
    with engine.connect() as conn:
        before = conn.execute(stats).scalar_one()

    vacuumed = vacuum_busy_tables(engine)

    assert set(vacuumed) == set(BUSY_TABLES)  # a migrated database has both roles' tables
    # The vacuuming backend reports its VACUUM at once (dead-row counts, which other
    # backends report up to a second late, would make a flaky test). Only our own
    # VACUUMs count (vacuum_count, not autovacuum_count); with the server's autovacuum
    # on, ours skips a table autovacuum holds, so this is checked where it is off.
    if setting == "off":
        with engine.connect() as conn:
            assert conn.execute(stats).scalar_one() == before + 1
    engine.dispose()


async def test_a_node_vacuums_its_tables_now_and_then(
    postgres_url: str, transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    if not needs_vacuuming(engine):
        pytest.skip("the server's autovacuum is on: nodes leave vacuuming to it")
    monkeypatch.setattr(vacuum, "VACUUM_INTERVAL", 0.05)
    stats = text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'")

    def vacuums() -> int:
        with engine.connect() as conn:
            return int(conn.execute(stats).scalar_one())

    before = vacuums()
    node = Node(Quiet(), engine, transport, node_uuid=uuid.uuid4(), own_key="k", queue_name="q")
    await node.start()
    try:
        await eventually(lambda: vacuums() >= before + 2, "the node to vacuum twice")
    finally:
        await node.stop()
        engine.dispose()


class Quiet:
    """A role that keeps nothing and handles nothing: only the node's loops run."""

    name = "manager"
    max_tick_interval = 1.0

    def bindings(self, own_key: str) -> list[str]:
        return [own_key]

    def open(self, tx: Tx) -> NoWork:
        return NoWork()

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        pass

    def tick(self, tx: Tx) -> float | None:
        return None
