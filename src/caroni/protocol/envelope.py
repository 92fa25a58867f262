"""Wrapping messages in, and safely unwrapping them from, ``CaroniEnvelope`` bodies.

Every body on the broker is a serialized ``CaroniEnvelope`` whose ``payload`` is a
``google.protobuf.Any``. Bodies come from peers we do not control, so
:func:`open_envelope` treats them as hostile: whatever the bytes, it either returns
an :class:`Opened` or raises :class:`~caroni.errors.EnvelopeError`, never anything
else, so a consumer can reject one bad message and carry on.
"""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

from google.protobuf.message import Message

from caroni.errors import EnvelopeError
from caroni.protocol._generated import caroni_pb2 as pb
from caroni.protocol.bounds import (
    MAX_MESSAGE_ID,
    MAX_NAME,
    check_message,
    check_text,
)
from caroni.protocol.extensions import MAX_EXTENSIONS

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Default largest body :func:`open_envelope` will parse, to bound memory per message."""

TYPE_URL_PREFIX = "type.googleapis.com/caroni."
"""Every payload's ``Any.type_url`` is this followed by the message name."""

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.name: cls
    for cls in (
        pb.WorkFlowCreate,
        pb.JobFulfillmentRequest,
        pb.JobFulfillmentDecline,
        pb.JobFulfillmentOffer,
        pb.JobFulfillmentOfferAccept,
        pb.JobFulfillmentOfferReject,
        pb.JobAccepted,
        pb.JobStatusRequest,
        pb.JobStatusUpdate,
        pb.JobKill,
        pb.JobDataAvailable,
        pb.WorkFlowStatusRequest,
        pb.WorkFlowStatus,
        pb.WorkFlowCancel,
        pb.Claim,
        pb.JobAssignment,
        pb.JobAssignmentRefusal,
        pb.JobFinished,
        pb.MessageBundle,
    )
}
"""Canonical name -> class of every message that may travel inside an envelope."""

MESSAGE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        pb.JobQueued.DESCRIPTOR.name: pb.JobAccepted.DESCRIPTOR.name,
        pb.JobDataReady.DESCRIPTOR.name: pb.JobDataAvailable.DESCRIPTOR.name,
    }
)
"""Old name -> canonical name; older peers send these, with identical fields."""


_MAX_SHOWN = 120  # longest peer-supplied text quoted in an error, to keep logs sane


@dataclass(frozen=True, slots=True)
class Opened:
    """A validated incoming message plus the envelope metadata handlers may need."""

    message: Message
    """The payload, always of a canonical class (aliases already converted)."""
    type_name: str
    """Canonical message name, e.g. ``"JobAccepted"``."""
    message_id: str
    """The sender's message id, ``""`` when the peer set none (existing peers)."""
    sent_at: datetime | None
    """When the sender sealed it (UTC-aware), ``None`` when unset."""
    sender: uuid.UUID | None
    """The sending node, ``None`` when unset."""
    signator: str = ""
    """The signer's key id from the envelope's Signature, ``""`` when unsigned."""
    signature: str = ""
    """The signature as sent (base64), ``""`` when unsigned."""
    signed_bytes: bytes = b""
    """What the signature covers (see :func:`signed_bytes`), to verify it against."""
    extensions: frozenset[str] = frozenset()
    """The extensions the sender announced (see ``protocol.extensions``); none from
    other implementations. Not signed: an extension changes only how a peer answers
    its sender, never what a message means."""


class Signer(Protocol):
    """Signs envelopes: a key id peers know it by, and a signing function."""

    key_id: str

    def sign(self, data: bytes) -> bytes: ...


_SIGNATURE_DOMAIN = b"caroni-envelope-signature-v1"


def signed_bytes(envelope: pb.CaroniEnvelope) -> bytes:
    """The bytes an envelope's signature covers.

    The payload (type URL and bytes) and our envelope fields (message id, sent-at,
    sender), each length-prefixed, so that neither the message nor the fields that
    replay checks rely on can be changed without breaking the signature.
    """
    parts = [
        envelope.payload.type_url.encode(),
        envelope.payload.value,
        envelope.message_id.encode(),
        struct.pack(">qi", envelope.sent_at.seconds, envelope.sent_at.nanos),
        envelope.sender,
    ]
    return _SIGNATURE_DOMAIN + b"".join(struct.pack(">I", len(p)) + p for p in parts)


def new_message_id() -> str:
    """A fresh, unique message id, so receivers can deduplicate redeliveries."""
    return uuid.uuid4().hex


def uuid_to_bytes(u: uuid.UUID) -> bytes:
    """The 16 raw bytes the wire format uses for a UUID."""
    return u.bytes


def uuid_from_bytes(b: bytes, field: str) -> uuid.UUID:
    """Read a wire UUID, naming ``field`` in the error so a bad peer is easy to spot."""
    if len(b) != 16:
        raise EnvelopeError(f"{field} must be 16 bytes, got {len(b)}")
    return uuid.UUID(bytes=bytes(b))


