"""Steps placed under claims (caroni.claims/1): assignments instead of requests,
and what the manager does with an agent's refusal."""

from __future__ import annotations

from caroni.core import NewId, Send
from caroni.errors import SetAside
from caroni.manager.claims import ClaimBook, HeldClaim
from caroni.manager.handlers.attempts import request_message, request_sends
from caroni.manager.handlers.common import hex_of, raw_of
from caroni.manager.handlers.ending import deliver_data
from caroni.manager.handlers.links import links_for
from caroni.manager.handlers.messages import job_attempt, note_placed
from caroni.manager.model import Attempt, AttemptState, Step, StepState, Workflow
from caroni.protocol import FULFILLMENT_KEY, pb


def assign_claimed(
    workflow: Workflow,
    sends: list[Send],
    book: ClaimBook,
    now: float,
    new_id: NewId,
    hold: float = 0.0,
    seeking: dict[str, tuple[str, float]] | None = None,
) -> list[Send]:
    """Turn the requests of steps whose job type a live claim with room covers into
    assignments to the claim's agent, each carrying the inputs known so far.

    A step whose claims are full waits for room (``assign_waiting``) rather than be
    requested, for up to ``hold`` seconds since it was first requested: the agents
    that granted them would only decline or hold an offer, and their running jobs
    will free room. After that it is requested as well (marked ``claims_full``), from
    every agent, which is how agents that have granted nothing yet are found; an
    agent whose claim is used enough stays silent. One such request per job type
    and ``hold`` is enough to find them: ``seeking`` (job type -> the request that
    seeks and since when, kept by the caller across transactions) holds the others
    back. The other sends stay."""
    if workflow.state.finished:
        return sends
    for claim_uuid, agent_key in _silent_claims(workflow, now):
        book.drop(claim_uuid, agent_key)
    kept: list[Send] = []
    assigned: dict[str, tuple[Step, Attempt]] = {}  # by request uuid
    for send in sends:
        message = send.message
        if isinstance(message, pb.JobFulfillmentRequest):
            request_uuid = hex_of(message.request_uuid)
            if request_uuid in assigned:
                continue  # another copy of a request that became an assignment
            found = workflow.find_attempt(request_uuid)
            if found is not None and _assignable(*found):
                step, attempt = found
                # A step tried again goes to another claim, or is requested.
                tried = {a.claim_uuid for a in step.attempts if a.claim_uuid}
                claim = book.pick(step.job_type, now, avoid=tried)
                if claim is not None:
                    _assign(workflow, step, attempt, claim, now, new_id)
                    book.take(claim)
                    assigned[request_uuid] = found
                    continue
                if book.covers(step.job_type, now, tried):
                    if now - attempt.requested_at < hold:
                        continue  # waits for room in a claim
                    if not _may_seek(seeking, step.job_type, request_uuid, now, hold):
                        continue  # another step of its type seeks other agents now
                    # Sought from agents besides those whose claims are full: they
                    # need not answer (they would only offer what the claim holds).
                    message.claims_full = True
        kept.append(send)
    if not assigned:
        return kept
    note_placed(workflow)
    inputs: dict[str, list[pb.JobParameter]] = {}
    for send in deliver_data(workflow):
        data = send.message
        assert isinstance(data, pb.JobDataAvailable)
        job_uuid = hex_of(data.job_uuid)
        if any(attempt.job_uuid == job_uuid for _, attempt in assigned.values()):
            inputs[job_uuid] = list(data.parameters)  # travels with the assignment
        else:
            kept.append(send)
    for step, attempt in assigned.values():
        assert attempt.job_uuid is not None and attempt.agent_key is not None
        known = inputs.get(attempt.job_uuid, [])
        kept.append(Send(attempt.agent_key, _assignment(workflow, step, attempt, known)))
    return kept


def assign_waiting(workflow: Workflow, book: ClaimBook, now: float, new_id: NewId) -> list[Send]:
    """Assign the steps of ``workflow`` that wait for an agent and that a live claim
    with room covers (a claim had room again); the others go on waiting for their
    next broadcast."""
    requests = [
        Send(FULFILLMENT_KEY, request_message(step, step.current))
        for name in workflow.waiting_steps()
        if (step := workflow.steps[name]).current is not None
    ]
    sends = assign_claimed(workflow, requests, book, now, new_id)
    return [send for send in sends if not isinstance(send.message, pb.JobFulfillmentRequest)]


