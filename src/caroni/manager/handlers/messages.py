"""What the manager does with each message about a job: offers, declines,
acceptance, status and data."""

from __future__ import annotations

from collections.abc import Iterable

from caroni.core import NewId, Send, random_ids
from caroni.errors import SetAside
from caroni.manager.handlers.attempts import give_up
from caroni.manager.handlers.common import (
    DEFAULT_TIMINGS,
    STATUS_TO_ATTEMPT,
    Timings,
    hex_of,
    raw_of,
)
from caroni.manager.handlers.ending import deliver_data, finish, record_outputs
from caroni.manager.handlers.links import foreign_input, note_filled
from caroni.manager.model import (
    Attempt,
    AttemptState,
    Candidate,
    Step,
    StepState,
    Workflow,
    WorkflowState,
)
from caroni.protocol import pb
from caroni.protocol.job_env import env_problem


def on_offer(
    workflow: Workflow,
    msg: pb.JobFulfillmentOffer,
    reply_to: str,
    now: float,
    timings: Timings = DEFAULT_TIMINGS,
    *,
    ours: bool = False,
) -> list[Send]:
    """Take the first offer for a live request (or, with an offer window, the least
    loaded one offered within it); politely reject every other one. ``ours``: the
    offer came from a Caroni node like this one (its envelope names its sender)."""
    step, attempt = _attempt_of(workflow, msg.request_uuid, "offer for a request")
    offer_uuid = hex_of(msg.offer_uuid)
    if attempt.offer_uuid == offer_uuid:
        # The same offer again (a redelivery or a repeated accept): say yes again.
        return [Send(reply_to, _accept(attempt))] if attempt.state == AttemptState.ACCEPTING else []
    expired = msg.HasField("expiration") and msg.expiration.ToNanoseconds() < now * 1e9
    if (
        expired
        or workflow.state.finished
        or attempt is not step.current
        or attempt.state != AttemptState.REQUESTING
    ):
        reject = pb.JobFulfillmentOfferReject(
            request_uuid=msg.request_uuid,
            offer_uuid=msg.offer_uuid,
            reject_message="offer expired" if expired else "request already served",
        )
        return [Send(reply_to, reject)]
    site = msg.site.site_identifier if msg.HasField("site") else ""
    candidate = Candidate(
        offer_uuid=offer_uuid, agent_key=reply_to, agent_site=site, load=_load(msg), ours=ours
    )
    if timings.offer_window <= 0:
        return _take(workflow, attempt, candidate, now)
    if all(c.offer_uuid != offer_uuid for c in attempt.candidates):
        attempt.candidates.append(candidate)
    if attempt.window_closes_at is None:
        attempt.window_closes_at = now + timings.offer_window
    return []


def _load(msg: pb.JobFulfillmentOffer) -> float:
    """Busy share an offer reports (running and reserved per slot); unknown sorts last."""
    if not msg.HasField("load") or msg.load.slots == 0:
        return float("inf")
    return (msg.load.running + msg.load.reserved) / msg.load.slots


def _take(workflow: Workflow, attempt: Attempt, candidate: Candidate, now: float) -> list[Send]:
    attempt.state = AttemptState.ACCEPTING
    attempt.offer_uuid = candidate.offer_uuid
    attempt.agent_key = candidate.agent_key
    attempt.agent_site = candidate.agent_site
    attempt.agent_is_ours = candidate.ours
    attempt.updated_at = now
    workflow.updated_at = now
    return [Send(candidate.agent_key, _accept(attempt))]


def close_window(workflow: Workflow, attempt: Attempt, now: float) -> list[Send]:
    """Accept the least loaded offer collected (the earliest among equals); reject the rest."""
    chosen = min(attempt.candidates, key=lambda c: c.load)
    sends = _take(workflow, attempt, chosen, now)
    for other in attempt.candidates:
        if other is not chosen:
            reject = pb.JobFulfillmentOfferReject(
                request_uuid=raw_of(attempt.request_uuid),
                offer_uuid=raw_of(other.offer_uuid),
                reject_message="another offer was taken",
            )
            sends.append(Send(other.agent_key, reject))
    attempt.candidates = []
    attempt.window_closes_at = None
    return sends


def _accept(attempt: Attempt) -> pb.JobFulfillmentOfferAccept:
    assert attempt.offer_uuid is not None
    return pb.JobFulfillmentOfferAccept(
        request_uuid=raw_of(attempt.request_uuid),
        offer_uuid=raw_of(attempt.offer_uuid),
        accept_message="accepted",
    )


