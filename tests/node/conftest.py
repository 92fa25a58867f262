"""Fixtures for the shell's tests: each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from caroni.node.runtime import Node
from caroni.store import create_db_engine, migrate
from caroni.transport.memory import MemoryTransport
from tests.node.echo import KEY, QUEUE, Echo


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


@pytest.fixture
async def node(engine: Engine, transport: MemoryTransport) -> AsyncIterator[Node]:
    """A node running the Echo role (started by the test)."""
    node = Node(Echo(), engine, transport, node_uuid=uuid.uuid4(), own_key=KEY, queue_name=QUEUE)
    yield node
    await node.stop()
    engine.dispose()
