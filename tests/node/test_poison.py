"""No message can stop a node: the shell tells a database outage (give the
deliveries back, try again) from a message the database or a handler refuses (set
that one message aside), and gives up on a delivery that keeps failing.

Each test runs on SQLite and on PostgreSQL; the outage test needs PostgreSQL
behind a proxy that can cut its connections.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, func, select

from caroni.core import Incoming
from caroni.node import NoWork
from caroni.node.apply import MAX_DEAD_LETTER_BODY, Applier
from caroni.node.failures import MAX_GIVE_BACKS
from caroni.node.runtime import Node, Tx
from caroni.protocol import new_message_id, pb, seal
from caroni.protocol.bundles import seal_bundle
from caroni.store import create_db_engine, migrate
from caroni.store.tables import dead_letters
from caroni.transport.base import Delivery
from caroni.transport.memory import MemoryTransport
from tests.faults import FaultProxy
from tests.poison import POISONS
from tests.waiting import eventually

KEY = "wf.manager.POISONPOISONPOISONPO"
QUEUE = "caroni.manager.poison-test"
PEER = "wf.client.poison-peer"

# The role's own table: the status text of each job, in a column of 64 characters
# (PostgreSQL refuses longer text; on SQLite a repeated job refuses the insert).
notes = Table("poison_notes", MetaData(), Column("job", String(32), primary_key=True))
notes.append_column(Column("info", String(64), nullable=False))


class Notes:
    """Stores each JobStatusUpdate's job and status text; answers nothing."""

    name = "manager"
    max_tick_interval = 1.0

    def __init__(self) -> None:
        self.failing: set[bytes] = set()  # jobs whose handling fails past any savepoint

    def bindings(self, own_key: str) -> list[str]:
        return [own_key]

    def open(self, tx: Tx) -> NoWork:
        return NoWork()

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        message = incoming.message
        row = {"job": uuid.UUID(bytes=message.job_uuid).hex, "info": message.status_info}
        tx.conn.execute(notes.insert().values(**row))

    def tick(self, tx: Tx) -> float | None:
        return None


@pytest.fixture
async def node(engine: Engine, transport: MemoryTransport) -> AsyncIterator[Node]:
    notes.create(engine)
    node = Node(Notes(), engine, transport, node_uuid=uuid.uuid4(), own_key=KEY, queue_name=QUEUE)
    await node.start()
    yield node
    await node.stop()


def _update(job: bytes, info: str = "fine", *, message_id: str | None = None) -> bytes:
    message = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_RUNNING, status_info=info)
    return seal(message, message_id=new_message_id() if message_id is None else message_id)


def _rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def _count(engine: Engine, table: Table) -> int:
    return int(_rows(engine, select(func.count()).select_from(table))[0][0])


def _reasons(engine: Engine) -> list[str]:
    return [row.reason for row in _rows(engine, select(dead_letters.c.reason))]


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_field_that_cannot_be_stored_is_set_aside_and_the_rest_is_handled(
    node: Node, transport: MemoryTransport, engine: Engine, poison: str
) -> None:
    sent = POISONS[poison]()
    good = [uuid.uuid4().bytes for _ in range(5)]
    for job in good[:2]:
        await transport.publish(KEY, _update(job), reply_to=PEER)
    await transport.publish(KEY, sent.body, **{"reply_to": PEER, **sent.properties})
    for job in good[2:]:
        await transport.publish(KEY, _update(job), reply_to=PEER)

    await eventually(lambda: _count(engine, notes) == len(good), "every good message handled")
    await eventually(lambda: _count(engine, dead_letters) == 1, "the poison set aside")
    [reason] = _reasons(engine)
    assert reason.startswith("cannot open envelope: "), reason
    assert node.counters["handled"] == len(good)


@pytest.mark.parametrize(
    "poison", sorted(name for name, make in POISONS.items() if not make().properties)
)
async def test_a_poison_in_a_bundle_costs_only_itself(
    node: Node, transport: MemoryTransport, engine: Engine, poison: str
) -> None:
    good = [uuid.uuid4().bytes for _ in range(4)]
    parts = [_update(job) for job in good]
    parts.insert(2, POISONS[poison]().body)
    await transport.publish(KEY, seal_bundle(parts), reply_to=PEER)

    await eventually(lambda: _count(engine, notes) == len(good), "every good part handled")
    await eventually(lambda: _count(engine, dead_letters) == 1, "the poison set aside")
    [reason] = _reasons(engine)
    assert reason.startswith("cannot open envelope: "), reason
    assert node.counters["bundles_received"] == 1


