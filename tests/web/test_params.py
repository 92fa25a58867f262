"""Paging, search and names in URLs: a bad value is a 4xx that says why, never a 500,
on SQLite and on PostgreSQL (which refuses NUL characters in text)."""

from __future__ import annotations

import httpx

from caroni.web.params import MAX_OFFSET, MAX_SEARCH
from tests.web.conftest import Nodes
from tests.web.helpers import api_token, login, post_form, site_client

HUGE = "99999999999999999999"


async def test_bad_paging_and_search_get_a_clear_4xx(any_db_nodes: Nodes) -> None:
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

        # A NUL in a posted user name: refused on the form.
        removed = await post_form(manager_site, "/users", "/users/remove", {"username": "a\x00b"})
        assert removed.status_code == 400
        assert "is not a user name" in removed.text

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
