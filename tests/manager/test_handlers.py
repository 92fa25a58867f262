"""The manager's protocol as pure functions: no broker, no database."""

from __future__ import annotations

import uuid

import pytest

from caroni.core import Send, counting_ids
from caroni.errors import SetAside
from caroni.manager import handlers
from caroni.manager.handlers import raw_of
from caroni.manager.handlers.attempts import route_requests
from caroni.manager.model import AttemptState, Step, StepState, Workflow, WorkflowState
from caroni.manager.templates import Source, StepSpec, Template
from caroni.protocol import FULFILLMENT_KEY, pb

AGENT = "wf.agent.AAAAAAAAAAAAAAAAAAAAAA"
OTHER_AGENT = "wf.agent.BBBBBBBBBBBBBBBBBBBBBB"
CLIENT = "wf.client.CCCCCCCCCCCCCCCCCCCCCC"


def chain_template() -> Template:
    steps = {
        "step1": StepSpec(
            "step1", "foojob0", {"message": Source(None, "start_message")}, ("jobout",), {}
        ),
        "step2": StepSpec("step2", "foojob1", {"text": Source("step1", "jobout")}, ("outSB",), {}),
        "step3": StepSpec(
            "step3", "foojob2", {"final_text": Source("step2", "outSB")}, ("out",), {}
        ),
    }
    return Template(
        name="test_simple",
        inputs=("start_message",),
        outputs={"result": Source("step3", "out")},
        steps=steps,
        text="",
    )


def new_workflow(
    max_attempts: int = 5, inputs: dict[str, str] | None = None
) -> tuple[Workflow, list[Send]]:
    return handlers.create_workflow(
        chain_template(),
        workflow_id=uuid.uuid4().hex,
        template_name="test_simple",
        name="t",
        inputs={"start_message": "caronirocks"} if inputs is None else inputs,
        submitter=CLIENT,
        max_attempts=max_attempts,
        now=1000.0,
    )


def of_type(sends: list[Send], kind: type) -> list[Send]:
    return [s for s in sends if isinstance(s.message, kind)]


class FakeAgent:
    """Answers the manager as an agent would, remembering the jobs it created."""

    def __init__(self, key: str = AGENT, *, ours: bool = True) -> None:
        self.key = key
        self.ours = ours  # a Caroni node like the manager (its envelopes name their sender)
        self.jobs: dict[str, bytes] = {}  # step name -> job uuid

    def offer(self, request: pb.JobFulfillmentRequest) -> pb.JobFulfillmentOffer:
        return pb.JobFulfillmentOffer(
            request_uuid=request.request_uuid,
            offer_uuid=uuid.uuid4().bytes,
            site=pb.Site(site_identifier="fake"),
        )

    def accepted(self, accept: pb.JobFulfillmentOfferAccept) -> pb.JobAccepted:
        return pb.JobAccepted(job_uuid=uuid.uuid4().bytes, offer_uuid=accept.offer_uuid)


def place_all(workflow: Workflow, requests: list[Send], agent: FakeAgent) -> list[Send]:
    """Offer, accept and create a job for every request; returns what the manager sent last."""
    out: list[Send] = []
    for send in requests:
        offer = agent.offer(send.message)
        accept = handlers.on_offer(workflow, offer, agent.key, 1001.0, ours=agent.ours)
        assert [type(s.message) for s in accept] == [pb.JobFulfillmentOfferAccept]
        out = handlers.on_job_accepted(
            workflow, agent.accepted(accept[0].message), agent.key, 1002.0
        )
    return out


def job_of(workflow: Workflow, step: str) -> bytes:
    current = workflow.steps[step].current
    assert current is not None and current.job_uuid is not None
    return uuid.UUID(hex=current.job_uuid).bytes


def complete(
    workflow: Workflow, step: str, outputs: dict[str, str], sender: str = AGENT
) -> list[Send]:
    job = job_of(workflow, step)
    data = pb.JobDataAvailable(
        job_uuid=job, parameters=[pb.JobParameter(key=k, value=v) for k, v in outputs.items()]
    )
    sends = handlers.on_data(workflow, data, sender, 1003.0)
    done = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED)
    return sends + handlers.on_status_update(workflow, done, sender, 1004.0)


