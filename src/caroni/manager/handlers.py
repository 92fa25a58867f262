"""The manager's protocol, as pure functions of (workflow, message) -> messages to send.

Nothing here does I/O: each function changes the workflow aggregate it is given
and returns the messages to publish. The service shell loads and stores the
aggregate and writes the messages to the outbox in one transaction.

Every handler is idempotent: applying the same message twice leaves the workflow
as applying it once did (an offer for an attempt that already accepted one is
rejected, data already recorded is not forwarded again, and so on).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from caroni.core import NewId, Send, random_ids
from caroni.errors import SetAside
from caroni.manager.model import (
    DEFAULT_MAX_ATTEMPTS,
    Attempt,
    AttemptState,
    Candidate,
    Dataflow,
    Step,
    StepState,
    Workflow,
    WorkflowState,
)
from caroni.manager.templates import Template
from caroni.protocol import FULFILLMENT_KEY, pb
from caroni.protocol.job_env import env_problem


@dataclass(frozen=True, slots=True)
class Timings:
    """How long the manager waits before it acts (seconds)."""

    rebroadcast_first: float = 2.0  # a request with no offer is broadcast again after this
    rebroadcast_max: float = 60.0  # ... the wait doubling up to this
    stalled_after: float = 10.0  # a request waiting this long marks the workflow stalled
    request_deadline: float | None = None  # fail the step if no agent offers within this
    accept_timeout: float = 60.0  # an accepted offer must become a job within this
    status_interval: float = 30.0  # ask a silent job's agent for its status this often
    job_lease: float = 180.0  # give a job up when its agent stays silent this long
    # 0: take the first offer. Otherwise collect offers this long after the first
    # one and take the least loaded (load as the agents report it).
    offer_window: float = 0.0


DEFAULT_TIMINGS = Timings()


_STATUS_TO_ATTEMPT = {
    pb.JOB_STATUS_PENDING: AttemptState.PENDING,
    pb.JOB_STATUS_QUEUED: AttemptState.QUEUED,
    pb.JOB_STATUS_RUNNING: AttemptState.RUNNING,
    pb.JOB_STATUS_PAUSED: AttemptState.QUEUED,
}


def hex_of(raw: bytes) -> str:
    return uuid.UUID(bytes=raw).hex


def raw_of(key: str) -> bytes:
    return uuid.UUID(hex=key).bytes


# --- creating ------------------------------------------------------------------------


def refusal_reason(template: Template | None, template_name: str, inputs: Mapping[str, str]) -> str:
    """Why a workflow cannot start from these inputs, or "" when it can."""
    if template is None:
        return f"unknown template {template_name!r}"
    missing = [name for name in template.inputs if name not in inputs]
    unknown = [name for name in inputs if name not in template.inputs]
    problems = []
    if missing:
        problems.append("missing input(s): " + ", ".join(missing))
    if unknown:
        problems.append("unknown input(s): " + ", ".join(unknown))
    if problems:
        expected = ", ".join(template.inputs) or "none"
        return f"{'; '.join(problems)} (template {template_name!r} takes: {expected})"
    for spec in template.steps.values():
        # A step fed by workflow inputs could never start: every attempt would fail.
        given = {
            name: inputs[source.name]
            for name, source in spec.inputs.items()
            if source.step is None and source.name in inputs
        }
        problem = env_problem(given)
        if problem:
            return f"step {spec.name!r} cannot take its inputs: {problem}"
    return ""


def create_workflow(
    template: Template | None,
    *,
    workflow_id: str,
    template_name: str,
    name: str,
    inputs: Mapping[str, str],
    submitter: str,
    max_attempts: int,
    now: float,
    start: bool = True,
    submitter_key: str = "",
    given_twice: Sequence[str] = (),
    new_id: NewId = random_ids,
) -> tuple[Workflow, list[Send]]:
    """A new workflow with every step requested (or, unless ``start``, waiting for its
    turn); or a failed one saying why it was refused (``given_twice``: names of inputs
    the submission holds more than once, which refuse it)."""
    workflow = Workflow(
        id=workflow_id,
        name=name,
        template_name=template_name,
        submitter=submitter,
        submitter_key=submitter_key,
        inputs=dict(inputs),
        max_attempts=max_attempts if max_attempts > 0 else DEFAULT_MAX_ATTEMPTS,
        created_at=now,
        updated_at=now,
    )
    reason = refusal_reason(template, template_name, inputs)
    if given_twice and not reason:
        reason = "input(s) given twice: " + ", ".join(given_twice)
    if reason or template is None:
        return workflow, finish(workflow, WorkflowState.FAILED, f"refused: {reason}", now)
    workflow.output_names = list(template.outputs)
    for spec in template.steps.values():
        workflow.steps[spec.name] = Step(
            name=spec.name,
            job_type=spec.job_type,
            inputs={key: str(source) for key, source in spec.inputs.items()},
            outputs=list(spec.outputs),
        )
        for input_name, source in spec.inputs.items():
            workflow.dataflows.append(
                Dataflow(source=str(source), target_step=spec.name, target_name=input_name)
            )
    for output_name, source in template.outputs.items():
        workflow.dataflows.append(
            Dataflow(source=str(source), target_step=None, target_name=output_name)
        )
    for flow in workflow.dataflows:
        if flow.source in workflow.inputs:
            flow.value = workflow.inputs[flow.source]
    if not start:
        workflow.reason = "waiting for its turn (the manager runs a limited number at once)"
        return workflow, []
    return workflow, start_workflow(workflow, now, new_id=new_id)


def start_workflow(workflow: Workflow, now: float, *, new_id: NewId = random_ids) -> list[Send]:
    """Request every step of a created workflow."""
    if workflow.state != WorkflowState.CREATED:
        return []
    workflow.state = WorkflowState.RUNNING
    workflow.reason = ""
    workflow.updated_at = now
    sends = [_request(workflow, step, now, new_id) for step in workflow.steps.values()]
    return sends + _record_outputs(workflow, now)


def _request(workflow: Workflow, step: Step, now: float, new_id: NewId) -> Send:
    """Start a new attempt of ``step`` by broadcasting a fulfillment request."""
    attempt = Attempt(
        number=len(step.attempts) + 1,
        request_uuid=new_id(),
        requested_at=now,
        updated_at=now,
    )
    step.attempts.append(attempt)
    step.state = StepState.WAITING
    return Send(FULFILLMENT_KEY, request_message(step, attempt))


def request_message(step: Step, attempt: Attempt) -> pb.JobFulfillmentRequest:
    return pb.JobFulfillmentRequest(
        request_uuid=raw_of(attempt.request_uuid),
        job_type_name=step.job_type,
        parameters=[pb.JobParameter(key=name, value="") for name in step.inputs],
    )


# --- negotiating ---------------------------------------------------------------------


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


def _close_window(workflow: Workflow, attempt: Attempt, now: float) -> list[Send]:
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
    if not workflow.placed and all(
        s.current and s.current.job_uuid for s in workflow.steps.values()
    ):
        workflow.placed = True
    return sends + _deliver_data(workflow)


def _check_sender(attempt: Attempt, reply_to: str) -> None:
    """Only the agent holding a job may speak for it."""
    if attempt.agent_key is not None and reply_to != attempt.agent_key:
        raise SetAside(
            f"message about attempt {attempt.number} from {reply_to!r}, "
            f"but its agent is {attempt.agent_key!r}"
        )


# --- running ------------------------------------------------------------------------


def on_status_update(
    workflow: Workflow,
    msg: pb.JobStatusUpdate,
    reply_to: str,
    now: float,
    *,
    new_id: NewId = random_ids,
) -> list[Send]:
    step, attempt = _job_attempt(workflow, msg.job_uuid, reply_to)
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
        return _give_up(workflow, step, attempt, AttemptState.FAILED, reason, now, new_id)
    if msg.job_status == pb.JOB_STATUS_COMPLETED:
        attempt.completed_seen = True
        return _maybe_complete_step(workflow, step, attempt, now)
    new_state = _STATUS_TO_ATTEMPT.get(msg.job_status)
    if new_state is not None and attempt.state != AttemptState.COMPLETED:
        attempt.state = new_state
        if new_state == AttemptState.RUNNING:
            step.state = StepState.RUNNING
    return []


def on_data(workflow: Workflow, msg: pb.JobDataAvailable, reply_to: str, now: float) -> list[Send]:
    """Outputs of a job: record them, forward them downstream, maybe finish the step."""
    step, attempt = _job_attempt(workflow, msg.job_uuid, reply_to)
    if not _followed(workflow, step, attempt, True, now):
        return []
    attempt.last_heard_at = now
    for parameter in msg.parameters:
        if parameter.key not in step.outputs:
            continue  # an output the template does not use
        attempt.outputs.setdefault(parameter.key, parameter.value)
    attempt.updated_at = now
    workflow.updated_at = now
    return _maybe_complete_step(workflow, step, attempt, now)


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


def _job_attempt(workflow: Workflow, job_uuid: bytes, reply_to: str) -> tuple[Step, Attempt]:
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
    return _deliver_data(workflow) + _record_outputs(workflow, now)


def _known_inputs(workflow: Workflow, step_name: str) -> dict[str, str]:
    """The values a step has been given so far, by input name."""
    return {
        flow.target_name: flow.value
        for flow in workflow.dataflows
        if flow.target_step == step_name and flow.value is not None
    }


def _give_up(
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
        return sends + [_request(workflow, step, now, new_id)]
    step.state = StepState.FAILED
    step.reason = reason
    tries = len(step.attempts)
    why = f"step {step.name!r} failed after {tries} attempt{'s' if tries > 1 else ''}: {reason}"
    return sends + finish(workflow, WorkflowState.FAILED, why, now)


def _deliver_data(workflow: Workflow) -> list[Send]:
    """Send every known value to its consumer's current job, once per job.

    Nothing flows until every step has had a job (``placed``), as peers expect; a
    replacement job gets again everything its step had been given.
    """
    if not workflow.placed or workflow.state.finished:
        return []
    by_job: dict[str, tuple[Attempt, list[pb.JobParameter]]] = {}
    for flow in workflow.dataflows:
        if flow.value is None or flow.target_step is None:
            continue
        current = workflow.steps[flow.target_step].current
        if current is None or current.job_uuid is None or not current.state.live:
            continue
        if current.state == AttemptState.ACCEPTING or flow.delivered_to == current.job_uuid:
            continue
        flow.delivered_to = current.job_uuid
        entry = by_job.setdefault(current.job_uuid, (current, []))
        entry[1].append(pb.JobParameter(key=flow.target_name, value=flow.value))
    sends = []
    for job_uuid, (attempt, parameters) in by_job.items():
        assert attempt.agent_key is not None
        message = pb.JobDataAvailable(job_uuid=raw_of(job_uuid), parameters=parameters)
        sends.append(Send(attempt.agent_key, message))
    return sends


def _record_outputs(workflow: Workflow, now: float) -> list[Send]:
    for flow in workflow.dataflows:
        if flow.target_step is None and flow.value is not None:
            workflow.outputs[flow.target_name] = flow.value
    done = all(step.state == StepState.COMPLETED for step in workflow.steps.values())
    if done and all(name in workflow.outputs for name in workflow.output_names):
        return finish(workflow, WorkflowState.COMPLETED, "", now)
    return []


# --- ending ---------------------------------------------------------------------------


def finish(workflow: Workflow, state: WorkflowState, reason: str, now: float) -> list[Send]:
    """End the workflow: kill what still runs for it and tell the submitter."""
    if workflow.state.finished:
        return []
    workflow.state = state
    workflow.reason = reason
    workflow.updated_at = now
    workflow.finished_at = now
    sends: list[Send] = []
    for step in workflow.steps.values():
        current = step.current
        if current is not None and current.state.live:
            if current.job_uuid and current.agent_key:
                kill = pb.JobKill(job_uuid=raw_of(current.job_uuid), kill_info=f"workflow {state}")
                sends.append(Send(current.agent_key, kill))
            current.state = AttemptState.ABANDONED
            if step.state != StepState.FAILED:
                step.state = StepState.CANCELLED
    if workflow.submitter.startswith("wf.client."):
        sends.append(Send(workflow.submitter, status_message(workflow)))
    return sends


def cancel_refusal(workflow: Workflow, signator: str, signed: bool) -> str:
    """Why a WorkFlowCancel signed by ``signator`` may not cancel ``workflow``, or "".

    With signatures required (``signed``) only the key that signed the workflow's
    creation may cancel it by message; operators cancel on the manager's site or
    HTTP API, which do not come here. Otherwise anyone may, as before (a manager's
    allowed submitters are checked with the trust policy).
    """
    if not signed:
        return ""
    if not workflow.submitter_key:
        return (
            f"WorkFlowCancel for workflow {workflow.id}, which has no submitter key on record "
            "(it was not submitted signed): only an operator may cancel it, on the "
            "manager's site or HTTP API"
        )
    if signator != workflow.submitter_key:
        return (
            f"WorkFlowCancel for workflow {workflow.id} signed by {signator[:60] or 'no key'}, "
            f"not by the key that submitted it ({workflow.submitter_key[:60]})"
        )
    return ""


def cancel(workflow: Workflow, reason: str, now: float) -> list[Send]:
    return finish(workflow, WorkflowState.CANCELLED, reason or "cancelled", now)


def status_message(workflow: Workflow) -> pb.WorkFlowStatus:
    """The workflow as our own clients (``caroni submit --wait``, ``status``) see it."""
    steps = []
    for step in workflow.steps.values():
        steps.append(
            pb.StepStatus(
                step_name=step.name,
                job_type_name=step.job_type,
                state=str(step.state),
                attempts=len(step.attempts),
                agent=step.agent,
                reason=step.why,
            )
        )
    return pb.WorkFlowStatus(
        workflow_uuid=raw_of(workflow.id),
        state=str(workflow.state),
        reason=workflow.reason,
        outputs=[pb.WorkFlowInput(key=k, value=v) for k, v in workflow.outputs.items()],
        wf_name=workflow.name,
        template_name=workflow.template_name,
        steps=steps,
    )


# --- timers ---------------------------------------------------------------------------


def _rebroadcast_at(attempt: Attempt, timings: Timings) -> float:
    delay = min(timings.rebroadcast_first * 2 ** (attempt.broadcasts - 1), timings.rebroadcast_max)
    return float(attempt.updated_at + delay)


def _heard_or_polled(attempt: Attempt) -> float:
    return max(attempt.last_heard_at or attempt.updated_at, attempt.last_polled_at or 0.0)


def _deadlines(attempt: Attempt, timings: Timings) -> list[float]:
    """When this attempt's timers fire, by its state."""
    if attempt.state == AttemptState.REQUESTING:
        # "stalled" is noticed at a rebroadcast, so it needs no timer of its own.
        due = [_rebroadcast_at(attempt, timings)]
        if attempt.window_closes_at is not None:
            due.append(attempt.window_closes_at)
        if timings.request_deadline is not None:
            due.append(attempt.requested_at + timings.request_deadline)
        return due
    if attempt.state == AttemptState.ACCEPTING:
        return [attempt.updated_at + timings.accept_timeout]
    if attempt.state.has_job and attempt.state.live:
        heard = attempt.last_heard_at or attempt.updated_at
        return [_heard_or_polled(attempt) + timings.status_interval, heard + timings.job_lease]
    return []


