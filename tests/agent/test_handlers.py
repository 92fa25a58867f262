"""The agent's protocol as pure functions: no broker, no database, no processes."""

from __future__ import annotations

import uuid

import pytest

from caroni.agent import handlers
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import JobResult, JobStatus, Load, OfferState, Policy
from caroni.protocol import pb

MANAGER = "wf.manager.MMMMMMMMMMMMMMMMMMMMMM"
CATALOGUE = {
    "upper": JobTypeSpec("upper", ("message",), ("out",), "true"),
    "pair": JobTypeSpec("pair", ("a", "b"), ("joined",), "true"),
}
IDLE = Load(running=0, reserved=0)
NODE = uuid.uuid4()


def request(job_type: str, *keys: str) -> pb.JobFulfillmentRequest:
    return pb.JobFulfillmentRequest(
        request_uuid=uuid.uuid4().bytes,
        job_type_name=job_type,
        parameters=[pb.JobParameter(key=k) for k in keys],
    )


def offer_for(  # type: ignore[no-untyped-def]
    req: pb.JobFulfillmentRequest,
    load: Load = IDLE,
    policy: Policy | None = None,
    offers_to_manager: int = 0,
):
    return handlers.on_request(
        req,
        MANAGER,
        catalogue=CATALOGUE,
        load=load,
        policy=policy or Policy(site_identifier="here"),
        node_uuid=NODE,
        now=100.0,
        offers_to_manager=offers_to_manager,
    )


def accepted_job(*keys: str, job_type: str = "pair"):  # type: ignore[no-untyped-def]
    offer, _ = offer_for(request(job_type, *keys))
    job, sends = handlers.on_accept(offer, None, MANAGER, 101.0)
    return offer, job, sends


def data(job_uuid: str, **values: str) -> pb.JobDataAvailable:
    return pb.JobDataAvailable(
        job_uuid=uuid.UUID(hex=job_uuid).bytes,
        parameters=[pb.JobParameter(key=k, value=v) for k, v in values.items()],
    )


def test_offers_for_a_known_job_type_with_the_same_input_names() -> None:
    req = request("pair", "b", "a")
    offer, send = offer_for(req)
    assert offer is not None and offer.state == OfferState.OPEN
    assert send.to == MANAGER
    message = send.message
    assert isinstance(message, pb.JobFulfillmentOffer)
    assert message.request_uuid == req.request_uuid
    assert message.offer_uuid == uuid.UUID(hex=offer.offer_uuid).bytes
    assert message.site.site_identifier == "here" and message.site.site_uuid == NODE.bytes
    assert message.expiration.ToNanoseconds() == int(offer.expires_at * 1e9)
    assert message.load.slots == 2


@pytest.mark.parametrize(
    ("req", "load", "reason"),
    [
        (request("nosuch", "a"), IDLE, "no job type 'nosuch' here"),
        (request("pair", "a"), IDLE, "takes inputs ['a', 'b'], the request names ['a']"),
        (request("pair", "a", "b", "c"), IDLE, "the request names ['a', 'b', 'c']"),
        (request("pair", "a", "b"), Load(running=0, reserved=1000), "full"),
    ],
)
def test_declines_with_a_reason(req: pb.JobFulfillmentRequest, load: Load, reason: str) -> None:
    offer, send = offer_for(req, load)
    assert offer is None
    assert isinstance(send.message, pb.JobFulfillmentDecline)
    assert reason in send.message.decline_message


def test_accept_creates_one_pending_job_and_a_repeat_returns_the_same_job() -> None:
    offer, job, sends = accepted_job("a", "b")
    assert job is not None and job.status == JobStatus.PENDING
    assert offer.state == OfferState.ACCEPTED and offer.job_uuid == job.job_uuid
    assert [type(s.message) for s in sends] == [pb.JobAccepted]
    again_job, again = handlers.on_accept(offer, job, MANAGER, 102.0)
    assert again_job is None
    assert [s.message for s in again] == [s.message for s in sends]