def fail(workflow: Workflow, step: str, reason: str) -> list[Send]:
    update = pb.JobStatusUpdate(
        job_uuid=job_of(workflow, step), job_status=pb.JOB_STATUS_FAILED, status_info=reason
    )
    return handlers.on_status_update(workflow, update, AGENT, 1005.0)


def test_create_requests_every_step_with_its_input_names() -> None:
    workflow, sends = new_workflow()
    assert workflow.state == WorkflowState.RUNNING
    # First to the key of each job type (agents of ours that serve it).
    assert [s.to for s in sends] == [f"{FULFILLMENT_KEY}.foojob{n}" for n in range(3)]
    requests = [s.message for s in sends]
    assert [r.job_type_name for r in requests] == ["foojob0", "foojob1", "foojob2"]
    assert [[(p.key, p.value) for p in r.parameters] for r in requests] == [
        [("message", "")],
        [("text", "")],
        [("final_text", "")],
    ]
    assert len({r.request_uuid for r in requests}) == 3


@pytest.mark.parametrize(
    ("template", "inputs", "expected"),
    [
        (None, {"start_message": "x"}, "unknown template 'test_simple'"),
        (chain_template(), {}, "missing input(s): start_message"),
        (chain_template(), {"start_message": "x", "extra": "y"}, "unknown input(s): extra"),
    ],
)
def test_refused_workflows_fail_with_the_reason_and_tell_the_submitter(
    template: Template | None, inputs: dict[str, str], expected: str
) -> None:
    workflow, sends = handlers.create_workflow(
        template,
        workflow_id=uuid.uuid4().hex,
        template_name="test_simple",
        name="",
        inputs=inputs,
        submitter=CLIENT,
        max_attempts=5,
        now=1.0,
    )
    assert workflow.state == WorkflowState.FAILED
    assert expected in workflow.reason
    assert [(s.to, type(s.message)) for s in sends] == [(CLIENT, pb.WorkFlowStatus)]
    assert sends[0].message.state == "failed"


def test_an_input_too_large_for_a_jobs_environment_is_refused_before_any_request() -> None:
    workflow, sends = new_workflow(inputs={"start_message": "x" * 1_000_000})
    assert workflow.state == WorkflowState.FAILED
    assert workflow.reason == (
        "refused: step 'step1' cannot take its inputs: input 'message' is too large for the "
        "environment (1000020 bytes as CARONI_ENV_message; Linux allows 131072 per variable)"
    )
    assert [(s.to, type(s.message)) for s in sends] == [(CLIENT, pb.WorkFlowStatus)]
    assert sends[0].message.reason == workflow.reason
    assert all(not step.attempts for step in workflow.steps.values())


def test_an_input_that_just_fits_a_jobs_environment_is_requested() -> None:
    # "CARONI_ENV_message=" + value + NUL is exactly the kernel's 131072 bytes.
    workflow, sends = new_workflow(inputs={"start_message": "x" * (131072 - 20)})
    assert workflow.state == WorkflowState.RUNNING
    assert len(of_type(sends, pb.JobFulfillmentRequest)) == 3


def test_an_output_too_large_for_its_consumer_fails_the_workflow_without_retries() -> None:
    workflow, requests = new_workflow()
    place_all(workflow, requests, FakeAgent())
    sends = complete(workflow, "step1", {"jobout": "y" * 200_000})
    assert workflow.state == WorkflowState.FAILED
    assert workflow.reason.startswith(
        "step 'step2' cannot take its inputs (from 'step1'): input 'text' is too large for the "
        "environment (200017 bytes as CARONI_ENV_text;"
    )
    step2 = workflow.steps["step2"]
    assert step2.state == StepState.FAILED and len(step2.attempts) == 1
    assert step2.why.startswith("cannot take its inputs: input 'text' is too large")
    # Nothing is requested again and the value is never sent; the waiting jobs are killed.
    assert of_type(sends, pb.JobFulfillmentRequest) == []
    assert of_type(sends, pb.JobDataAvailable) == []
    kills = of_type(sends, pb.JobKill)
    assert {k.message.job_uuid for k in kills} == {
        job_of(workflow, "step2"),
        job_of(workflow, "step3"),
    }
    assert of_type(sends, pb.WorkFlowStatus)[0].message.reason == workflow.reason


