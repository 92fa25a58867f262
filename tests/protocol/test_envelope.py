"""Envelopes: round trips, compatibility with existing peers, and hostile input."""

from __future__ import annotations

import subprocess
import sys
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.any_pb2 import Any
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caroni.errors import EnvelopeError
from caroni.protocol import (
    MAX_BODY_BYTES,
    MESSAGE_ALIASES,
    MESSAGE_TYPES,
    TYPE_URL_PREFIX,
    UUID_FIELDS,
    Opened,
    new_message_id,
    open_envelope,
    pb,
    seal,
    uuid_from_bytes,
    uuid_to_bytes,
)
from caroni.protocol import envelope as envelope_module

SENDER = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
WHEN = datetime(2024, 5, 17, 12, 34, 56, 789012, tzinfo=UTC)


# --- building fully populated messages ---------------------------------------


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _scalar(field: FieldDescriptor, index: int) -> object:
    """A non-default value for a scalar field; distinct per element of a repeated field."""
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{index}-é✓"
    if t == FieldDescriptor.TYPE_BYTES:
        if field.name in UUID_FIELDS:
            return uuid.uuid5(uuid.NAMESPACE_URL, f"{field.full_name}/{index}").bytes
        return bytes([0, 255, index, 10])
    if t == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64):
        return 4_000_000_000 + index
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        return -7 - index
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    raise AssertionError(f"no sample value for {field.full_name} (type {t}); extend _scalar")


def populate(message: Message) -> Message:
    """Set every field of ``message`` (recursively) to a non-default value."""
    for field in message.DESCRIPTOR.fields:
        name = field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                getattr(message, name).FromDatetime(WHEN + timedelta(days=3))
            elif _repeated(field):
                for _ in range(2):
                    populate(getattr(message, name).add())
            else:
                populate(getattr(message, name))
        elif _repeated(field):
            getattr(message, name).extend(_scalar(field, i) for i in range(2))
        else:
            setattr(message, name, _scalar(field, 0))
    return message


def assert_fully_set(message: Message) -> None:
    """Guard for the generic builder: no field was left at its default."""
    assert len(message.ListFields()) == len(message.DESCRIPTOR.fields), message
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.full_name.startswith("google.protobuf."):
            continue
        for item in value if _repeated(field) else [value]:
            assert_fully_set(item)


# --- round trips --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_round_trip_every_message_type(name: str) -> None:
    original = populate(MESSAGE_TYPES[name]())
    assert_fully_set(original)
    message_id = new_message_id()

    opened = open_envelope(seal(original, message_id=message_id, sender=SENDER, sent_at=WHEN))

    assert isinstance(opened, Opened)
    assert type(opened.message) is MESSAGE_TYPES[name]
    assert opened.message == original
    assert opened.type_name == name
    assert opened.message_id == message_id
    assert opened.sender == SENDER
    assert opened.sent_at == WHEN
    assert opened.sent_at is not None and opened.sent_at.tzinfo is not None


def test_type_url_and_extension_fields_on_the_wire() -> None:
    body = seal(pb.JobKill(kill_info="stop"), message_id="m-1", sender=SENDER, sent_at=WHEN)
    envelope = pb.CaroniEnvelope.FromString(body)
    assert envelope.payload.type_url == "type.googleapis.com/caroni.JobKill"
    assert pb.JobKill.FromString(envelope.payload.value).kill_info == "stop"
    assert envelope.message_id == "m-1"
    assert envelope.sender == SENDER.bytes
    assert envelope.sent_at.ToDatetime(tzinfo=UTC) == WHEN


def test_seal_defaults() -> None:
    before = datetime.now(UTC)
    opened = open_envelope(seal(pb.JobStatusRequest()))
    after = datetime.now(UTC)
    assert opened.message_id == ""
    assert opened.sender is None
    assert opened.sent_at is not None
    assert before - timedelta(seconds=1) <= opened.sent_at <= after + timedelta(seconds=1)


