"""What a job's body writes: standard output kept up to a limit, standard error as
a tail, both read as they arrive so that no pipe ever fills up and blocks the body;
and how that output becomes a reason a person can read."""

from __future__ import annotations

import asyncio
import json

TAIL_BYTES = 4096
STDERR_REASON_LINES = 20
_STDERR_KEEP = 4 * TAIL_BYTES


class JobOutput(asyncio.SubprocessProtocol):
    """Collects the child's output as it arrives, so no pipe ever fills up and blocks it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_output_bytes: int) -> None:
        self._max = max_output_bytes
        self._transport: asyncio.SubprocessTransport | None = None
        self._open_fds = {1, 2}
        self.stdout = bytearray()
        self.stdout_total = 0
        self.stderr = bytearray()  # a tail only
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self.overflow: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd == 1:
            self.stdout_total += len(data)
            room = self._max - len(self.stdout)
            if room > 0:
                self.stdout += data[:room]
            if self.stdout_total > self._max and not self.overflow.done():
                self.overflow.set_result(None)
        else:
            self.stderr += data
            if len(self.stderr) > 2 * _STDERR_KEEP:
                del self.stderr[:-_STDERR_KEEP]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_fds.discard(fd)
        if not self._open_fds and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        # Called when bash is reaped, possibly before the pipes are drained.
        if not self.exited.done():
            code = self._transport.get_returncode() if self._transport else None
            self.exited.set_result(code)


def tail_text(data: bytes | bytearray, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes as text, without a broken character at the cut."""
    tail = bytes(data[-limit:])
    if len(data) > limit:
        skip = 0
        while skip < min(3, len(tail)) and tail[skip] & 0xC0 == 0x80:
            skip += 1
        tail = tail[skip:]
    return tail.decode("utf-8", errors="replace")


def with_stderr(reason: str, stderr_tail: str) -> str:
    lines = stderr_tail.rstrip().splitlines()[-STDERR_REASON_LINES:]
    if not lines:
        return reason
    return f"{reason}; stderr: " + "\n".join(lines)


def preview(text: str) -> str:
    text = text.strip()
    if not text:
        return "(empty)"
    return text[:200] + ("..." if len(text) > 200 else "")


def stringify(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
