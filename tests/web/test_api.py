"""The manager's HTTP API: OpenAPI, tokens, start, follow, cancel."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import httpx
import pytest

from caroni.cluster import LocalCluster
from caroni.manager.templates import parse_template
from tests.web.helpers import api_token, eventually, login

# A template whose only step needs a job type no agent offers: it stays running.
UNSERVED = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: Workflow
    $namespaces:
      caroni: https://caroni.example/cwl#
    inputs:
      x: string
    outputs:
      y:
        type: string
        outputSource: only/out
    steps:
      only:
        run:
          class: CommandLineTool
          hints:
            caroni:CaroniRequirement:
              CaroniJobName: nobody_offers_this
          inputs:
            x: string
          outputs:
            out: string
        in:
          x: x
        out: [out]
    """
)


@pytest.fixture
async def api(cluster: LocalCluster, manager_site: httpx.AsyncClient) -> httpx.AsyncClient:
    manager_site.headers["Authorization"] = f"Bearer {await api_token(cluster)}"
    return manager_site


async def test_the_openapi_schema_describes_the_api(manager_site: httpx.AsyncClient) -> None:
    schema = (await manager_site.get("/api/openapi.json")).json()
    assert set(schema["paths"]) == {
        "/api/v1/templates",
        "/api/v1/workflows",
        "/api/v1/workflows/{workflow_id}",
        "/api/v1/workflows/{workflow_id}/cancel",
    }
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    start = schema["paths"]["/api/v1/workflows"]["post"]
    assert "201" in start["responses"] and "422" in start["responses"]
    # The docs page works without the internet: its assets come from the site itself.
    page = await manager_site.get("/api/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+\.(?:js|css))['"]""", page.text)
    assert len(assets) == 2 and all(asset.startswith("/api/docs/assets/") for asset in assets)
    for asset in assets:
        assert (await manager_site.get(asset)).status_code == 200


async def test_the_api_needs_a_valid_token(manager_site: httpx.AsyncClient) -> None:
    missing = await manager_site.get("/api/v1/templates")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json() == {"detail": "an API token is required"}
    wrong = await manager_site.get(
        "/api/v1/templates", headers={"Authorization": "Bearer caroni_not-a-token"}
    )
    assert wrong.status_code == 401
    # A browser session is not an API token (the API has no CSRF protection).
    await login(manager_site)
    assert (await manager_site.get("/api/v1/templates")).status_code == 401


async def test_templates_are_listed_with_their_inputs(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/templates")
    assert response.status_code == 200
    by_name = {t["name"]: t for t in response.json()}
    assert by_name["test_simple"]["inputs"] == ["start_message"]
    assert by_name["test_simple"]["outputs"] == ["result"]
    assert [s["job_type"] for s in by_name["test_simple"]["steps"]] == [
        "foojob0",
        "foojob1",
        "foojob2",
    ]


async def test_a_workflow_started_through_the_api_runs_to_its_outputs(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/api/v1/workflows",
        json={"template": "test_simple", "inputs": {"start_message": "caronirocks"}, "name": "x"},
    )
    assert response.status_code == 201, response.text
    started = response.json()
    assert started["state"] == "running"
    assert response.headers["location"] == f"/api/v1/workflows/{started['id']}"

    async def finished() -> dict[str, Any] | None:
        body = (await api.get(response.headers["location"])).json()
        return body if body["state"] in ("completed", "failed", "cancelled") else None

    done = await eventually(finished, "the workflow to finish")
    assert done["state"] == "completed", done["reason"]
    assert done["outputs"] == {"result": "prependCARONIROCKS append"}
    assert [s["state"] for s in done["steps"]] == ["completed"] * 3
    assert {s["agent"] for s in done["steps"]} == {"agent-1"}
    listed = (await api.get("/api/v1/workflows", params={"state": "completed"})).json()
    assert [w["id"] for w in listed] == [started["id"]]


async def test_starts_that_cannot_run_are_refused_and_not_stored(api: httpx.AsyncClient) -> None:
    unknown = await api.post("/api/v1/workflows", json={"template": "nope", "inputs": {}})
    assert unknown.status_code == 422
    assert "unknown template 'nope'" in unknown.json()["detail"]
    wrong = await api.post(
        "/api/v1/workflows", json={"template": "test_simple", "inputs": {"msg": "x"}}
    )
    assert wrong.status_code == 422
    assert "missing input(s): start_message" in wrong.json()["detail"]
    assert "unknown input(s): msg" in wrong.json()["detail"]
    malformed = await api.post("/api/v1/workflows", json={"inputs": {}})
    assert malformed.status_code == 422
    assert (await api.get("/api/v1/workflows")).json() == []


async def test_a_running_workflow_is_cancelled(
    api: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    await cluster.manager.add_template(parse_template("unserved", UNSERVED))
    started = await api.post(
        "/api/v1/workflows", json={"template": "unserved", "inputs": {"x": "1"}}
    )
    workflow_id = started.json()["id"]
    cancelled = await api.post(
        f"/api/v1/workflows/{workflow_id}/cancel", json={"reason": "changed my mind"}
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["reason"] == "changed my mind"
    again = await api.post(f"/api/v1/workflows/{workflow_id}/cancel")
    assert again.json()["state"] == "cancelled"
    assert again.json()["reason"] == "changed my mind"  # a finished workflow stays as it was
    shown = (await api.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert shown["state"] == "cancelled"
    assert shown["steps"][0]["state"] == "cancelled"
    missing = await api.post(f"/api/v1/workflows/{'0' * 32}/cancel")
    assert missing.status_code == 404
    assert (await api.get("/api/v1/workflows/not-an-id")).status_code == 404
