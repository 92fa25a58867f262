"""Claims an agent grants (caroni.claims/1), as pure functions: granting and
renewing one with an offer, and taking or refusing a job assigned under one.

A claim is capacity this agent gives a manager of ours: jobs of the job types it
serves, assigned straight to it, up to ``Policy.claim_capacity`` live at once,
until it expires (``Policy.claim_ttl``) unless a finished job renews it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from caroni.agent.handlers import decline_reason, queue_if_ready, raw
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import AgentJob, GrantedClaim, JobStatus, Load, Policy
from caroni.core import NewId, Send, random_ids
from caroni.protocol import pb


def grant(
    live: GrantedClaim | None,
    manager_key: str,
    catalogue: Mapping[str, JobTypeSpec],
    policy: Policy,
    now: float,
    new_id: NewId = random_ids,
) -> GrantedClaim | None:
    """The claim to send a manager with an offer: the one ``live`` for it, renewed once
    half its time has passed or what it covers changed, else a new one for every job
    type served; None when the policy grants no claims."""
    if policy.claim_capacity <= 0:
        return None
    types = sorted(catalogue)
    if live is None or now >= live.expires_at:
        return GrantedClaim(
            claim_uuid=new_id(),
            manager_key=manager_key,
            job_types=types,
            capacity=policy.claim_capacity,
            created_at=now,
            expires_at=now + policy.claim_ttl,
        )
    if (
        live.expires_at - now < policy.claim_ttl / 2
        or live.job_types != types
        or live.capacity != policy.claim_capacity
    ):
        live.job_types = types
        live.capacity = policy.claim_capacity
        live.expires_at = now + policy.claim_ttl
    return live


def leaves_unanswered(
    request: pb.JobFulfillmentRequest, claim: GrantedClaim | None, jobs_under_claim: int, now: float
) -> bool:
    """Whether a request need not be answered: its manager marked it ``claims_full``
    (its claims for the job type are full; it seeks agents besides them) and
    ``claim``, the live claim this agent granted that manager, covers the type and is
    at least half used (``jobs_under_claim`` live). The manager fills such a claim
    as its jobs end, and the few places between a job's end and the next assignment
    are always in flight: an offer would only promise again what the claim holds.
    A claim used less may be one the manager does not hold (it records few), and
    goes with an offer."""
    return (
        request.claims_full
        and claim is not None
        and now < claim.expires_at
        and request.job_type_name in claim.job_types
        and jobs_under_claim > 0
        and 2 * jobs_under_claim >= claim.capacity
    )


def claim_message(claim: GrantedClaim) -> pb.Claim:
    expiration = Timestamp()
    expiration.FromNanoseconds(int(claim.expires_at * 1e9))
    return pb.Claim(
        claim_uuid=raw(claim.claim_uuid),
        job_type_names=claim.job_types,
        capacity=claim.capacity,
        expiration=expiration,
    )


def on_assignment(
    msg: pb.JobAssignment,
    reply_to: str,
    *,
    claim: GrantedClaim | None,
    existing: AgentJob | None,
    jobs_under_claim: int,
    catalogue: Mapping[str, JobTypeSpec],
    load: Load,
    policy: Policy,
    now: float,
) -> tuple[AgentJob | None, list[Send]]:
    """Take a job assigned under a claim (a pending job, queued at once when every
    input came with it), or refuse it saying why. A repeated assignment changes
    nothing. ``jobs_under_claim``: live jobs under the claim now."""
    job_uuid = uuid.UUID(bytes=msg.job_uuid).hex
    if existing is not None and existing.manager_key == reply_to:
        return None, []
    inputs = [parameter.key for parameter in msg.parameters] + list(msg.awaited_parameters)
    reason = (
        f"job {job_uuid} exists already"
        if existing is not None
        else _refusal(msg, reply_to, claim, jobs_under_claim, now)
        or decline_reason(msg.job_type_name, inputs, reply_to, catalogue, load, policy)
    )
    if reason:
        refusal = pb.JobAssignmentRefusal(
            job_uuid=msg.job_uuid, refusal_message=reason, claim_uuid=msg.claim_uuid
        )
        return None, [Send(reply_to, refusal)]
    assert claim is not None
    job = AgentJob(
        job_uuid=job_uuid,
        claim_uuid=claim.claim_uuid,
        job_type=msg.job_type_name,
        manager_key=reply_to,
        expected_inputs=inputs,
        created_at=now,
        updated_at=now,
    )
    for parameter in msg.parameters:
        job.inputs.setdefault(parameter.key, parameter.value)
    job.set_status(JobStatus.PENDING, now, f"assigned under claim {claim.claim_uuid}")
    return job, queue_if_ready(job, now)


def _refusal(
    msg: pb.JobAssignment,
    reply_to: str,
    claim: GrantedClaim | None,
    jobs_under_claim: int,
    now: float,
) -> str:
    """Why the claim an assignment names does not cover it, or ""."""
    if claim is None or claim.manager_key != reply_to:
        return "no such claim granted to this manager"
    if now >= claim.expires_at:
        return f"claim {claim.claim_uuid} expired"
    if msg.job_type_name not in claim.job_types:
        return f"claim {claim.claim_uuid} does not cover job type {msg.job_type_name!r}"
    if jobs_under_claim >= claim.capacity:
        live, capacity = jobs_under_claim, claim.capacity
        return f"claim {claim.claim_uuid} is full: {live} jobs live (capacity {capacity})"
    return ""
