"""How to reach RabbitMQ: the URL, the exchange, TLS files, and how long a publish may take."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from yarl import URL

from caroni.errors import TransportError
from caroni.protocol.routing import DEFAULT_EXCHANGE

# URL query options aio-pika reads for TLS, and our AmqpSettings field for each.
_TLS_OPTIONS = {"cafile": "ca_file", "certfile": "cert_file", "keyfile": "key_file"}


@dataclass(frozen=True, slots=True, repr=False)
class AmqpSettings:
    """How to reach RabbitMQ and which exchange to use.

    Args:
        url: ``amqp://user:password@host:port/vhost``; query parameters such as
            ``heartbeat`` given here win over the fields below.
        exchange: the topic exchange every node shares.
        exchange_durable: declare the exchange durable (our default).
        compat: declare the exchange exactly as existing peers do (non-durable);
            overrides ``exchange_durable``.
        connect_timeout: seconds allowed for the first connection.
        heartbeat: AMQP heartbeat in seconds; a silent dead link is noticed within
            about twice this.
        publish_timeout: seconds one publish keeps retrying (across reconnects) until
            the broker confirms it, before :class:`TransportError`.
        reconnect_interval: seconds between reconnection attempts.
        ca_file, cert_file, key_file: TLS (with an ``amqps://`` URL): the CA to
            verify the broker with, and this node's client certificate and key.
            They are loaded before connecting, so a bad file is named in the
            error; with a plain ``amqp://`` URL they are refused, not ignored.
        password_file: read the password from this file instead of the URL, so it
            appears in no command line or environment listing.
    """

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = DEFAULT_EXCHANGE
    exchange_durable: bool = True
    compat: bool = False
    connect_timeout: float = 10.0
    heartbeat: int = 30
    publish_timeout: float = 30.0
    reconnect_interval: float = 1.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    password_file: str | None = None

    @property
    def declare_exchange_durable(self) -> bool:
        """The durable flag actually sent in exchange.declare."""
        return self.exchange_durable and not self.compat

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks; the password must not.
        fields = [f"url={mask_url(self.url)!r}"]
        fields += [
            f"{name}={getattr(self, name)!r}" for name in self.__dataclass_fields__ if name != "url"
        ]
        return f"AmqpSettings({', '.join(fields)})"


def mask_url(url: str | URL) -> str:
    """``url`` with its password replaced, safe to log or put in an error message."""
    parsed = URL(url) if isinstance(url, str) else url
    if parsed.password:
        parsed = parsed.with_password("******")
    return str(parsed)


def scrub(text: str, password: str | None) -> str:
    # Library error messages may quote the URL; never let the password through.
    return text.replace(password, "******") if password else text


def check_tls(url: URL) -> None:
    """Load the TLS files ``url`` asks for, so that a wrong path or a key that does
    not fit fails here with a message naming the file (the TLS library says only
    "No such file or directory" or "PEM lib"), and refuse TLS files with a plain
    ``amqp://`` URL, which would otherwise connect without TLS."""
    files = {option: url.query[option] for option in _TLS_OPTIONS if url.query.get(option)}
    if url.scheme != "amqps":
        if files:
            given = ", ".join(f"{_TLS_OPTIONS[option]} ({option})" for option in files)
            raise TransportError(
                f"{given} given, but the URL is {url.scheme}://, which does not use TLS; "
                "use amqps:// to connect with TLS"
            )
        return
    cafile, certfile, keyfile = (files.get(o) for o in _TLS_OPTIONS)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise TransportError(f"cannot load ca_file {cafile!r}: {exc}") from exc
    if keyfile and not certfile:
        raise TransportError(f"key_file {keyfile!r} given without a cert_file")
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile)
        except OSError as exc:
            raise TransportError(
                f"cannot load the client certificate from cert_file {certfile!r} "
                f"(key_file {keyfile!r}): {exc}; key_file must hold the private key of "
                "that certificate (or cert_file both)"
            ) from exc