def seal(
    message: Message,
    *,
    message_id: str = "",
    sender: uuid.UUID | None = None,
    sent_at: datetime | None = None,
    signer: Signer | None = None,
    extensions: Iterable[str] = (),
) -> bytes:
    """Serialize ``message`` in a ``CaroniEnvelope`` that existing peers can read.

    With a ``signer``, the envelope's Signature carries its key id and a signature
    over :func:`signed_bytes`; peers that do not check signatures ignore it.

    ``sent_at`` defaults to now; a naive datetime is refused because its meaning
    would depend on the host's time zone. Raises :class:`TypeError` if ``message``
    is not one of :data:`MESSAGE_TYPES`, and :class:`EnvelopeError` if a UUID field
    has the wrong length (which our own receivers would refuse).
    """
    name = _canonical_name_of(message)
    check_message(message, name, texts=False)  # UUID lengths only: what we send
    if sent_at is None:
        sent_at = datetime.now(UTC)
    elif sent_at.tzinfo is None:
        raise ValueError("sent_at must be timezone-aware")
    envelope = pb.CaroniEnvelope(message_id=message_id)
    envelope.payload.type_url = TYPE_URL_PREFIX + name
    envelope.payload.value = message.SerializeToString()
    envelope.sent_at.FromDatetime(sent_at.astimezone(UTC))
    if sender is not None:
        envelope.sender = uuid_to_bytes(sender)
    envelope.extensions.extend(sorted(extensions))
    if signer is not None:
        envelope.signature.signator_certificate = signer.key_id
        signature = signer.sign(signed_bytes(envelope))
        envelope.signature.payload_signature = base64.b64encode(signature).decode()
    body: bytes = envelope.SerializeToString()
    return body


def open_envelope(body: bytes, *, max_size: int = MAX_BODY_BYTES) -> Opened:
    """Parse and validate one broker body.

    Raises :class:`EnvelopeError` (and nothing else) with a reason fit for a log
    line when the body is too large, not an envelope, carries no or an unknown
    payload, or has a malformed field.
    """
    try:
        return _open(body, max_size)
    except EnvelopeError:
        raise
    except Exception as exc:  # the parser's failure modes are not all documented
        raise EnvelopeError(f"malformed envelope: {_describe(exc)}") from exc


def _open(body: bytes, max_size: int) -> Opened:
    size = len(body)
    if size > max_size:
        raise EnvelopeError(f"body is {size} bytes, more than the limit of {max_size}")
    envelope = pb.CaroniEnvelope()
    try:
        envelope.ParseFromString(bytes(body))
    except Exception as exc:
        raise EnvelopeError(f"body is not a CaroniEnvelope: {_describe(exc)}") from exc
    if not envelope.HasField("payload"):
        raise EnvelopeError("envelope has no payload")

    type_url = envelope.payload.type_url
    name = type_url[len(TYPE_URL_PREFIX) :] if type_url.startswith(TYPE_URL_PREFIX) else ""
    canonical = MESSAGE_ALIASES.get(name, name)
    cls = MESSAGE_TYPES.get(canonical)
    if cls is None:
        raise EnvelopeError(f"unknown payload type URL {_quote(type_url)}")
    # Aliases have the canonical message's field numbers and types, so parsing the
    # alias's bytes straight into the canonical class is the conversion.
    message = cls()
    try:
        message.ParseFromString(envelope.payload.value)
    except Exception as exc:
        raise EnvelopeError(f"payload is not a valid caroni.{name}: {_describe(exc)}") from exc
    check_message(message, canonical)
    check_text(envelope.message_id, "envelope message_id", MAX_MESSAGE_ID)
    check_message(envelope.signature, "envelope signature")
    if len(envelope.extensions) > MAX_EXTENSIONS:
        raise EnvelopeError(f"envelope announces {len(envelope.extensions)} extensions")
    for extension in envelope.extensions:
        check_text(extension, "envelope extension", MAX_NAME)

    sender = None
    if envelope.sender:
        sender = uuid_from_bytes(envelope.sender, "envelope sender")
    sent_at = None
    if envelope.HasField("sent_at"):
        try:
            sent_at = envelope.sent_at.ToDatetime(tzinfo=UTC)
        except Exception as exc:
            raise EnvelopeError(f"envelope sent_at is out of range: {_describe(exc)}") from exc
    signed = envelope.HasField("signature") and bool(envelope.signature.payload_signature)
    return Opened(
        message=message,
        type_name=canonical,
        message_id=envelope.message_id,
        sent_at=sent_at,
        sender=sender,
        signator=envelope.signature.signator_certificate if signed else "",
        signature=envelope.signature.payload_signature if signed else "",
        signed_bytes=signed_bytes(envelope) if signed else b"",
        extensions=frozenset(envelope.extensions),
    )


def _canonical_name_of(message: object) -> str:
    """The canonical name of a sendable message; TypeError for anything else."""
    if not isinstance(message, Message):
        raise TypeError(f"expected a caroni protobuf message, got {type(message).__name__}")
    name: str = message.DESCRIPTOR.name
    if MESSAGE_TYPES.get(name) is not type(message):
        raise TypeError(f"{message.DESCRIPTOR.full_name} cannot be sent in a CaroniEnvelope")
    return name


def _quote(text: str) -> str:
    """Quote peer-supplied text for an error message, cut to a readable length."""
    if len(text) > _MAX_SHOWN:
        return repr(text[:_MAX_SHOWN]) + f"... ({len(text)} chars)"
    return repr(text)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 2 * _MAX_SHOWN else text[: 2 * _MAX_SHOWN] + "..."
