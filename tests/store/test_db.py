"""Database set-up: migrations, identity, both backends."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from caroni.store import create_db_engine, metadata, migrate, node_db, node_uuid, normalize_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "node.sqlite3")
    return str(request.getfixturevalue("postgres_url"))


def test_migrations_create_exactly_the_tables_the_code_uses(db_url: str) -> None:
    engine = create_db_engine(db_url)
    migrate(engine)
    migrate(engine)  # a second start changes nothing
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


MIGRATE_WHEN_TOLD = """
import sys
from caroni.store import create_db_engine, migrate, node_uuid
engine = create_db_engine(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
migrate(engine)
print(node_uuid(engine, "manager"))
"""


@pytest.mark.postgres
def test_replicas_starting_at_once_on_an_empty_database_migrate_it_once(
    postgres_url: str,
) -> None:
    """Two processes sharing one new database migrate it at the same moment: both
    succeed (one waits for the other) and find the same identity."""
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_WHEN_TOLD, postgres_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for replica in replicas:  # both have imported everything and connected
        assert replica.stdout is not None
        assert replica.stdout.readline() == "ready\n"
    for replica in replicas:
        assert replica.stdin is not None
        replica.stdin.write("go\n")
        replica.stdin.flush()
    results = [replica.communicate(timeout=60) for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0, 0], [err for _, err in results]
    identities = {out.strip() for out, _ in results}
    assert len(identities) == 1
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def test_a_node_keeps_its_identity_across_restarts(db_url: str) -> None:
    engine = create_db_engine(db_url)
    migrate(engine)
    first = node_uuid(engine, "manager")
    engine.dispose()
    engine = create_db_engine(db_url)
    assert node_uuid(engine, "manager") == first
    assert node_uuid(engine, "agent") != first
    assert isinstance(first, uuid.UUID)
    engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_urls_are_normalized(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_a_plain_path_is_a_sqlite_file(tmp_path: Path) -> None:
    assert normalize_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"


def test_node_db_gives_a_migrated_engine_and_disposes_of_it_even_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import Engine

    disposed: list[Engine] = []
    real_dispose = Engine.dispose

    def dispose(self: Engine, close: bool = True) -> None:
        disposed.append(self)
        real_dispose(self, close)

    monkeypatch.setattr(Engine, "dispose", dispose)
    url = str(tmp_path / "node.sqlite3")
    with node_db(url) as engine:
        assert "node_identity" in inspect(engine).get_table_names()
    assert disposed == [engine]
    with pytest.raises(RuntimeError, match="the work failed"), node_db(url) as again:
        raise RuntimeError("the work failed")
    assert disposed == [engine, again]