def test_seal_converts_other_time_zones_to_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=-4)))
    opened = open_envelope(seal(pb.JobStatusRequest(), sent_at=local))
    assert opened.sent_at == WHEN
    assert opened.sent_at is not None and opened.sent_at.utcoffset() == timedelta(0)


def test_seal_refuses_naive_sent_at() -> None:
    with pytest.raises(ValueError, match="timezone"):
        seal(pb.JobStatusRequest(), sent_at=datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "message",
    [pb.Signature(), pb.Site(), pb.AgentLoad(), pb.CaroniEnvelope(), pb.JobQueued(), Any()],
    ids=lambda m: type(m).__name__,
)
def test_seal_refuses_messages_that_are_not_sendable(message: Message) -> None:
    with pytest.raises(TypeError, match="cannot be sent"):
        seal(message)


def test_seal_refuses_non_messages() -> None:
    with pytest.raises(TypeError, match="expected a caroni protobuf message"):
        seal(typing.cast(typing.Any, b"raw"))


def test_seal_refuses_bad_uuid_length() -> None:
    with pytest.raises(EnvelopeError, match=r"JobAccepted\.offer_uuid"):
        seal(pb.JobAccepted(offer_uuid=b"short"))


# --- compatibility with existing peers ------------------------------------------


def _peer_body(type_name: str, payload: bytes) -> bytes:
    """A body as an existing peer builds it: only ``payload`` set, no extensions."""
    envelope = pb.CaroniEnvelope()
    envelope.payload.type_url = TYPE_URL_PREFIX + type_name
    envelope.payload.value = payload
    body: bytes = envelope.SerializeToString()
    return body


def test_existing_peer_body_opens_without_extensions() -> None:
    offer = pb.JobFulfillmentOffer(
        request_uuid=uuid.uuid4().bytes,
        offer_uuid=uuid.uuid4().bytes,
        site=pb.Site(site_identifier="site-a", site_uuid=uuid.uuid4().bytes),
        offer_message="happy to",
    )
    offer.expiration.FromDatetime(WHEN)
    opened = open_envelope(_peer_body("JobFulfillmentOffer", offer.SerializeToString()))
    assert opened.message == offer
    assert opened.type_name == "JobFulfillmentOffer"
    assert opened.message_id == ""
    assert opened.sender is None
    assert opened.sent_at is None
    assert isinstance(opened.message, pb.JobFulfillmentOffer)
    assert not opened.message.HasField("load")


def test_existing_peer_body_packed_with_any_pack_opens() -> None:
    envelope = pb.CaroniEnvelope()
    envelope.payload.Pack(pb.JobStatusUpdate(job_status=pb.JOB_STATUS_RUNNING))
    opened = open_envelope(envelope.SerializeToString())
    assert opened.type_name == "JobStatusUpdate"
    assert isinstance(opened.message, pb.JobStatusUpdate)
    assert opened.message.job_status == pb.JOB_STATUS_RUNNING


def test_unknown_fields_from_newer_peers_are_ignored() -> None:
    # Field 999 exists in no message of ours; a newer peer might send it.
    extra = bytes([0xBA, 0x3E, 3]) + b"new"  # tag (999 << 3 | 2) as varint, len 3
    payload = pb.JobKill(kill_info="x").SerializeToString() + extra
    body = _peer_body("JobKill", payload) + extra
    opened = open_envelope(body)
    assert isinstance(opened.message, pb.JobKill)
    assert opened.message.kill_info == "x"


@pytest.mark.parametrize(("old", "new"), sorted(MESSAGE_ALIASES.items()))
def test_old_names_open_as_current_names(old: str, new: str) -> None:
    old_message = populate(getattr(pb, old)())
    opened = open_envelope(_peer_body(old, old_message.SerializeToString()))
    assert opened.type_name == new
    assert type(opened.message) is MESSAGE_TYPES[new]
    assert opened.message.SerializeToString() == old_message.SerializeToString()
    for field in old_message.DESCRIPTOR.fields:
        assert getattr(opened.message, field.name) == getattr(old_message, field.name)


