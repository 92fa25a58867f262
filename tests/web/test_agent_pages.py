"""The agent's pages: job types (add, edit, problems by the field) and jobs."""

from __future__ import annotations

from typing import Any

import httpx

from caroni.cluster import LocalCluster
from tests.web.helpers import api_token, eventually, login, post_form
from tests.web.test_manager_pages import section

EDITED_BODY = (
    "python3 -I -S -c 'import json, os; "
    'print(json.dumps({"out": os.environ["CARONI_ENV_final_text"] + " edited"}))\'\r\n'
)


async def run_demo_workflow(
    cluster: LocalCluster, manager_site: httpx.AsyncClient
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {await api_token(cluster)}"}
    started = await manager_site.post(
        "/api/v1/workflows",
        json={"template": "test_simple", "inputs": {"start_message": "caronirocks"}},
        headers=headers,
    )
    url = started.headers["location"]

    async def finished() -> dict[str, Any] | None:
        body = (await manager_site.get(url, headers=headers)).json()
        return body if body["state"] in ("completed", "failed", "cancelled") else None

    return await eventually(finished, "the demo workflow to finish")


async def test_job_types_are_listed_with_their_inputs_and_outputs(
    agent_user: httpx.AsyncClient,
) -> None:
    table = section((await agent_user.get("/job-types")).text, "job-types")
    assert '<a href="/job-types/join_pair">join_pair</a>' in table
    assert "<code>first</code>, <code>second</code>" in table
    assert "<code>joined</code>" in table


async def test_an_edited_body_applies_to_the_next_job(
    agent_user: httpx.AsyncClient, manager_site: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    saved = await post_form(
        agent_user,
        "/job-types/foojob2",
        "/job-types/foojob2",
        {"inputs": "final_text", "outputs": "out", "timeout": "30", "body": EDITED_BODY},
    )
    assert saved.status_code == 303, saved.text
    page = (await agent_user.get(saved.headers["location"])).text
    assert "the next job of this type that starts runs the new body" in page
    assert "edited" in section(page, "body")
    assert 'value="30"' in page

    done = await run_demo_workflow(cluster, manager_site)
    assert done["outputs"] == {"result": "prependCARONIROCKS edited"}


async def test_job_type_problems_are_shown_next_to_their_field(
    agent_user: httpx.AsyncClient,
) -> None:
    cases = [
        ({"inputs": "final-text", "outputs": "out", "body": "true"}, "inputs", "not a valid name"),
        ({"inputs": "a a", "outputs": "out", "body": "true"}, "inputs", "appears twice"),
        ({"inputs": "x", "outputs": "out", "body": "   "}, "body", "non-empty"),
        (
            {"inputs": "x", "outputs": "out", "body": "true", "timeout": "soon"},
            "timeout",
            "seconds",
        ),
        ({"inputs": "x", "outputs": "out", "body": "true", "timeout": "-1"}, "timeout", "positive"),
    ]
    for data, field, words in cases:
        response = await post_form(agent_user, "/job-types/foojob0", "/job-types/foojob0", data)
        assert response.status_code == 422, data
        assert words in section(response.text, f"{field}-errors"), data
    # Nothing of that was saved.
    assert "CARONI_ENV_message" in (await agent_user.get("/job-types/foojob0")).text


async def test_a_new_job_type_is_added_once(agent_user: httpx.AsyncClient) -> None:
    data = {"name": "hello", "inputs": "who", "outputs": "greeting", "body": "echo hi"}
    added = await post_form(agent_user, "/job-types/new", "/job-types/new", data)
    assert added.status_code == 303
    assert "this agent now offers it" in (await agent_user.get(added.headers["location"])).text
    assert 'href="/job-types/hello"' in (await agent_user.get("/job-types")).text
    again = await post_form(agent_user, "/job-types/new", "/job-types/new", data)
    assert again.status_code == 422
    assert "exists already" in section(again.text, "name-errors")
    bad_name = await post_form(
        agent_user, "/job-types/new", "/job-types/new", {**data, "name": "no spaces"}
    )
    assert "not a job type name" in section(bad_name.text, "name-errors")


async def test_jobs_are_listed_and_each_shows_what_it_did(
    agent_user: httpx.AsyncClient, manager_site: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    assert "No jobs yet" in (await agent_user.get("/jobs")).text
    await run_demo_workflow(cluster, manager_site)
    listing = (await agent_user.get("/jobs")).text
    table = section(listing, "jobs")
    assert table.count('class="badge state-completed"') == 3
    assert cluster.manager.key in table
    only_foojob1 = section((await agent_user.get("/jobs?q=foojob1")).text, "jobs")
    assert "foojob1" in only_foojob1 and "foojob2" not in only_foojob1
    assert "No job matches" in (await agent_user.get("/jobs?status=failed")).text

    job_link = only_foojob1.split('href="', 1)[1].split('"', 1)[0]
    page = (await agent_user.get(job_link)).text
    assert "CARONIROCKS" in section(page, "inputs")
    assert "prependCARONIROCKS" in section(page, "stdout")
    history = section(page, "history")
    for status in ("pending", "queued", "running", "completed"):
        assert f"state-{status}" in history
    assert cluster.manager.key in page  # the manager it serves
    assert page.count('class="message message-') >= 6  # request ... completed
    assert (await agent_user.get("/jobs/" + "0" * 32)).status_code == 404


async def test_both_sites_list_the_claim_an_offer_granted(
    agent_user: httpx.AsyncClient, manager_site: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    empty = (await agent_user.get("/claims")).text
    assert "has granted no claim" in empty
    await run_demo_workflow(cluster, manager_site)
    granted = section((await agent_user.get("/claims")).text, "claims")
    assert cluster.manager.key in granted
    assert "<code>foojob0</code>" in granted and "expired" not in granted
    assert (await login(manager_site)).status_code == 303
    held = section((await manager_site.get("/claims")).text, "claims")
    assert "agent-1" in held and "<code>foojob2</code>" in held
