"""TLS to the broker, for real: ``amqps://`` through a TLS-terminating proxy.

The local RabbitMQ has no TLS listener, so :class:`tests.tls_proxy.TlsProxy` stands
in front of it with certificates made for this test.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from yarl import URL

from caroni.errors import TransportError
from caroni.transport.amqp import AmqpSettings, AmqpTransport
from tests.tls_proxy import TlsFiles, TlsProxy, make_ca, make_tls_files

QUICK = 10.0  # seconds; a failure case must be reported well within this


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def secret_amqp_url(amqp_url: str) -> Iterator[str]:
    """``amqp_url`` for a broker user of this test's own with a password that can
    appear nowhere by chance (unlike guest/guest, where the password is the user)."""
    url = URL(amqp_url)
    vhost = url.path.lstrip("/")
    user, password = f"caroni-tls-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)

    def rabbitmqctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)

    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield str(url.with_user(user).with_password(password))
    finally:
        rabbitmqctl("delete_user", user)


@pytest.fixture
async def verifying_proxy(tls_files: TlsFiles) -> AsyncIterator[TlsProxy]:
    """A proxy that demands a client certificate signed by our CA."""
    async with TlsProxy(tls_files, require_client_cert=True) as proxy:
        yield proxy


def through(url: str, proxy: TlsProxy) -> str:
    """``url`` rewritten to reach the broker with TLS through ``proxy``."""
    return str(URL(url).with_scheme("amqps").with_host(proxy.host).with_port(proxy.port))


def everything_said(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """The exception with its whole chain, and every log record: where a password
    must not appear."""
    return "".join(traceback.format_exception(exc)) + caplog.text


@pytest.mark.amqp
async def test_publish_and_consume_over_tls_with_a_client_certificate(
    secret_amqp_url: str,
    tls_files: TlsFiles,
    verifying_proxy: TlsProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = URL(secret_amqp_url).password
    assert password
    settings = AmqpSettings(
        url=through(secret_amqp_url, verifying_proxy),
        ca_file=str(tls_files.ca.cert),
        cert_file=str(tls_files.client.cert),
        key_file=str(tls_files.client.key),
        connect_timeout=QUICK,
        publish_timeout=QUICK,
    )
    transport = AmqpTransport(settings)
    await transport.connect()
    try:
        assert verifying_proxy.accepted == 1  # the connection really went through TLS
        consumer = await transport.consume("tls-test", ["tls.#"])
        await transport.publish("tls.hello", b"over TLS", reply_to="tls.me", message_id="m-1")
        async with asyncio.timeout(QUICK):
            delivery = await anext(aiter(consumer))
        assert (delivery.body, delivery.routing_key) == (b"over TLS", "tls.hello")
        assert (delivery.reply_to, delivery.message_id) == ("tls.me", "m-1")
        await delivery.ack()
        await consumer.close()
    finally:
        await transport.close()
    assert "connected to amqps://" in caplog.text
    assert password not in caplog.text
    assert password not in repr(settings)


async def test_a_broker_certificate_from_another_ca_is_refused(
    tmp_path: Path,
    tls_files: TlsFiles,
    verifying_proxy: TlsProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = secrets.token_urlsafe(18)
    other_ca, _, _ = make_ca(tmp_path, "other-ca")
    url = f"amqps://someone:{password}@{verifying_proxy.host}:{verifying_proxy.port}/v"
    transport = AmqpTransport(
        AmqpSettings(
            url=url,
            ca_file=str(other_ca.cert),
            cert_file=str(tls_files.client.cert),
            key_file=str(tls_files.client.key),
            connect_timeout=QUICK,
        )
    )
    with pytest.raises(TransportError, match="certificate verify failed") as caught:
        await transport.connect()
    assert verifying_proxy.accepted == 0
    assert "amqps://someone:******@127.0.0.1" in str(caught.value)
    assert password not in everything_said(caught.value, caplog)


async def test_no_client_certificate_when_the_broker_requires_one_is_refused_clearly(
    tmp_path: Path,
    tls_files: TlsFiles,
    verifying_proxy: TlsProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = secrets.token_urlsafe(18)
    password_file = tmp_path / "amqp-password"
    password_file.write_text(password + "\n")  # from a file this time
    transport = AmqpTransport(
        AmqpSettings(
            url=f"amqps://someone@{verifying_proxy.host}:{verifying_proxy.port}/v",
            password_file=str(password_file),
            ca_file=str(tls_files.ca.cert),
            connect_timeout=QUICK,
        )
    )
    with pytest.raises(TransportError, match="certificate required") as caught:
        await transport.connect()
    assert verifying_proxy.accepted == 0
    assert verifying_proxy.refused  # the proxy, not a timeout, ended it
    assert password not in everything_said(caught.value, caplog)


async def test_tls_files_with_a_plain_amqp_url_are_refused_rather_than_ignored(
    tls_files: TlsFiles,
) -> None:
    transport = AmqpTransport(
        AmqpSettings(url="amqp://u:p@127.0.0.1:1/v", ca_file=str(tls_files.ca.cert))
    )
    with pytest.raises(TransportError, match=r"ca_file \(cafile\) given.*use amqps://"):
        await transport.connect()


async def test_tls_files_that_cannot_be_loaded_are_named(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    url = "amqps://u:p@127.0.0.1:1/v"  # never reached: the files fail first
    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(TransportError, match=f"cannot load ca_file '{missing}'"):
        await AmqpTransport(AmqpSettings(url=url, ca_file=missing)).connect()
    # The CA's key does not fit the client certificate.
    wrong_key = AmqpSettings(
        url=url,
        ca_file=str(tls_files.ca.cert),
        cert_file=str(tls_files.client.cert),
        key_file=str(tls_files.ca.key),
    )
    with pytest.raises(TransportError, match="cannot load the client certificate from cert_file"):
        await AmqpTransport(wrong_key).connect()
    only_key = AmqpSettings(url=url, key_file=str(tls_files.client.key))
    with pytest.raises(TransportError, match="without a cert_file"):
        await AmqpTransport(only_key).connect()
