"""The manager's pages: templates (with validation errors by the field), the start form,
the workflow list and page (live fragments, DAG, message sequence), cancel."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable

import httpx

from caroni.cluster import LocalCluster
from caroni.demo import demo_template_paths
from caroni.manager.templates import parse_template
from tests.web.helpers import eventually, post_form
from tests.web.test_api import UNSERVED

BROKEN = UNSERVED.replace("CaroniJobName: nobody_offers_this", "SomethingElse: 1")


def section(page: str, element_id: str) -> str:
    """The text of the element with this id (up to its closing tag of the same kind)."""
    found = re.search(rf'<(\w+)[^>]*id="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page, re.S)
    assert found, f"no element #{element_id}"
    return html.unescape(found.group(2))


async def test_template_problems_are_shown_next_to_their_field(
    manager_user: httpx.AsyncClient,
) -> None:
    response = await post_form(
        manager_user, "/templates/new", "/templates/new", {"name": "broken", "text": BROKEN}
    )
    assert response.status_code == 422
    problems = section(response.text, "text-errors")
    assert "step 'only'" in problems and "CaroniRequirement has unknown field" in problems
    assert 'id="text" name="text"' in response.text
    assert 'aria-describedby="text-errors" aria-invalid="true"' in response.text
    assert "SomethingElse: 1" in response.text  # the text is kept for fixing

    nameless = await post_form(
        manager_user, "/templates/new", "/templates/new", {"name": " ", "text": UNSERVED}
    )
    assert nameless.status_code == 422
    assert "template name" in section(nameless.text, "name-errors")

    taken = await post_form(
        manager_user, "/templates/new", "/templates/new", {"name": "test_simple", "text": UNSERVED}
    )
    assert "exists already" in section(taken.text, "name-errors")
    listing = await manager_user.get("/templates")
    assert "broken" not in listing.text


async def test_a_template_is_added_shown_as_a_graph_and_edited(
    manager_user: httpx.AsyncClient,
) -> None:
    added = await post_form(
        manager_user, "/templates/new", "/templates/new", {"name": "mine", "text": UNSERVED}
    )
    assert added.status_code == 303
    assert added.headers["location"] == "/templates/mine?notice=template-added"
    page = await manager_user.get("/templates/mine")
    assert "Template added." in (await manager_user.get(added.headers["location"])).text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="dag"' in page.text
    assert 'data-node="step:only"' in page.text
    assert "nobody_offers_this" in page.text

    edited_text = UNSERVED.replace("nobody_offers_this", "foojob0")
    saved = await post_form(
        manager_user, "/templates/mine", "/templates/mine", {"text": edited_text}
    )
    assert saved.status_code == 303, saved.text
    page = await manager_user.get("/templates/mine")
    assert "foojob0" in page.text
    assert re.search(r"<dt>version</dt><dd>2</dd>", page.text)

    broken = await post_form(manager_user, "/templates/mine", "/templates/mine", {"text": BROKEN})
    assert broken.status_code == 422
    assert "CaroniRequirement" in section(broken.text, "text-errors")
    assert "foojob0" in (await manager_user.get("/templates/mine")).text  # unchanged


async def test_the_start_form_starts_the_demo_workflow_and_its_page_shows_it_all(
    manager_user: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    form = await manager_user.get("/workflows/new?template=test_simple")
    assert 'name="input:start_message"' in form.text
    started = await post_form(
        manager_user,
        "/workflows/new?template=test_simple",
        "/workflows/new",
        {"template": "test_simple", "input:start_message": "caronirocks", "name": "from the form"},
    )
    assert started.status_code == 303, started.text
    url = started.headers["location"]
    workflow_id = url.rsplit("/", 1)[1]

    async def completed() -> str | None:
        page = (await manager_user.get(url)).text
        return page if 'id="workflow-state"><span class="badge state-completed"' in page else None

    page = await eventually(completed, "the workflow page to show it completed")
    assert "prependCARONIROCKS append" in section(page, "outputs")
    assert "caronirocks" in page  # the input
    steps = section(page, "steps")
    assert steps.count("agent-1") == 3
    assert "foojob0" in steps and "foojob2" in steps
    assert "delivered" in section(page, "dataflows")
    dag = page[page.index('class="dag"') : page.index("</svg>", page.index('class="dag"'))]
    assert dag.count('data-state="completed"') == 4  # three steps and the output
    assert page.count('class="message message-') > 10
    # Requests go to the agents of each step's job type, each a lane of its own.
    assert 'data-lane="wf.agent.fulfillment.foojob0"' in page
    assert "agents of foojob0" in page
    assert f'data-lane="{cluster.agents[0].key}"' in page
    assert ">agent-1<" in page  # the agent's lane is labelled with its site name

    listing = await manager_user.get("/workflows")
    assert workflow_id in listing.text and "from the form" in listing.text


async def test_a_start_that_cannot_run_is_explained_on_the_form(
    manager_user: httpx.AsyncClient,
) -> None:
    response = await post_form(
        manager_user,
        "/workflows/new?template=test_simple",
        "/workflows/new",
        {"template": "test_simple", "input:other": "x", "max_attempts": "lots"},
    )
    assert response.status_code == 422
    assert "whole number" in section(response.text, "max_attempts-errors")
    response = await post_form(
        manager_user,
        "/workflows/new?template=test_simple",
        "/workflows/new",
        {"template": "test_simple", "input:other": "x"},
    )
    assert response.status_code == 422
    assert "missing input(s): start_message" in section(response.text, "form-errors")
    assert "No workflows yet" in (await manager_user.get("/workflows")).text


async def test_workflows_are_filtered_by_state_and_searched(
    manager_user: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    await cluster.manager.add_template(parse_template("unserved", UNSERVED))
    ids = {}
    for name in ("alpha run", "beta run"):
        response = await post_form(
            manager_user,
            "/workflows/new?template=unserved",
            "/workflows/new",
            {"template": "unserved", "input:x": "1", "name": name},
        )
        ids[name] = response.headers["location"].rsplit("/", 1)[1]
    cancelled = await post_form(
        manager_user,
        f"/workflows/{ids['beta run']}",
        f"/workflows/{ids['beta run']}/cancel",
        {"reason": "not needed"},
    )
    assert cancelled.headers["location"].endswith("?notice=cancelled")
    page = await manager_user.get(cancelled.headers["location"])
    assert "Cancel requested" in page.text and "not needed" in page.text

    only_cancelled = (await manager_user.get("/workflows?state=cancelled")).text
    assert ids["beta run"] in only_cancelled and ids["alpha run"] not in only_cancelled
    searched = (await manager_user.get("/workflows?q=ALPHA")).text
    assert ids["alpha run"] in searched and ids["beta run"] not in searched
    by_id = (await manager_user.get(f"/workflows?q={ids['beta run'][:6]}")).text
    assert ids["beta run"] in by_id and ids["alpha run"] not in by_id
    assert "No workflow matches" in (await manager_user.get("/workflows?q=zzz")).text


def settled(client: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[str | None]]:
    """A check: the page's stamp, once asking again with it gets "no news" (204)."""

    async def check() -> str | None:
        first = await client.get(f"{url}?fragment=1")
        assert first.status_code == 200 and "<html" not in first.text
        stamp = first.headers["x-caroni-stamp"]
        again = await client.get(f"{url}?fragment=1&since={stamp}")
        return stamp if again.status_code == 204 else None

    return check


