"""The limits every stored field of an incoming message must keep.

A node stores much of what peers send: message ids in its inbox, names and keys in
its workflows and jobs, reasons in its dead letters. A value that does not fit its
column is refused by PostgreSQL (SQLite stores anything), and one such message must
not be able to stop a node. So every field is checked once, when the delivery is
opened, against the columns that will hold it, and a message that breaks a limit
is refused as bad input with a reason that names the field.

The limits:

- message ids (the envelope's and the broker's): 64 characters;
- the reply-to key: 255 characters and bytes, printable;
- names (templates, workflows, job types, steps, parameter keys, sites, states):
  255 characters;
- key ids (a signature's signator): 128 characters;
- any other text (messages, reasons, signatures): 256 KiB;
- data values: bounded only by the body (4 MiB);
- no NUL character anywhere but in data values, which are stored escaped as JSON
  (PostgreSQL refuses NUL in text columns).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from caroni.errors import EnvelopeError

MAX_MESSAGE_ID = 64
MAX_REPLY_TO = 255
MAX_NAME = 255
MAX_KEY_ID = 128
MAX_TEXT = 256 * 1024

NAME_FIELDS = frozenset(
    {
        "template_name",
        "wf_name",
        "job_type_name",
        "step_name",
        "key",
        "site_identifier",
        "state",
        "agent",
        "required_parameters",
        "optional_parameters",
        "job_type_names",
        "awaited_parameters",
        "parameter",
        "source_output",
    }
)
"""String fields stored in name columns (255 characters)."""

KEY_ID_FIELDS = frozenset({"signator_certificate"})
VALUE_FIELDS = frozenset({"value"})
"""Data values: any text the body can carry, NUL included."""

UUID_FIELDS = frozenset(
    {
        "request_uuid",
        "offer_uuid",
        "job_uuid",
        "workflow_uuid",
        "site_uuid",
        "claim_uuid",
        "source_job_uuid",
    }
)
"""Bytes fields that hold a raw UUID, so must be empty or exactly 16 bytes."""

_SHOWN = 40  # characters of an offending value quoted in a reason


def check_message(message: Message, path: str, *, texts: bool = True) -> None:
    """Refuse ``message`` when a UUID field is neither empty nor 16 bytes or, with
    ``texts``, when one of its string fields breaks its limit (one walk for both: it
    runs for every message received)."""
    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        if field.type == FieldDescriptor.TYPE_BYTES and field.name in UUID_FIELDS:
            if len(value) != 16:
                raise EnvelopeError(f"{where} must be empty or 16 bytes, got {len(value)}")
        elif field.type == FieldDescriptor.TYPE_STRING and texts:
            items = value if is_repeated(field) else [value]
            for item in items:
                check_text(item, where, _limit_of(field.name), nul=field.name in VALUE_FIELDS)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            if is_repeated(field):
                for index, item in enumerate(value):
                    check_message(item, f"{where}[{index}]", texts=texts)
            else:
                check_message(value, where, texts=texts)


def check_delivery_fields(message_id: str, reply_to: str) -> None:
    """Refuse a delivery whose message id or reply-to key cannot be stored."""
    check_text(message_id, "message id", MAX_MESSAGE_ID)
    check_text(reply_to, "reply_to", MAX_REPLY_TO)
    if len(reply_to.encode("utf-8", "surrogatepass")) > MAX_REPLY_TO:
        raise EnvelopeError(f"reply_to is longer than {MAX_REPLY_TO} bytes")
    if not reply_to.isprintable():
        raise EnvelopeError(f"reply_to holds unprintable characters: {_show(reply_to)}")


def check_text(text: str, where: str, limit: int, *, nul: bool = False) -> None:
    """Refuse ``text`` longer than ``limit`` characters, or holding NUL unless allowed."""
    if len(text) > limit:
        raise EnvelopeError(
            f"{where} is {len(text)} characters, more than the limit of {limit}: {_show(text)}"
        )
    if not nul and "\x00" in text:
        raise EnvelopeError(f"{where} holds a NUL character: {_show(text)}")


def _limit_of(field_name: str) -> int:
    if field_name in NAME_FIELDS:
        return MAX_NAME
    if field_name in KEY_ID_FIELDS:
        return MAX_KEY_ID
    if field_name in VALUE_FIELDS:
        return 1 << 62  # the body's own limit bounds it
    return MAX_TEXT


def _show(text: str) -> str:
    shown = repr(text[:_SHOWN])
    return shown + "..." if len(text) > _SHOWN else shown


def is_repeated(field: FieldDescriptor) -> bool:
    """Whether ``field`` is a repeated field, on old and new protobuf runtimes."""
    # ``label`` is deprecated in recent runtimes in favour of ``is_repeated``.
    is_repeated = getattr(field, "is_repeated", None)
    if isinstance(is_repeated, bool):
        return is_repeated
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)
