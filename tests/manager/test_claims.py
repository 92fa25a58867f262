"""Claims a manager holds (caroni.claims/1), as pure functions: which claim a step
goes to, what an assignment carries, and what a refusal or a JobFinished does."""

from __future__ import annotations

import uuid
from collections import Counter

from google.protobuf.timestamp_pb2 import Timestamp

from caroni.core import Send, counting_ids
from caroni.manager.claims import ENOUGH_CLAIMS, MAX_CLAIM_LEASE, ClaimBook
from caroni.manager.handlers import DEFAULT_TIMINGS, on_finished, on_tick, request_message
from caroni.manager.handlers.claims import assign_claimed, assign_waiting, on_refusal
from caroni.manager.model import AttemptState, StepState, Workflow, WorkflowState
from caroni.protocol import pb
from tests.manager.test_handlers import AGENT, OTHER_AGENT, new_workflow, of_type

NOW = 1000.0
ALL_TYPES = ("foojob0", "foojob1", "foojob2")


def claim_message(
    capacity: int = 10, expires_at: float = NOW + 60, types: tuple[str, ...] = ALL_TYPES
) -> pb.Claim:
    expiration = Timestamp()
    expiration.FromNanoseconds(int(expires_at * 1e9))
    return pb.Claim(
        claim_uuid=uuid.uuid4().bytes,
        job_type_names=types,
        capacity=capacity,
        expiration=expiration,
    )


def book_with(*grants: tuple[str, pb.Claim]) -> ClaimBook:
    book = ClaimBook()
    for agent, msg in grants:
        book.grant(msg, agent, "site", NOW)
    return book


def test_the_claim_with_most_room_is_picked_and_only_while_it_lives() -> None:
    small, large = claim_message(capacity=1), claim_message(capacity=5)
    book = book_with((AGENT, small), (OTHER_AGENT, large))
    picked = book.pick("foojob0", NOW)
    assert picked is not None and picked.agent_key == OTHER_AGENT
    assert book.pick("unknown", NOW) is None
    assert book.pick("foojob0", NOW + 61) is None, "expired"
    lease = book_with((AGENT, claim_message(expires_at=NOW + 10 * MAX_CLAIM_LEASE)))
    [held] = lease.claims.values()
    assert held.expires_at == NOW + MAX_CLAIM_LEASE, "a far expiry is cut to the longest lease"


def test_only_the_granting_agent_shrinks_or_revokes_a_claim() -> None:
    msg = claim_message(capacity=4)
    book = book_with((AGENT, msg))
    claim_uuid = uuid.UUID(bytes=msg.claim_uuid).hex
    revoke = pb.Claim()
    revoke.CopyFrom(msg)
    revoke.capacity = 0
    book.grant(revoke, OTHER_AGENT, "", NOW)
    assert claim_uuid in book.claims, "another agent cannot revoke it"
    shrink = pb.Claim()
    shrink.CopyFrom(msg)
    shrink.capacity = 2
    book.grant(shrink, AGENT, "", NOW)
    assert book.claims[claim_uuid].capacity == 2
    book.grant(revoke, AGENT, "", NOW)
    assert claim_uuid not in book.claims and claim_uuid in book.dropped


def test_a_manager_records_new_claims_only_while_it_lacks_room() -> None:
    agents = [f"wf.agent.{n:022d}" for n in range(ENOUGH_CLAIMS + 1)]
    book = book_with(*((agent, claim_message(capacity=1)) for agent in agents[:-1]))
    late = claim_message(capacity=1)
    book.grant(late, agents[-1], "", NOW)
    late_uuid = uuid.UUID(bytes=late.claim_uuid).hex
    assert late_uuid not in book.claims, "enough claims with room: not recorded"
    assert len(book.claims) == ENOUGH_CLAIMS
    for claim in list(book.claims.values()):  # every held claim is full
        book.take(claim)
    book.grant(late, agents[-1], "", NOW + 1)
    assert late_uuid in book.claims, "the held claims are full: recorded now"
    held = next(iter(book.claims.values()))
    renewal = claim_message(capacity=1, expires_at=NOW + 90)
    renewal.claim_uuid = uuid.UUID(hex=held.claim_uuid).bytes
    book.grant(renewal, held.agent_key, "", NOW + 2)
    assert book.claims[held.claim_uuid].expires_at == NOW + 90, "a held claim is renewed"


