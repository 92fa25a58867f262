"""Messages with a field no node can store: one per stored field, for the tests that
send them to nodes while real work runs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from caroni.protocol import new_message_id, pb, seal


@dataclass(frozen=True)
class Poison:
    """A body and the broker properties to send it with (``reply_to``, ``message_id``)."""

    body: bytes
    properties: dict[str, str] = field(default_factory=dict)


def _sealed(message: object, message_id: str | None = None) -> bytes:
    return seal(message, message_id=new_message_id() if message_id is None else message_id)  # type: ignore[arg-type]


def _status(info: str = "fine") -> pb.JobStatusUpdate:
    return pb.JobStatusUpdate(
        job_uuid=uuid.uuid4().bytes, job_status=pb.JOB_STATUS_RUNNING, status_info=info
    )


POISONS: dict[str, Callable[[], Poison]] = {
    "envelope message id of 65 characters": lambda: Poison(_sealed(_status(), "m" * 65)),
    "broker message id of 65 characters": lambda: Poison(
        _sealed(_status()), {"message_id": "b" * 65}
    ),
    "reply-to of 256 characters": lambda: Poison(_sealed(_status()), {"reply_to": "r" * 256}),
    "reply-to with a control character": lambda: Poison(
        _sealed(_status()), {"reply_to": "wf.client.\x07x"}
    ),
    "template name of 256 characters": lambda: Poison(
        _sealed(pb.WorkFlowCreate(template_name="t" * 256, workflow_uuid=uuid.uuid4().bytes))
    ),
    "workflow name of 256 characters": lambda: Poison(
        _sealed(
            pb.WorkFlowCreate(
                template_name="test_simple", wf_name="w" * 256, workflow_uuid=uuid.uuid4().bytes
            )
        )
    ),
    "NUL in a workflow name": lambda: Poison(
        _sealed(
            pb.WorkFlowCreate(
                template_name="test_simple", wf_name="a\x00b", workflow_uuid=uuid.uuid4().bytes
            )
        )
    ),
    "job type name of 256 characters": lambda: Poison(
        _sealed(pb.JobFulfillmentRequest(request_uuid=uuid.uuid4().bytes, job_type_name="j" * 256))
    ),
    "input key of 256 characters": lambda: Poison(
        _sealed(
            pb.WorkFlowCreate(
                template_name="test_simple",
                inputs=[pb.WorkFlowInput(key="k" * 256, value="v")],
                workflow_uuid=uuid.uuid4().bytes,
            )
        )
    ),
    "signator of 129 characters": lambda: Poison(
        _sealed(
            pb.JobKill(
                job_uuid=uuid.uuid4().bytes,
                signature=pb.Signature(signator_certificate="k" * 129),
            )
        )
    ),
    "not an envelope": lambda: Poison(b"\xff" * 100_000),
}

NOT_OVER_AMQP = frozenset({"reply-to of 256 characters"})
"""Poisons AMQP itself cannot carry (its reply-to holds at most 255 bytes)."""
