"""Helpers for the web tests: logging in, posting forms, waiting on conditions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from caroni.app import ManagerNode
from caroni.cluster import LocalCluster
from caroni.web import auth
from tests import waiting

USER = "alice"
PASSWORD = "correct horse battery staple"
WAIT = 60.0  # generous: only reached when something is wrong

T = TypeVar("T")


def site_client(app: object, host: str, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client on a site's ASGI app (no socket; cookies kept like a browser),
    seen by the site as coming from ``address``."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 123)),  # type: ignore[arg-type]
        base_url=f"http://{host}",
        follow_redirects=False,
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def login(
    client: httpx.AsyncClient, username: str = USER, password: str = PASSWORD, next: str = "/"
) -> httpx.Response:
    page = await client.get("/login")
    assert page.status_code == 200
    return await client.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf_of(page.text), "next": next},
    )


async def post_form(
    client: httpx.AsyncClient, page_url: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Post a form the way a browser does: with the CSRF token of the page it is on."""
    page = await client.get(page_url)
    assert page.status_code == 200, page.text
    return await client.post(action, data={"csrf": csrf_of(page.text), **data})


async def api_token(cluster: LocalCluster | ManagerNode, username: str = USER) -> str:
    manager = cluster.manager if isinstance(cluster, LocalCluster) else cluster

    def make() -> str:
        with manager.engine.begin() as conn:
            return auth.new_api_token(conn, username)

    return await manager.node.db(make)


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT
) -> T:
    """Poll ``check`` until it returns something other than None (or fail after timeout)."""

    async def boxed() -> tuple[T] | None:
        # tests.waiting waits for a truthy result; a box keeps falsy results (0, "") valid.
        result = await check()
        return None if result is None else (result,)

    return (await waiting.eventually(boxed, what, timeout))[0]
