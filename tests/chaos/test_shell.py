"""Regressions the chaos harness found in the service shell (``caroni.node.runtime``).

Timers act on silence; a node with a backlog of deliveries has not heard
everything yet. Firing timers then (rebroadcasting requests whose offers wait in
the backlog, polling jobs whose news waits there) made the 200-workflow run
collapse: the manager's queue grew without end and no workflow finished.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from caroni.core import Incoming
from caroni.node import NoWork
from caroni.node.runtime import Node, Tx
from caroni.protocol import new_message_id, pb, seal
from caroni.store import create_db_engine, migrate
from caroni.transport.memory import MemoryTransport
from tests.waiting import eventually

KEY = "wf.manager.SHELLSHELLSHELLSHELLSH"
QUEUE = "caroni.manager.shell-test"
BACKLOG = 300  # several batches (BATCH_SIZE is 64)


class Recorder:
    """A role that counts what it handles and when its timers fire."""

    name = "manager"
    max_tick_interval = 1.0

    def __init__(self) -> None:
        self.handled = 0
        self.ticks = 0
        self.ticks_amid_backlog = 0

    def bindings(self, own_key: str) -> list[str]:
        return [own_key]

    def open(self, tx: Tx) -> NoWork:
        return NoWork()

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        self.handled += 1

    def tick(self, tx: Tx) -> float | None:
        self.ticks += 1
        if 0 < self.handled < BACKLOG:
            self.ticks_amid_backlog += 1
        return tx.now  # due again at once: fire as often as the shell lets it


@pytest.fixture
async def node(tmp_path: Path, transport: MemoryTransport) -> AsyncIterator[Node]:
    engine = create_db_engine(str(tmp_path / "node.sqlite3"))
    migrate(engine)
    node = Node(
        Recorder(),
        engine,
        transport,
        node_uuid=uuid.uuid4(),
        own_key=KEY,
        queue_name=QUEUE,
        record_traffic=False,
    )
    yield node
    await node.stop()
    engine.dispose()


async def _fill_queue(transport: MemoryTransport, count: int) -> None:
    """``count`` messages waiting in the node's queue before it starts (as after an outage)."""
    await (await transport.consume(QUEUE, [KEY])).close()  # declare queue and binding
    for _ in range(count):
        message = pb.JobStatusRequest(job_uuid=uuid.uuid4().bytes)
        await transport.publish(KEY, seal(message, message_id=new_message_id()))


async def test_timers_wait_until_the_backlog_is_handled(
    node: Node, transport: MemoryTransport
) -> None:
    role = node.role
    assert isinstance(role, Recorder)
    await _fill_queue(transport, BACKLOG)
    await node.start()
    await eventually(lambda: role.handled == BACKLOG, "the backlog handled")
    ticks_after_backlog = role.ticks
    await eventually(lambda: role.ticks > ticks_after_backlog, "timers firing again")
    assert role.ticks_amid_backlog == 0, "timers fired while deliveries were waiting"


async def test_timers_still_fire_when_the_node_is_never_idle(node: Node) -> None:
    role = node.role
    assert isinstance(role, Recorder)
    node.max_timer_deferral = 0.05
    await node.start()
    await eventually(lambda: role.ticks > 0, "the first tick")
    # As if deliveries were always waiting: the timers wait at most max_timer_deferral.
    node._idle.clear()
    ticks = role.ticks
    await eventually(lambda: role.ticks >= ticks + 3, "ticks despite a backlog", timeout=30)
