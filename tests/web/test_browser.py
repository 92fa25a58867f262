"""The sites in a real browser: headless Chromium (Debian's package) driven by Playwright.

A whole Caroni runs in the test process (in-process broker, SQLite, real job
processes) with every node's site on a free port; the browser is a separate
process talking HTTP to them, as a person's would. Screenshots of the main
pages go to artifacts/screenshots/ at the repository root.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from caroni.cluster import LocalCluster
from caroni.demo.main import DEMO_PASSWORD, DEMO_USER, load_demo_content
from tests.web.test_manager_pages import BROKEN

# One cluster and one browser for the module (each test has its own browser
# context, so its own cookies): starting them is most of a test's time.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
WAIT_MS = 60_000  # generous: only reached when something is wrong
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # we run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} (Debian's chromium package)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "the playwright package (pip install -e '.[test]')"
    if missing is None:
        return
    if os.environ.get("CARONI_REQUIRE_SERVICES", "") not in ("", "0", "false", "no"):
        pytest.fail(f"browser tests need {missing} (CARONI_REQUIRE_SERVICES is set)")
    pytest.skip(f"browser tests need {missing}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sites(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    """The demo cluster with two agents, every node serving its site on a free port."""
    _require_browser()
    data = tmp_path_factory.mktemp("sites")
    async with LocalCluster(data, agents=2, http="127.0.0.1:0") as cluster:
        await load_demo_content(cluster)
        await cluster.add_user(DEMO_USER, DEMO_PASSWORD)
        assert all(node.site_url for node in cluster.nodes)
        yield cluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # Playwright gives each launch a new, empty profile (user data dir).
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Any) -> AsyncIterator[Any]:
    made = await browser.new_context(viewport={"width": 1280, "height": 900})
    made.set_default_timeout(WAIT_MS)
    try:
        yield made
    finally:
        await made.close()


async def log_in(page: Any, url: str) -> None:
    await page.goto(url)
    await page.get_by_label("User name").fill(DEMO_USER)
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_selector("form.logout")
    # The page's script (live updates, selects that submit their choice) runs by
    # the load event; acting before it would race it.
    await page.wait_for_load_state("load")


async def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def gated_body(gate: Path) -> str:
    """foojob2, edited: waits until the test opens the gate, then says it was edited."""
    return textwrap.dedent(
        f"""\
        while [ ! -e '{gate}' ]; do sleep 0.05; done
        python3 -I -S -c 'import json, os; e = os.environ; \
          print(json.dumps({{"out": e["CARONI_ENV_final_text"] + " edited"}}))'
        """
    )


async def test_start_the_demo_from_the_form_and_watch_it_complete_live(
    sites: LocalCluster, context: Any, tmp_path: Path
) -> None:
    manager_url = sites.manager.site_url
    agent_url = sites.agents[0].site_url  # agent-1 serves foojob0 and foojob2
    gate = tmp_path / "gate"
    page = await context.new_page()

    # Edit a job type on the agent: the next job of that type runs the new body.
    await log_in(page, agent_url + "job-types")
    await shot(page, "agent-job-types")
    await page.get_by_role("link", name="foojob2").click()
    await page.get_by_label("Body (bash)").fill(gated_body(gate))
    await page.get_by_role("button", name="Save").click()
    await page.get_by_text("Job type saved").wait_for()
    await shot(page, "agent-job-type-edited")

    # Start the demo workflow from the manager's form.
    await log_in(page, manager_url + "workflows/new")
    await page.get_by_label("Template").select_option("test_simple")  # submits the choice
    await page.get_by_label("start_message").fill("caronirocks")
    await page.get_by_label("Name").fill("from the browser")
    await shot(page, "manager-start-form")
    await page.get_by_role("button", name="Start workflow").click()
    await page.wait_for_url("**/workflows/*")

    # From here on the page must change by itself: mark it, and check the mark
    # survived (a reload would have wiped it).
    await page.evaluate("window.caroniNoReload = true")
    await page.wait_for_selector('tbody#step-step3[data-state="running"]')
    await page.wait_for_selector('svg.dag g[data-node="step:step3"][data-state="running"]')
    await shot(page, "manager-workflow-running")
    gate.touch()
    await page.wait_for_selector('#workflow-state [data-state="completed"]')
    assert await page.evaluate("window.caroniNoReload === true"), "the page was reloaded"

    output = page.locator('#outputs tr[data-output="result"] code')
    assert await output.inner_text() == "prependCARONIROCKS edited"
    assert await page.locator('svg.dag g.node-step[data-state="completed"]').count() == 3
    assert await page.locator("svg.sequence g.message").count() > 10
    assert await page.locator("svg.sequence g.lane", has_text="agent-2").count() == 1
    await shot(page, "manager-workflow-completed")

    await page.get_by_role("link", name="Workflows", exact=True).click()
    await page.locator("#workflows").get_by_text("from the browser").wait_for()
    await shot(page, "manager-workflows")

    # The agent's side of the same work.
    await page.goto(agent_url + "jobs")
    await page.wait_for_selector("#jobs")
    await shot(page, "agent-jobs")
    await page.locator("#jobs tr", has_text="foojob2").get_by_role("link").first.click()
    assert "edited" in await page.locator("#stdout").inner_text()
    await page.locator("#history", has_text="completed").wait_for()
    await shot(page, "agent-job")


async def test_manager_and_agent_logins_side_by_side(sites: LocalCluster, context: Any) -> None:
    manager_url = sites.manager.site_url
    agent_url = sites.agents[1].site_url
    manager_tab = await context.new_page()
    agent_tab = await context.new_page()

    await manager_tab.goto(manager_url)
    assert "/login" in manager_tab.url
    await shot(manager_tab, "manager-login")
    await log_in(manager_tab, manager_url)
    await log_in(agent_tab, agent_url)
    # Same host, two ports, one cookie jar: each node has a cookie of its own.
    names = {c["name"] for c in await context.cookies() if c["name"].startswith("caroni_session")}
    assert len(names) == 2

    for tab, heading in ((manager_tab, "Workflows"), (agent_tab, "Jobs")):
        await tab.reload()
        assert "/login" not in tab.url, "logging into the other node logged this one out"
        await tab.get_by_role("heading", name=heading, level=1).wait_for()
    await shot(agent_tab, "agent-jobs-empty")
    await manager_tab.get_by_role("link", name="Users").click()
    await manager_tab.get_by_role("heading", name="Users", level=1).wait_for()
    await shot(manager_tab, "manager-users")

    # Logging out of one leaves the other logged in.
    await agent_tab.get_by_role("button", name="Log out").click()
    await agent_tab.get_by_text("You are logged out").wait_for()
    await manager_tab.reload()
    assert "/login" not in manager_tab.url


async def test_template_problems_appear_next_to_the_field(
    sites: LocalCluster, context: Any
) -> None:
    page = await context.new_page()
    await log_in(page, sites.manager.site_url + "templates")
    await shot(page, "manager-templates")
    await page.get_by_role("link", name="Add a template").click()
    await page.get_by_label("Name", exact=True).fill("broken")
    await page.locator("#text").fill(BROKEN)
    await page.get_by_role("button", name="Add template").click()
    errors = page.locator("#text-errors")
    await errors.wait_for()
    assert "CaroniRequirement has unknown field" in await errors.inner_text()
    assert await page.locator("#text").get_attribute("aria-invalid") == "true"
    await shot(page, "manager-template-errors")
    await page.goto(sites.manager.site_url + "templates/fan_out_fan_in")
    await page.wait_for_selector("svg.dag")
    await shot(page, "manager-template")


async def test_the_api_docs_render_without_the_internet(sites: LocalCluster, context: Any) -> None:
    site = sites.manager.site_url.rstrip("/")

    async def only_the_site(route: Any) -> None:  # as where the internet is out of reach
        if route.request.url.startswith(site + "/"):
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", only_the_site)
    page = await context.new_page()
    await page.goto(site + "/api/docs")
    await page.get_by_text("/api/v1/workflows/{workflow_id}/cancel").wait_for()
    await shot(page, "api-docs")
