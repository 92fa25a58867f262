"""Running a node from the command line: start it, say where its site is, serve until
SIGINT or SIGTERM, stop it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from rich.markup import escape

from caroni.console import console, errors
from caroni.store import display_url
from caroni.transport.base import Transport

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from caroni.app import AgentNode, ManagerNode

Step = Callable[[], Awaitable[None]]


def run_service(start: Step, stop: Step, transport: Transport) -> None:
    """Run ``start``, then serve until signalled, then ``stop``."""
    asyncio.run(_serve_until_signalled(start, stop, transport))


async def _serve_until_signalled(start: Step, stop: Step, transport: Transport) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
    except BaseException:
        # Closed, or its reconnection would go on in the background of the error.
        await transport.close()
        raise
    try:
        await stopping.wait()
    finally:
        await stop()


async def announce_site(node: ManagerNode | AgentNode) -> None:
    """Say where the site is, or why there is none, and how to make the first user."""
    if node.http is None:
        return
    if node.site is None or not node.site_url:
        reason = node.site.error if node.site is not None else "not started"
        errors.print(f"[yellow]site not served:[/] {escape(reason)} (choose another with --http)")
        return
    console.print(f"site: {escape(node.site_url)}")
    if await node.node.db(_count_users, node.engine) == 0:
        console.print(
            "no users yet: add one with "
            f"`caroni user add NAME --db {escape(display_url(node.db_url))}` to log in"
        )


def _count_users(engine: Engine) -> int:
    from caroni.web.auth import user_count

    with engine.connect() as conn:
        return int(user_count(conn))
