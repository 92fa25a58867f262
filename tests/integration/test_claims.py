"""Claims between our own nodes (caroni.claims/1), end to end on the in-process
broker: once an agent has granted a claim with an offer, the manager assigns
further steps straight to it, and a step costs an assignment, its outcome and at
most one message of data (none when the steps share an agent, which passes the
data itself); an agent that refuses assignments past a claim's
capacity sees those steps requested by broadcast, and every workflow still ends
right."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.manager.handlers import Timings
from caroni.store.tables import message_log, waiting_steps
from tests.demo_runs import expected
from tests.embedded import federation
from tests.waiting import eventually

STEPS = 3  # test_simple: foojob0, foojob1, foojob2
# The messages of the conversation about jobs (a client's are left out).
JOB_MESSAGES = (
    "JobFulfillmentRequest",
    "JobFulfillmentOffer",
    "JobFulfillmentDecline",
    "JobFulfillmentOfferAccept",
    "JobFulfillmentOfferReject",
    "JobAccepted",
    "JobStatusRequest",
    "JobStatusUpdate",
    "JobDataAvailable",
    "JobKill",
    "Claim",
    "JobAssignment",
    "JobAssignmentRefusal",
    "JobFinished",
)


def _count(node: ManagerNode | AgentNode, direction: str, *type_names: str) -> int:
    query = select(func.count()).where(
        message_log.c.direction == direction, message_log.c.type_name.in_(type_names)
    )
    with node.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


async def _run(client: Client, tag: str, count: int) -> None:
    """Submit ``count`` workflows at once and check each one's result."""
    submitted = {
        await client.submit("test_simple", {"start_message": f"{tag}{n}"}): f"{tag}{n}"
        for n in range(count)
    }
    for workflow_id, message in submitted.items():
        status = await client.wait(workflow_id, poll_interval=None, timeout=60)
        assert status.state == "completed", status.reason
        assert {o.key: o.value for o in status.outputs} == {"result": expected(message)}


async def test_steps_under_a_claim_are_assigned_in_a_message_or_two(tmp_path: Path) -> None:
    policies = [Policy(site_identifier="agent-0"), Policy(site_identifier="agent-1")]
    serves = [("foojob0", "foojob2"), ("foojob1",)]  # every workflow spans both agents
    async with federation(tmp_path, policies, serves) as (manager, agents, client):
        await _run(client, "first", 1)  # by requests and offers; the offers grant claims
        requests_before = _count(manager, "out", "JobFulfillmentRequest")
        progress_before = _count(manager, "in", "JobStatusUpdate", "JobAccepted")
        messages_before = _count(manager, "in", *JOB_MESSAGES) + _count(
            manager, "out", *JOB_MESSAGES
        )
        workflows = 10
        await _run(client, "claimed", workflows)
        assert _count(manager, "out", "JobFulfillmentRequest") == requests_before, (
            "no step of a covered type is requested while its claim lives"
        )
        steps = workflows * STEPS
        assert _count(manager, "out", "JobAssignment") == steps
        assert _count(manager, "in", "JobFinished") == steps
        assert _count(manager, "in", "JobStatusUpdate", "JobAccepted") == progress_before, (
            "no progress reports for assigned jobs"
        )
        messages = (
            _count(manager, "in", *JOB_MESSAGES)
            + _count(manager, "out", *JOB_MESSAGES)
            - messages_before
        )
        per_step = messages / steps
        print(f"messages per step under claims: {per_step:.2f}")
        assert per_step <= 3.0, f"{messages} messages for {steps} steps"
        assert sum(_count(agent, "out", "JobAssignmentRefusal") for agent in agents) == 0
        # What goes to one peer at once travels as a bundle, and every bundle arrives.
        nodes = [manager.node, *(agent.node for agent in agents)]

        def bundles(name: str) -> int:
            return sum(node.counters[name] for node in nodes)

        await eventually(
            lambda: bundles("bundles_received") == bundles("bundles_published"), "bundles in"
        )
        print(f"bundles between the manager and agents: {bundles('bundles_published')}")
        assert bundles("bundles_published") > 0, "ten workflows at once: some go together"