def _shape(descriptor: Descriptor) -> list[tuple[str, int, int, bool, str]]:
    return [
        (
            f.name,
            f.number,
            f.type,
            bool(f.is_repeated),
            f.message_type.full_name if f.message_type else "",
        )
        for f in descriptor.fields
    ]


@pytest.mark.parametrize(("old", "new"), sorted(MESSAGE_ALIASES.items()))
def test_alias_messages_have_identical_fields(old: str, new: str) -> None:
    # open_envelope parses alias payloads straight into the canonical class.
    assert _shape(getattr(pb, old).DESCRIPTOR) == _shape(getattr(pb, new).DESCRIPTOR)


def test_message_types_are_exactly_the_top_level_messages() -> None:
    assert set(MESSAGE_TYPES) == {
        "WorkFlowCreate",
        "JobFulfillmentRequest",
        "JobFulfillmentDecline",
        "JobFulfillmentOffer",
        "JobFulfillmentOfferAccept",
        "JobFulfillmentOfferReject",
        "JobAccepted",
        "JobStatusRequest",
        "JobStatusUpdate",
        "JobKill",
        "JobDataAvailable",
        "WorkFlowStatusRequest",
        "WorkFlowStatus",
        "WorkFlowCancel",
        "Claim",
        "JobAssignment",
        "JobAssignmentRefusal",
        "JobFinished",
        "MessageBundle",
    }
    for name, cls in MESSAGE_TYPES.items():
        assert cls.DESCRIPTOR.full_name == f"caroni.{name}"


# Field numbers are the wire format; this table restates PROTOCOL.md plus our extensions.
WIRE_FIELDS: dict[str, dict[str, int]] = {
    "Signature": {"signator_certificate": 1, "payload_signature": 2},
    "CaroniEnvelope": {
        "signature": 1,
        "payload": 2,
        "message_id": 100,
        "sent_at": 101,
        "sender": 102,
        "extensions": 103,
    },
    "JobParameter": {"key": 1, "value": 2},
    "Site": {"site_identifier": 1, "site_uuid": 2, "site_contact": 3},
    "JobType": {"job_type_name": 1, "required_parameters": 2, "optional_parameters": 3},
    "WorkFlowInput": {"key": 1, "value": 2},
    "WorkFlowCreate": {
        "signature": 1,
        "template_name": 2,
        "wf_name": 3,
        "inputs": 4,
        "workflow_uuid": 100,
        "max_attempts": 101,
    },
    "JobFulfillmentRequest": {
        "signature": 1,
        "request_uuid": 2,
        "job_type_name": 3,
        "parameters": 4,
        "claims_full": 100,
    },
    "JobFulfillmentDecline": {"signature": 1, "request_uuid": 2, "site": 3, "decline_message": 4},
    "AgentLoad": {"slots": 1, "running": 2, "reserved": 3},
    "JobFulfillmentOffer": {
        "signature": 1,
        "request_uuid": 2,
        "offer_uuid": 3,
        "site": 4,
        "offer_message": 5,
        "expiration": 6,
        "load": 100,
        "claim": 101,
    },
    "JobFulfillmentOfferAccept": {
        "signature": 1,
        "request_uuid": 2,
        "offer_uuid": 3,
        "accept_message": 4,
    },
    "JobFulfillmentOfferReject": {
        "signature": 1,
        "request_uuid": 2,
        "offer_uuid": 3,
        "reject_message": 4,
    },
    "JobAccepted": {"signature": 1, "job_uuid": 2, "offer_uuid": 3},
    "JobQueued": {"signature": 1, "job_uuid": 2, "offer_uuid": 3},
    "JobStatusRequest": {"signature": 1, "job_uuid": 2},
    "JobStatusUpdate": {"signature": 1, "job_uuid": 2, "job_status": 3, "status_info": 4},
    "JobKill": {"signature": 1, "job_uuid": 2, "kill_info": 3},
    "JobDataAvailable": {"signature": 1, "job_uuid": 2, "parameters": 3},
    "JobDataReady": {"signature": 1, "job_uuid": 2, "parameters": 3},
    "WorkFlowStatusRequest": {"signature": 1, "workflow_uuid": 2},
    "StepStatus": {
        "step_name": 1,
        "job_type_name": 2,
        "state": 3,
        "attempts": 4,
        "agent": 5,
        "reason": 6,
    },
    "WorkFlowStatus": {
        "signature": 1,
        "workflow_uuid": 2,
        "state": 3,
        "reason": 4,
        "outputs": 5,
        "wf_name": 6,
        "template_name": 7,
        "steps": 8,
    },
    "WorkFlowCancel": {"signature": 1, "workflow_uuid": 2, "reason": 3},
    # caroni.claims/1, between our own nodes.
    "Claim": {
        "signature": 1,
        "claim_uuid": 2,
        "job_type_names": 3,
        "capacity": 4,
        "expiration": 5,
    },
    "JobAssignment": {
        "signature": 1,
        "claim_uuid": 2,
        "job_uuid": 3,
        "job_type_name": 4,
        "parameters": 5,
        "awaited_parameters": 6,
        "input_links": 7,
    },
    "InputLink": {"job_uuid": 1, "parameter": 2, "source_job_uuid": 3, "source_output": 4},
    "JobAssignmentRefusal": {
        "signature": 1,
        "job_uuid": 2,
        "refusal_message": 3,
        "claim_uuid": 4,
    },
    "JobFinished": {
        "signature": 1,
        "job_uuid": 2,
        "job_status": 3,
        "status_info": 4,
        "parameters": 5,
        "claim": 6,
        "filled": 7,
        "filled_from": 8,
    },
    "MessageBundle": {"envelopes": 1},
}


