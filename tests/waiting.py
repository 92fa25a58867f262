"""Waiting on a condition with a deadline (never a bare sleep as synchronization)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = 120.0  # generous: reached only when something is wrong


async def eventually(
    check: Callable[[], T | Awaitable[T]], what: str, timeout: float = DEADLINE
) -> T:
    """Call ``check`` until it returns something truthy; return that. Fails after ``timeout``.

    For conditions that nothing signals to us (another process, a file, the kernel),
    looking again shortly is the only way to wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)  # noqa: ASYNC110 - polling an unsignalled condition
