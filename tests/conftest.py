"""Fixtures shared by every test: real RabbitMQ vhosts and PostgreSQL databases.

Each test that asks for ``amqp_url`` gets a vhost of its own, and each test that
asks for ``postgres_url`` a database of its own; both are removed afterwards, so
runs never see each other's state. When a service is not reachable the test is
skipped, unless ``CARONI_REQUIRE_SERVICES=1`` (set by CI), which turns the skip
into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from caroni.transport.memory import MemoryBroker, MemoryTransport

RABBIT_HOST = "127.0.0.1"
RABBIT_PORT = 5672
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _require_services() -> bool:
    return os.environ.get("CARONI_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def _unavailable(what: str) -> None:
    message = f"{what} is not available"
    if _require_services():
        pytest.fail(f"{message} (CARONI_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
async def transport() -> AsyncIterator[MemoryTransport]:
    """A connected in-process transport on a broker of this test's own."""
    transport = MemoryTransport(MemoryBroker())
    await transport.connect()
    yield transport
    await transport.close()


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """An AMQP URL pointing at a fresh vhost of this test's own on the local broker."""
    if not _port_open(RABBIT_HOST, RABBIT_PORT) or shutil.which("rabbitmqctl") is None:
        _unavailable("RabbitMQ on 127.0.0.1:5672 (with rabbitmqctl)")
    vhost = f"caroni-test-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def postgres_url_factory() -> Iterator[object]:
    """Call it to get the URL of a fresh PostgreSQL database; all are dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception:  # noqa: BLE001 - any failure to connect means "not available"
        _unavailable("PostgreSQL on 127.0.0.1:5432")
    created: list[str] = []

    def make() -> str:
        name = f"caroni_test_{uuid.uuid4().hex[:12]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    try:
        yield make
    finally:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_url(postgres_url_factory) -> str:  # type: ignore[no-untyped-def]
    """The URL of a fresh PostgreSQL database of this test's own."""
    return postgres_url_factory()  # type: ignore[no-any-return]
