"""Transport tests, plus the helpers they share.

Tests wait on events with generous deadlines (only reached when something is broken),
never on sleeps, so they pass the same on a fast laptop and a busy 2-core CI box.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from caroni.transport import Consumer, Delivery

DEADLINE = 30.0
"""Seconds a test waits for something that should happen; hit only on failure."""


class Collector:
    """Reads a consumer in a background task, so a test can await deliveries with a
    deadline (and several consumers can feed one ``sink``)."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        ack: bool = False,
        sink: asyncio.Queue[tuple[Collector, Delivery]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.received: list[Delivery] = []
        self._ack = ack
        self._queue: asyncio.Queue[tuple[Collector, Delivery]] = (
            sink if sink is not None else asyncio.Queue()
        )
        self.finished = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for delivery in self.consumer:
                self.received.append(delivery)
                if self._ack:
                    await delivery.ack()
                self._queue.put_nowait((self, delivery))
        finally:
            self.finished.set()

    async def next(self, within: float = DEADLINE) -> Delivery:
        """The next delivery; fails the test if none comes in ``within`` seconds."""
        _, delivery = await asyncio.wait_for(self._queue.get(), within)
        return delivery

    async def take(self, count: int, within: float = DEADLINE) -> list[Delivery]:
        """The next ``count`` deliveries, all within ``within`` seconds."""
        async with asyncio.timeout(within):
            return [(await self._queue.get())[1] for _ in range(count)]

    async def until(
        self, stop: Callable[[Delivery], bool], within: float = DEADLINE
    ) -> list[Delivery]:
        """Deliveries up to and including the first for which ``stop`` is true."""
        seen: list[Delivery] = []
        async with asyncio.timeout(within):
            while True:
                _, delivery = await self._queue.get()
                seen.append(delivery)
                if stop(delivery):
                    return seen

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def take_from(
    sink: asyncio.Queue[tuple[Collector, Delivery]], count: int, within: float = DEADLINE
) -> list[tuple[Collector, Delivery]]:
    """The next ``count`` (collector, delivery) pairs from a shared sink."""
    async with asyncio.timeout(within):
        return [await sink.get() for _ in range(count)]