def test_field_numbers_match_the_wire_format() -> None:
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(WIRE_FIELDS)
    for name, fields in WIRE_FIELDS.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[name]
        assert {f.name: f.number for f in descriptor.fields} == fields, name


def test_job_status_enum() -> None:
    assert dict(pb.JobStatus.items()) == {
        "JOB_STATUS_UNSPECIFICED": 0,
        "JOB_STATUS_PENDING": 1,
        "JOB_STATUS_QUEUED": 2,
        "JOB_STATUS_RUNNING": 3,
        "JOB_STATUS_COMPLETED": 4,
        "JOB_STATUS_FAILED": 5,
        "JOB_STATUS_PAUSED": 6,
    }
    assert pb.DESCRIPTOR.package == "caroni"


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    # protoc's descriptor sets carry json_name; the copy embedded in *_pb2.py does not.
    for message in file.message_type:
        for field in message.field:
            field.ClearField("json_name")


def test_generated_module_matches_the_proto_file(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev dependency) not installed")
    proto = Path(envelope_module.__file__).with_name("caroni.proto")
    out = tmp_path / "caroni.pb"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}"]
    subprocess.run([*cmd, f"--descriptor_set_out={out}", str(proto)], check=True)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    _without_json_names(fresh)
    _without_json_names(committed)
    assert committed == fresh, "caroni.proto changed: run scripts/gen_proto.py"


# --- refusals -----------------------------------------------------------------


def _envelope_body(**fields: typing.Any) -> bytes:
    body: bytes = pb.CaroniEnvelope(**fields).SerializeToString()
    return body