def test_accept_of_an_expired_or_foreign_offer_is_refused() -> None:
    offer, _ = offer_for(request("upper", "message"))
    with pytest.raises(handlers.OfferUnavailable, match="was made to"):
        handlers.on_accept(offer, None, "wf.manager.other", 101.0)
    with pytest.raises(handlers.OfferUnavailable, match="expired"):
        handlers.on_accept(offer, None, MANAGER, offer.expires_at + 1)


def test_a_job_is_queued_only_when_every_input_arrived_and_repeats_change_nothing() -> None:
    _, job, _ = accepted_job("a", "b")
    assert handlers.on_data(job, data(job.job_uuid, a="1"), 102.0) == []
    assert job.status == JobStatus.PENDING
    sends = handlers.on_data(job, data(job.job_uuid, b="2", unexpected="x"), 103.0)
    assert job.status == JobStatus.QUEUED and job.inputs == {"a": "1", "b": "2"}
    assert sends[0].message.job_status == pb.JOB_STATUS_QUEUED
    assert handlers.on_data(job, data(job.job_uuid, b="2"), 104.0) == []


def test_success_sends_outputs_then_completed_and_failure_sends_the_reason() -> None:
    _, job, _ = accepted_job("a", "b")
    handlers.on_data(job, data(job.job_uuid, a="1", b="2"), 102.0)
    handlers.job_started(job, 103.0)
    ok = JobResult(True, {"joined": "1+2"}, "", 0, "", "", (), 0.1)
    sends = handlers.job_finished(job, ok, 104.0)
    assert [type(s.message) for s in sends] == [pb.JobDataAvailable, pb.JobStatusUpdate]
    assert [(p.key, p.value) for p in sends[0].message.parameters] == [("joined", "1+2")]
    assert sends[1].message.job_status == pb.JOB_STATUS_COMPLETED
    assert [h.status for h in job.history] == ["pending", "queued", "running", "completed"]

    _, job2, _ = accepted_job("a", "b")
    handlers.on_data(job2, data(job2.job_uuid, a="1", b="2"), 102.0)
    handlers.job_started(job2, 103.0)
    bad = JobResult(False, {}, "exit code 3; stderr: nope", 3, "", "nope", (), 0.1)
    sends = handlers.job_finished(job2, bad, 104.0)
    assert sends[0].message.job_status == pb.JOB_STATUS_FAILED
    assert sends[0].message.status_info == "exit code 3; stderr: nope"


def test_a_killed_job_fails_once_and_its_late_result_is_dropped() -> None:
    _, job, _ = accepted_job("a", "b")
    handlers.on_data(job, data(job.job_uuid, a="1", b="2"), 102.0)
    handlers.job_started(job, 103.0)
    kill = pb.JobKill(job_uuid=uuid.UUID(hex=job.job_uuid).bytes, kill_info="workflow cancelled")
    sends = handlers.on_kill(job, kill, 104.0)
    assert job.status == JobStatus.FAILED and job.reason == "killed: workflow cancelled"
    assert sends[0].message.job_status == pb.JOB_STATUS_FAILED
    assert handlers.on_kill(job, kill, 105.0) == []
    ok = JobResult(True, {"joined": "x"}, "", 0, "", "", (), 0.1)
    assert handlers.job_finished(job, ok, 106.0) == []


def test_a_request_broadcast_again_gets_the_same_open_offer() -> None:
    req = request("upper", "message")
    offer, first = offer_for(req)
    assert offer is not None
    again, second = handlers.on_request(
        req,
        MANAGER,
        catalogue=CATALOGUE,
        load=IDLE,
        policy=Policy(),
        node_uuid=NODE,
        now=101.0,
        offers_to_manager=1,
        standing=offer,
    )
    assert again is None
    assert second.message.offer_uuid == first.message.offer_uuid
    expired_offer, _ = handlers.on_request(
        req,
        MANAGER,
        catalogue=CATALOGUE,
        load=IDLE,
        policy=Policy(),
        node_uuid=NODE,
        now=offer.expires_at + 1,
        offers_to_manager=1,
        standing=offer,
    )
    assert expired_offer is not None and expired_offer.offer_uuid != offer.offer_uuid