def test_a_whole_chain_runs_and_data_flows_only_once_every_step_is_placed() -> None:
    workflow, requests = new_workflow()
    agent = FakeAgent()
    # Placing the first two steps sends no data yet: step3 has no job.
    first = handlers.on_offer(workflow, agent.offer(requests[0].message), AGENT, 1.0)
    sent = handlers.on_job_accepted(workflow, agent.accepted(first[0].message), AGENT, 1.0)
    assert of_type(sent, pb.JobDataAvailable) == []
    assert of_type(sent, pb.JobStatusRequest)[0].to == AGENT
    sent = place_all(workflow, requests[1:], agent)
    data = of_type(sent, pb.JobDataAvailable)
    assert len(data) == 1 and data[0].to == AGENT
    assert data[0].message.job_uuid == job_of(workflow, "step1")
    assert [(p.key, p.value) for p in data[0].message.parameters] == [("message", "caronirocks")]

    forwarded = complete(workflow, "step1", {"jobout": "CARONIROCKS"})
    data = of_type(forwarded, pb.JobDataAvailable)
    assert [(p.key, p.value) for p in data[0].message.parameters] == [("text", "CARONIROCKS")]
    assert data[0].message.job_uuid == job_of(workflow, "step2")
    complete(workflow, "step2", {"outSB": "prependCARONIROCKS"})
    assert workflow.state == WorkflowState.RUNNING
    final = complete(workflow, "step3", {"out": "prependCARONIROCKS append"})

    assert workflow.state == WorkflowState.COMPLETED
    assert workflow.outputs == {"result": "prependCARONIROCKS append"}
    status = of_type(final, pb.WorkFlowStatus)
    assert status[0].to == CLIENT and status[0].message.state == "completed"
    assert all(flow.state == "delivered" for flow in workflow.dataflows)


def test_outputs_before_or_after_completed_both_finish_the_step() -> None:
    workflow, requests = new_workflow()
    place_all(workflow, requests, FakeAgent())
    job = job_of(workflow, "step1")
    done = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED)
    assert handlers.on_status_update(workflow, done, AGENT, 2.0) == []
    assert workflow.steps["step1"].state != StepState.COMPLETED
    data = pb.JobDataAvailable(job_uuid=job, parameters=[pb.JobParameter(key="jobout", value="X")])
    sends = handlers.on_data(workflow, data, AGENT, 3.0)
    assert workflow.steps["step1"].state == StepState.COMPLETED
    assert len(of_type(sends, pb.JobDataAvailable)) == 1


def test_every_message_applied_twice_has_the_effect_of_once() -> None:
    workflow, requests = new_workflow()
    agent = FakeAgent()
    offer = agent.offer(requests[0].message)
    accept = handlers.on_offer(workflow, offer, AGENT, 1.0)
    again = handlers.on_offer(workflow, offer, AGENT, 1.0)
    assert [s.message for s in again] == [s.message for s in accept]  # same answer
    accepted = agent.accepted(accept[0].message)
    handlers.on_job_accepted(workflow, accepted, AGENT, 1.0)
    assert handlers.on_job_accepted(workflow, accepted, AGENT, 1.0) == []
    place_all(workflow, requests[1:], agent)
    snapshot = workflow.model_copy(deep=True)
    job = job_of(workflow, "step1")
    data = pb.JobDataAvailable(job_uuid=job, parameters=[pb.JobParameter(key="jobout", value="X")])
    done = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED)
    first = handlers.on_data(workflow, data, AGENT, 2.0) + handlers.on_status_update(
        workflow, done, AGENT, 2.0
    )
    assert len(of_type(first, pb.JobDataAvailable)) == 1
    after_once = workflow.model_dump()
    second = handlers.on_data(workflow, data, AGENT, 2.0) + handlers.on_status_update(
        workflow, done, AGENT, 2.0
    )
    assert second == []
    assert workflow.model_dump() == after_once
    assert snapshot.model_dump() != after_once


def test_a_second_offer_is_rejected() -> None:
    workflow, requests = new_workflow()
    handlers.on_offer(workflow, FakeAgent().offer(requests[0].message), AGENT, 1.0)
    late = handlers.on_offer(
        workflow, FakeAgent(OTHER_AGENT).offer(requests[0].message), OTHER_AGENT, 1.0
    )
    assert [(s.to, type(s.message)) for s in late] == [(OTHER_AGENT, pb.JobFulfillmentOfferReject)]


