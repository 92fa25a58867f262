"""Engine creation, schema migration and node identity.

A node keeps its state in one database: a SQLite file by default (zero set-up),
PostgreSQL by URL for real deployments. The schema is brought up to date with
Alembic every time a node starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from caroni.errors import ConfigError
from caroni.store.tables import node_identity

log = logging.getLogger("caroni.store")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# PostgreSQL advisory lock key held while migrating: replicas of one node that share
# a database take turns (any constant will do, as long as every version uses it).
MIGRATION_LOCK = 0x43_61_72_6F_6E_69  # "Caroni"


def normalize_url(url: str) -> str:
    """Accept a plain path as a SQLite file and ``postgresql://`` as psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def display_url(url: str) -> str:
    """A database URL as given, for people to read: the password hidden."""
    if "://" not in url:
        return url  # a SQLite path
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL we can parse: show none of it
        return "(unreadable database URL)"


def create_db_engine(url: str) -> Engine:
    """An engine tuned for Caroni's access pattern (short write transactions)."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError, be broad for clarity
        raise ConfigError(f"not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot make the folder {folder} for the database: {exc.strerror}"
                ) from None
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so that
        # every transaction begins immediately and holds the write lock.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    # No ping before each use: it would cost a round trip per transaction. A
    # connection the server dropped fails its transaction instead, which every
    # caller already retries (deliveries go back to the broker), and the pool
    # replaces it.
    return create_engine(url, pool_size=5, max_overflow=5)


def open_node_db(url: str) -> Engine:
    """A node's database with its schema brought up to date; a ConfigError saying why
    when it cannot be reached or used."""
    engine = create_db_engine(url)
    with refused_as_config_error(engine, url):
        migrate(engine)
    return engine


@contextlib.contextmanager
def node_db(url: str) -> Iterator[Engine]:
    """``open_node_db`` for one piece of work: the engine is disposed of afterwards,
    whether the work succeeded or not."""
    engine = open_node_db(url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def refused_as_config_error(engine: Engine, url: str) -> Iterator[None]:
    """The driver refusing the work inside (no server, no such database, ...) comes out
    as a ConfigError naming the database (no password) and why; the engine is
    disposed of."""
    try:
        yield
    except DBAPIError as exc:
        engine.dispose()
        raise ConfigError(f"cannot use the database {display_url(url)}: {exc.orig}") from None


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see above)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema up to date (idempotent; safe to run on every start).

    Safe too when several processes sharing one database start at once: on
    PostgreSQL the first takes an advisory lock for its migration transaction and
    the others wait for it, then find the schema up to date (two concurrent
    ``CREATE TABLE`` would otherwise make one of them fail). On SQLite every
    transaction takes the write lock as it begins, which serializes them already.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Released when this transaction ends, so a crash cannot leave it held.
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def node_uuid(engine: Engine, role: str) -> uuid.UUID:
    """This node's identity: created once, kept with its state for good."""
    query = select(node_identity.c.node_uuid).where(node_identity.c.role == role)
    with engine.begin() as connection:
        existing = connection.execute(query).scalar_one_or_none()
        if existing is not None:
            return uuid.UUID(existing)
    try:
        with engine.begin() as connection:
            connection.execute(
                node_identity.insert().values(
                    role=role, node_uuid=str(uuid.uuid4()), created_at=time.time()
                )
            )
    except IntegrityError:
        pass  # another replica sharing this database created it first; read theirs
    with engine.connect() as connection:
        return uuid.UUID(connection.execute(query).scalar_one())