def test_steps_a_claim_covers_are_assigned_with_the_inputs_known() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message()))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    assert of_type(sends, pb.JobFulfillmentRequest) == []
    assignments = [s.message for s in of_type(sends, pb.JobAssignment)]
    assert {s.to for s in sends} == {AGENT}
    assert [a.job_type_name for a in assignments] == list(ALL_TYPES)
    first, second, _ = assignments
    assert [(p.key, p.value) for p in first.parameters] == [("message", "caronirocks")]
    assert list(first.awaited_parameters) == []
    assert list(second.parameters) == [] and list(second.awaited_parameters) == ["text"]
    assert of_type(sends, pb.JobDataAvailable) == [], "the known input rode the assignment"
    assert workflow.placed
    for step in workflow.steps.values():
        attempt = step.current
        assert attempt is not None and attempt.state == AttemptState.PENDING
        assert attempt.agent_key == AGENT and attempt.agent_is_ours and attempt.job_uuid
    assert workflow.claims_in_use() == {next(iter(book.claims)): 3}


def test_steps_past_a_claims_room_are_requested() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message(capacity=1, types=("foojob0", "foojob1"))))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    assert len(of_type(sends, pb.JobAssignment)) == 1
    assert [s.message.job_type_name for s in of_type(sends, pb.JobFulfillmentRequest)] == [
        "foojob1",
        "foojob2",
    ]
    assert not workflow.placed, "not every step has a job"
    [assigned] = of_type(sends, pb.JobAssignment)
    assert [(p.key, p.value) for p in assigned.message.parameters] == [
        ("message", "caronirocks")
    ], "a job of ours gets its inputs at once, placed or not"


def test_a_refused_assignment_is_requested_by_broadcast_and_never_assigned_again() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message()))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    first = of_type(sends, pb.JobAssignment)[0].message
    refusal = pb.JobAssignmentRefusal(
        job_uuid=first.job_uuid, refusal_message="full", claim_uuid=first.claim_uuid
    )
    again = on_refusal(workflow, refusal, AGENT, NOW + 1)
    step = workflow.steps["step1"]
    assert step.state == StepState.WAITING and step.current is not None
    assert step.current.state == AttemptState.REQUESTING and step.current.unclaimed
    assert len(step.attempts) == 1, "a refusal costs no attempt"
    [request] = of_type(again, pb.JobFulfillmentRequest)
    assert assign_claimed(workflow, again, book, NOW + 1, counting_ids(9)) == again
    assert on_refusal(workflow, refusal, AGENT, NOW + 2) == [], "a repeat changes nothing"
    assert request.message.job_type_name == "foojob0"


def test_job_finished_completes_a_step_and_feeds_the_next_job() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message()))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    first, second, _ = (s.message for s in of_type(sends, pb.JobAssignment))
    done = pb.JobFinished(
        job_uuid=first.job_uuid,
        job_status=pb.JOB_STATUS_COMPLETED,
        parameters=[pb.JobParameter(key="jobout", value="X")],
    )
    out = on_finished(workflow, done, AGENT, NOW + 1)
    assert workflow.steps["step1"].state == StepState.COMPLETED
    [data] = of_type(out, pb.JobDataAvailable)
    assert data.message.job_uuid == second.job_uuid
    assert [(p.key, p.value) for p in data.message.parameters] == [("text", "X")]
    assert on_finished(workflow, done, AGENT, NOW + 2) == [], "a repeat changes nothing"


def test_a_failed_job_finished_requests_the_step_again() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message()))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    first = of_type(sends, pb.JobAssignment)[0].message
    failed = pb.JobFinished(
        job_uuid=first.job_uuid, job_status=pb.JOB_STATUS_FAILED, status_info="exit 3"
    )
    out = on_finished(workflow, failed, AGENT, NOW + 1)
    step = workflow.steps["step1"]
    assert step.attempts[0].state == AttemptState.FAILED and step.attempts[0].reason == "exit 3"
    assert len(step.attempts) == 2 and len(of_type(out, pb.JobFulfillmentRequest)) == 1
    assert workflow.state == WorkflowState.RUNNING


def test_a_job_lost_with_a_silent_agent_is_requested_and_its_claim_dropped() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message()))
    claim_uuid = next(iter(book.claims))
    assign_claimed(workflow, requests, book, NOW, counting_ids())
    lease = DEFAULT_TIMINGS.job_lease
    sends = on_tick(workflow, NOW + lease + 1, new_id=counting_ids(5))
    sends = assign_claimed(workflow, sends, book, NOW + lease + 1, counting_ids(6))
    assert claim_uuid not in book.claims and claim_uuid in book.dropped
    assert of_type(sends, pb.JobAssignment) == [], "nothing more for the silent agent"
    assert len(of_type(sends, pb.JobFulfillmentRequest)) == 3
    step = workflow.steps["step1"]
    assert step.attempts[0].state == AttemptState.ABANDONED and step.attempts[0].lease_expired


