"""Logging in and out, sessions per node, CSRF, and how passwords are kept."""

from __future__ import annotations

import asyncio
import collections

import httpx
import pytest
from sqlalchemy import select

from caroni.cluster import LocalCluster
from caroni.store.tables import users, web_sessions
from caroni.web import auth
from caroni.web.throttle import LoginThrottle
from tests.web.helpers import PASSWORD, USER, csrf_of, login, post_form, site_client


async def test_every_page_needs_a_login(
    manager_site: httpx.AsyncClient, agent_site: httpx.AsyncClient
) -> None:
    for client, path in [
        (manager_site, "/workflows"),
        (manager_site, "/templates/test_simple"),
        (agent_site, "/jobs"),
        (agent_site, "/job-types"),
        (manager_site, "/users"),
        (agent_site, "/users"),
    ]:
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
    # A live page polling after its session ended is told so, not sent a login page.
    live = await manager_site.get("/workflows?fragment=1", headers={"X-Caroni-Live": "1"})
    assert live.status_code == 401


async def test_wrong_passwords_and_unknown_users_are_refused(
    manager_site: httpx.AsyncClient,
) -> None:
    for username, password in [(USER, "wrong"), ("mallory", PASSWORD), (USER, "")]:
        response = await login(manager_site, username, password)
        assert response.status_code == 401
        assert "Wrong user name or password" in response.text
    assert not any(name.startswith("caroni_session_") for name in manager_site.cookies)
    assert (await manager_site.get("/workflows")).status_code == 303


async def test_repeated_wrong_passwords_are_throttled(manager_site: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await login(manager_site, USER, "guess")).status_code == 401
    # Even the right password is refused for a while now: guessing has to wait.
    throttled = await login(manager_site, USER, PASSWORD)
    assert throttled.status_code == 429
    assert "Too many login attempts" in throttled.text
    assert not any(name.startswith("caroni_session_") for name in manager_site.cookies)