def _may_seek(
    seeking: dict[str, tuple[str, float]] | None,
    job_type: str,
    request_uuid: str,
    now: float,
    hold: float,
) -> bool:
    """Whether this request may seek agents for ``job_type`` besides the full claims'
    (noting it in ``seeking`` when it may): unless another request of the type did
    within ``hold``. Every copy of one request may."""
    if seeking is None:
        return True
    seeker, since = seeking.get(job_type, ("", float("-inf")))
    if seeker != request_uuid and now - since < hold:
        return False
    seeking[job_type] = (request_uuid, now if seeker != request_uuid else since)
    return True


def _silent_claims(workflow: Workflow, now: float) -> set[tuple[str, str]]:
    """The claims (uuid, agent) of jobs given up just now because their agent stayed
    silent: an agent that may be gone gets no more assignments until it grants a
    claim again."""
    return {
        (attempt.claim_uuid, attempt.agent_key)
        for step in workflow.steps.values()
        for attempt in step.attempts
        if attempt.lease_expired
        and attempt.updated_at == now
        and attempt.claim_uuid
        and attempt.agent_key
    }


def _assignable(step: Step, attempt: Attempt) -> bool:
    """Whether an attempt may be assigned: its step's current attempt, waiting for an
    agent, no offer being weighed, and no assignment of it refused."""
    return (
        attempt is step.current
        and attempt.state == AttemptState.REQUESTING
        and not attempt.unclaimed
        and not attempt.candidates
    )


def _assign(
    workflow: Workflow, step: Step, attempt: Attempt, claim: HeldClaim, now: float, new_id: NewId
) -> None:
    attempt.state = AttemptState.PENDING
    attempt.claim_uuid = claim.claim_uuid
    attempt.agent_key = claim.agent_key
    attempt.agent_site = claim.agent_site
    attempt.agent_is_ours = True  # only our agents grant claims
    attempt.job_uuid = new_id()
    attempt.status_info = "assigned under a claim"
    attempt.updated_at = now
    attempt.last_heard_at = now
    step.state = StepState.PLACED
    workflow.updated_at = now


def _assignment(
    workflow: Workflow, step: Step, attempt: Attempt, known: list[pb.JobParameter]
) -> pb.JobAssignment:
    assert attempt.claim_uuid is not None and attempt.job_uuid is not None
    given = {parameter.key for parameter in known}
    awaited = [name for name in step.inputs if name not in given]
    return pb.JobAssignment(
        claim_uuid=raw_of(attempt.claim_uuid),
        job_uuid=raw_of(attempt.job_uuid),
        job_type_name=step.job_type,
        parameters=known,
        awaited_parameters=awaited,
        input_links=links_for(workflow, step, attempt, awaited),
    )


def on_refusal(
    workflow: Workflow, msg: pb.JobAssignmentRefusal, reply_to: str, now: float
) -> list[Send]:
    """The agent will not take an assignment: request the step by broadcast instead
    (the same attempt; a refusal is no failure of the step)."""
    if workflow.find_attempt(hex_of(msg.job_uuid)) is None:
        return []  # refused again: the attempt no longer names the job
    step, attempt = job_attempt(workflow, msg.job_uuid, reply_to)
    if attempt.claim_uuid is None:
        raise SetAside(f"refusal of job {attempt.job_uuid}, which was not assigned under a claim")
    if workflow.state.finished or attempt is not step.current or not attempt.state.live:
        return []
    attempt.state = AttemptState.REQUESTING
    attempt.unclaimed = True
    attempt.claim_uuid = None
    attempt.agent_key = None
    attempt.agent_site = ""
    attempt.agent_is_ours = False
    attempt.job_uuid = None
    attempt.last_heard_at = None
    attempt.status_info = f"assignment refused: {msg.refusal_message}"
    attempt.updated_at = now
    step.state = StepState.WAITING
    workflow.updated_at = now
    return request_sends(step, attempt)
