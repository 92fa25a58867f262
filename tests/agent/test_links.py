"""Inputs an agent fills itself from another of its jobs' outputs (pb.InputLink),
as pure functions: linking on assignment, filling on completion, and what the
outcome messages then say."""

from __future__ import annotations

import uuid

from caroni.agent import handlers, links
from caroni.agent.model import AgentJob, JobStatus
from caroni.protocol import pb
from tests.agent.test_claims import OTHER_MANAGER, _finished, assign, assignment, granted
from tests.agent.test_handlers import CATALOGUE


def producer_and_consumer(
    manager: str | None = None,
) -> tuple[AgentJob, AgentJob, pb.InputLink]:
    """An "upper" job (output "out") and a "pair" job whose "b" is linked to it;
    the consumer is of ``manager`` (by default the producer's own)."""
    claim = granted()
    producer, _ = assign(assignment(claim, "upper", known={"message": "hi"}), claim)
    msg = assignment(claim, "pair", known={"a": "1"})
    link = pb.InputLink(
        job_uuid=msg.job_uuid,
        parameter="b",
        source_job_uuid=uuid.UUID(hex=producer.job_uuid).bytes,
        source_output="out",
    )
    msg.input_links.append(link)
    consumer, _ = assign(msg, claim)
    assert producer is not None and consumer is not None
    if manager is not None:
        consumer.manager_key = manager
    return producer, consumer, link


def attach(producer: AgentJob, consumer: AgentJob, link: pb.InputLink) -> list[AgentJob]:
    wanted = links.wanted(consumer, [link])
    return links.attach(consumer, wanted, {producer.job_uuid: producer})


def finish(producer: AgentJob, consumer: AgentJob, ok: bool = True) -> pb.JobFinished:
    handlers.take_slot(producer, CATALOGUE["upper"], 111.0)
    [send] = handlers.job_finished(
        producer, _finished(ok), 115.0, waiting={consumer.job_uuid: consumer}
    )
    assert isinstance(send.message, pb.JobFinished)
    return send.message


def test_a_linked_input_is_filled_the_moment_its_producer_completes() -> None:
    producer, consumer, link = producer_and_consumer()
    assert attach(producer, consumer, link) == [producer]  # the producer notes it feeds
    assert consumer.status == JobStatus.PENDING

    finished = finish(producer, consumer)
    assert consumer.status == JobStatus.QUEUED and consumer.inputs == {"a": "1", "b": "HI"}
    assert list(finished.filled) == [link] and producer.feeds == []

    handlers.take_slot(consumer, CATALOGUE["pair"], 116.0)
    [send] = handlers.job_finished(consumer, _finished(True), 117.0)
    assert isinstance(send.message, pb.JobFinished)
    assert list(send.message.filled_from) == [link]


def test_a_producer_that_completed_already_fills_the_input_at_once() -> None:
    producer, consumer, link = producer_and_consumer()
    finish(producer, consumer)  # before the consumer's assignment arrived
    assert attach(producer, consumer, link) == []
    assert consumer.inputs["b"] == "HI" and consumer.filled_from


def test_a_failed_producer_leaves_the_input_to_the_manager() -> None:
    producer, consumer, link = producer_and_consumer()
    attach(producer, consumer, link)
    finished = finish(producer, consumer, ok=False)
    assert consumer.status == JobStatus.PENDING and "b" not in consumer.inputs
    assert list(finished.filled) == [] and producer.feeds == []


def test_a_link_to_another_managers_job_or_to_a_given_input_is_not_used() -> None:
    producer, consumer, link = producer_and_consumer(manager=OTHER_MANAGER)
    assert attach(producer, consumer, link) == []
    assert producer.feeds == []

    producer, consumer, link = producer_and_consumer()
    attach(producer, consumer, link)
    data = pb.JobDataAvailable(parameters=[pb.JobParameter(key="b", value="from the manager")])
    handlers.on_data(consumer, data, 112.0)  # the manager was faster
    assert list(finish(producer, consumer).filled) == []
    assert consumer.inputs["b"] == "from the manager" and consumer.filled_from == []


def test_a_link_to_an_input_not_awaited_or_with_a_bad_uuid_is_ignored() -> None:
    producer, consumer, link = producer_and_consumer()
    not_awaited = pb.InputLink()
    not_awaited.CopyFrom(link)
    not_awaited.parameter = "a"  # given with the assignment
    bad_uuid = pb.InputLink()
    bad_uuid.CopyFrom(link)
    bad_uuid.source_job_uuid = b""
    assert links.wanted(consumer, [not_awaited, bad_uuid]) == []