def test_body_larger_than_limit_is_refused_before_parsing() -> None:
    body = seal(pb.JobKill(kill_info="x" * 100))
    with pytest.raises(EnvelopeError, match=r"more than the limit of 50"):
        open_envelope(body, max_size=50)
    assert open_envelope(body, max_size=len(body)).type_name == "JobKill"
    # Garbage past the limit is refused for its size, not its content.
    with pytest.raises(EnvelopeError, match=r"limit of 4194304"):
        open_envelope(b"\xff" * (MAX_BODY_BYTES + 1))


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff", b"\x12\x05ab", b"\x0a", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"],
    ids=["bad-tag", "truncated-length", "truncated-tag", "overlong-varint"],
)
def test_unparsable_body_is_refused(body: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not a CaroniEnvelope"):
        open_envelope(body)


def test_invalid_utf8_in_envelope_string_is_refused() -> None:
    # field 100 (message_id), wire type 2, length 2, invalid UTF-8
    body = bytes([0xA2, 0x06, 2, 0xC3, 0x28])
    with pytest.raises(EnvelopeError, match="not a CaroniEnvelope"):
        open_envelope(body)


@pytest.mark.parametrize("body", [b"", _envelope_body(message_id="m")], ids=["empty", "no-any"])
def test_missing_payload_is_refused(body: bytes) -> None:
    with pytest.raises(EnvelopeError, match="no payload"):
        open_envelope(body)


@pytest.mark.parametrize(
    "type_url",
    [
        "",
        "type.googleapis.com/caroni.NoSuchThing",
        "type.googleapis.com/caroni.Signature",
        "type.googleapis.com/caroni.CaroniEnvelope",
        "type.googleapis.com/other.JobKill",
        "example.com/caroni.JobKill",
        "caroni.JobKill",
        "type.googleapis.com/caroni.JobKill ",
    ],
)
def test_unknown_type_url_is_refused_and_named(type_url: str) -> None:
    body = _envelope_body(payload=Any(type_url=type_url, value=b""))
    with pytest.raises(EnvelopeError, match="unknown payload type URL") as info:
        open_envelope(body)
    assert repr(type_url) in str(info.value)


def test_very_long_type_url_is_cut_in_the_error() -> None:
    type_url = TYPE_URL_PREFIX + "X" * 10_000
    body = _envelope_body(payload=Any(type_url=type_url))
    with pytest.raises(EnvelopeError, match="unknown payload type URL") as info:
        open_envelope(body)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff", b"\x12\x10abc", bytes([0x1A, 2, 0xC3, 0x28])],
    ids=["bad-tag", "truncated", "invalid-utf8-kill_info"],
)
def test_unparsable_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(EnvelopeError, match=r"payload is not a valid caroni\.JobKill"):
        open_envelope(_peer_body("JobKill", payload))


def test_payload_field_with_wrong_wire_type_is_skipped_as_unknown() -> None:
    # job_uuid (field 2) sent as a varint: protobuf keeps it as an unknown field, so
    # the message opens with job_uuid unset rather than with a bogus value.
    opened = open_envelope(_peer_body("JobKill", bytes([0x10, 0x01])))
    assert isinstance(opened.message, pb.JobKill)
    assert opened.message.job_uuid == b""


@pytest.mark.parametrize("length", [1, 15, 17, 64])
def test_sender_of_wrong_length_is_refused(length: int) -> None:
    body = _envelope_body(payload=Any(type_url=TYPE_URL_PREFIX + "JobKill"), sender=b"s" * length)
    with pytest.raises(EnvelopeError, match=f"sender must be 16 bytes, got {length}"):
        open_envelope(body)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.JobFulfillmentRequest(request_uuid=b"x"), "JobFulfillmentRequest.request_uuid"),
        (pb.JobFulfillmentOffer(offer_uuid=b"x" * 17), "JobFulfillmentOffer.offer_uuid"),
        (pb.JobAccepted(job_uuid=b"x" * 15), "JobAccepted.job_uuid"),
        (pb.WorkFlowCreate(workflow_uuid=b"x" * 32), "WorkFlowCreate.workflow_uuid"),
        (pb.WorkFlowCancel(workflow_uuid=b"x"), "WorkFlowCancel.workflow_uuid"),
        (
            pb.JobFulfillmentDecline(site=pb.Site(site_uuid=b"x")),
            "JobFulfillmentDecline.site.site_uuid",
        ),
        (
            pb.JobFulfillmentOffer(site=pb.Site(site_uuid=b"x" * 20)),
            "JobFulfillmentOffer.site.site_uuid",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_uuid_field_of_wrong_length_is_refused_and_named(message: Message, field: str) -> None:
    body = _peer_body(message.DESCRIPTOR.name, message.SerializeToString())
    with pytest.raises(EnvelopeError) as info:
        open_envelope(body)
    assert field in str(info.value)
    assert "16 bytes" in str(info.value)


def test_uuid_field_of_wrong_length_in_alias_is_named_by_canonical_name() -> None:
    body = _peer_body("JobQueued", pb.JobQueued(job_uuid=b"abc").SerializeToString())
    with pytest.raises(EnvelopeError, match=r"JobAccepted\.job_uuid"):
        open_envelope(body)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-(10**12), 0), (10**13, 0), (0, 2_000_000_000), (0, -1)],
)
def test_out_of_range_sent_at_is_refused(seconds: int, nanos: int) -> None:
    envelope = pb.CaroniEnvelope(payload=Any(type_url=TYPE_URL_PREFIX + "JobKill"))
    envelope.sent_at.seconds = seconds
    envelope.sent_at.nanos = nanos
    with pytest.raises(EnvelopeError):
        open_envelope(envelope.SerializeToString())