def on_decline(
    workflow: Workflow, msg: pb.JobFulfillmentDecline, reply_to: str, now: float
) -> list[Send]:
    _, attempt = _attempt_of(workflow, msg.request_uuid, "decline for a request")
    attempt.declines += 1
    if attempt.state == AttemptState.REQUESTING:
        attempt.status_info = msg.decline_message
    return []


def on_job_accepted(
    workflow: Workflow, msg: pb.JobAccepted, reply_to: str, now: float
) -> list[Send]:
    step, attempt = _attempt_of(workflow, msg.offer_uuid, "JobAccepted for an offer")
    _check_sender(attempt, reply_to)
    job_uuid = hex_of(msg.job_uuid)
    if attempt.job_uuid is not None:
        if attempt.job_uuid != job_uuid:
            raise SetAside(f"second job {job_uuid} for offer {attempt.offer_uuid}")
        return []  # duplicate
    attempt.job_uuid = job_uuid
    if (
        attempt.state != AttemptState.ACCEPTING
        or attempt is not step.current
        or workflow.state.finished
    ):
        # We gave up on this attempt meanwhile: the job must not run.
        return [Send(reply_to, pb.JobKill(job_uuid=msg.job_uuid, kill_info="no longer wanted"))]
    attempt.state = AttemptState.PENDING
    attempt.updated_at = now
    attempt.last_heard_at = now
    attempt.last_polled_at = now
    step.state = StepState.PLACED
    workflow.updated_at = now
    sends = [Send(reply_to, pb.JobStatusRequest(job_uuid=msg.job_uuid))]
    note_placed(workflow)
    return sends + deliver_data(workflow)


def note_placed(workflow: Workflow) -> None:
    """Once every step has had a job, data may flow (see ``deliver_data``)."""
    if not workflow.placed and all(
        s.current and s.current.job_uuid for s in workflow.steps.values()
    ):
        workflow.placed = True


def _check_sender(attempt: Attempt, reply_to: str) -> None:
    """Only the agent holding a job may speak for it."""
    if attempt.agent_key is not None and reply_to != attempt.agent_key:
        raise SetAside(
            f"message about attempt {attempt.number} from {reply_to!r}, "
            f"but its agent is {attempt.agent_key!r}"
        )


def on_status_update(
    workflow: Workflow,
    msg: pb.JobStatusUpdate,
    reply_to: str,
    now: float,
    *,
    new_id: NewId = random_ids,
) -> list[Send]:
    step, attempt = job_attempt(workflow, msg.job_uuid, reply_to)
    delivers = msg.job_status == pb.JOB_STATUS_COMPLETED
    if not _followed(workflow, step, attempt, delivers, now):
        return []  # late news about a job we no longer follow
    if attempt.last_polled_at is not None:
        attempt.polls_answered = True
    attempt.last_heard_at = now
    attempt.status_info = msg.status_info
    attempt.updated_at = now
    workflow.updated_at = now
    if msg.job_status == pb.JOB_STATUS_FAILED:
        reason = msg.status_info or "job failed"
        return give_up(workflow, step, attempt, AttemptState.FAILED, reason, now, new_id)
    if msg.job_status == pb.JOB_STATUS_COMPLETED:
        attempt.completed_seen = True
        return _maybe_complete_step(workflow, step, attempt, now)
    new_state = STATUS_TO_ATTEMPT.get(msg.job_status)
    if new_state is not None and attempt.state != AttemptState.COMPLETED:
        attempt.state = new_state
        if new_state == AttemptState.RUNNING:
            step.state = StepState.RUNNING
    return []


def on_data(workflow: Workflow, msg: pb.JobDataAvailable, reply_to: str, now: float) -> list[Send]:
    """Outputs of a job: record them, forward them downstream, maybe finish the step."""
    step, attempt = job_attempt(workflow, msg.job_uuid, reply_to)
    if not _followed(workflow, step, attempt, True, now):
        return []
    attempt.last_heard_at = now
    _take_outputs(step, attempt, msg.parameters)
    attempt.updated_at = now
    workflow.updated_at = now
    return _maybe_complete_step(workflow, step, attempt, now)


