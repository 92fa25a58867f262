"""Broker credentials and TLS options."""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from caroni.transport.amqp import AmqpSettings, AmqpTransport


@pytest.mark.amqp
async def test_the_password_can_come_from_a_file(amqp_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "amqp-password"
    secret.write_text("guest\n")
    url = URL(amqp_url).with_password(None)
    transport = AmqpTransport(AmqpSettings(url=str(url), password_file=str(secret)))
    await transport.connect()
    try:
        await transport.publish("nobody.listens", b"x")
    finally:
        await transport.close()


def test_tls_files_travel_as_connection_options() -> None:
    settings = AmqpSettings(
        url="amqps://u:p@127.0.0.1:5671/v", ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem"
    )
    url = AmqpTransport(settings)._connection_url()
    assert url.scheme == "amqps"
    assert (url.query["cafile"], url.query["certfile"], url.query["keyfile"]) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert ":p@" not in repr(settings) and "******" in repr(settings)