def next_wake(workflow: Workflow, timings: Timings = DEFAULT_TIMINGS) -> float | None:
    """When this workflow's earliest timer is due (stored, so timers survive restarts)."""
    if workflow.state.finished:
        return None
    due = [
        moment
        for step in workflow.steps.values()
        if step.current is not None
        for moment in _deadlines(step.current, timings)
    ]
    return min(due) if due else None


def on_tick(
    workflow: Workflow,
    now: float,
    timings: Timings = DEFAULT_TIMINGS,
    *,
    new_id: NewId = random_ids,
) -> list[Send]:
    """Fire due timers: broadcast unanswered requests again, replace lost acceptances,
    poll silent jobs and give up on those whose agent stays silent past the lease."""
    if workflow.state.finished:
        return []
    sends: list[Send] = []
    waiting: list[str] = []
    for step in list(workflow.steps.values()):
        current = step.current
        if current is None or workflow.state.finished:
            continue
        if current.state == AttemptState.REQUESTING:
            if current.window_closes_at is not None and now >= current.window_closes_at:
                sends += _close_window(workflow, current, now)
                continue
            waited = now - current.requested_at
            if timings.request_deadline is not None and waited >= timings.request_deadline:
                why = f"no agent offered {step.job_type!r} within {timings.request_deadline:g}s"
                sends += _give_up(
                    workflow, step, current, AttemptState.ABANDONED, why, now, new_id, retry=False
                )
                continue
            if now >= _rebroadcast_at(current, timings):
                current.broadcasts += 1
                current.updated_at = now
                sends.append(Send(FULFILLMENT_KEY, request_message(step, current)))
            if waited >= timings.stalled_after:
                waiting.append(step.job_type)
        elif current.state == AttemptState.ACCEPTING:
            if now >= current.updated_at + timings.accept_timeout:
                why = "no JobAccepted after the offer was accepted"
                sends += _give_up(workflow, step, current, AttemptState.ABANDONED, why, now, new_id)
        elif current.state.has_job and current.state.live:
            heard = current.last_heard_at or current.updated_at
            leased = current.agent_is_ours or current.polls_answered
            if leased and now >= heard + timings.job_lease:
                why = f"agent silent for {now - heard:.0f}s about its job"
                sends += _give_up(workflow, step, current, AttemptState.ABANDONED, why, now, new_id)
            elif now >= _heard_or_polled(current) + timings.status_interval:
                current.last_polled_at = now
                assert current.job_uuid is not None and current.agent_key is not None
                poll = pb.JobStatusRequest(job_uuid=raw_of(current.job_uuid))
                sends.append(Send(current.agent_key, poll))
    if workflow.state.finished:
        return sends
    if waiting:
        if workflow.state != WorkflowState.STALLED:
            workflow.updated_at = now
        workflow.state = WorkflowState.STALLED
        workflow.reason = "waiting for an agent offering " + ", ".join(sorted(set(waiting)))
    elif workflow.state == WorkflowState.STALLED:
        workflow.state = WorkflowState.RUNNING
        workflow.reason = ""
    if sends:
        workflow.updated_at = now
    return sends