async def test_guesses_sent_at_once_are_checked_no_more_than_the_limit(
    manager_site: httpx.AsyncClient,
    cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    real_verify = auth.verify_password

    def counting_verify(password: str, stored: str) -> bool:
        checked.append(password)  # list.append is atomic: safe from the hashing threads
        return real_verify(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting_verify)
    page = await manager_site.get("/login")
    csrf = csrf_of(page.text)
    # Every guess posts the same login form: the cookie each answer sets must not
    # make the others stale.
    name = next(name for name in manager_site.cookies if name.startswith("caroni_login_"))
    cookie = f"{name}={csrf}"

    async def guess(number: int) -> int:
        response = await manager_site.post(
            "/login",
            data={"username": USER, "password": f"guess {number}", "csrf": csrf, "next": "/"},
            headers={"Cookie": cookie},
        )
        return response.status_code

    answers = collections.Counter(await asyncio.gather(*(guess(n) for n in range(40))))
    assert answers == {401: 5, 429: 35}
    assert len(checked) == 5
    # The guesser is locked out, even with the right password ...
    assert (await login(manager_site, USER, PASSWORD)).status_code == 429
    # ... but the same user from elsewhere is not.
    async with site_client(cluster.manager.site_app(), "manager.test", "192.0.2.7") as other:
        assert (await login(other, USER, PASSWORD)).status_code == 303


def test_the_login_throttle_counts_attempts_per_user_and_address() -> None:
    now = [1000.0]
    throttle = LoginThrottle(allowed=2, window=300.0, clock=lambda: now[0])
    assert throttle.attempt("a", "10.0.0.1") == 0.0
    assert throttle.attempt("a", "10.0.0.1") == 0.0
    assert throttle.attempt("a", "10.0.0.1") == 300.0  # refused, and not counted
    now[0] += 100.0
    assert throttle.attempt("a", "10.0.0.1") == 200.0
    assert throttle.attempt("a", "10.0.0.2") == 0.0  # another address
    assert throttle.attempt("b", "10.0.0.1") == 0.0  # another user
    now[0] += 200.0  # the first two attempts leave the window
    assert throttle.attempt("a", "10.0.0.1") == 0.0
    throttle.succeeded("a", "10.0.0.1")
    assert throttle.attempt("a", "10.0.0.1") == 0.0
    assert throttle.attempt("a", "10.0.0.1") == 0.0


def test_the_login_throttle_forgets_idle_entries_as_it_grows() -> None:
    now = [0.0]
    throttle = LoginThrottle(allowed=5, window=10.0, clock=lambda: now[0])
    for number in range(1000):
        throttle.attempt(f"user{number}", "10.0.0.1")
    now[0] += 20.0
    for number in range(1100):
        throttle.attempt(f"other{number}", "10.0.0.1")
    assert len(throttle._attempts) <= 1100


async def test_login_then_logout_ends_the_session_on_the_server(
    manager_site: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    response = await login(manager_site, next="/templates")
    assert response.status_code == 303
    assert response.headers["location"] == "/templates"
    page = await manager_site.get("/templates")
    assert page.status_code == 200
    assert USER in page.text and "test_simple" in page.text
    stolen = dict(manager_site.cookies)

    response = await post_form(manager_site, "/templates", "/logout", {})
    assert response.status_code == 303
    assert (await manager_site.get("/templates")).status_code == 303
    # The old cookie is worthless: the session is gone from the database.
    manager_site.cookies.update(stolen)
    assert (await manager_site.get("/templates")).status_code == 303

    def sessions() -> int:
        with cluster.manager.engine.connect() as conn:
            return len(conn.execute(select(web_sessions)).all())

    assert await cluster.manager.node.db(sessions) == 0


async def test_a_login_form_posted_from_elsewhere_is_refused(
    manager_site: httpx.AsyncClient,
) -> None:
    # No login cookie: the form did not come from our login page.
    for guess in ("guess", "güess"):
        response = await manager_site.post(
            "/login", data={"username": USER, "password": PASSWORD, "csrf": guess, "next": "/"}
        )
        assert response.status_code == 200
        assert "expired" in response.text
    assert (await manager_site.get("/workflows")).status_code == 303


async def test_after_login_only_local_paths_are_followed(manager_site: httpx.AsyncClient) -> None:
    for target in ["//evil.example/x", "https://evil.example/", "/\\evil.example"]:
        response = await login(manager_site, next=target)
        assert response.headers["location"] == "/"


async def test_forms_without_the_sessions_csrf_token_are_refused(
    manager_user: httpx.AsyncClient, agent_user: httpx.AsyncClient
) -> None:
    for client, action, data in [
        (manager_user, "/templates/new", {"name": "x", "text": "cwlVersion: v1.2"}),
        (manager_user, "/workflows/new", {"template": "test_simple"}),
        (manager_user, "/logout", {}),
        (agent_user, "/job-types/foojob0", {"body": "echo pwned"}),
    ]:
        missing = await client.post(action, data=data)
        assert missing.status_code == 403, action
        for token in ("not-the-token", "nön-ascii"):
            wrong = await client.post(action, data={**data, "csrf": token})
            assert wrong.status_code == 403, action
    assert (await agent_user.get("/job-types/foojob0")).text.count("echo pwned") == 0


async def test_each_node_has_its_own_session_cookie(
    manager_site: httpx.AsyncClient, agent_site: httpx.AsyncClient
) -> None:
    manager_login = await login(manager_site)
    agent_login = await login(agent_site)
    manager_cookie = manager_login.headers["set-cookie"]
    agent_cookie = agent_login.headers["set-cookie"]
    manager_name = manager_cookie.split("=", 1)[0]
    agent_name = agent_cookie.split("=", 1)[0]
    assert manager_name.startswith("caroni_session_")
    assert agent_name.startswith("caroni_session_")
    assert manager_name != agent_name
    for header in (manager_cookie, agent_cookie):
        assert "HttpOnly" in header
        assert "samesite=lax" in header.lower()
    # One cookie jar holding both, as a browser does for two ports of one host:
    # each site finds its own session.
    both = httpx.Cookies()
    both.update(manager_site.cookies)
    both.update(agent_site.cookies)
    manager_site.cookies = both
    agent_site.cookies = both
    assert (await manager_site.get("/workflows")).status_code == 200
    assert (await agent_site.get("/jobs")).status_code == 200


async def test_passwords_are_kept_only_as_salted_hashes(cluster: LocalCluster) -> None:
    def stored() -> list[str]:
        with cluster.manager.engine.connect() as conn:
            return list(conn.execute(select(users.c.password_hash)).scalars())

    (hashed,) = await cluster.manager.node.db(stored)
    assert hashed.startswith("scrypt$")
    assert PASSWORD not in hashed
    assert auth.verify_password(PASSWORD, hashed)
    assert not auth.verify_password(PASSWORD + "!", hashed)
    assert auth.hash_password(PASSWORD) != auth.hash_password(PASSWORD)  # salted


async def test_pages_send_protective_headers(manager_user: httpx.AsyncClient) -> None:
    page = await manager_user.get("/workflows")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert csrf_of(page.text)