def test_a_failed_job_is_requested_again_and_gets_its_data_again() -> None:
    workflow, requests = new_workflow()
    agent = FakeAgent()
    place_all(workflow, requests, agent)
    retry = fail(workflow, "step1", "exit code 1")
    assert [type(s.message) for s in retry] == [pb.JobFulfillmentRequest]
    assert retry[0].message.request_uuid != requests[0].message.request_uuid
    step = workflow.steps["step1"]
    assert [a.state for a in step.attempts] == [AttemptState.FAILED, AttemptState.REQUESTING]
    assert step.attempts[0].reason == "exit code 1"
    sent = place_all(workflow, retry, FakeAgent(OTHER_AGENT))
    data = of_type(sent, pb.JobDataAvailable)
    assert len(data) == 1 and data[0].to == OTHER_AGENT
    assert [(p.key, p.value) for p in data[0].message.parameters] == [("message", "caronirocks")]


def test_the_last_failed_attempt_fails_the_workflow_with_the_reason() -> None:
    workflow, requests = new_workflow(max_attempts=3)
    agent = FakeAgent()
    place_all(workflow, requests, agent)
    for attempt in range(1, 4):
        sends = fail(workflow, "step2", f"boom {attempt}")
        if attempt < 3:
            place_all(workflow, sends, agent)
    assert workflow.state == WorkflowState.FAILED
    assert workflow.reason == "step 'step2' failed after 3 attempts: boom 3"
    assert len(workflow.steps["step2"].attempts) == 3
    kills = of_type(sends, pb.JobKill)
    assert {k.message.job_uuid for k in kills} == {
        job_of(workflow, "step1"),
        job_of(workflow, "step3"),
    }
    assert of_type(sends, pb.WorkFlowStatus)[0].message.reason == workflow.reason


def test_messages_about_a_job_from_another_agent_are_set_aside() -> None:
    workflow, requests = new_workflow()
    place_all(workflow, requests, FakeAgent())
    forged = pb.JobStatusUpdate(job_uuid=job_of(workflow, "step1"), job_status=pb.JOB_STATUS_FAILED)
    with pytest.raises(SetAside, match="its agent is"):
        handlers.on_status_update(workflow, forged, OTHER_AGENT, 2.0)
    assert workflow.steps["step1"].current.state == AttemptState.PENDING  # type: ignore[union-attr]


def test_late_news_about_a_replaced_job_is_ignored() -> None:
    workflow, requests = new_workflow()
    place_all(workflow, requests, FakeAgent())
    old_job = job_of(workflow, "step1")
    fail(workflow, "step1", "x")
    data = pb.JobDataAvailable(
        job_uuid=old_job, parameters=[pb.JobParameter(key="jobout", value="late")]
    )
    assert handlers.on_data(workflow, data, AGENT, 3.0) == []
    assert all(flow.value != "late" for flow in workflow.dataflows)


T = handlers.DEFAULT_TIMINGS


def test_unanswered_requests_are_broadcast_again_with_backoff_and_stall_the_workflow() -> None:
    workflow, requests = new_workflow()
    wake = handlers.next_wake(workflow)
    assert wake == 1000.0 + T.rebroadcast_first
    assert handlers.on_tick(workflow, wake - 0.1) == []
    sends = handlers.on_tick(workflow, wake)
    # Again to the type's key, and now to the plain key too, for every agent.
    assert [s.to for s in sends[:2]] == [f"{FULFILLMENT_KEY}.foojob0", FULFILLMENT_KEY]
    assert len(sends) == 6 and sum(s.to == FULFILLMENT_KEY for s in sends) == 3
    assert sends[0].message.request_uuid == requests[0].message.request_uuid
    assert handlers.next_wake(workflow) == wake + 2 * T.rebroadcast_first
    handlers.on_tick(workflow, 1000.0 + T.stalled_after)
    assert workflow.state == WorkflowState.STALLED
    assert workflow.reason == "waiting for an agent offering foojob0, foojob1, foojob2"
    place_all(workflow, requests, FakeAgent())
    handlers.on_tick(workflow, 1000.0 + T.stalled_after + 1)
    assert workflow.state == WorkflowState.RUNNING and workflow.reason == ""


