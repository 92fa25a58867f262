"""The agent's protocol, as pure functions: no I/O, state in, messages out.

Each function is idempotent: a repeated accept answers with the same job, repeated
data changes nothing, a repeated kill of a finished job does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from caroni.agent import links
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import (
    AgentJob,
    InputLink,
    JobResult,
    JobStatus,
    Load,
    Offer,
    OfferState,
    Policy,
)
from caroni.core import NewId, Send, random_ids
from caroni.protocol import pb

_WIRE_STATUS = {
    JobStatus.PENDING: pb.JOB_STATUS_PENDING,
    JobStatus.QUEUED: pb.JOB_STATUS_QUEUED,
    JobStatus.RUNNING: pb.JOB_STATUS_RUNNING,
    JobStatus.COMPLETED: pb.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: pb.JOB_STATUS_FAILED,
}


def raw(key: str) -> bytes:
    return uuid.UUID(hex=key).bytes


class OfferUnavailable(Exception):
    """The accept names an offer we no longer stand by."""


def decline_reason(
    job_type: str,
    inputs: Iterable[str],
    manager_key: str,
    catalogue: Mapping[str, JobTypeSpec],
    load: Load,
    policy: Policy,
    offers_to_manager: int = 0,
) -> str:
    """Why this agent will not take a job of ``job_type`` with these ``inputs`` for
    ``manager_key``, or "" when it will.

    ``offers_to_manager``: offers open to the requesting manager right now.
    """
    if not policy.serves(manager_key):
        return "this agent does not serve that manager"
    spec = catalogue.get(job_type)
    if spec is None:
        return f"no job type {job_type!r} here"
    wanted = sorted(inputs)
    if wanted != sorted(spec.inputs):
        return (
            f"job type {spec.name!r} takes inputs {sorted(spec.inputs)}, the request names {wanted}"
        )
    if load.reserved >= policy.max_reserved:
        return f"full: {load.reserved} jobs reserved (limit {policy.max_reserved})"
    if offers_to_manager >= policy.max_offers_per_manager:
        return (
            f"too many open offers to this manager: {offers_to_manager} "
            f"(limit {policy.max_offers_per_manager} per manager)"
        )
    return ""


def on_request(
    request: pb.JobFulfillmentRequest,
    reply_to: str,
    *,
    catalogue: Mapping[str, JobTypeSpec],
    load: Load,
    policy: Policy,
    node_uuid: uuid.UUID,
    now: float,
    offers_to_manager: int,
    standing: Offer | None = None,
    new_id: NewId = random_ids,
    silent_about_unserved: bool = False,
) -> tuple[Offer | None, Send | None]:
    """Offer for a request we can serve, decline it otherwise; or, when
    ``silent_about_unserved`` (the manager announced it does not wait for such
    declines), say nothing about a job type this agent does not serve.

    ``standing`` is an offer still open for the same request and manager (the
    request was broadcast again): it is sent again rather than doubled, even at
    the per-manager cap (``offers_to_manager`` counts it already).
    Returns the new offer to store (None when declining or repeating).
    """
    site = pb.Site(
        site_identifier=policy.site_identifier,
        site_uuid=node_uuid.bytes,
        site_contact=policy.site_contact,
    )
    if standing is not None and standing.state == OfferState.OPEN and now < standing.expires_at:
        return None, Send(reply_to, _offer_message(standing, site, load, policy))
    if silent_about_unserved and request.job_type_name not in catalogue:
        return None, None
    names = [parameter.key for parameter in request.parameters]
    reason = decline_reason(
        request.job_type_name, names, reply_to, catalogue, load, policy, offers_to_manager
    )
    if reason:
        decline = pb.JobFulfillmentDecline(
            request_uuid=request.request_uuid, site=site, decline_message=reason
        )
        return None, Send(reply_to, decline)
    offer = Offer(
        offer_uuid=new_id(),
        request_uuid=uuid.UUID(bytes=request.request_uuid).hex,
        job_type=request.job_type_name,
        manager_key=reply_to,
        parameters=[parameter.key for parameter in request.parameters],
        state=OfferState.OPEN,
        created_at=now,
        expires_at=now + policy.offer_ttl,
    )
    return offer, Send(reply_to, _offer_message(offer, site, load, policy))


def _offer_message(
    offer: Offer, site: pb.Site, load: Load, policy: Policy
) -> pb.JobFulfillmentOffer:
    expiration = Timestamp()
    expiration.FromNanoseconds(int(offer.expires_at * 1e9))
    return pb.JobFulfillmentOffer(
        request_uuid=raw(offer.request_uuid),
        offer_uuid=raw(offer.offer_uuid),
        site=site,
        offer_message=f"{policy.site_identifier or 'agent'} can run {offer.job_type}",
        expiration=expiration,
        load=pb.AgentLoad(slots=policy.slots, running=load.running, reserved=load.reserved),
    )


def on_accept(
    offer: Offer,
    existing: AgentJob | None,
    reply_to: str,
    now: float,
    *,
    new_id: NewId = random_ids,
) -> tuple[AgentJob | None, list[Send]]:
    """Turn an accepted offer into a pending job (the same job if asked again)."""
    if existing is not None:
        return None, [Send(existing.manager_key, _accepted(existing))]
    if offer.state != OfferState.OPEN:
        raise OfferUnavailable(f"offer {offer.offer_uuid} is {offer.state}")
    if now > offer.expires_at:
        offer.state = OfferState.EXPIRED
        raise OfferUnavailable(f"offer {offer.offer_uuid} expired")
    if reply_to != offer.manager_key:
        raise OfferUnavailable(f"offer {offer.offer_uuid} was made to {offer.manager_key!r}")
    job = AgentJob(
        job_uuid=new_id(),
        offer_uuid=offer.offer_uuid,
        request_uuid=offer.request_uuid,
        job_type=offer.job_type,
        manager_key=offer.manager_key,
        expected_inputs=list(offer.parameters),
        created_at=now,
        updated_at=now,
    )
    job.set_status(JobStatus.PENDING, now, "offer accepted")
    offer.state = OfferState.ACCEPTED
    offer.job_uuid = job.job_uuid
    sends = [Send(job.manager_key, _accepted(job))]
    sends += queue_if_ready(job, now)  # a job type without inputs is ready at once
    return job, sends


def _accepted(job: AgentJob) -> pb.JobAccepted:
    return pb.JobAccepted(job_uuid=raw(job.job_uuid), offer_uuid=raw(job.offer_uuid))


def status_update(job: AgentJob) -> Send:
    info = (
        job.reason
        if job.status == JobStatus.FAILED
        else (job.history[-1].info if job.history else "")
    )
    message = pb.JobStatusUpdate(
        job_uuid=raw(job.job_uuid), job_status=_WIRE_STATUS[job.status], status_info=info
    )
    return Send(job.manager_key, message)


def on_data(job: AgentJob, msg: pb.JobDataAvailable, now: float) -> list[Send]:
    """Record inputs; once all have arrived the job is queued to run."""
    if job.status != JobStatus.PENDING:
        return []  # already has everything (a repeat) or finished
    for parameter in msg.parameters:
        if parameter.key in job.expected_inputs:
            job.inputs[parameter.key] = parameter.value
    job.updated_at = now
    return queue_if_ready(job, now)


def queue_if_ready(job: AgentJob, now: float) -> list[Send]:
    if job.status != JobStatus.PENDING or any(n not in job.inputs for n in job.expected_inputs):
        return []
    job.ready_at = now
    job.set_status(JobStatus.QUEUED, now, "all inputs arrived")
    return _progress(job)


def _progress(job: AgentJob) -> list[Send]:
    """News that a job moved on (queued, running): none for a job assigned under a
    claim, whose manager hears only the outcome, or asks."""
    return [] if job.claim_uuid else [status_update(job)]


def on_kill(job: AgentJob, msg: pb.JobKill, now: float) -> list[Send]:
    if job.status.finished:
        return []
    job.reason = f"killed: {msg.kill_info}" if msg.kill_info else "killed"
    job.set_status(JobStatus.FAILED, now, job.reason)
    return [status_update(job)]


def on_reject(offer: Offer, reply_to: str) -> bool:
    """The manager took another offer: free this one's reservation (True when that
    changed the offer). Only the manager it was made to may reject it."""
    if reply_to != offer.manager_key:
        raise OfferUnavailable(f"offer {offer.offer_uuid} was made to {offer.manager_key!r}")
    if offer.state != OfferState.OPEN:
        return False  # accepted, expired or rejected already
    offer.state = OfferState.REJECTED
    return True


def take_slot(job: AgentJob, spec: JobTypeSpec | None, now: float) -> list[Send]:
    """Start a ready job in a free slot; fail it if its job type is gone meanwhile
    (an operator removed it while the job waited)."""
    if spec is None:
        job.reason = f"job type {job.job_type!r} no longer exists on this agent"
        job.set_status(JobStatus.FAILED, now, job.reason)
        return [status_update(job)]
    return job_started(job, now)


def job_started(job: AgentJob, now: float) -> list[Send]:
    job.runs += 1
    job.set_status(JobStatus.RUNNING, now, f"run {job.runs} started")
    return _progress(job)


def job_finished(
    job: AgentJob,
    result: JobResult,
    now: float,
    claim: pb.Claim | None = None,
    waiting: Mapping[str, AgentJob] | None = None,
) -> list[Send]:
    """Report the outcome: outputs first, then the status, so the manager can finish
    the step as soon as it sees COMPLETED; for a job assigned under a claim, both in
    one JobFinished that also carries the claim (``claim``, renewed) when it lives.
    A job that completed fills the inputs linked to its outputs of the ``waiting``
    jobs (those its ``feeds`` name; see ``caroni.agent.links``), which the caller saves."""
    if job.status != JobStatus.RUNNING:
        return []  # killed meanwhile; its outcome no longer matters
    job.stdout_tail = result.stdout_tail
    job.stderr_tail = result.stderr_tail
    job.warnings = list(result.warnings)
    filled: list[InputLink] = []
    if result.ok:
        job.outputs = dict(result.outputs)
        job.set_status(JobStatus.COMPLETED, now, f"finished in {result.duration:.2f}s")
        filled = links.fill(job, waiting or {})
        for link in filled:
            queue_if_ready((waiting or {})[link.job_uuid], now)  # claimed: no news to send
    else:
        job.reason = result.reason
        job.set_status(JobStatus.FAILED, now, result.reason)
        job.feeds = []  # those inputs come from the manager, from another attempt
    outputs = [pb.JobParameter(key=k, value=v) for k, v in job.outputs.items()]
    if job.claim_uuid:
        finished = pb.JobFinished(
            job_uuid=raw(job.job_uuid),
            job_status=_WIRE_STATUS[job.status],
            status_info=job.reason or job.history[-1].info,
            parameters=outputs,
            filled=links.wire(filled),
            filled_from=links.wire(job.filled_from),
        )
        if claim is not None:
            finished.claim.CopyFrom(claim)
        return [Send(job.manager_key, finished)]
    if not result.ok:
        return [status_update(job)]
    data = pb.JobDataAvailable(job_uuid=raw(job.job_uuid), parameters=outputs)
    return [Send(job.manager_key, data), status_update(job)]
