"""The client side a site uses: submit workflows to a manager and follow them.

Our clients speak the same protocol as nodes: they publish ``WorkFlowCreate`` to
the manager's key and read ``WorkFlowStatus`` answers from a short-lived queue of
their own (``wf.client.<id>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping

from caroni.errors import CaroniError, EnvelopeError
from caroni.protocol import (
    Signer,
    client_key,
    new_message_id,
    node_key_id,
    open_envelope,
    pb,
    seal,
)
from caroni.transport.base import Consumer, Transport

FINISHED_STATES = ("completed", "failed", "cancelled")


class NoAnswer(CaroniError):
    """The manager did not answer in time (it may be down; the request waits in its queue)."""


class Client:
    """Talks to one manager through the broker."""

    def __init__(self, transport: Transport, manager: str, signer: Signer | None = None) -> None:
        self.transport = transport
        self.signer = signer
        self.manager = manager if manager.startswith("wf.") else f"wf.manager.{manager}"
        self.client_uuid = uuid.uuid4()
        self.key = client_key(self.client_uuid)
        self._consumer: Consumer | None = None
        self._answers: dict[str, asyncio.Queue[pb.WorkFlowStatus]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self._consumer = await self.transport.consume(
            f"caroni.client.{node_key_id(self.client_uuid)}", [self.key], durable=False
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.close()

    async def _read(self) -> None:
        assert self._consumer is not None
        async for delivery in self._consumer:
            await delivery.ack()
            try:
                opened = open_envelope(delivery.body)
            except EnvelopeError:
                continue
            if opened.type_name == "WorkFlowStatus":
                key = uuid.UUID(bytes=opened.message.workflow_uuid).hex
                self._answers.setdefault(key, asyncio.Queue()).put_nowait(opened.message)

    async def _send(self, message: object) -> None:
        await self.transport.publish(
            self.manager,
            seal(message, message_id=new_message_id(), sender=self.client_uuid, signer=self.signer),
            reply_to=self.key,
        )

    async def submit(
        self,
        template: str,
        inputs: Mapping[str, str],
        *,
        name: str = "",
        workflow_id: uuid.UUID | None = None,
        max_attempts: int = 0,
    ) -> uuid.UUID:
        """Ask the manager to start a workflow; returns its id (chosen here, so a
        resubmission of the same id is harmless)."""
        workflow_id = workflow_id or uuid.uuid4()
        self._answers.setdefault(workflow_id.hex, asyncio.Queue())
        await self._send(
            pb.WorkFlowCreate(
                template_name=template,
                wf_name=name,
                inputs=[pb.WorkFlowInput(key=k, value=v) for k, v in inputs.items()],
                workflow_uuid=workflow_id.bytes,
                max_attempts=max_attempts,
            )
        )
        return workflow_id

    async def cancel(self, workflow_id: uuid.UUID, reason: str = "") -> None:
        await self._send(pb.WorkFlowCancel(workflow_uuid=workflow_id.bytes, reason=reason))

    async def status(self, workflow_id: uuid.UUID, timeout: float = 10.0) -> pb.WorkFlowStatus:
        answers = self._answers.setdefault(workflow_id.hex, asyncio.Queue())
        await self._send(pb.WorkFlowStatusRequest(workflow_uuid=workflow_id.bytes))
        try:
            return await asyncio.wait_for(answers.get(), timeout)
        except TimeoutError:
            raise NoAnswer(f"no answer from {self.manager} within {timeout:.0f}s") from None

    async def wait(
        self,
        workflow_id: uuid.UUID,
        *,
        on_progress: Callable[[pb.WorkFlowStatus], None] | None = None,
        poll_interval: float | None = 0.5,
        timeout: float | None = None,
    ) -> pb.WorkFlowStatus:
        """Follow a workflow until it ends; ``on_progress`` sees each status that differs.

        The manager pushes the final status to the submitting client. Meanwhile we
        ask every ``poll_interval`` seconds, to show progress and to learn the
        end of a workflow someone else submitted; ``poll_interval=None`` only waits
        for the push (cheapest when following thousands of workflows).
        """
        answers = self._answers.setdefault(workflow_id.hex, asyncio.Queue())
        deadline = None if timeout is None else time.monotonic() + timeout
        last: bytes | None = None
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise NoAnswer(f"workflow {workflow_id.hex} did not finish within {timeout}s")
            wait_for: float | None = None
            if poll_interval is not None:
                if now >= next_poll:
                    await self._send(pb.WorkFlowStatusRequest(workflow_uuid=workflow_id.bytes))
                    next_poll = now + poll_interval
                wait_for = next_poll - now
            if deadline is not None:
                wait_for = deadline - now if wait_for is None else min(wait_for, deadline - now)
            try:
                status = await asyncio.wait_for(answers.get(), wait_for)
            except TimeoutError:
                continue
            fingerprint = status.SerializeToString(deterministic=True)
            if fingerprint != last and on_progress is not None:
                on_progress(status)
            last = fingerprint
            if status.state in FINISHED_STATES:
                return status
