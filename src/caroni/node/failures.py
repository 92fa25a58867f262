"""Telling a database outage from a message the database refuses.

When a transaction fails, the shell must decide whose fault it is. An outage (the
connection is lost, the server shuts down, a serialization failure or deadlock)
is nobody's fault: the deliveries go back to the broker and come again once the
database answers. Anything else is caused by what a message carries (a value too
long for its column, a broken constraint) or by a bug; giving such a message back
would bring it back forever and stop the node, so it is set aside instead.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.exc import DBAPIError, DisconnectionError, TimeoutError

# PostgreSQL SQLSTATE classes that mean "try again later", not "this is wrong":
# connection exception, transaction rollback (serialization failure, deadlock),
# insufficient resources, operator intervention (shutdown, cancel), system error.
_PG_OUTAGE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# SQLite result codes that mean the same: busy or locked by another process, I/O,
# a full disk, a file that cannot be opened, out of memory.
_SQLITE_OUTAGE_CODES = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_NOMEM"}
)

MAX_GIVE_BACKS = 5
"""Times one delivery may fail while the database answers before it is set aside."""
_REMEMBERED = 10_000  # deliveries whose failures are counted at once


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unavailable for now (not the message's fault)."""
    if isinstance(exc, DisconnectionError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _PG_OUTAGE_CLASSES
    code_name = getattr(orig, "sqlite_errorname", None)
    if isinstance(code_name, str):
        return code_name in _SQLITE_OUTAGE_CODES or code_name.startswith("SQLITE_IOERR")
    # A driver error without a code (psycopg's "connection failed", "server closed
    # the connection") is about the connection, never about a statement's content.
    return type(orig).__name__ in {"OperationalError", "InterfaceError"}


class GiveBacks:
    """How often each delivery was given back to the broker while the database
    answered: past ``limit`` it is set aside whatever the error, so that no bug
    that fails on one message can stop a node."""

    def __init__(self, limit: int = MAX_GIVE_BACKS) -> None:
        self.limit = limit
        self._counts: OrderedDict[str, int] = OrderedDict()

    def failed(self, key: str) -> bool:
        """Count one more failure of ``key``; True when it has now failed too often."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > _REMEMBERED:
            self._counts.popitem(last=False)
        return count >= self.limit

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)

    def __bool__(self) -> bool:
        """Whether any delivery is being counted (almost never: only after failures)."""
        return bool(self._counts)
