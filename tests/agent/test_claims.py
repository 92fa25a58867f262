"""Claims an agent grants (caroni.claims/1), as pure functions: granting and
renewing, taking or refusing an assignment, and the one message that reports an
assigned job's outcome."""

from __future__ import annotations

import uuid

import pytest

from caroni.agent import claims, handlers
from caroni.agent.model import GrantedClaim, JobResult, JobStatus, Load, Policy
from caroni.core import counting_ids
from caroni.protocol import pb
from tests.agent.test_handlers import CATALOGUE, IDLE, MANAGER, accepted_job

OTHER_MANAGER = "wf.manager.OOOOOOOOOOOOOOOOOOOOOO"
POLICY = Policy(site_identifier="here", claim_capacity=2, claim_ttl=60.0)


def granted(now: float = 100.0) -> GrantedClaim:
    claim = claims.grant(None, MANAGER, CATALOGUE, POLICY, now, counting_ids())
    assert claim is not None
    return claim


def assignment(
    claim: GrantedClaim, job_type: str = "pair", known: dict[str, str] | None = None
) -> pb.JobAssignment:
    known = {"a": "1"} if known is None else known
    inputs = {"upper": ["message"], "pair": ["a", "b"]}.get(job_type, [])
    return pb.JobAssignment(
        claim_uuid=uuid.UUID(hex=claim.claim_uuid).bytes,
        job_uuid=uuid.uuid4().bytes,
        job_type_name=job_type,
        parameters=[pb.JobParameter(key=k, value=v) for k, v in known.items()],
        awaited_parameters=[name for name in inputs if name not in known],
    )


def assign(  # type: ignore[no-untyped-def]
    msg: pb.JobAssignment,
    claim: GrantedClaim | None,
    *,
    manager: str = MANAGER,
    under: int = 0,
    load: Load = IDLE,
    now: float = 110.0,
    existing=None,
):
    return claims.on_assignment(
        msg,
        manager,
        claim=claim,
        existing=existing,
        jobs_under_claim=under,
        catalogue=CATALOGUE,
        load=load,
        policy=POLICY,
        now=now,
    )


def test_a_claim_covers_every_type_served_and_is_renewed_at_half_time() -> None:
    claim = granted(now=100.0)
    assert claim.job_types == sorted(CATALOGUE)
    assert (claim.capacity, claim.expires_at) == (2, 160.0)
    same = claims.grant(claim, MANAGER, CATALOGUE, POLICY, 120.0)
    assert same is claim and claim.expires_at == 160.0, "no renewal before half time"
    claims.grant(claim, MANAGER, CATALOGUE, POLICY, 140.0)
    assert claim.expires_at == 200.0
    fresh = claims.grant(claim, MANAGER, CATALOGUE, POLICY, 300.0, counting_ids(7))
    assert fresh is not None and fresh.claim_uuid != claim.claim_uuid, "expired: a new one"
    assert claims.grant(None, MANAGER, CATALOGUE, Policy(claim_capacity=0), 100.0) is None


def test_an_assignment_with_every_input_is_queued_at_once_and_reports_nothing() -> None:
    claim = granted()
    msg = assignment(claim, "upper", known={"message": "hi"})
    job, sends = assign(msg, claim)
    assert job is not None and sends == []
    assert job.status == JobStatus.QUEUED and job.inputs == {"message": "hi"}
    assert job.claim_uuid == claim.claim_uuid and job.manager_key == MANAGER
    assert handlers.take_slot(job, CATALOGUE["upper"], 111.0) == [], "no RUNNING report"


def test_an_assignment_waits_for_the_inputs_it_awaits() -> None:
    claim = granted()
    job, _ = assign(assignment(claim, "pair", known={"a": "1"}), claim)
    assert job is not None and job.status == JobStatus.PENDING
    assert sorted(job.expected_inputs) == ["a", "b"]
    b = pb.JobDataAvailable(parameters=[pb.JobParameter(key="b", value="2")])
    assert handlers.on_data(job, b, 112.0) == [], "no QUEUED report"
    assert job.status == JobStatus.QUEUED and job.inputs == {"a": "1", "b": "2"}