def test_offers_to_one_manager_are_capped_but_a_standing_offer_is_sent_again() -> None:
    policy = Policy(max_offers_per_manager=3)
    below, _ = offer_for(request("upper", "message"), policy=policy, offers_to_manager=2)
    assert below is not None
    req = request("upper", "message")
    at_cap, send = offer_for(req, policy=policy, offers_to_manager=3)
    assert at_cap is None
    assert send.message.decline_message == (
        "too many open offers to this manager: 3 (limit 3 per manager)"
    )
    # A request broadcast again still gets the offer already made for it.
    again, resent = handlers.on_request(
        request("upper", "message"),
        MANAGER,
        catalogue=CATALOGUE,
        load=IDLE,
        policy=policy,
        node_uuid=NODE,
        now=101.0,
        offers_to_manager=3,
        standing=below,
    )
    assert again is None and resent.message.offer_uuid == uuid.UUID(below.offer_uuid).bytes


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        (Policy(), True),
        (Policy(allow_managers=frozenset({MANAGER})), True),
        (Policy(allow_managers=frozenset({MANAGER.rsplit(".", 1)[1]})), True),
        (Policy(allow_managers=frozenset({"wf.manager.other"})), False),
        (Policy(deny_managers=frozenset({MANAGER})), False),
    ],
)
def test_an_agent_offers_only_to_the_managers_it_serves(policy: Policy, served: bool) -> None:
    offer, send = offer_for(request("upper", "message"), policy=policy)
    assert (offer is not None) == served
    if not served:
        assert send.message.decline_message == "this agent does not serve that manager"


def test_silent_about_a_job_type_it_does_not_serve_when_the_manager_said_so() -> None:
    def answer(job_type: str, load: Load = IDLE) -> object:
        _, send = handlers.on_request(
            request(job_type, "a", "b"),
            MANAGER,
            catalogue=CATALOGUE,
            load=load,
            policy=Policy(site_identifier="here"),
            node_uuid=NODE,
            now=100.0,
            offers_to_manager=0,
            silent_about_unserved=True,
        )
        return None if send is None else type(send.message)

    assert answer("no-such-type") is None
    assert answer("pair") is pb.JobFulfillmentOffer
    # A type it serves is still declined, with its reason, when it is too busy.
    assert answer("pair", Load(running=0, reserved=10_000)) is pb.JobFulfillmentDecline


def test_only_the_manager_an_offer_was_made_to_may_reject_it() -> None:
    offer, _ = offer_for(request("pair", "a", "b"))
    with pytest.raises(handlers.OfferUnavailable, match="was made to"):
        handlers.on_reject(offer, "wf.manager.SOMEONEELSESOMEONEELSE")
    assert offer.state == OfferState.OPEN
    assert handlers.on_reject(offer, MANAGER) is True
    assert offer.state == OfferState.REJECTED
    assert handlers.on_reject(offer, MANAGER) is False, "rejecting again changes nothing"


def test_a_job_whose_type_is_gone_fails_when_it_takes_a_slot() -> None:
    _, job, _ = accepted_job("a", "b")
    sends = handlers.take_slot(job, None, 200.0)
    assert job.status == JobStatus.FAILED
    assert job.reason == "job type 'pair' no longer exists on this agent"
    assert [s.message.job_status for s in sends] == [pb.JOB_STATUS_FAILED]
    _, running, _ = accepted_job("a", "b")
    sends = handlers.take_slot(running, CATALOGUE["pair"], 200.0)
    assert running.status == JobStatus.RUNNING and running.runs == 1
