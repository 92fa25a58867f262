"""The shell's own statements, run on the driver directly, on SQLite and PostgreSQL:
what they write and return, with more rows than one statement takes, and driver
errors raised as SQLAlchemy's."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from caroni.node.shell_sql import ShellStatements
from caroni.store.tables import inbox, message_log, outbox

MANY = 4500  # more rows than one statement carries


def _outgoing(count: int) -> list[dict[str, object]]:
    return [
        {
            "routing_key": f"wf.agent.{number}",
            "body": bytes([number % 256]) * 3,
            "reply_to": "wf.manager.me",
            "message_id": uuid.uuid4().hex,
            "created_at": 1000.0 + number,
        }
        for number in range(count)
    ]


def _traffic(count: int, summary: str | None = "{}") -> list[dict[str, object]]:
    return [
        {
            "at": 1000.0,
            "direction": "out",
            "type_name": "JobStatusRequest",
            "peer": "wf.agent.x",
            "message_id": f"m{number}",
            "summary": summary,
            "subject": "wf1",
        }
        for number in range(count)
    ]


def test_claim_returns_only_the_ids_not_noted_before(engine: Engine) -> None:
    statements = ShellStatements(engine.dialect.name)
    with engine.begin() as conn:
        conn.execute(insert(inbox), [{"message_id": "old", "received_at": 1.0}])
    fresh = [f"id{number}" for number in range(MANY)]
    with engine.begin() as conn:
        claimed = statements.claim(conn, ["old", *fresh, fresh[0]], now=2.0)
    assert claimed == set(fresh)
    with engine.begin() as conn:
        assert statements.claim(conn, [fresh[1], "new"], now=3.0) == {"new"}
        assert conn.execute(select(func.count()).select_from(inbox)).scalar_one() == MANY + 2


def test_write_returns_outbox_ids_in_order_and_forgets_published_rows(engine: Engine) -> None:
    statements = ShellStatements(engine.dialect.name)
    first = _outgoing(MANY)
    with engine.begin() as conn:
        first_ids = statements.write(conn, published_ids=[], outgoing=first, traffic=_traffic(3))
    with engine.connect() as conn:
        stored = dict(conn.execute(select(outbox.c.message_id, outbox.c.id)).all())
    assert first_ids == [stored[row["message_id"]] for row in first]  # type: ignore[index]
    second = _outgoing(2)
    with engine.begin() as conn:
        second_ids = statements.write(
            conn, published_ids=first_ids, outgoing=second, traffic=_traffic(MANY)
        )
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.id, outbox.c.body, outbox.c.routing_key)).all()
        assert conn.execute(select(func.count()).select_from(message_log)).scalar_one() == 3 + MANY
    assert sorted(row.id for row in rows) == sorted(second_ids)
    assert {(bytes(row.body), row.routing_key) for row in rows} == {
        (row["body"], row["routing_key"]) for row in second
    }


def _outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())


def test_a_last_write_commits_with_its_statements_on_postgresql(engine: Engine) -> None:
    statements = ShellStatements(engine.dialect.name)
    with engine.begin() as conn:
        statements.write(
            conn, published_ids=[], outgoing=_outgoing(2), traffic=_traffic(2), commit=True
        )
        if engine.dialect.name == "postgresql":
            # Another connection sees them before SQLAlchemy ends the transaction:
            # the COMMIT went in the writes' round trip. (SQLite commits as the
            # transaction ends, and holds its write lock until then.)
            assert _outbox_rows(engine) == 2
    assert _outbox_rows(engine) == 2


@pytest.mark.parametrize("commit", [False, True])
def test_a_driver_error_is_raised_as_sqlalchemys_and_rolls_back(
    engine: Engine, commit: bool
) -> None:
    statements = ShellStatements(engine.dialect.name)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        statements.write(
            conn,
            published_ids=[],
            outgoing=_outgoing(1),
            traffic=_traffic(1, None),
            commit=commit,
        )
    with engine.begin() as conn:  # the connection is usable again, nothing was written
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 0
        statements.write(conn, published_ids=[], outgoing=_outgoing(1), traffic=_traffic(1))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 1
