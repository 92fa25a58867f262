"""Creating a workflow from a submission, and starting it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from caroni.core import NewId, Send, random_ids
from caroni.manager.handlers.attempts import request_attempt
from caroni.manager.handlers.ending import finish, record_outputs
from caroni.manager.model import (
    DEFAULT_MAX_ATTEMPTS,
    Dataflow,
    Step,
    Workflow,
    WorkflowState,
)
from caroni.manager.templates import Template
from caroni.protocol.job_env import env_problem


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
    sends = [
        send
        for step in workflow.steps.values()
        for send in request_attempt(workflow, step, now, new_id)
    ]
    return sends + record_outputs(workflow, now)
