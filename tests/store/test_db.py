"""Database set-up: migrations, identity, both backends."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from caroni.store import create_db_engine, metadata, migrate, node_uuid, normalize_url


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
