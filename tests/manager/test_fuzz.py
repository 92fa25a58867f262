"""Fuzzing the manager's handlers with generated message sequences.

Whatever arrives, in whatever order, with duplicates, strangers and garbage
values, a handler either applies the message or refuses it with SetAside; and
the workflow never breaks its invariants.
"""

from __future__ import annotations

import contextlib
import functools
import uuid

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caroni.core import Send, random_ids
from caroni.errors import SetAside
from caroni.manager import handlers
from caroni.manager.claims import ClaimBook
from caroni.manager.handlers.claims import assign_claimed, on_refusal
from caroni.manager.model import AttemptState, StepState, Workflow, WorkflowState
from caroni.protocol import pb
from tests.manager.test_handlers import chain_template

AGENTS = ["wf.agent.A", "wf.agent.B"]
STATUSES = [  # weighted towards the ones that move a step on
    pb.JOB_STATUS_COMPLETED,
    pb.JOB_STATUS_COMPLETED,
    pb.JOB_STATUS_RUNNING,
    pb.JOB_STATUS_FAILED,
    pb.JOB_STATUS_UNSPECIFICED,
    pb.JOB_STATUS_QUEUED,
    pb.JOB_STATUS_PAUSED,
]
KEYS = ["jobout", "outSB", "out", "message", "junk", ""]
# Offers from an agent of ours (the job lease holds for it) and from an agent of
# another implementation (it holds only once the agent answered a status request).
offer_from_ours = functools.partial(handlers.on_offer, ours=True)
offer_from_a_peer = functools.partial(handlers.on_offer, ours=False)

# One action: (kind, which known uuid to use, agent index, a status or key index, a value)
actions = st.lists(
    st.tuples(
        # Repeats weight the choice towards what moves a workflow forward.
        st.sampled_from(
            ["proper", "proper", "proper", "fail", "offer", "accepted", "status", "data"]
            + ["decline", "tick", "replay", "finished", "refusal"]
        ),
        st.integers(0, 40),
        st.sampled_from([True, True, True, False]),
        st.integers(0, 6),
        st.text(max_size=5),
    ),
    min_size=10,
    max_size=120,
)


class World:
    """Remembers every uuid the manager or a fake agent produced, to aim messages at."""

    def __init__(self, workflow: Workflow, first: list[Send]) -> None:
        self.workflow = workflow
        self.now = 1000.0
        self.requests: list[bytes] = []
        self.accepted: list[tuple[bytes, str]] = []  # (offer uuid, agent the manager accepted)
        self.jobs: list[tuple[bytes, str]] = []  # (job uuid, agent holding it)
        # A claim of AGENTS[0] for every type, for two jobs, that runs out midway.
        self.book = ClaimBook()
        expiration = Timestamp()
        expiration.FromSeconds(1150)
        claim = pb.Claim(
            claim_uuid=uuid.uuid4().bytes,
            job_type_names=["foojob0", "foojob1", "foojob2"],
            capacity=2,
            expiration=expiration,
        )
        self.book.grant(claim, AGENTS[0], "", self.now)
        self.observe(first)

    def observe(self, sends: list[Send]) -> None:
        """Note what the manager sends, as its shell would send it: with claims."""
        sends = assign_claimed(self.workflow, sends, self.book, self.now, random_ids)
        for send in sends:
            message = send.message
            if isinstance(message, pb.JobFulfillmentRequest):
                self.requests.append(message.request_uuid)
            elif isinstance(message, pb.JobFulfillmentOfferAccept):
                self.accepted.append((message.offer_uuid, send.to))
            elif isinstance(message, pb.JobAssignment):
                self.jobs.append((message.job_uuid, send.to))

    def pick(self, items: list, index: int):  # type: ignore[no-untyped-def]
        return items[index % len(items)] if items and index < 35 else None

    def proper(self, index: int, fail: bool = False):  # type: ignore[no-untyped-def]
        """What a well-behaved agent would send next for one step's current attempt
        (``fail``: its job failing, if it has one)."""
        step = list(self.workflow.steps.values())[index % len(self.workflow.steps)]
        attempt = step.current
        if attempt is None or not attempt.state.live:
            return None
        agent = attempt.agent_key or AGENTS[0]
        if fail and attempt.job_uuid is not None:
            job = uuid.UUID(hex=attempt.job_uuid).bytes
            failed = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_FAILED)
            return handlers.on_status_update, failed, agent
        if attempt.state == AttemptState.REQUESTING:
            offer_uuid = uuid.uuid4().bytes
            message = pb.JobFulfillmentOffer(
                request_uuid=uuid.UUID(hex=attempt.request_uuid).bytes, offer_uuid=offer_uuid
            )
            return offer_from_ours, message, agent
        if attempt.state == AttemptState.ACCEPTING:
            assert attempt.offer_uuid is not None
            job = uuid.uuid4().bytes
            self.jobs.append((job, agent))
            offer = uuid.UUID(hex=attempt.offer_uuid).bytes
            return handlers.on_job_accepted, pb.JobAccepted(job_uuid=job, offer_uuid=offer), agent
        assert attempt.job_uuid is not None
        job = uuid.UUID(hex=attempt.job_uuid).bytes
        missing = [name for name in step.outputs if name not in attempt.outputs]
        if missing:
            data = pb.JobDataAvailable(
                job_uuid=job, parameters=[pb.JobParameter(key=missing[0], value="v")]
            )
            return handlers.on_data, data, agent
        done = pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED)
        return handlers.on_status_update, done, agent

    def message_for(self, kind: str, index: int, right_agent: bool, choice: int, value: str):  # type: ignore[no-untyped-def]
        """A message of ``kind`` aimed at a uuid the manager knows (mostly) and its sender:
        usually the agent entitled to send it, sometimes a stranger."""
        random_uuid = uuid.uuid4().bytes
        stranger = AGENTS[1]
        if kind in ("offer", "decline"):
            request = self.pick(self.requests, index) or random_uuid
            sender = AGENTS[0] if right_agent else stranger
            if kind == "decline":
                return handlers.on_decline, pb.JobFulfillmentDecline(request_uuid=request), sender
            offer = pb.JobFulfillmentOffer(request_uuid=request, offer_uuid=uuid.uuid4().bytes)
            return (offer_from_ours if choice % 2 else offer_from_a_peer), offer, sender
        if kind == "accepted":
            offer_uuid, agent = self.pick(self.accepted, index) or (random_uuid, stranger)
            job = uuid.uuid4().bytes
            self.jobs.append((job, agent))
            message = pb.JobAccepted(job_uuid=job, offer_uuid=offer_uuid)
            return handlers.on_job_accepted, message, agent if right_agent else stranger
        job, agent = self.pick(self.jobs, index) or (random_uuid, stranger)
        sender = agent if right_agent else stranger
        if kind == "finished":
            finished = pb.JobFinished(
                job_uuid=job,
                job_status=STATUSES[choice],
                status_info=value,
                parameters=[pb.JobParameter(key=KEYS[choice % len(KEYS)], value=value)],
            )
            return handlers.on_finished, finished, sender
        if kind == "refusal":
            return on_refusal, pb.JobAssignmentRefusal(job_uuid=job, refusal_message=value), sender
        if kind == "status":
            status = STATUSES[choice]
            return (
                handlers.on_status_update,
                pb.JobStatusUpdate(job_uuid=job, job_status=status, status_info=value),
                sender,
            )
        found = self.workflow.find_attempt(uuid.UUID(bytes=job).hex)
        keys = found[0].outputs if found and choice < 4 else KEYS
        parameter = pb.JobParameter(key=keys[choice % len(keys)], value=value)
        return handlers.on_data, pb.JobDataAvailable(job_uuid=job, parameters=[parameter]), sender