def test_a_request_deadline_fails_the_workflow_with_the_job_type_waited_for() -> None:
    workflow, _ = new_workflow()
    timings = handlers.Timings(request_deadline=30.0)
    assert handlers.next_wake(workflow, timings) == 1000.0 + T.rebroadcast_first
    handlers.on_tick(workflow, 1029.0, timings)
    assert workflow.state == WorkflowState.STALLED
    sends = handlers.on_tick(workflow, 1030.0, timings)
    assert workflow.state == WorkflowState.FAILED
    assert (
        workflow.reason
        == "step 'step1' failed after 1 attempt: no agent offered 'foojob0' within 30s"
    )
    assert of_type(sends, pb.WorkFlowStatus)[0].to == CLIENT


def test_an_accepted_offer_that_never_becomes_a_job_is_requested_again() -> None:
    workflow, requests = new_workflow()
    handlers.on_offer(workflow, FakeAgent().offer(requests[0].message), AGENT, 1001.0)
    assert handlers.next_wake(workflow) == 1000.0 + T.rebroadcast_first  # the other steps
    sends = handlers.on_tick(workflow, 1001.0 + T.accept_timeout)
    step = workflow.steps["step1"]
    assert [a.state for a in step.attempts] == [AttemptState.ABANDONED, AttemptState.REQUESTING]
    assert step.attempts[0].reason == "no JobAccepted after the offer was accepted"
    assert any(
        s.message.request_uuid == raw_of(step.attempts[1].request_uuid)
        for s in of_type(sends, pb.JobFulfillmentRequest)
    )


def test_silent_jobs_are_polled_and_given_up_after_the_lease() -> None:
    workflow, requests = new_workflow()
    agent = FakeAgent()
    place_all(workflow, requests, agent)  # jobs accepted at t=1002
    poll_at = 1002.0 + T.status_interval
    assert handlers.next_wake(workflow) == poll_at
    polls = handlers.on_tick(workflow, poll_at)
    assert {type(s.message) for s in polls} == {pb.JobStatusRequest} and len(polls) == 3
    assert handlers.on_tick(workflow, poll_at + 1) == []  # not again before the interval
    # The agent answers for step1 only; step2 and step3 stay silent.
    answer = pb.JobStatusUpdate(
        job_uuid=job_of(workflow, "step1"), job_status=pb.JOB_STATUS_PENDING
    )
    handlers.on_status_update(workflow, answer, AGENT, 1100.0)
    old_job, old_job3 = job_of(workflow, "step2"), job_of(workflow, "step3")
    sends = handlers.on_tick(workflow, 1002.0 + T.job_lease)
    step2 = workflow.steps["step2"]
    assert step2.attempts[0].state == AttemptState.ABANDONED
    assert step2.attempts[0].reason.startswith("agent silent for")
    kills = of_type(sends, pb.JobKill)
    assert {k.message.job_uuid for k in kills} == {old_job, old_job3}
    assert len(of_type(sends, pb.JobFulfillmentRequest)) == 2
    assert workflow.steps["step1"].current.state == AttemptState.PENDING  # type: ignore[union-attr]
    # News other than a result about a job given up changes nothing.
    late = pb.JobStatusUpdate(job_uuid=old_job, job_status=pb.JOB_STATUS_RUNNING)
    assert handlers.on_status_update(workflow, late, AGENT, 1200.0) == []
    assert step2.current is not None and step2.current.number == 2


def test_the_lease_spares_a_peer_that_never_answered_a_status_request() -> None:
    """An agent that speaks only the shared protocol may not answer status requests
    while its job runs: its job is polled, never given up for its silence."""
    workflow, requests = new_workflow()
    place_all(workflow, requests, FakeAgent(ours=False))
    sends = handlers.on_tick(workflow, 1002.0 + 10 * T.job_lease)
    assert {type(s.message) for s in sends} == {pb.JobStatusRequest}
    assert all(step.current.state == AttemptState.PENDING for step in workflow.steps.values())  # type: ignore[union-attr]
    # Once it has answered one, it has shown it answers: the lease holds for it.
    job = job_of(workflow, "step1")
    answer = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_RUNNING)
    handlers.on_status_update(workflow, answer, AGENT, 1002.0 + 10 * T.job_lease)
    later = 1002.0 + 11 * T.job_lease + 1
    sends = handlers.on_tick(workflow, later)
    assert [k.message.job_uuid for k in of_type(sends, pb.JobKill)] == [job]


