"""A stand-in for an agent of another Caroni implementation: it speaks only the
shared protocol (no message ids, no sender in its envelopes) and, like the agent
that showed the need, answers no status request while a job runs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable

from caroni.protocol import FULFILLMENT_KEY, agent_key, open_envelope, pb, seal
from caroni.transport.base import Delivery, Transport

# What the demo job types compute, as the stand-in's "bodies".
DEMO_BODIES: dict[str, tuple[str, str, Callable[[str], str]]] = {
    "foojob0": ("message", "jobout", str.upper),
    "foojob1": ("text", "outSB", lambda text: "prepend" + text),
    "foojob2": ("final_text", "out", lambda text: text + " append"),
}


class SharedProtocolAgent:
    """Offers for the demo job types, takes ``run_for`` seconds per job, and stays
    silent about its jobs until they are done."""

    def __init__(self, transport: Transport, *, run_for: float) -> None:
        self.transport = transport
        self.run_for = run_for
        self.key = agent_key(uuid.uuid4())
        self.received: Counter[str] = Counter()  # message type -> how many
        self.runs: Counter[str] = Counter()  # job type -> jobs run to the end
        self._jobs: dict[bytes, str] = {}  # job uuid -> job type
        self._offers: dict[bytes, str] = {}  # offer uuid -> job type
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = await self.transport.consume(
            f"caroni.peer.{self.key}", [FULFILLMENT_KEY, self.key]
        )

        async def serve() -> None:
            async for delivery in consumer:
                await self._handle(delivery)
                await delivery.ack()

        self._consumer_task = asyncio.create_task(serve())

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._consumer_task] if self._consumer_task else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _send(self, to: str, message: object) -> None:
        await self.transport.publish(to, seal(message), reply_to=self.key)  # type: ignore[arg-type]

    async def _handle(self, delivery: Delivery) -> None:
        opened = open_envelope(delivery.body)
        message = opened.message
        self.received[opened.type_name] += 1
        if opened.type_name == "JobFulfillmentRequest":
            if message.job_type_name in DEMO_BODIES:
                offer_uuid = uuid.uuid4().bytes
                self._offers[offer_uuid] = message.job_type_name
                offer = pb.JobFulfillmentOffer(
                    request_uuid=message.request_uuid,
                    offer_uuid=offer_uuid,
                    site=pb.Site(site_identifier="peer"),
                )
                await self._send(delivery.reply_to, offer)
        elif opened.type_name == "JobFulfillmentOfferAccept":
            job_uuid = uuid.uuid4().bytes
            self._jobs[job_uuid] = self._offers.pop(message.offer_uuid)
            accepted = pb.JobAccepted(job_uuid=job_uuid, offer_uuid=message.offer_uuid)
            await self._send(delivery.reply_to, accepted)
        elif opened.type_name == "JobDataAvailable" and message.job_uuid in self._jobs:
            job_type = self._jobs.pop(message.job_uuid)
            task = asyncio.create_task(self._run(job_type, message, delivery.reply_to))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # JobStatusRequest, JobKill, rejects: no answer, as the peer it stands for.

    async def _run(self, job_type: str, data: pb.JobDataAvailable, manager: str) -> None:
        source, output, body = DEMO_BODIES[job_type]
        given = {parameter.key: parameter.value for parameter in data.parameters}
        await asyncio.sleep(self.run_for)  # the job's own run time, not synchronization
        result = pb.JobDataAvailable(
            job_uuid=data.job_uuid,
            parameters=[pb.JobParameter(key=output, value=body(given[source]))],
        )
        await self._send(manager, result)
        done = pb.JobStatusUpdate(job_uuid=data.job_uuid, job_status=pb.JOB_STATUS_COMPLETED)
        await self._send(manager, done)
        self.runs[job_type] += 1
