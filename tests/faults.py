"""Fault injection for network tests: a TCP proxy that can cut its connections.

Route a client through :class:`FaultProxy` instead of straight to the server, then
call :meth:`FaultProxy.sever` to drop every connection at once (both sides see a
reset, as when a cable is pulled or a broker restarts) and :meth:`FaultProxy.pause`
to refuse new connections until :meth:`FaultProxy.resume`::

    async with FaultProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/vhost"
        ...
        proxy.sever()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any

_CHUNK = 64 * 1024


async def end_handlers(handlers: Iterable[asyncio.Task[Any]]) -> None:
    """Wait (at most 10 s) for connection handlers to end, then cancel what is left."""
    tasks = list(handlers)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        # abort(), not close(): drop buffered data and reset at once, like a real failure.
        self.client.transport.abort()
        self.upstream.transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 (ephemeral port) forwarding to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._host = host
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._paused = False
        self.accepted = 0  # connections forwarded so far (not counting refused ones)
        self.severed = 0  # connections dropped by sever()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def host(self) -> str:
        return self._host

    @property
    def active(self) -> int:
        """Connections currently forwarded."""
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, 0)

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.sever()
        # Aborted links end their pumps by themselves; wait for that rather than
        # cancelling (asyncio logs an error for a cancelled stream handler).
        await end_handlers(self._handlers)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def sever(self) -> int:
        """Drop every current connection; returns how many were dropped."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.abort()
        self.severed += len(links)
        return len(links)

    def pause(self) -> None:
        """Refuse new connections (accept and reset them at once) until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Forward new connections again."""
        self._paused = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._paused:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                writer.transport.abort()
                return
            link = _Link(writer, up_writer)
            self._links.add(link)
            self.accepted += 1
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
                )
            finally:
                self._links.discard(link)
                link.abort()
        finally:
            self._handlers.discard(task)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side finished or failed: end the whole link, as a real peer would see.
            with contextlib.suppress(Exception):
                link.abort()