def test_a_result_of_a_job_given_up_is_taken_back_until_a_replacement_is_placed() -> None:
    workflow, requests = new_workflow()
    agent = FakeAgent()
    place_all(workflow, requests, agent)
    step1 = workflow.steps["step1"]
    job = job_of(workflow, "step1")
    handlers.on_tick(workflow, 1002.0 + T.job_lease)  # every job given up, requested again
    assert step1.current is not None and step1.current.state == AttemptState.REQUESTING
    replacement = step1.current
    data = pb.JobDataAvailable(
        job_uuid=job, parameters=[pb.JobParameter(key="jobout", value="LATE")]
    )
    handlers.on_data(workflow, data, AGENT, 1200.0)
    done = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED)
    sends = handlers.on_status_update(workflow, done, AGENT, 1201.0)
    assert step1.state == StepState.COMPLETED
    assert replacement.state == AttemptState.ABANDONED
    assert replacement.reason == "attempt 1 delivered after all"
    assert not of_type(sends, pb.JobKill)
    fed = [flow.value for flow in workflow.dataflows if flow.target_step == "step2"]
    assert fed == ["LATE"], "the result goes on to the next step"
    # Once a replacement is placed, the late result of its predecessor is ignored.
    step2 = workflow.steps["step2"]
    old2 = step2.attempts[0]
    assert old2.job_uuid is not None
    accept = handlers.on_offer(
        workflow, agent.offer(request_message(step2)), AGENT, 1202.0, ours=True
    )
    assert of_type(accept, pb.JobFulfillmentOfferAccept)
    late = pb.JobStatusUpdate(
        job_uuid=uuid.UUID(hex=old2.job_uuid).bytes, job_status=pb.JOB_STATUS_COMPLETED
    )
    assert handlers.on_status_update(workflow, late, AGENT, 1203.0) == []
    assert step2.current is not None and step2.current.state == AttemptState.ACCEPTING


def request_message(step: Step) -> pb.JobFulfillmentRequest:
    assert step.current is not None
    return handlers.request_message(step, step.current)


def test_an_expired_offer_is_rejected() -> None:
    workflow, requests = new_workflow()
    offer = FakeAgent().offer(requests[0].message)
    offer.expiration.FromSeconds(999)
    sends = handlers.on_offer(workflow, offer, AGENT, 1000.0)
    assert [type(s.message) for s in sends] == [pb.JobFulfillmentOfferReject]
    assert sends[0].message.reject_message == "offer expired"
    assert workflow.steps["step1"].current.state == AttemptState.REQUESTING  # type: ignore[union-attr]


def test_cancel_kills_live_jobs_and_ends_the_workflow() -> None:
    workflow, requests = new_workflow()
    place_all(workflow, requests, FakeAgent())
    sends = handlers.cancel(workflow, "user asked", 5.0)
    assert workflow.state == WorkflowState.CANCELLED
    assert len(of_type(sends, pb.JobKill)) == 3
    assert handlers.cancel(workflow, "again", 6.0) == []


def test_only_the_submitters_key_may_cancel_when_signatures_are_required() -> None:
    submitter, other = "ed25519:submitter", "ed25519:other"
    workflow, _ = handlers.create_workflow(
        chain_template(),
        workflow_id=uuid.uuid4().hex,
        template_name="test_simple",
        name="t",
        inputs={"start_message": "x"},
        submitter=CLIENT,
        max_attempts=5,
        now=1000.0,
        submitter_key=submitter,
    )
    assert workflow.submitter_key == submitter
    assert handlers.cancel_refusal(workflow, submitter, signed=True) == ""
    refused = handlers.cancel_refusal(workflow, other, signed=True)
    assert refused == (
        f"WorkFlowCancel for workflow {workflow.id} signed by {other}, "
        f"not by the key that submitted it ({submitter})"
    )
    assert "signed by no key" in handlers.cancel_refusal(workflow, "", signed=True)
    # Unsigned mode keeps today's rule: anyone (allowed submitters are the policy's).
    assert handlers.cancel_refusal(workflow, other, signed=False) == ""
    # A workflow with no submitter key on record (unsigned, an operator's, or stored
    # before keys were recorded) is cancelled only by an operator.
    unsigned, _ = new_workflow()
    assert "only an operator may cancel it" in handlers.cancel_refusal(
        unsigned, submitter, signed=True
    )
    stored_before = Workflow.model_validate_json(
        unsigned.model_dump_json(exclude={"submitter_key"})
    )
    assert stored_before.submitter_key == ""


