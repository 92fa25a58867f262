"""Long values: pages show the start of them and link to the whole, as plain text."""

from __future__ import annotations

import html
import re

import httpx

from caroni.agent.jobtypes import job_type_from_dict
from caroni.cluster import LocalCluster
from caroni.web.values import CLIP_CHARS, clip, clip_plain
from tests.web.helpers import login, site_client
from tests.web.test_agent_pages import run_demo_workflow

BIG = 3 * 1024 * 1024
# The last step of test_simple outputs BIG characters (an input that large cannot
# arrive: Linux limits one environment entry to 128 KiB).
BIG_BODY = (
    "python3 -I -S -c 'import json; "
    f'print(json.dumps({{"out": "ab" * {(BIG - 3) // 2} + "END"}}))\''
)
BIG_VALUE = "ab" * ((BIG - 3) // 2) + "END"
PAGE_LIMIT = 200_000  # bytes: a page stays small whatever the values


def test_short_values_are_shown_whole_and_long_ones_clipped_with_a_link() -> None:
    assert clip("<b>") == "&lt;b&gt;"
    assert clip(None) == ""
    long = "<" * (CLIP_CHARS + 5)
    clipped = clip(long, "/workflows/x/full/reason")
    assert clipped.startswith("&lt;" * CLIP_CHARS + '<a class="clipped"')
    assert f"… {CLIP_CHARS + 5:,} characters, show all</a>" in clipped
    assert 'href="/workflows/x/full/reason"' in clipped
    assert "show all" not in clip(long)  # no link to give: the length only
    assert clip_plain("x" * 10, 4) == "xxxx… 10 characters"


async def test_a_multi_megabyte_output_is_clipped_on_pages_and_whole_behind_its_link(
    cluster: LocalCluster, manager_user: httpx.AsyncClient, agent_user: httpx.AsyncClient
) -> None:
    big = job_type_from_dict(
        {"name": "foojob2", "inputs": ["final_text"], "outputs": ["out"], "body": BIG_BODY}
    )
    await cluster.agents[0].add_job_type(big)

    workflow = await run_demo_workflow(cluster, manager_user)
    assert workflow["state"] == "completed", workflow
    # The API gives values whole.
    assert workflow["outputs"]["result"] == BIG_VALUE

    page = await manager_user.get(f"/workflows/{workflow['id']}")
    assert page.status_code == 200
    assert len(page.content) < PAGE_LIMIT, len(page.content)
    assert f"… {len(BIG_VALUE):,} characters, show all" in page.text
    links = set(re.findall(r'<a class="clipped" href="([^"]+)"', page.text))
    # The output, and the dataflow that carried it.
    assert len(links) == 2, links
    assert f"/workflows/{workflow['id']}/full/outputs/result" in links
    assert any(f"/workflows/{workflow['id']}/full/dataflows/" in link for link in links)
    fragment = await manager_user.get(f"/workflows/{workflow['id']}?fragment=1")
    assert len(fragment.content) < PAGE_LIMIT
    for link in links:
        full = await manager_user.get(html.unescape(link))
        assert full.status_code == 200
        assert full.headers["content-type"].startswith("text/plain")
        assert full.text == BIG_VALUE

    job_uuid = next(
        step["job_uuid"]
        for step in await _steps(cluster, workflow["id"])
        if step["name"] == "step3"
    )
    job_page = await agent_user.get(f"/jobs/{job_uuid}")
    assert job_page.status_code == 200
    assert len(job_page.content) < PAGE_LIMIT, len(job_page.content)
    job_link = f"/jobs/{job_uuid}/full/outputs/out"
    assert f'href="{job_link}"' in job_page.text
    assert (await agent_user.get(job_link)).text == BIG_VALUE

    # Every value a page may clip has its path, empty ones too.
    for path in [
        f"/workflows/{workflow['id']}/full/steps/step3/attempts/1",
        f"/workflows/{workflow['id']}/full/inputs/start_message",
        f"/workflows/{workflow['id']}/full/reason",
    ]:
        assert (await manager_user.get(path)).status_code == 200, path
    assert (await agent_user.get(f"/jobs/{job_uuid}/full/history/0")).status_code == 200
    assert (
        await manager_user.get(f"/workflows/{workflow['id']}/full/inputs/start_message")
    ).text == "caronirocks"

    # Behind the same login; and a value that is not there is a 404.
    assert (
        await manager_user.get(f"/workflows/{workflow['id']}/full/outputs/nope")
    ).status_code == 404
    assert (await agent_user.get(f"/jobs/{job_uuid}/full/history/99")).status_code == 404
    async with site_client(cluster.manager.site_app(), "manager.test") as stranger:
        answer = await stranger.get(f"/workflows/{workflow['id']}/full/outputs/result")
        assert answer.status_code == 303
        assert (await login(stranger)).status_code == 303
        assert (
            await stranger.get(f"/workflows/{workflow['id']}/full/outputs/result")
        ).status_code == 200


async def _steps(cluster: LocalCluster, workflow_id: str) -> list[dict[str, str]]:
    """Each step's name and the job of its last attempt, from the manager's store."""

    def read() -> list[dict[str, str]]:
        with cluster.manager.engine.connect() as conn:
            loaded = cluster.manager.role.store.read(conn, workflow_id)
        assert loaded is not None
        return [
            {"name": step.name, "job_uuid": step.attempts[-1].job_uuid or ""}
            for step in loaded.steps.values()
        ]

    return await cluster.manager.node.db(read)
