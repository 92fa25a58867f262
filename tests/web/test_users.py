"""The Users page of every site: adding and removing users, changing one's password."""

from __future__ import annotations

import re

import httpx
import pytest

from caroni.cluster import LocalCluster
from tests.web.helpers import PASSWORD, USER, login, post_form, site_client

BOB_PASSWORD = "bob's own passphrase"


async def add_bob(client: httpx.AsyncClient) -> httpx.Response:
    return await post_form(
        client,
        "/users",
        "/users",
        {"username": "bob", "password": BOB_PASSWORD, "confirm": BOB_PASSWORD},
    )


async def test_a_user_adds_another_who_can_then_log_in(
    manager_user: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    added = await add_bob(manager_user)
    assert added.status_code == 303 and added.headers["location"] == "/users?notice=user-added"
    page = await manager_user.get(added.headers["location"])
    assert "User added" in page.text
    assert ">bob<" in page.text and f'{USER} <span class="muted">(you)</span>' in page.text
    async with site_client(cluster.manager.site_app(), "manager.test") as bob:
        assert (await login(bob, "bob", BOB_PASSWORD)).status_code == 303
        assert (await bob.get("/workflows")).status_code == 200


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"username": "bob", "password": "one", "confirm": "other"}, "The two passwords differ."),
        ({"username": "bob", "password": "", "confirm": ""}, "The password is empty."),
        ({"username": "no spaces", "password": "p", "confirm": "p"}, "is not a user name"),
        ({"username": USER, "password": "p", "confirm": "p"}, "exists already"),
    ],
)
async def test_a_user_that_cannot_be_added_is_refused_with_the_reason(
    manager_user: httpx.AsyncClient, fields: dict[str, str], reason: str
) -> None:
    refused = await post_form(manager_user, "/users", "/users", fields)
    assert refused.status_code == 400
    assert reason in refused.text
    assert ">bob<" not in refused.text


async def test_removing_a_user_ends_their_sessions_but_nobody_removes_themselves(
    manager_user: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    await add_bob(manager_user)
    async with site_client(cluster.manager.site_app(), "manager.test") as bob:
        await login(bob, "bob", BOB_PASSWORD)
        removed = await post_form(manager_user, "/users", "/users/remove", {"username": "bob"})
        assert removed.headers["location"] == "/users?notice=user-removed"
        assert (await bob.get("/workflows")).status_code == 303  # back to the login page
        assert (await login(bob, "bob", BOB_PASSWORD)).status_code == 401
    refused = await post_form(manager_user, "/users", "/users/remove", {"username": USER})
    assert refused.status_code == 400
    assert "You cannot remove yourself" in refused.text
    assert (await manager_user.get("/workflows")).status_code == 200


async def test_changing_ones_password_ends_the_session_and_the_old_password(
    agent_user: httpx.AsyncClient,
) -> None:
    new = "a new passphrase"
    differs = await post_form(
        agent_user, "/users", "/users/password", {"password": new, "confirm": "typo"}
    )
    assert differs.status_code == 400 and "The two passwords differ." in differs.text
    changed = await post_form(
        agent_user, "/users", "/users/password", {"password": new, "confirm": new}
    )
    assert changed.headers["location"] == "/login?notice=password-changed"
    assert (await agent_user.get("/jobs")).status_code == 303
    assert (await login(agent_user, USER, PASSWORD)).status_code == 401
    assert (await login(agent_user, USER, new)).status_code == 303


async def test_user_forms_need_the_sessions_csrf_token(manager_user: httpx.AsyncClient) -> None:
    for action, data in [
        ("/users", {"username": "bob", "password": "p", "confirm": "p"}),
        ("/users/remove", {"username": USER}),
        ("/users/password", {"password": "p", "confirm": "p"}),
    ]:
        forged = await manager_user.post(action, data={"csrf": "forged", **data})
        assert forged.status_code == 403
    page = await manager_user.get("/users")
    assert ">bob<" not in page.text
    assert (await manager_user.get("/workflows")).status_code == 200


async def test_a_manager_user_makes_an_api_token_shown_once(
    manager_user: httpx.AsyncClient, agent_user: httpx.AsyncClient
) -> None:
    made = await post_form(manager_user, "/users", "/users/token", {})
    assert made.status_code == 200
    token = re.search(r'id="new-token">.*?<code>([^<]+)</code>', made.text)
    assert token is not None
    authorized = {"Authorization": f"Bearer {token.group(1)}"}
    assert (await manager_user.get("/api/v1/templates", headers=authorized)).status_code == 200
    assert token.group(1) not in (await manager_user.get("/users")).text
    # An agent's site has no API, so no tokens to make.
    assert "/users/token" not in (await agent_user.get("/users")).text
    assert (await agent_user.post("/users/token", data={})).status_code in (404, 405)
