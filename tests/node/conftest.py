"""Fixtures for the shell's tests: each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from caroni.store import create_db_engine, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated node database of this test's own."""
    if request.param == "sqlite":
        url = str(tmp_path / "node.sqlite3")
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_db_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()
