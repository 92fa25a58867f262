"""The shell's own statements, written for the database driver directly.

Every transaction of the shell runs the same few statements of its own: note the
incoming message ids in the inbox, forget outbox rows published since, write the
outgoing messages and the traffic log. Built and run through SQLAlchemy's
statement and result machinery they cost more than the database work itself
(measured on PostgreSQL: 3.2 ms of a one-message transaction against 1.4 ms as
plain SQL), and they run once per transaction on the path of every message. So
they are plain SQL on the driver's cursor, inside the transaction SQLAlchemy
opened. On PostgreSQL the writes and the COMMIT travel to the server together in
one pipelined round trip, and the inbox claim travels with the transaction's
BEGIN.

Driver errors are raised as SQLAlchemy's own exception classes, as if SQLAlchemy
had run the statement, so that callers handle both alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

# SQLite takes at most 32,766 parameters per statement.
_MAX_ROWS_PER_STATEMENT = 2000

_INBOX_COLUMNS = ("message_id", "received_at")
_OUTBOX_COLUMNS = ("routing_key", "body", "reply_to", "message_id", "created_at")
_TRAFFIC_COLUMNS = ("at", "direction", "type_name", "peer", "message_id", "summary", "subject")
# On PostgreSQL, more rows than this are inserted from one array per column.
_FEW_ROWS = 4
# Column types, for PostgreSQL's unnest() of one array per column.
_PG_TYPES = {
    "message_id": "text",
    "received_at": "float8",
    "routing_key": "text",
    "body": "bytea",
    "reply_to": "text",
    "created_at": "float8",
    "at": "float8",
    "direction": "text",
    "type_name": "text",
    "peer": "text",
    "summary": "text",
    "subject": "text",
}


@lru_cache(maxsize=256)
def _values(mark: str, columns: int, rows: int) -> str:
    row = "(" + ", ".join([mark] * columns) + ")"
    return ", ".join([row] * rows)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _MAX_ROWS_PER_STATEMENT):
        yield items[start : start + _MAX_ROWS_PER_STATEMENT]


class ShellStatements:
    """The shell's statements for one kind of database (PostgreSQL or SQLite)."""

    def __init__(self, dialect_name: str) -> None:
        self.postgres = dialect_name == "postgresql"
        self._mark = "%s" if self.postgres else "?"

    def claim(self, conn: Connection, message_ids: Sequence[str], now: float) -> set[str]:
        """Note message ids in the inbox; return those that were not noted before.

        Sorted, so that replicas claiming the same ids lock them in one order.
        """
        claimed: set[str] = set()
        rows = [
            {"message_id": message_id, "received_at": now}
            for message_id in sorted(set(message_ids))
        ]
        with self._cursor(conn) as (cursor, pipeline):
            for sql, params in self._inserts("inbox", _INBOX_COLUMNS, rows):
                with pipeline():  # on PostgreSQL: with the BEGIN, one round trip
                    cursor.execute(
                        f"{sql} ON CONFLICT (message_id) DO NOTHING RETURNING message_id", params
                    )
                claimed.update(row[0] for row in cursor.fetchall())
        return claimed

    def write(
        self,
        conn: Connection,
        *,
        published_ids: Sequence[int],
        outgoing: Sequence[dict[str, Any]],
        traffic: Sequence[dict[str, Any]],
        commit: bool = False,
    ) -> list[int]:
        """Delete published outbox rows, insert the outgoing messages and the traffic
        rows; return the new outbox row ids in the order of ``outgoing``.

        ``commit``: these are the transaction's last statements, so on PostgreSQL its
        COMMIT goes with them, saving a round trip (SQLAlchemy's own commit then
        finds nothing to do). SQLite commits as SQLAlchemy ends the transaction.
        """
        row_ids: dict[str, int] = {}
        with self._cursor(conn) as (cursor, pipeline):
            # One cursor per outbox insert: each holds its RETURNING rows until read.
            inserts = [
                (sql, params, conn.connection.cursor())
                for sql, params in self._inserts("outbox", _OUTBOX_COLUMNS, outgoing)
            ]
            with pipeline():  # on PostgreSQL: all of it in one round trip
                self._delete_published(cursor, published_ids)
                for sql, params in self._inserts("message_log", _TRAFFIC_COLUMNS, traffic):
                    cursor.execute(sql, params)
                for sql, params, insert_cursor in inserts:
                    insert_cursor.execute(f"{sql} RETURNING id, message_id", params)
                if commit and self.postgres:
                    cursor.execute("COMMIT")
            for _, _, insert_cursor in inserts:
                row_ids.update((message_id, id_) for id_, message_id in insert_cursor.fetchall())
                insert_cursor.close()
        return [row_ids[row["message_id"]] for row in outgoing]

    def _inserts(
        self, table: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[str, list[Any]]]:
        """INSERT statements for ``rows``: one per chunk of rows, with a list of VALUES.
        On PostgreSQL, more than a few rows go in one statement taking an array per
        column instead: a short text that the driver parses and prepares once,
        where a long list of VALUES would be parsed anew each time."""
        if not rows:
            return
        names = ", ".join(columns)
        if self.postgres and len(rows) > _FEW_ROWS:
            arrays = ", ".join(f"%s::{_PG_TYPES[column]}[]" for column in columns)
            params = [[row[column] for row in rows] for column in columns]
            yield f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})", params
            return
        for chunk in _chunks(rows):
            params = [row[column] for row in chunk for column in columns]
            values = _values(self._mark, len(columns), len(chunk))
            yield f"INSERT INTO {table} ({names}) VALUES {values}", params

    def _delete_published(self, cursor: Any, published_ids: Sequence[int]) -> None:
        if not published_ids:
            return
        if self.postgres:
            cursor.execute("DELETE FROM outbox WHERE id = ANY(%s)", (list(published_ids),))
            return
        for chunk in _chunks(published_ids):
            marks = ", ".join(["?"] * len(chunk))
            cursor.execute(f"DELETE FROM outbox WHERE id IN ({marks})", list(chunk))

    @contextlib.contextmanager
    def _cursor(self, conn: Connection) -> Iterator[tuple[Any, Any]]:
        """A driver cursor in ``conn``'s transaction, and a pipeline context for it
        (a no-op on SQLite); driver errors come out as SQLAlchemy's."""
        dbapi_connection = conn.connection
        cursor = dbapi_connection.cursor()
        driver: Any = dbapi_connection.driver_connection
        pipeline = driver.pipeline if self.postgres else contextlib.nullcontext
        try:
            yield cursor, pipeline
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(
                "(shell statement)",
                None,
                exc,
                conn.dialect.loaded_dbapi.Error,
                connection_invalidated=conn.dialect.is_disconnect(exc, driver, cursor),
                dialect=conn.dialect,
            ) from exc
        finally:
            cursor.close()
