"""Paging, search and names in URLs, and text in forms and API bodies: a bad value is
a 4xx that says why, never a 500, on SQLite and on PostgreSQL (which refuses NUL
characters in text)."""

from __future__ import annotations

import httpx

from caroni.web.params import MAX_OFFSET, MAX_SEARCH
from tests.web.conftest import Nodes
from tests.web.helpers import api_token, login, post_form, site_client

HUGE = "99999999999999999999"


async def test_bad_parameters_and_nul_characters_get_a_clear_4xx(any_db_nodes: Nodes) -> None:
    manager, agent = any_db_nodes.manager, any_db_nodes.agent
    async with (
        site_client(manager.site_app(), "manager.test") as manager_site,
        site_client(agent.site_app(), "agent.test") as agent_site,
    ):
        for client in (manager_site, agent_site):
            assert (await login(client)).status_code == 303
        # NUL in a user name: no such user, not a database error.
        async with site_client(manager.site_app(), "manager.test", "192.0.2.9") as stranger:
            assert (await login(stranger, "al\x00ice")).status_code == 401

        for client, path, name in [
            (manager_site, "/workflows", "state"),
            (agent_site, "/jobs", "status"),
        ]:
            for query, wrong in [
                (f"offset={HUGE}", "offset"),
                ("offset=-1", "offset"),
                ("offset=ten", "offset"),
                ("q=%00", "q"),
                ("q=" + "x" * (MAX_SEARCH + 1), "q"),
                (f"{name}=%00", name),
            ]:
                response = await client.get(f"{path}?{query}")
                assert response.status_code == 400, (path, query, response.text[:300])
                assert f"{wrong}: " in response.text
                assert "text/html" in response.headers["content-type"]
            # The bounds themselves are fine, down to the database.
            for query in [f"offset={MAX_OFFSET}", "q=" + "x" * MAX_SEARCH, "q=caf%C3%A9%25_"]:
                response = await client.get(f"{path}?{query}")
                assert response.status_code == 200, (path, query, response.text[:300])

        for client, path in [
            (manager_site, "/templates/bad%00name"),
            (agent_site, "/job-types/bad%00name"),
        ]:
            response = await client.get(path)
            assert response.status_code == 400, (path, response.text[:300])

        # A NUL in any posted form is refused before it reaches the database.
        for action, data in [
            ("/users/remove", {"username": "a\x00b"}),
            ("/workflows/new", {"template": "a\x00b"}),
            ("/templates/new", {"name": "a\x00b", "text": "x"}),
            ("/workflows/new", {"template": "test_simple", "input:x": "a\x00b"}),
        ]:
            posted = await post_form(manager_site, "/users", action, data)
            assert posted.status_code == 400, (action, data, posted.text[:300])
            assert "NUL character" in posted.text

        token = await api_token(manager)
        headers = {"Authorization": f"Bearer {token}"}
        for query, wrong in [
            (f"offset={HUGE}", "offset"),
            ("offset=-1", "offset"),
            ("q=%00", "q"),
            ("q=" + "x" * (MAX_SEARCH + 1), "q"),
            ("state=%00", "state"),
        ]:
            response = await manager_site.get(f"/api/v1/workflows?{query}", headers=headers)
            assert response.status_code == 422, (query, response.text[:300])
            problems = response.json()["detail"]
            assert [problem["loc"] for problem in problems] == [["query", wrong]]
            assert problems[0]["msg"]
        for path, body, wrong in [
            ("/api/v1/workflows", {"template": "a\x00b"}, ["body", "template"]),
            ("/api/v1/workflows", {"template": "t", "name": "a\x00b"}, ["body", "name"]),
            (f"/api/v1/workflows/{'0' * 32}/cancel", {"reason": "a\x00b"}, ["body", "reason"]),
        ]:
            response = await manager_site.post(path, json=body, headers=headers)
            assert response.status_code == 422, (body, response.text[:300])
            assert [problem["loc"] for problem in response.json()["detail"]] == [wrong]
        response = await manager_site.get(
            f"/api/v1/workflows?offset={MAX_OFFSET}&q=x", headers=headers
        )
        assert response.status_code == 200
        assert response.json() == []


async def test_the_api_docs_describe_the_bounds(manager_site: httpx.AsyncClient) -> None:
    schema = (await manager_site.get("/api/openapi.json")).json()
    parameters = {
        parameter["name"]: parameter["schema"]
        for parameter in schema["paths"]["/api/v1/workflows"]["get"]["parameters"]
    }
    assert parameters["offset"]["maximum"] == MAX_OFFSET
    assert parameters["offset"]["minimum"] == 0
    assert parameters["q"]["maxLength"] == MAX_SEARCH
