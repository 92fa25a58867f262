"""A role for the service shell's tests: it answers each JobStatusRequest with a
JobStatusUpdate, and can be told to refuse a message or fail its write-back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from caroni.core import Incoming
from caroni.errors import SetAside
from caroni.node.runtime import Tx
from caroni.protocol import pb, seal
from caroni.transport.memory import MemoryTransport

KEY = "wf.manager.BATCHBATCHBATCHBATCHBA"
QUEUE = "caroni.manager.batch-test"
PEER = "wf.client.batch-peer"
BAD = uuid.UUID(int=0).bytes  # the job uuid the role refuses
UNWRITABLE = uuid.UUID(int=1).bytes  # the job uuid whose write-back fails


@dataclass
class Tally:
    """Echo's unit of work: messages counted in one transaction, written once."""

    role: Echo
    count: int = 0
    unwritable: bool = False  # a message whose write-back fails is in it

    def prefetch(self, incoming: Sequence[Incoming]) -> None:
        pass

    def write(self) -> None:
        if self.unwritable:
            raise RuntimeError("the aggregate changed under us")
        self.role.tallies.append(self.count)

    def after_commit(self) -> None:
        pass


class Echo:
    """Answers each JobStatusRequest with a JobStatusUpdate for the same job; keeps a
    per-transaction tally in its unit of work, written once before the rows are."""

    name = "manager"
    max_tick_interval = 1.0

    def __init__(self) -> None:
        self.tallies: list[int] = []  # one entry per transaction written

    def bindings(self, own_key: str) -> list[str]:
        return [own_key]

    def open(self, tx: Tx) -> Tally:
        return Tally(self)

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        job_uuid = incoming.message.job_uuid
        if job_uuid == BAD:
            raise SetAside("this job is refused")
        tally = tx.work
        assert isinstance(tally, Tally)
        if job_uuid == UNWRITABLE:
            tally.unwritable = True
        tx.subject = uuid.UUID(bytes=job_uuid).hex
        tally.count += 1
        update = pb.JobStatusUpdate(job_uuid=job_uuid, job_status=pb.JOB_STATUS_RUNNING)
        tx.send(incoming.reply_to, update)

    def tick(self, tx: Tx) -> float | None:
        return None


async def request(transport: MemoryTransport, job_uuid: bytes, message_id: str) -> None:
    """Publish a JobStatusRequest from PEER to the node."""
    body = seal(pb.JobStatusRequest(job_uuid=job_uuid), message_id=message_id)
    await transport.publish(KEY, body, reply_to=PEER, message_id=message_id)


def count_rows(engine: Engine, query: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())  # type: ignore[call-overload]