def test_an_offer_window_takes_the_least_loaded_offer_and_rejects_the_others() -> None:
    workflow, requests = new_workflow()
    timings = handlers.Timings(offer_window=0.5)
    request = requests[0].message

    def offer(running: int, slots: int = 2) -> pb.JobFulfillmentOffer:
        message = FakeAgent().offer(request)
        message.load.CopyFrom(pb.AgentLoad(slots=slots, running=running))
        return message

    busy, idle = offer(running=2), offer(running=0)
    assert handlers.on_offer(workflow, busy, AGENT, 1000.1, timings) == []
    assert handlers.on_offer(workflow, idle, OTHER_AGENT, 1000.2, timings) == []
    assert handlers.next_wake(workflow, timings) == 1000.6
    sends = handlers.on_tick(workflow, 1000.6, timings)
    accepted = of_type(sends, pb.JobFulfillmentOfferAccept)
    rejected = of_type(sends, pb.JobFulfillmentOfferReject)
    assert [(s.to, s.message.offer_uuid) for s in accepted] == [(OTHER_AGENT, idle.offer_uuid)]
    assert [(s.to, s.message.offer_uuid) for s in rejected] == [(AGENT, busy.offer_uuid)]
    assert workflow.steps["step1"].current.agent_key == OTHER_AGENT  # type: ignore[union-attr]
    late = handlers.on_offer(workflow, offer(running=0), AGENT, 1000.7, timings)
    assert [type(s.message) for s in late] == [pb.JobFulfillmentOfferReject]


def test_an_input_given_twice_refuses_the_workflow_before_anything_is_requested() -> None:
    workflow, sends = handlers.create_workflow(
        chain_template(),
        workflow_id=uuid.uuid4().hex,
        template_name="test_simple",
        name="t",
        inputs={"start_message": "second"},
        submitter=CLIENT,
        max_attempts=5,
        now=1.0,
        given_twice=["start_message"],
    )
    assert workflow.state == WorkflowState.FAILED
    assert workflow.reason == "refused: input(s) given twice: start_message"
    assert [type(s.message) for s in sends] == [pb.WorkFlowStatus]


def test_handlers_given_the_same_ids_decide_the_same() -> None:
    """Handlers take their fresh ids from the caller: replayed with the same source
    of ids, the same messages make the same decisions, ids included."""

    def run() -> list[bytes]:
        new_id = counting_ids()
        workflow, sends = handlers.create_workflow(
            chain_template(),
            workflow_id="0" * 32,
            template_name="test_simple",
            name="t",
            inputs={"start_message": "x"},
            submitter=CLIENT,
            max_attempts=5,
            now=1.0,
            new_id=new_id,
        )
        request = of_type(sends, pb.JobFulfillmentRequest)[0].message
        failed = pb.JobStatusUpdate(job_status=pb.JOB_STATUS_FAILED, status_info="no")
        step = workflow.steps[next(iter(workflow.steps))]
        attempt = step.current
        assert attempt is not None
        attempt.job_uuid, attempt.agent_key = "1" * 32, AGENT
        attempt.state = AttemptState.RUNNING
        failed.job_uuid = bytes.fromhex(attempt.job_uuid)
        again = handlers.on_status_update(workflow, failed, AGENT, 2.0, new_id=new_id)
        retry = of_type(again, pb.JobFulfillmentRequest)[0].message
        return [request.SerializeToString(), retry.SerializeToString()]

    first, second = run(), run()
    assert first == second
    assert first[0] != first[1], "a new attempt has a new request id"


def test_requests_go_where_the_manager_speaks_them() -> None:
    """Typed keys only from a manager that speaks typed requests; told to serve other
    implementations' agents at once, every request also goes to the plain key."""
    _, sends = new_workflow()
    typed = route_requests(sends, typed=True, shared=False)
    assert [s.to for s in typed] == [f"{FULFILLMENT_KEY}.foojob{n}" for n in range(3)]
    assert [s.to for s in route_requests(sends, typed=False, shared=False)] == [FULFILLMENT_KEY] * 3
    shared = route_requests(sends, typed=True, shared=True)
    assert sorted(s.to for s in shared) == sorted(
        [FULFILLMENT_KEY] * 3 + [f"{FULFILLMENT_KEY}.foojob{n}" for n in range(3)]
    )
