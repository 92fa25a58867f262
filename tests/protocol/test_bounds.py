"""Every stored field of an incoming message is bounded when it is opened."""

from __future__ import annotations

import uuid

import pytest

from caroni.errors import EnvelopeError
from caroni.protocol import open_envelope, pb, seal
from caroni.protocol.bounds import (
    MAX_KEY_ID,
    MAX_MESSAGE_ID,
    MAX_NAME,
    MAX_TEXT,
    check_delivery_fields,
)

JOB = uuid.uuid4().bytes


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.WorkFlowCreate(template_name="t" * (MAX_NAME + 1)), "WorkFlowCreate.template_name"),
        (pb.WorkFlowCreate(wf_name="w" * (MAX_NAME + 1)), "WorkFlowCreate.wf_name"),
        (
            pb.WorkFlowCreate(inputs=[pb.WorkFlowInput(key="k" * (MAX_NAME + 1))]),
            "WorkFlowCreate.inputs[0].key",
        ),
        (pb.JobFulfillmentRequest(job_type_name="j" * (MAX_NAME + 1)), "job_type_name"),
        (pb.JobStatusUpdate(job_uuid=JOB, status_info="s" * (MAX_TEXT + 1)), "status_info"),
        (
            pb.JobFulfillmentOffer(site=pb.Site(site_identifier="x" * (MAX_NAME + 1))),
            "JobFulfillmentOffer.site.site_identifier",
        ),
        (
            pb.JobKill(signature=pb.Signature(signator_certificate="k" * (MAX_KEY_ID + 1))),
            "JobKill.signature.signator_certificate",
        ),
    ],
)
def test_a_field_over_its_limit_is_refused_naming_the_field(message: object, field: str) -> None:
    with pytest.raises(EnvelopeError, match=r"more than the limit") as caught:
        open_envelope(seal(message))  # type: ignore[arg-type]
    assert field in str(caught.value)


def test_fields_at_their_limits_are_accepted() -> None:
    message = pb.WorkFlowCreate(
        template_name="t" * MAX_NAME,
        wf_name="w" * MAX_NAME,
        inputs=[pb.WorkFlowInput(key="k" * MAX_NAME, value="v" * (MAX_TEXT * 2))],
    )
    opened = open_envelope(seal(message, message_id="m" * MAX_MESSAGE_ID))
    assert opened.message == message


def test_nul_is_refused_in_names_and_text_but_kept_in_data_values() -> None:
    with pytest.raises(EnvelopeError, match=r"WorkFlowCreate.wf_name holds a NUL"):
        open_envelope(seal(pb.WorkFlowCreate(wf_name="a\x00b")))
    with pytest.raises(EnvelopeError, match=r"decline_message holds a NUL"):
        open_envelope(seal(pb.JobFulfillmentDecline(decline_message="\x00")))
    data = pb.JobDataAvailable(job_uuid=JOB, parameters=[pb.JobParameter(key="k", value="\x00")])
    assert open_envelope(seal(data)).message == data


def test_an_envelope_message_id_over_64_characters_is_refused() -> None:
    body = seal(pb.JobKill(job_uuid=JOB), message_id="m" * (MAX_MESSAGE_ID + 1))
    with pytest.raises(EnvelopeError, match=r"envelope message_id is 65 characters"):
        open_envelope(body)


@pytest.mark.parametrize(
    ("message_id", "reply_to", "reason"),
    [
        ("m" * 65, "wf.client.x", "message id is 65 characters"),
        ("", "r" * 256, "reply_to is 256 characters"),
        ("", "é" * 200, "reply_to is longer than 255 bytes"),
        ("", "wf.client.\nx", "unprintable"),
        ("", "wf.client.\x00x", "NUL"),
    ],
)
def test_delivery_fields_that_cannot_be_stored_are_refused(
    message_id: str, reply_to: str, reason: str
) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        check_delivery_fields(message_id, reply_to)


def test_ordinary_delivery_fields_pass() -> None:
    check_delivery_fields(uuid.uuid4().hex, "wf.manager." + "A" * 26)
    check_delivery_fields("", "")


def test_extensions_announced_travel_and_are_bounded() -> None:
    body = seal(pb.JobKill(job_uuid=JOB), extensions=["caroni.b/1", "caroni.a/1"])
    assert open_envelope(body).extensions == frozenset({"caroni.a/1", "caroni.b/1"})
    assert open_envelope(seal(pb.JobKill(job_uuid=JOB))).extensions == frozenset()
    with pytest.raises(EnvelopeError, match=r"announces 17 extensions"):
        open_envelope(seal(pb.JobKill(), extensions=[f"x{n}" for n in range(17)]))
    with pytest.raises(EnvelopeError, match=r"envelope extension is 256 characters"):
        open_envelope(seal(pb.JobKill(), extensions=["e" * 256]))
