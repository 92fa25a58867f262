"""Starting an attempt at a step, and giving one up."""

from __future__ import annotations

from caroni.core import NewId, Send
from caroni.manager.handlers.common import raw_of
from caroni.manager.handlers.ending import finish
from caroni.manager.model import (
    Attempt,
    AttemptState,
    Step,
    StepState,
    Workflow,
    WorkflowState,
)
from caroni.protocol import FULFILLMENT_KEY, fulfillment_key_for, pb


def request_attempt(workflow: Workflow, step: Step, now: float, new_id: NewId) -> list[Send]:
    """Start a new attempt of ``step`` by broadcasting a fulfillment request."""
    attempt = Attempt(
        number=len(step.attempts) + 1,
        request_uuid=new_id(),
        requested_at=now,
        updated_at=now,
    )
    step.attempts.append(attempt)
    step.state = StepState.WAITING
    return request_sends(step, attempt)


def request_sends(step: Step, attempt: Attempt) -> list[Send]:
    """Where a request goes: when first broadcast, to the key of its job type (our
    agents that serve the type bind it); when broadcast again, to the plain key as
    well, where every agent hears it, those of other implementations too. (A manager
    that does not speak typed requests sends them all to the plain key: see
    ``route_requests``.)"""
    message = request_message(step, attempt)
    typed = fulfillment_key_for(step.job_type)
    if typed is None:
        return [Send(FULFILLMENT_KEY, message)]
    if attempt.broadcasts <= 1:
        return [Send(typed, message)]
    return [Send(typed, message), Send(FULFILLMENT_KEY, message)]


def route_requests(sends: list[Send], *, typed: bool, shared: bool) -> list[Send]:
    """Requests as this manager sends them: ``typed`` (it speaks typed requests) keeps
    the keys of their job types, else each goes to the plain key once; ``shared``
    (told to serve agents of other implementations at once) adds the plain key to
    every request."""
    routed: list[Send] = []
    plain_sent: set[bytes] = set()
    for send in sends:
        if not isinstance(send.message, pb.JobFulfillmentRequest):
            routed.append(send)
            continue
        request = send.message.request_uuid
        if typed and send.to != FULFILLMENT_KEY:
            routed.append(send)
            if not shared:
                continue
        if request not in plain_sent:
            plain_sent.add(request)
            routed.append(Send(FULFILLMENT_KEY, send.message))
    return routed


def request_message(step: Step, attempt: Attempt) -> pb.JobFulfillmentRequest:
    return pb.JobFulfillmentRequest(
        request_uuid=raw_of(attempt.request_uuid),
        job_type_name=step.job_type,
        parameters=[pb.JobParameter(key=name, value="") for name in step.inputs],
    )


def give_up(
    workflow: Workflow,
    step: Step,
    attempt: Attempt,
    state: AttemptState,
    reason: str,
    now: float,
    new_id: NewId,
    *,
    retry: bool = True,
) -> list[Send]:
    """End an attempt; request the step again while attempts remain, else fail."""
    attempt.state = state
    attempt.reason = reason
    attempt.updated_at = now
    sends: list[Send] = []
    if state == AttemptState.ABANDONED and attempt.job_uuid and attempt.agent_key:
        # The job may still be alive somewhere: it must not go on.
        kill = pb.JobKill(job_uuid=raw_of(attempt.job_uuid), kill_info=reason)
        sends.append(Send(attempt.agent_key, kill))
    if retry and len(step.attempts) < workflow.max_attempts:
        return sends + request_attempt(workflow, step, now, new_id)
    step.state = StepState.FAILED
    step.reason = reason
    tries = len(step.attempts)
    why = f"step {step.name!r} failed after {tries} attempt{'s' if tries > 1 else ''}: {reason}"
    return sends + finish(workflow, WorkflowState.FAILED, why, now)