def check_invariants(workflow: Workflow) -> None:
    for step in workflow.steps.values():
        live = [a for a in step.attempts if a.state.live]
        assert len(live) <= 1, f"{step.name} has several live attempts"
        assert all(not a.state.live for a in step.attempts[:-1])
        assert len(step.attempts) <= workflow.max_attempts
        if step.state == StepState.COMPLETED:
            assert step.current is not None and step.current.state == AttemptState.COMPLETED
            assert set(step.outputs) <= set(step.current.outputs)
    if workflow.state == WorkflowState.COMPLETED:
        assert set(workflow.outputs) == set(workflow.output_names)
        assert all(step.state == StepState.COMPLETED for step in workflow.steps.values())
    if workflow.state.finished:
        assert all(not (s.current and s.current.state.live) for s in workflow.steps.values())
    for flow in workflow.dataflows:
        if flow.delivered_to is not None:
            assert flow.value is not None
    for step in workflow.steps.values():
        current = step.current
        if current is not None and current.claim_uuid and current.state.live:
            assert current.agent_key and current.job_uuid, "an assigned job has its agent"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_any_message_sequence_keeps_the_workflow_consistent(steps: list) -> None:  # type: ignore[type-arg]
    workflow, first = handlers.create_workflow(
        chain_template(),
        workflow_id=uuid.uuid4().hex,
        template_name="test_simple",
        name="",
        inputs={"start_message": "x"},
        submitter="",
        max_attempts=3,
        now=1000.0,
    )
    world = World(workflow, first)
    history: list[tuple[object, object, str]] = []
    for kind, index, right_agent, choice, value in steps:
        world.now += 3.0
        if kind == "tick":
            world.observe(handlers.on_tick(workflow, world.now))
        else:
            if kind == "replay" and history:
                handler, message, sender = history[index % len(history)]
            elif kind == "replay":
                continue
            elif kind in ("proper", "fail"):
                planned = world.proper(index, fail=kind == "fail")
                if planned is None:
                    continue
                handler, message, sender = planned
                history.append(planned)
            else:
                handler, message, sender = world.message_for(
                    kind, index, right_agent, choice, value
                )
                history.append((handler, message, sender))
            with contextlib.suppress(SetAside):  # refusing is fine; anything else is a bug
                world.observe(handler(workflow, message, sender, world.now))  # type: ignore[operator]
        check_invariants(workflow)
        Workflow.model_validate_json(workflow.model_dump_json())  # always storable