def test_a_repeated_assignment_changes_nothing() -> None:
    claim = granted()
    msg = assignment(claim)
    job, _ = assign(msg, claim)
    again, sends = assign(msg, claim, existing=job)
    assert again is None and sends == []


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no claim", "no such claim granted to this manager"),
        ("another manager", "no such claim granted to this manager"),
        ("expired", "expired"),
        ("type not covered", "does not cover job type 'other'"),
        ("full", "is full: 2 jobs live (capacity 2)"),
        ("busy", "full: 1000 jobs reserved"),
        ("wrong inputs", "takes inputs ['a', 'b']"),
    ],
)
def test_an_assignment_the_claim_does_not_cover_is_refused_saying_why(
    case: str, reason: str
) -> None:
    claim = granted()
    msg = assignment(claim)
    kwargs: dict[str, object] = {}
    if case == "no claim":
        kwargs["claim"] = None
    elif case == "another manager":
        kwargs["manager"] = OTHER_MANAGER
    elif case == "expired":
        kwargs["now"] = 1000.0
    elif case == "type not covered":
        msg.job_type_name = "other"
    elif case == "full":
        kwargs["under"] = 2
    elif case == "busy":
        kwargs["load"] = Load(running=0, reserved=1000)
    elif case == "wrong inputs":
        del msg.awaited_parameters[:]
    job, sends = assign(msg, kwargs.pop("claim", claim), **kwargs)  # type: ignore[arg-type]
    assert job is None
    [refusal] = sends
    assert isinstance(refusal.message, pb.JobAssignmentRefusal)
    assert refusal.to == kwargs.get("manager", MANAGER)
    assert reason in refusal.message.refusal_message
    assert refusal.message.job_uuid == msg.job_uuid
    assert refusal.message.claim_uuid == msg.claim_uuid


def _finished(ok: bool) -> JobResult:
    return JobResult(
        ok=ok,
        outputs={"out": "HI"} if ok else {},
        reason="" if ok else "exit 3: boom",
        exit_code=0 if ok else 3,
        stdout_tail="",
        stderr_tail="",
        duration=0.5,
    )


@pytest.mark.parametrize("ok", [True, False])
def test_an_assigned_job_reports_its_outcome_in_one_message_that_renews_the_claim(
    ok: bool,
) -> None:
    claim = granted()
    job, _ = assign(assignment(claim, "upper", known={"message": "hi"}), claim)
    assert job is not None
    handlers.take_slot(job, CATALOGUE["upper"], 111.0)
    claim.expires_at = 175.0  # as renewed by the shell
    [send] = handlers.job_finished(job, _finished(ok), 115.0, claims.claim_message(claim))
    message = send.message
    assert isinstance(message, pb.JobFinished) and send.to == MANAGER
    if ok:
        assert message.job_status == pb.JOB_STATUS_COMPLETED
        assert [(p.key, p.value) for p in message.parameters] == [("out", "HI")]
    else:
        assert message.job_status == pb.JOB_STATUS_FAILED
        assert message.status_info == "exit 3: boom"
    assert uuid.UUID(bytes=message.claim.claim_uuid).hex == claim.claim_uuid
    assert message.claim.expiration.ToNanoseconds() == 175 * 10**9


def test_a_job_placed_by_offer_still_reports_as_the_shared_protocol_says() -> None:
    _, job, _ = accepted_job("a", "b")
    job.inputs = {"a": "1", "b": "2"}
    handlers.take_slot(job, CATALOGUE["pair"], 200.0)
    sends = handlers.job_finished(job, _finished(True), 201.0)
    assert [type(s.message) for s in sends] == [pb.JobDataAvailable, pb.JobStatusUpdate]


@pytest.mark.parametrize(
    ("marked", "job_type", "under", "now", "silent"),
    [
        (True, "pair", 2, 110.0, True),  # the claim is full: the manager knows
        (True, "pair", 1, 110.0, True),  # half used: the manager fills it as jobs end
        (True, "pair", 0, 110.0, False),  # unused: maybe not held; offer with the claim
        (False, "pair", 2, 110.0, False),  # not marked: the shared protocol's answer
        (True, "other", 2, 110.0, False),  # a type the claim does not cover
        (True, "pair", 2, 161.0, False),  # the claim expired
    ],
)
def test_a_request_marked_claims_full_is_left_to_a_claim_used_enough(
    marked: bool, job_type: str, under: int, now: float, silent: bool
) -> None:
    claim = granted()
    assert claim.capacity == 2
    request = pb.JobFulfillmentRequest(job_type_name=job_type, claims_full=marked)
    assert claims.leaves_unanswered(request, claim, under, now) is silent
    assert not claims.leaves_unanswered(request, None, under, now), "no claim for this manager"
