"""Inputs an agent fills itself from another job's outputs (``pb.InputLink``).

When two steps of a workflow run under claims on the same agent, the consumer's
assignment links its awaited inputs to the producer's job, and the agent fills
them the moment the producer completes: the step after it starts without a round
trip through the manager. The manager stays the authority: it records both
outcomes, sends no value the agent filled already, and takes a job's result only
if every input filled on the agent came from the job whose result it took.
"""

from __future__ import annotations

from caroni.manager.handlers.common import hex_of, raw_of
from caroni.manager.model import Attempt, AttemptState, Step, Workflow
from caroni.protocol import pb


def _job_of(raw: bytes) -> str:
    """The job a link names (hex), or "" for none: the wire allows an empty uuid."""
    return hex_of(raw) if len(raw) == 16 else ""


def links_for(
    workflow: Workflow, step: Step, attempt: Attempt, awaited: list[str]
) -> list[pb.InputLink]:
    """The ``awaited`` inputs of ``step`` that a live job of the same agent will
    produce: the links its assignment (``attempt``) carries."""
    assert attempt.job_uuid is not None
    found = []
    for name in awaited:
        producer, slash, output = step.inputs[name].partition("/")
        if not slash or producer not in workflow.steps:
            continue  # a workflow input
        source = workflow.steps[producer].current
        if (
            source is not None
            and source.job_uuid is not None
            and source.claim_uuid is not None
            and source.agent_key == attempt.agent_key
            and source.state.live
        ):
            found.append(
                pb.InputLink(
                    job_uuid=raw_of(attempt.job_uuid),
                    parameter=name,
                    source_job_uuid=raw_of(source.job_uuid),
                    source_output=output,
                )
            )
    return found


def note_filled(workflow: Workflow, step: Step, filled: list[pb.InputLink], agent_key: str) -> None:
    """The agent filled these inputs from ``step``'s outputs: do not send them again
    to the jobs that have them (jobs of that agent only)."""
    for link in filled:
        consumer_job = _job_of(link.job_uuid)
        if not consumer_job:
            continue
        for flow in workflow.dataflows:
            if flow.source != f"{step.name}/{link.source_output}" or flow.target_step is None:
                continue
            consumer = workflow.steps[flow.target_step].current
            if (
                flow.target_name == link.parameter
                and consumer is not None
                and consumer.job_uuid == consumer_job
                and consumer.agent_key == agent_key
            ):
                flow.delivered_to = consumer_job


def foreign_input(workflow: Workflow, step: Step, filled_from: list[pb.InputLink]) -> str:
    """Why a result of ``step`` cannot be taken: an input the agent filled came from a
    job that is not the one whose result the manager took for that value; or ""."""
    for link in filled_from:
        source_job = _job_of(link.source_job_uuid)
        source = step.inputs.get(link.parameter, "")
        producer, _, output = source.partition("/")
        taken = workflow.steps[producer].current if producer in workflow.steps else None
        if (
            output != link.source_output
            or taken is None
            or not source_job
            or taken.job_uuid != source_job
            or taken.state != AttemptState.COMPLETED
        ):
            return (
                f"its input {link.parameter!r} came from job {source_job or '(none)'}, "
                "whose result the manager did not take"
            )
    return ""
