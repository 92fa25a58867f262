"""Inputs an agent fills itself (pb.InputLink), on the manager's side: which links an
assignment carries, that a filled input is not sent again, and that a result whose
inputs came from a job the manager did not take is refused."""

from __future__ import annotations

from caroni.core import counting_ids
from caroni.manager.handlers import on_finished
from caroni.manager.handlers.claims import assign_claimed
from caroni.manager.model import AttemptState, StepState, Workflow
from caroni.protocol import pb
from tests.manager.test_claims import NOW, book_with, claim_message
from tests.manager.test_handlers import AGENT, OTHER_AGENT, new_workflow, of_type


def assigned(*agents: str) -> tuple[Workflow, list[pb.JobAssignment]]:
    """A three-step chain assigned under claims of ``agents`` (step1 on the first;
    with two, the second claim is picked only for what the first cannot take)."""
    workflow, requests = new_workflow()
    book = book_with(
        *((agent, claim_message(capacity=1 if len(agents) > 1 else 10)) for agent in agents)
    )
    sends = assign_claimed(workflow, requests, book, NOW, counting_ids())
    return workflow, [s.message for s in of_type(sends, pb.JobAssignment)]


def finished(
    job: pb.JobAssignment, output: str, value: str, **links: list[pb.InputLink]
) -> pb.JobFinished:
    return pb.JobFinished(
        job_uuid=job.job_uuid,
        job_status=pb.JOB_STATUS_COMPLETED,
        parameters=[pb.JobParameter(key=output, value=value)],
        **links,
    )


def test_a_chain_on_one_agent_links_each_input_to_the_job_before() -> None:
    _, (first, second, third) = assigned(AGENT)
    assert list(first.input_links) == []
    [link] = second.input_links
    assert (link.job_uuid, link.parameter) == (second.job_uuid, "text")
    assert (link.source_job_uuid, link.source_output) == (first.job_uuid, "jobout")
    [link] = third.input_links
    assert (link.source_job_uuid, link.source_output) == (second.job_uuid, "outSB")


def test_no_link_between_jobs_of_different_agents() -> None:
    _, jobs = assigned(AGENT, OTHER_AGENT)  # room for one job each: two steps placed
    assert len(jobs) == 2
    assert all(not job.input_links for job in jobs)


def test_an_input_the_agent_filled_is_not_sent_again() -> None:
    workflow, (first, second, _) = assigned(AGENT)
    done = finished(first, "jobout", "X", filled=list(second.input_links))
    out = on_finished(workflow, done, AGENT, NOW + 1)
    assert workflow.steps["step1"].state == StepState.COMPLETED
    assert of_type(out, pb.JobDataAvailable) == []
    flow = next(f for f in workflow.dataflows if f.target_step == "step2")
    assert flow.value == "X" and flow.state == "delivered"

    # A link naming a job that is not the consumer's current one fills nothing.
    workflow, (first, second, _) = assigned(AGENT)
    stray = pb.InputLink()
    stray.CopyFrom(second.input_links[0])
    stray.job_uuid = first.job_uuid
    out = on_finished(workflow, finished(first, "jobout", "X", filled=[stray]), AGENT, NOW + 1)
    [data] = of_type(out, pb.JobDataAvailable)
    assert data.message.job_uuid == second.job_uuid


def test_a_result_from_inputs_of_the_taken_job_is_taken() -> None:
    workflow, (first, second, _) = assigned(AGENT)
    on_finished(
        workflow, finished(first, "jobout", "X", filled=list(second.input_links)), AGENT, NOW + 1
    )
    done = finished(second, "outSB", "prependX", filled_from=list(second.input_links))
    on_finished(workflow, done, AGENT, NOW + 2)
    assert workflow.steps["step2"].state == StepState.COMPLETED


def test_a_result_from_inputs_of_a_job_not_taken_is_refused_and_tried_again() -> None:
    workflow, (first, second, _) = assigned(AGENT)
    # step1's result has not been taken (its JobFinished is not in yet, or was refused)
    done = finished(second, "outSB", "prependX", filled_from=list(second.input_links))
    out = on_finished(workflow, done, AGENT, NOW + 2)
    step = workflow.steps["step2"]
    assert step.attempts[0].state == AttemptState.FAILED
    assert "whose result the manager did not take" in step.attempts[0].reason
    assert len(step.attempts) == 2 and of_type(out, pb.JobFulfillmentRequest)


def test_links_with_empty_job_uuids_fill_nothing_and_take_no_result() -> None:
    # The wire allows an empty uuid; such a link names no job.
    workflow, (first, second, _) = assigned(AGENT)
    empty = pb.InputLink()
    empty.CopyFrom(second.input_links[0])
    empty.job_uuid = b""
    out = on_finished(workflow, finished(first, "jobout", "X", filled=[empty]), AGENT, NOW + 1)
    assert len(of_type(out, pb.JobDataAvailable)) == 1, "the value is sent after all"
    no_source = pb.InputLink()
    no_source.CopyFrom(second.input_links[0])
    no_source.source_job_uuid = b""
    on_finished(workflow, finished(second, "outSB", "p", filled_from=[no_source]), AGENT, NOW + 2)
    step = workflow.steps["step2"]
    assert step.attempts[0].state == AttemptState.FAILED
    assert "came from job (none)" in step.attempts[0].reason