async def test_a_value_the_database_refuses_costs_only_its_own_message(
    node: Node, transport: MemoryTransport, engine: Engine
) -> None:
    repeated = uuid.uuid4().bytes
    good = [uuid.uuid4().bytes for _ in range(4)]
    await transport.publish(KEY, _update(repeated), reply_to=PEER)
    await eventually(lambda: _count(engine, notes) == 1, "the first note stored")
    # PostgreSQL refuses a text longer than its column; SQLite stores it, so the
    # second message refuses a repeated primary key instead.
    too_long = "x" * 65
    for job in (good[0], good[1]):
        await transport.publish(KEY, _update(job), reply_to=PEER)
    await transport.publish(KEY, _update(uuid.uuid4().bytes, too_long), reply_to=PEER)
    await transport.publish(KEY, _update(repeated), reply_to=PEER)
    for job in (good[2], good[3]):
        await transport.publish(KEY, _update(job), reply_to=PEER)

    postgres = engine.dialect.name == "postgresql"
    await eventually(
        lambda: _count(engine, notes) == (1 + len(good) + (0 if postgres else 1)),
        "every good message handled",
    )
    await eventually(
        lambda: _count(engine, dead_letters) == (2 if postgres else 1), "the poison set aside"
    )
    reasons = _reasons(engine)
    assert any(r.startswith("integrity error") for r in reasons), reasons
    if postgres:
        assert any(r.startswith("the database refused it: ") for r in reasons), reasons


async def test_a_delivery_that_keeps_failing_is_set_aside_after_a_few_give_backs(
    node: Node, transport: MemoryTransport, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure no savepoint contains (a bug in the shell, say) while the database
    answers: the delivery is given back a few times, then set aside with the error."""
    doomed = uuid.uuid4().bytes
    open_delivery = Applier.open
    attempts: list[int] = []

    def fail_on_doomed(self: Applier, delivery: Delivery) -> Any:
        if doomed in delivery.body:
            attempts.append(1)
            raise RuntimeError("a bug that fails on this message")
        return open_delivery(self, delivery)

    monkeypatch.setattr(Applier, "open", fail_on_doomed)
    node._backoff = _NoPause()  # type: ignore[assignment]
    good = [uuid.uuid4().bytes for _ in range(6)]
    for job in good[:3]:
        await transport.publish(KEY, _update(job), reply_to=PEER)
    await transport.publish(KEY, _update(doomed), reply_to=PEER)
    for job in good[3:]:
        await transport.publish(KEY, _update(job), reply_to=PEER)

    await eventually(lambda: _count(engine, dead_letters) == 1, "the doomed delivery set aside")
    await eventually(lambda: _count(engine, notes) == len(good), "every good message handled")
    [reason] = _reasons(engine)
    assert reason.startswith(f"failed {MAX_GIVE_BACKS} times while the database answered"), reason
    assert "RuntimeError: a bug that fails on this message" in reason
    # Alone it failed MAX_GIVE_BACKS times; in a batch with others (where a failure
    # is not counted against it) as often as the queue's order put it there.
    assert len(attempts) >= MAX_GIVE_BACKS


class _NoPause:
    def next(self) -> float:
        return 0.0

    def reset(self) -> None:
        pass


async def test_a_dead_letter_keeps_at_most_64_kib_of_the_body_and_says_so(
    node: Node, transport: MemoryTransport, engine: Engine
) -> None:
    body = b"\xff" * (200 * 1024)  # not an envelope at all
    await transport.publish(KEY, body, reply_to=PEER, message_id="x" * 64)
    await eventually(lambda: _count(engine, dead_letters) == 1, "the garbage set aside")
    [row] = _rows(engine, select(dead_letters))
    assert len(row.body) == MAX_DEAD_LETTER_BODY
    assert row.reason.endswith(f"(body cut to 65536 of {len(body)} bytes)")
    assert row.message_id == "x" * 64


async def test_a_database_outage_gives_deliveries_back_and_sets_nothing_aside(
    postgres_url: str, transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="caroni.node")
    # The proxy runs on this event loop: the test reads the database directly, so
    # that a blocking read never waits for the proxy it is blocking.
    direct = create_db_engine(postgres_url)
    migrate(direct)
    notes.create(direct)
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert url != postgres_url
        engine = create_db_engine(url)
        node = Node(
            Notes(), engine, transport, node_uuid=uuid.uuid4(), own_key=KEY, queue_name=QUEUE
        )
        await node.start()
        try:
            jobs = [uuid.uuid4().bytes for _ in range(20)]
            await transport.publish(KEY, _update(jobs[0]), reply_to=PEER)
            # Committed, not merely applied: a cut during its commit would give it back.
            await eventually(lambda: _count(direct, notes) == 1, "the first message committed")
            proxy.pause()
            proxy.sever()
            for job in jobs[1:]:
                await transport.publish(KEY, _update(job), reply_to=PEER)
            await eventually(
                lambda: any("database unavailable" in r.getMessage() for r in caplog.records),
                "the node to find the database gone",
            )
            assert node.counters["handled"] == 1
            proxy.resume()
            await eventually(lambda: _count(direct, notes) == len(jobs), "every message handled")
            assert _count(direct, dead_letters) == 0, _reasons(direct)
        finally:
            await node.stop()
            engine.dispose()
            direct.dispose()
