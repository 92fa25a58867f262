"""Inputs one job's outputs fill on the same agent, without the manager's round trip.

When a manager assigns, under claims, two steps of a workflow to the same agent
and one consumes what the other produces, the assignment of the consumer links
that input to the producer's job (``JobAssignment.input_links``). The agent then
fills the input itself in the transaction that records the producer's outcome, and
the consumer starts at once. The manager still records every outcome, learns from
``JobFinished`` which inputs were filled here (and so sends them no more), and
refuses the result of a job whose inputs came from a job whose result it did not
take. A link the agent cannot use (its producer is not here, belongs to another
manager, or failed) is simply not used: the value then comes from the manager.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from caroni.agent.model import AgentJob, InputLink, JobStatus
from caroni.protocol import pb


def _hex(raw: bytes) -> str:
    return uuid.UUID(bytes=raw).hex


def wanted(job: AgentJob, links: Iterable[pb.InputLink]) -> list[InputLink]:
    """The links of an assignment that name inputs ``job`` still waits for."""
    return [
        InputLink(
            job_uuid=job.job_uuid,
            parameter=link.parameter,
            source_job_uuid=_hex(link.source_job_uuid),
            source_output=link.source_output,
        )
        for link in links
        if link.parameter in job.expected_inputs
        and link.parameter not in job.inputs
        and len(link.source_job_uuid) == 16
    ]


def attach(
    job: AgentJob, links: Iterable[InputLink], sources: Mapping[str, AgentJob]
) -> list[AgentJob]:
    """Wire up a new job's links: an input whose source completed already is filled
    now, the others are noted on their source job, to be filled when it completes.
    The source jobs changed (to be saved)."""
    changed = []
    for link in links:
        source = sources.get(link.source_job_uuid)
        if source is None or source.manager_key != job.manager_key:
            continue
        if source.status == JobStatus.COMPLETED:
            _fill(source, job, link)
        elif not source.status.finished:
            source.feeds.append(link)
            changed.append(source)
    return changed


def fill(source: AgentJob, consumers: Mapping[str, AgentJob]) -> list[InputLink]:
    """``source`` completed: give the jobs waiting for its outputs their inputs.
    The links filled."""
    filled = []
    for link in source.feeds:
        consumer = consumers.get(link.job_uuid)
        if consumer is None or consumer.manager_key != source.manager_key:
            continue
        if _fill(source, consumer, link):
            filled.append(link)
    source.feeds = []
    return filled


def _fill(source: AgentJob, consumer: AgentJob, link: InputLink) -> bool:
    if (
        consumer.status != JobStatus.PENDING
        or link.parameter in consumer.inputs
        or link.source_output not in source.outputs
    ):
        return False
    consumer.inputs[link.parameter] = source.outputs[link.source_output]
    consumer.filled_from.append(link)
    return True


def wire(links: Iterable[InputLink]) -> list[pb.InputLink]:
    return [
        pb.InputLink(
            job_uuid=uuid.UUID(hex=link.job_uuid).bytes,
            parameter=link.parameter,
            source_job_uuid=uuid.UUID(hex=link.source_job_uuid).bytes,
            source_output=link.source_output,
        )
        for link in links
    ]
