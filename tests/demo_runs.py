"""Helpers for tests that run the demo workflow (test_simple) on node processes."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from caroni.client import Client
from caroni.transport.amqp import AmqpSettings, AmqpTransport


def expected(message: str) -> str:
    """test_simple's output for ``message`` (upper-cased, prepended, appended)."""
    return f"prepend{message.upper()} append"


def query(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of ``sql`` in the database at ``url`` (a node's, read from outside)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


async def submit_demo_workflows(
    amqp_url: str, manager_key: str, count: int, tag: str
) -> dict[str, str]:
    """Submit ``count`` test_simple workflows; returns workflow id (hex) -> input."""
    transport = AmqpTransport(AmqpSettings(url=amqp_url))
    await transport.connect()
    submitted: dict[str, str] = {}
    try:
        async with Client(transport, manager_key) as client:
            for number in range(count):
                message = f"{tag}{number}x{uuid.uuid4().hex[:6]}"
                workflow_id = await client.submit("test_simple", {"start_message": message})
                submitted[workflow_id.hex] = message
    finally:
        await transport.close()
    return submitted
