"""Serving a node's site with uvicorn, on the node's own event loop.

The socket is bound here rather than by uvicorn: a port that is taken then
becomes a warning (the node goes on carrying its messages, which matter more
than its pages) instead of uvicorn's ``sys.exit``, and port 0 gives an
ephemeral port whose number we can read back (tests, several nodes per host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from caroni.errors import ConfigError

log = logging.getLogger("caroni.web")


@dataclass(frozen=True, slots=True)
class HttpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_http(text: str | None) -> HttpAddress | None:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6), or just ``PORT``; ``none`` or empty: off."""
    if text is None or text.strip().lower() in ("", "none", "off"):
        return None
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--http {text!r}: expected HOST:PORT (e.g. 127.0.0.1:8000) or none")
    return HttpAddress(host, int(port_text))


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the node's process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class SiteServer:
    """One site served on one address until ``stop``."""

    def __init__(self, app: FastAPI, address: HttpAddress) -> None:
        self.app = app
        self.address = address
        self.url = ""
        self.error = ""  # why the site is not served, when it is not
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Bind and serve; False (with ``error`` set and a warning logged) if it cannot."""
        try:
            sock = _bind(self.address)
        except OSError as exc:
            self.error = f"cannot listen on {self.address}: {exc.strerror or exc}"
            log.warning("web site not served: %s", self.error)
            return False
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=3,
            proxy_headers=False,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        log.info("web site on %s", self.url)
        return True

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        except Exception:  # noqa: BLE001 - stopping must not fail the node's stop
            log.exception("web site stopped with an error")
        self._server = None
        self._task = None


def _bind(address: HttpAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        # Listening now means a browser that connects before uvicorn's first
        # turn of the loop waits in the backlog instead of being refused.
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
