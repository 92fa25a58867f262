"""TLS for network tests: throwaway certificates and a TLS-terminating proxy.

The local RabbitMQ speaks plain AMQP only, so TLS tests put :class:`TlsProxy` in
front of it: clients connect with TLS to the proxy (127.0.0.1, ephemeral port),
which forwards the decrypted bytes to the broker. :func:`make_tls_files` writes a
fresh CA, a server certificate for IP 127.0.0.1 and a client certificate, all
signed by that CA, into a directory (a test's ``tmp_path``)::

    files = make_tls_files(tmp_path)
    async with TlsProxy(files, require_client_cert=True) as proxy:
        url = f"amqps://user:pw@127.0.0.1:{proxy.port}/vhost"
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.faults import end_handlers

LOCALHOST = "127.0.0.1"
_CHUNK = 64 * 1024
_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsFiles:
    """What :func:`make_tls_files` wrote: a CA and the certificates it signed."""

    ca: Issued
    server: Issued  # for IP 127.0.0.1
    client: Issued


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Caroni tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey):  # type: ignore[no-untyped-def]
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only; a CA's key signs certificates and revocation lists too."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    directory: Path, name: str = "ca"
) -> tuple[Issued, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA written to ``<name>.pem`` and ``<name>.key`` in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"Caroni test CA {name}")
    cert = (
        _builder(subject, subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(issued.key, key)
    return issued, cert, key


def _issue(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    ip: str | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(name), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(issued.key, key)
    return issued


def make_tls_files(directory: Path) -> TlsFiles:
    """A fresh CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = make_ca(directory)
    server = _issue(
        directory, "server", ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, ip=LOCALHOST
    )
    client = _issue(directory, "client", ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    return TlsFiles(ca=ca, server=server, client=client)


def server_context(files: TlsFiles, *, require_client_cert: bool = False) -> ssl.SSLContext:
    """The proxy's side: present the server certificate; optionally demand a client
    certificate signed by the same CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server.cert, files.server.key)
    if require_client_cert:
        context.load_verify_locations(cafile=files.ca.cert)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


class TlsProxy:
    """A TLS-terminating proxy on 127.0.0.1 (ephemeral port) forwarding plaintext to
    ``target_host:target_port`` (the local broker by default).

    The TLS side runs on :class:`ssl.MemoryBIO` pairs rather than asyncio's own TLS
    transport, so that, like a real broker, the proxy tells a client why it refuses
    a handshake (a TLS alert such as "certificate required") instead of just
    dropping the connection. Only clients whose handshake succeeds are forwarded:
    :attr:`accepted` counts them, :attr:`refused` holds the reasons of the others.
    """

    def __init__(
        self,
        files: TlsFiles,
        *,
        require_client_cert: bool = False,
        target_host: str = LOCALHOST,
        target_port: int = 5672,
    ) -> None:
        self.context = server_context(files, require_client_cert=require_client_cert)
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused: list[str] = []

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("TlsProxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOCALHOST, 0)

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await end_handlers(self._handlers)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> TlsProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            tls = _TlsSide(self.context, reader, writer)
            reason = await tls.handshake()
            if reason:
                self.refused.append(reason)
                # Close, not abort: the alert telling the client why must go out.
                writer.close()
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
                        await writer.wait_closed()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError as exc:
                self.refused.append(f"cannot reach {self._target}: {exc}")
                return
            self._writers.add(up_writer)
            self.accepted += 1
            ends = (writer, up_writer)
            await asyncio.gather(
                self._pump(tls.receive(), up_writer, ends),
                self._pump(_plain(up_reader), tls, ends),
            )
        except (ConnectionError, OSError, TimeoutError):
            pass  # the client or the broker went away; nothing to forward any more
        finally:
            for each in (writer, up_writer):
                if each is not None:
                    if not each.transport.is_closing():
                        each.transport.abort()
                    self._writers.discard(each)
            self._handlers.discard(task)

    @staticmethod
    async def _pump(
        source: AsyncIterator[bytes],
        sink: asyncio.StreamWriter | _TlsSide,
        ends: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            async for data in source:
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side finished or failed: end the whole link, as a real peer would.
            for end in ends:
                end.transport.abort()


async def _plain(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while data := await reader.read(_CHUNK):
        yield data


class _TlsSide:
    """The server end of one TLS connection, over memory BIOs and a TCP stream."""

    def __init__(
        self, context: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._reader = reader
        self._writer = writer

    def _flush(self) -> None:
        if pending := self._outgoing.read():
            self._writer.write(pending)

    async def _read_more(self) -> bool:
        data = await self._reader.read(_CHUNK)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def handshake(self) -> str:
        """Run the handshake; "" once it succeeded, otherwise why it failed (the
        client has then been sent the TLS alert that says so)."""
        async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
            while True:
                try:
                    self._tls.do_handshake()
                except ssl.SSLWantReadError:
                    self._flush()
                    await self._writer.drain()
                    if not await self._read_more():
                        return "client closed the connection during the handshake"
                except ssl.SSLError as exc:
                    self._flush()  # the alert
                    with contextlib.suppress(ConnectionError, OSError):
                        await self._writer.drain()
                    return str(exc.reason or exc)
                else:
                    self._flush()
                    await self._writer.drain()
                    return ""

    async def receive(self) -> AsyncIterator[bytes]:
        """Decrypted data from the client until it closes."""
        while True:
            # Data may already wait in the BIO (sent along with the handshake's end).
            while True:
                try:
                    data = self._tls.read(_CHUNK)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    return  # close_notify
                if not data:
                    return
                yield data
            self._flush()  # e.g. an answer to a key update
            if not await self._read_more():
                return

    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._writer.drain()
