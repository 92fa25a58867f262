"""How a workflow ends, and what its submitter is told."""

from __future__ import annotations

from caroni.core import Send
from caroni.manager.handlers.common import raw_of
from caroni.manager.model import (
    Attempt,
    AttemptState,
    StepState,
    Workflow,
    WorkflowState,
)
from caroni.protocol import pb


def deliver_data(workflow: Workflow) -> list[Send]:
    """Send every known value to its consumer's current job, once per job.

    Nothing flows to a job placed by offer until every step has had a job
    (``placed``), as peers expect; a job assigned under a claim (an agent of ours)
    gets its values as soon as they are known. A replacement job gets again
    everything its step had been given.
    """
    if workflow.state.finished:
        return []
    by_job: dict[str, tuple[Attempt, list[pb.JobParameter]]] = {}
    for flow in workflow.dataflows:
        if flow.value is None or flow.target_step is None:
            continue
        current = workflow.steps[flow.target_step].current
        if current is None or current.job_uuid is None or not current.state.live:
            continue
        if not workflow.placed and current.claim_uuid is None:
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


def record_outputs(workflow: Workflow, now: float) -> list[Send]:
    for flow in workflow.dataflows:
        if flow.target_step is None and flow.value is not None:
            workflow.outputs[flow.target_name] = flow.value
    done = all(step.state == StepState.COMPLETED for step in workflow.steps.values())
    if done and all(name in workflow.outputs for name in workflow.output_names):
        return finish(workflow, WorkflowState.COMPLETED, "", now)
    return []


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