async def test_a_chain_on_one_agent_passes_its_data_without_the_manager(tmp_path: Path) -> None:
    policies = [Policy(site_identifier="agent-0")]
    serves = [("foojob0", "foojob1", "foojob2")]
    async with federation(tmp_path, policies, serves) as (manager, agents, client):
        await _run(client, "first", 1)  # by requests and offers; the offers grant claims
        data_before = _count(manager, "out", "JobDataAvailable")
        messages_before = _count(manager, "in", *JOB_MESSAGES) + _count(
            manager, "out", *JOB_MESSAGES
        )
        workflows = 10
        await _run(client, "linked", workflows)
        steps = workflows * STEPS
        assert _count(manager, "out", "JobDataAvailable") == data_before, (
            "each step's input was filled on the agent from the step before"
        )
        messages = (
            _count(manager, "in", *JOB_MESSAGES)
            + _count(manager, "out", *JOB_MESSAGES)
            - messages_before
        )
        assert messages == 2 * steps, "an assignment and a JobFinished per step"
        assert _count(agents[0], "out", "JobAssignmentRefusal") == 0


async def test_assignments_an_agent_refuses_are_requested_by_broadcast(tmp_path: Path) -> None:
    # The claim would take 100 jobs, but the agent holds at most 3 that wait (its
    # max_reserved): it refuses the assignments past that, and those steps are
    # requested by broadcast and served as its jobs finish.
    policies = [Policy(site_identifier="agent-0", max_reserved=3)]
    serves = [("foojob0", "foojob1", "foojob2")]
    timings = Timings(rebroadcast_first=0.2, rebroadcast_max=0.5)
    async with federation(tmp_path, policies, serves, timings=timings) as (manager, agents, client):
        await _run(client, "first", 1)
        requests_before = _count(manager, "out", "JobFulfillmentRequest")
        await _run(client, "more", 4)
        refused = _count(agents[0], "out", "JobAssignmentRefusal")
        assert refused > 0
        assert _count(manager, "in", "JobAssignmentRefusal") == refused
        assert _count(manager, "out", "JobFulfillmentRequest") > requests_before


async def test_steps_wait_for_room_in_a_full_claim_and_are_assigned_as_jobs_end(
    tmp_path: Path,
) -> None:
    # A claim of two jobs at once and twelve steps at once: the manager requests
    # none of them (the only agent is busy anyway); each job's end makes room, and
    # the longest waiting step is assigned in the same transaction.
    policies = [Policy(site_identifier="agent-0", claim_capacity=2)]
    serves = [("foojob0", "foojob1", "foojob2")]
    async with federation(tmp_path, policies, serves) as (manager, agents, client):
        await _run(client, "first", 1)
        requests_before = _count(manager, "out", "JobFulfillmentRequest")
        await _run(client, "queued", 4)
        assert _count(manager, "out", "JobFulfillmentRequest") == requests_before
        assert _count(manager, "out", "JobAssignment") == 4 * STEPS
        assert _count(agents[0], "out", "JobAssignmentRefusal") == 0
        with manager.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(waiting_steps)).scalar() == 0


async def test_an_agent_whose_claim_is_full_leaves_the_requests_of_waiting_steps_alone(
    tmp_path: Path,
) -> None:
    # A claim of one job at once and a first step that runs for 1.5 s: the second
    # workflow's first step waits past ``stalled_after`` and is requested, marked
    # claims_full, again and again while the first workflow's job runs. The agent,
    # whose claim is full all that time, answers none of those requests; the step
    # is assigned when the job ends.
    policies = [Policy(site_identifier="agent-0", claim_capacity=1)]
    serves = [("foojob0", "foojob1", "foojob2")]
    timings = Timings(stalled_after=0.2, rebroadcast_first=0.1)
    async with federation(tmp_path, policies, serves, timings=timings, slow={"foojob0": 1.5}) as (
        manager,
        agents,
        client,
    ):
        await _run(client, "first", 1)  # by requests and offers; the offer grants a claim
        offers_before = _count(agents[0], "out", "JobFulfillmentOffer")
        await _run(client, "queued", 2)
        with agents[0].engine.connect() as conn:
            traffic = conn.execute(
                select(
                    message_log.c.at,
                    message_log.c.direction,
                    message_log.c.type_name,
                    message_log.c.summary,
                )
                .where(message_log.c.type_name.in_(["JobFulfillmentRequest", "JobFinished"]))
                .order_by(message_log.c.id)
            ).all()
        first_finished = min(at for at, _, name, _ in traffic if name == "JobFinished")
        marked_during_the_job = [
            at
            for at, direction, name, summary in traffic
            if name == "JobFulfillmentRequest"
            and direction == "in"
            and at < first_finished
            and json.loads(summary).get("claimsFull")
        ]
        assert len(marked_during_the_job) >= 2, "requested again and again while it waited"
        offers = _count(agents[0], "out", "JobFulfillmentOffer") - offers_before
        assert offers == 0, "the claim's agent left them unanswered; the step was assigned"
        assert _count(manager, "out", "JobAssignment") == 2 * STEPS