async def test_live_fragments_answer_only_when_something_changed(
    manager_user: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    await cluster.manager.add_template(parse_template("unserved", UNSERVED))
    started = await post_form(
        manager_user,
        "/workflows/new?template=unserved",
        "/workflows/new",
        {"template": "unserved", "input:x": "1"},
    )
    url = started.headers["location"]
    # An agent's decline may still arrive and change the page: wait for quiet.
    await eventually(settled(manager_user, "/workflows"), "the list to settle")
    stamp = await eventually(settled(manager_user, url), "the workflow page to settle")
    await post_form(manager_user, url, f"{url}/cancel", {})
    changed = await manager_user.get(f"{url}?fragment=1&since={stamp}")
    assert changed.status_code == 200
    assert "state-cancelled" in changed.text


async def test_unknown_things_are_a_page_saying_so(manager_user: httpx.AsyncClient) -> None:
    for path in ("/workflows/" + "0" * 32, "/workflows/nonsense", "/templates/nope", "/no-page"):
        response = await manager_user.get(path)
        assert response.status_code == 404, path
        assert "<h1>404 Not found</h1>" in response.text


async def test_the_demo_templates_are_listed(manager_user: httpx.AsyncClient) -> None:
    page = (await manager_user.get("/templates")).text
    for name in demo_template_paths():
        assert f'href="/templates/{name}"' in page


async def test_dead_letters_are_shown_with_their_reasons(
    manager_user: httpx.AsyncClient, cluster: LocalCluster
) -> None:
    empty = await manager_user.get("/dead-letters")
    assert empty.status_code == 200 and "Nothing has been set aside." in empty.text
    async with cluster.client() as client:
        await client.transport.publish(cluster.manager.key, b"\x00garbage", reply_to=client.key)

    async def listed() -> httpx.Response | None:
        response = await manager_user.get("/dead-letters")
        return response if 'id="dead-letters"' in response.text else None

    page = await eventually(listed, "the dead letter to be listed")
    rows = section(page.text, "dead-letters")
    assert "cannot open envelope" in rows
    assert "1 set aside in all" in rows