def test_a_step_tried_again_goes_to_another_claim() -> None:
    workflow, requests = new_workflow()
    first_claim = claim_message(capacity=10)
    book = book_with((AGENT, first_claim))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    first = of_type(sends, pb.JobAssignment)[0].message
    book.grant(claim_message(capacity=1), OTHER_AGENT, "", NOW)
    failed = pb.JobFinished(job_uuid=first.job_uuid, job_status=pb.JOB_STATUS_FAILED)
    retry = on_finished(workflow, failed, AGENT, NOW + 1, new_id=counting_ids(3))
    [assigned] = assign_claimed(workflow, retry, book, NOW + 1, counting_ids(4))
    assert assigned.to == OTHER_AGENT, "not the claim it failed under"


def test_a_step_whose_claims_are_full_waits_for_room_instead_of_being_requested() -> None:
    workflow, requests = new_workflow()
    book = book_with((AGENT, claim_message(capacity=1)))
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids(), hold=10.0)
    assert len(of_type(sends, pb.JobAssignment)) == 1
    assert of_type(sends, pb.JobFulfillmentRequest) == [], "held: the claim's agent is busy"
    assert set(workflow.waiting_steps()) == {"step2", "step3"}
    # Room again (its job ended): the waiting steps are assigned, nothing requested.
    book.recount(Counter())  # of the one job taken, none is left
    placed = assign_waiting(workflow, book, NOW + 1, counting_ids(2))
    assert [s.message.job_type_name for s in placed] == ["foojob1"]
    assert set(workflow.waiting_steps()) == {"step3"}
    # Held no longer than ``hold``: then requested from every agent as well.
    step3 = workflow.steps["step3"]
    assert step3.current is not None
    later = [Send("x", request_message(step3, step3.current))]
    assert assign_claimed(workflow, later, book, NOW + 11, counting_ids(3), hold=10.0) == later
    # Marked: agents whose claims are full need not answer; others are sought.
    assert later[0].message.claims_full


def test_one_waiting_step_of_a_type_at_a_time_seeks_other_agents() -> None:
    book = book_with((AGENT, claim_message(capacity=1)))
    first, first_requests = new_workflow()
    assign_claimed(first, first_requests, book, NOW, counting_ids(), hold=10.0)  # the room
    seeking: dict[str, tuple[str, float]] = {}

    def requested(workflow: Workflow, at: float) -> list[Send]:
        step = workflow.steps["step1"]
        assert step.current is not None
        copies = [Send(to, request_message(step, step.current)) for to in ("typed", "plain")]
        sent = assign_claimed(workflow, copies, book, at, counting_ids(), 10.0, seeking)
        return of_type(sent, pb.JobFulfillmentRequest)

    seeker, other = new_workflow()[0], new_workflow()[0]
    assert requested(seeker, NOW) == requested(other, NOW) == [], "held: the claim frees room"
    assert [s.to for s in requested(seeker, NOW + 11)] == ["typed", "plain"], "both copies seek"
    assert requested(other, NOW + 12) == [], "one request of the type seeks at a time"
    assert len(requested(seeker, NOW + 15)) == 2, "the seeker broadcasts again"
    assert len(requested(other, NOW + 21)) == 2, "after hold, another step may seek"


def test_only_a_request_that_waited_for_full_claims_is_marked_claims_full() -> None:
    workflow, requests = new_workflow()
    sends = assign_claimed(workflow, requests, ClaimBook(), NOW, counting_ids(), hold=10.0)
    assert [s.message.claims_full for s in sends] == [False] * 3, "no claim held"
    book = book_with((AGENT, claim_message(types=("foojob0",))))
    sends = assign_claimed(workflow, requests, book, NOW + 11, counting_ids(), hold=10.0)
    [assigned] = of_type(sends, pb.JobAssignment)
    refusal = pb.JobAssignmentRefusal(
        job_uuid=assigned.message.job_uuid, refusal_message="full", claim_uuid=b""
    )
    again = on_refusal(workflow, refusal, AGENT, NOW + 12)
    kept = assign_claimed(workflow, again, book, NOW + 12, counting_ids(5), hold=10.0)
    assert [s.message.claims_full for s in kept] == [False] * len(kept), (
        "refused: every agent may offer, the refusing one too"
    )