@pytest.mark.parametrize("body", [bytearray(seal(pb.JobKill())), memoryview(seal(pb.JobKill()))])
def test_bytes_like_bodies_open(body: bytes) -> None:
    assert open_envelope(body).type_name == "JobKill"


@pytest.mark.parametrize("body", ["a string", None, 42, [1, 2]])
def test_non_bytes_bodies_raise_only_envelope_error(body: object) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(typing.cast(bytes, body))


# --- UUID helpers ---------------------------------------------------------------


def test_uuid_helpers_round_trip() -> None:
    u = uuid.uuid4()
    assert len(uuid_to_bytes(u)) == 16
    assert uuid_from_bytes(uuid_to_bytes(u), "job_uuid") == u


@pytest.mark.parametrize("raw", [b"", b"x", b"x" * 17])
def test_uuid_from_bytes_names_the_field(raw: bytes) -> None:
    with pytest.raises(EnvelopeError, match=f"job_uuid must be 16 bytes, got {len(raw)}"):
        uuid_from_bytes(raw, "job_uuid")


def test_new_message_id_is_unique_hex() -> None:
    ids = {new_message_id() for _ in range(100)}
    assert len(ids) == 100
    for message_id in ids:
        assert len(message_id) == 32
        int(message_id, 16)


# --- hostile input ------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPE_NAMES = sorted([*MESSAGE_TYPES, *MESSAGE_ALIASES])


def _open_or_refuse(body: bytes) -> None:
    try:
        opened = open_envelope(body)
    except EnvelopeError:
        return
    assert opened.type_name in MESSAGE_TYPES
    assert type(opened.message) is MESSAGE_TYPES[opened.type_name]


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_envelope_error(body: bytes) -> None:
    _open_or_refuse(body)


@FUZZ
@given(
    name=st.sampled_from(TYPE_NAMES),
    value=st.binary(max_size=256),
    sender=st.binary(max_size=20),
    message_id=st.text(max_size=10),
)
def test_arbitrary_payloads_raise_only_envelope_error(
    name: str, value: bytes, sender: bytes, message_id: str
) -> None:
    envelope = pb.CaroniEnvelope(message_id=message_id, sender=sender)
    envelope.payload.type_url = TYPE_URL_PREFIX + name
    envelope.payload.value = value
    _open_or_refuse(envelope.SerializeToString())


@FUZZ
@given(
    name=st.sampled_from(sorted(MESSAGE_TYPES)),
    data=st.data(),
)
def test_mutated_valid_bodies_raise_only_envelope_error(name: str, data: st.DataObject) -> None:
    body = bytearray(
        seal(populate(MESSAGE_TYPES[name]()), message_id="m", sender=SENDER, sent_at=WHEN)
    )
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(body) - 1))
        body[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    _open_or_refuse(bytes(body[:cut]))
