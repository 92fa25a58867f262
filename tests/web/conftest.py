"""Fixtures: real nodes (in-process broker, SQLite under tmp_path) and HTTP clients."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from caroni.agent.jobtypes import JobTypeSpec, load_job_types
from caroni.app import AgentNode, ManagerNode
from caroni.cluster import LocalCluster
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.templates import Template, load_template_file
from caroni.transport.memory import MemoryBroker, MemoryTransport
from caroni.web import auth
from tests.web.helpers import PASSWORD, USER, login, site_client


@functools.cache
def _demo_content() -> tuple[list[Template], list[JobTypeSpec]]:
    """Parsed once: parsing CWL is most of what setting up a cluster costs."""
    templates = [load_template_file(path, name) for name, path in demo_template_paths().items()]
    return templates, load_job_types(DEMO_JOB_TYPES)


@functools.cache
def _password_hash() -> str:
    return auth.hash_password(PASSWORD)  # scrypt is slow on purpose: once per run


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A manager and one agent with the demo content, and user alice on both sites."""
    async with LocalCluster(tmp_path, agents=1) as running:
        templates, specs = _demo_content()
        for template in templates:
            await running.manager.add_template(template)
        for spec in specs:
            await running.agents[0].add_job_type(spec)
        for node in running.nodes:

            def add(engine: Engine) -> None:
                with engine.begin() as conn:
                    auth.add_user(conn, USER, _password_hash())

            await node.node.db(add, node.engine)
        yield running


@pytest.fixture
async def manager_site(cluster: LocalCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with site_client(cluster.manager.site_app(), "manager.test") as client:
        yield client


@pytest.fixture
async def agent_site(cluster: LocalCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with site_client(cluster.agents[0].site_app(), "agent.test") as client:
        yield client


@pytest.fixture
async def manager_user(manager_site: httpx.AsyncClient) -> httpx.AsyncClient:
    """The manager's site, logged in."""
    response = await login(manager_site)
    assert response.status_code == 303, response.text
    return manager_site


@pytest.fixture
async def agent_user(agent_site: httpx.AsyncClient) -> httpx.AsyncClient:
    """The agent's site, logged in."""
    response = await login(agent_site)
    assert response.status_code == 303, response.text
    return agent_site


@dataclass
class Nodes:
    manager: ManagerNode
    agent: AgentNode


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def any_db_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Nodes]:
    """A manager and an agent (no content; user alice on both) on SQLite or PostgreSQL."""
    if request.param == "postgresql":
        make_url = request.getfixturevalue("postgres_url_factory")
        urls = [make_url(), make_url()]
    else:
        urls = [str(tmp_path / "manager.sqlite3"), str(tmp_path / "agent.sqlite3")]
    broker = MemoryBroker()
    nodes = Nodes(
        ManagerNode(MemoryTransport(broker), urls[0]),
        AgentNode(MemoryTransport(broker), urls[1], workdir=tmp_path / "jobs"),
    )
    started: list[ManagerNode | AgentNode] = []
    try:
        for node in (nodes.manager, nodes.agent):
            await node.transport.connect()
            await node.start()
            started.append(node)

            def add(engine: Engine) -> None:
                with engine.begin() as conn:
                    auth.add_user(conn, USER, _password_hash())

            await node.node.db(add, node.engine)
        yield nodes
    finally:
        for node in reversed(started):
            await node.stop()
            await node.transport.close()
