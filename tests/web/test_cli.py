"""`caroni user ...`, `--http`, serving the site from a node, and `caroni demo --serve`."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from caroni.cli import app
from caroni.errors import ConfigError
from caroni.store import create_db_engine
from caroni.transport.memory import MemoryBroker, MemoryTransport
from caroni.web import HttpAddress, auth, parse_http
from tests.processes import NodeProcess
from tests.web.helpers import csrf_of

runner = CliRunner()


def test_users_are_added_listed_given_tokens_and_removed(tmp_path: Path) -> None:
    db = str(tmp_path / "node.sqlite3")
    added = runner.invoke(app, ["user", "add", "alice", "--db", db, "--password-stdin"], "s3cret\n")
    assert added.exit_code == 0, added.output
    again = runner.invoke(app, ["user", "add", "alice", "--db", db, "--password-stdin"], "x\n")
    assert again.exit_code == 2 and "exists already" in again.output
    prompted = runner.invoke(app, ["user", "add", "bob", "--db", db], "pw\npw\n")
    assert prompted.exit_code == 0, prompted.output
    assert runner.invoke(app, ["user", "list", "--db", db]).output.split() == ["alice", "bob"]
    bad = runner.invoke(app, ["user", "add", "no spaces", "--db", db, "--password-stdin"], "x\n")
    assert bad.exit_code == 2 and "not a user name" in bad.output

    issued = runner.invoke(app, ["user", "token", "alice", "--db", db])
    assert issued.exit_code == 0
    token = issued.output.strip()
    assert re.fullmatch(r"caroni_[A-Za-z0-9_-]{40,}", token)
    assert runner.invoke(app, ["user", "token", "carol", "--db", db]).exit_code == 2

    engine = create_db_engine(db)
    with engine.begin() as conn:
        assert auth.user_for_api_token(conn, token) == "alice"
        assert auth.check_login(auth.password_hash_of(conn, "alice"), "s3cret")
    changed = runner.invoke(
        app, ["user", "password", "alice", "--db", db, "--password-stdin"], "n3w\n"
    )
    assert changed.exit_code == 0
    assert runner.invoke(app, ["user", "remove", "alice", "--db", db]).exit_code == 0
    with engine.begin() as conn:
        assert auth.user_for_api_token(conn, token) is None  # tokens go with the user
    engine.dispose()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", HttpAddress("127.0.0.1", 8000)),
        ("0.0.0.0:0", HttpAddress("0.0.0.0", 0)),
        ("8001", HttpAddress("127.0.0.1", 8001)),
        ("[::1]:9000", HttpAddress("::1", 9000)),
        ("none", None),
        ("", None),
    ],
)
def test_http_addresses_are_parsed(text: str, expected: HttpAddress | None) -> None:
    assert parse_http(text) == expected


@pytest.mark.parametrize("text", ["localhost:http", "1.2.3.4:99999", "host:"])
def test_bad_http_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_http(text)


async def test_a_taken_port_leaves_the_node_running_without_a_site(tmp_path: Path) -> None:
    from caroni.app import ManagerNode

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        transport = MemoryTransport(MemoryBroker())
        await transport.connect()
        node = ManagerNode(transport, str(tmp_path / "m.sqlite3"), http=f"127.0.0.1:{port}")
        await node.start()
        try:
            assert node.site_url == ""
            assert node.site is not None and f"127.0.0.1:{port}" in node.site.error
            assert node.node.counters["handled"] == 0  # and it is serving its queue
        finally:
            await node.stop()
            await transport.close()


async def test_a_node_serves_its_site_on_its_own_loop(tmp_path: Path) -> None:
    from caroni.app import AgentNode

    transport = MemoryTransport(MemoryBroker())
    await transport.connect()
    node = AgentNode(transport, str(tmp_path / "a.sqlite3"), http="127.0.0.1:0")
    await node.start()
    url = node.site_url
    try:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as client:
            health = (await client.get("/health")).json()
            assert health == {"role": "agent", "key": node.key, "status": "ok"}
            assert (await client.get("/jobs")).status_code == 303
    finally:
        await node.stop()
        await transport.close()
    async with httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")


@pytest.mark.slow
def test_demo_serve_keeps_the_sites_up_with_the_demo_user(tmp_path: Path) -> None:
    demo = NodeProcess(
        ["demo", "--agents", "2", "--serve", "--http", "127.0.0.1:0"], cwd=tmp_path
    ).start()
    try:
        demo.wait_for_line(r"log in as user admin, password 'password'")
        manager_url = demo.wait_for_line(r"manager\s+(http://\S+)").group(1)
        agent_urls = [demo.wait_for_line(rf"agent-{n}\s+(http://\S+)").group(1) for n in (1, 2)]
        page = demo.wait_for_line(r"serving the sites until Ctrl-C.*(http://\S+)").group(1)
        assert "result: prependCARONIROCKS append" in demo.lines
        assert len({manager_url, *agent_urls}) == 3
        with httpx.Client(base_url=manager_url) as client:
            login = client.get("/login")
            response = client.post(
                "/login",
                data={
                    "username": "admin",
                    "password": "password",
                    "csrf": csrf_of(login.text),
                    "next": "/workflows",
                },
            )
            assert response.status_code == 303
            shown = client.get(page)
            assert shown.status_code == 200
            assert "prependCARONIROCKS append" in shown.text
    finally:
        code = demo.stop()
    assert code == 0, "\n".join(demo.lines)