def on_finished(
    workflow: Workflow,
    msg: pb.JobFinished,
    reply_to: str,
    now: float,
    *,
    new_id: NewId = random_ids,
) -> list[Send]:
    """The outcome of a job in one message (caroni.claims/1): its outputs and
    COMPLETED, or FAILED with the reason."""
    step, attempt = job_attempt(workflow, msg.job_uuid, reply_to)
    completed = msg.job_status == pb.JOB_STATUS_COMPLETED
    if not _followed(workflow, step, attempt, completed, now):
        return []
    attempt.last_heard_at = now
    attempt.status_info = msg.status_info
    attempt.updated_at = now
    workflow.updated_at = now
    reason = "" if completed else msg.status_info or "job failed"
    if completed and (overruled := foreign_input(workflow, step, list(msg.filled_from))):
        reason = f"result not taken: {overruled}"
    if reason:
        return give_up(workflow, step, attempt, AttemptState.FAILED, reason, now, new_id)
    _take_outputs(step, attempt, msg.parameters)
    attempt.completed_seen = True
    note_filled(workflow, step, list(msg.filled), reply_to)
    return _maybe_complete_step(workflow, step, attempt, now)


def _take_outputs(step: Step, attempt: Attempt, parameters: Iterable[pb.JobParameter]) -> None:
    for parameter in parameters:
        if parameter.key not in step.outputs:
            continue  # an output the template does not use
        attempt.outputs.setdefault(parameter.key, parameter.value)


def _followed(workflow: Workflow, step: Step, attempt: Attempt, delivers: bool, now: float) -> bool:
    """Whether news about ``attempt`` counts: it is the step's live current attempt;
    or, when the news ``delivers`` a result (outputs, COMPLETED), an attempt given up
    whose replacement has not been placed with an agent yet. That one is taken back
    and the replacement dropped: a peer silent while its job ran has delivered after
    all, and its correct result must not be thrown away."""
    if workflow.state.finished:
        return False
    if attempt.state.live and attempt is step.current:
        return True
    replacement = step.current
    if (
        not delivers
        or attempt.state != AttemptState.ABANDONED
        or replacement is None
        or replacement.state != AttemptState.REQUESTING
        or step.state in (StepState.COMPLETED, StepState.FAILED, StepState.CANCELLED)
    ):
        return False
    replacement.state = AttemptState.ABANDONED
    replacement.reason = f"attempt {attempt.number} delivered after all"
    replacement.updated_at = now
    attempt.state = AttemptState.RUNNING
    attempt.reason = ""
    step.attempts.remove(attempt)
    step.attempts.append(attempt)  # the step's current attempt again
    step.state = StepState.RUNNING
    return True


def _attempt_of(workflow: Workflow, key: bytes, what: str) -> tuple[Step, Attempt]:
    """The step and attempt a request, offer or job uuid names; SetAside if none."""
    found = workflow.find_attempt(hex_of(key))
    if found is None:
        raise SetAside(f"{what} this workflow does not have")
    return found


def job_attempt(workflow: Workflow, job_uuid: bytes, reply_to: str) -> tuple[Step, Attempt]:
    step, attempt = _attempt_of(workflow, job_uuid, "message about a job")
    if attempt.job_uuid != hex_of(job_uuid):
        raise SetAside("message about a job this workflow does not have")
    _check_sender(attempt, reply_to)
    return step, attempt


def _maybe_complete_step(
    workflow: Workflow, step: Step, attempt: Attempt, now: float
) -> list[Send]:
    if not attempt.completed_seen or any(name not in attempt.outputs for name in step.outputs):
        return []
    attempt.state = AttemptState.COMPLETED
    step.state = StepState.COMPLETED
    fed: list[str] = []
    for flow in workflow.dataflows:
        producer, _, output = flow.source.partition("/")
        if producer == step.name and flow.value is None:
            flow.value = attempt.outputs[output]
            if flow.target_step is not None and flow.target_step not in fed:
                fed.append(flow.target_step)
    for name in fed:
        # Every attempt of a consumer whose inputs cannot fit would fail: fail it now.
        problem = env_problem(_known_inputs(workflow, name))
        if problem:
            consumer = workflow.steps[name]
            consumer.state = StepState.FAILED
            consumer.reason = f"cannot take its inputs: {problem}"
            why = f"step {name!r} cannot take its inputs (from {step.name!r}): {problem}"
            return finish(workflow, WorkflowState.FAILED, why, now)
    return deliver_data(workflow) + record_outputs(workflow, now)


def _known_inputs(workflow: Workflow, step_name: str) -> dict[str, str]:
    """The values a step has been given so far, by input name."""
    return {
        flow.target_name: flow.value
        for flow in workflow.dataflows
        if flow.target_step == step_name and flow.value is not None
    }
