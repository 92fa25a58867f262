"""The manager's workflow aggregate: everything one workflow is, as plain data.

A workflow owns its steps; a step owns its attempts (one request, at most one
accepted offer and one job each); dataflows carry values from workflow inputs and
step outputs to step inputs and workflow outputs. Every message the manager
receives changes exactly one workflow, so the aggregate is loaded, changed by a
pure handler (:mod:`caroni.manager.handlers`) and stored back whole.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

from pydantic import BaseModel, Field

DEFAULT_MAX_ATTEMPTS = 5
"""Attempts per step when neither the workflow nor its manager says otherwise."""


class WorkflowState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STALLED = "stalled"  # some step has waited long for an agent to offer
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED)


class AttemptState(StrEnum):
    REQUESTING = "requesting"  # request broadcast, no offer accepted yet
    ACCEPTING = "accepting"  # offer accepted, waiting for JobAccepted
    PENDING = "pending"  # job created on the agent, waiting for its inputs
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"  # given up by the manager (cancel, lease expired)

    @property
    def live(self) -> bool:
        return self not in (AttemptState.COMPLETED, AttemptState.FAILED, AttemptState.ABANDONED)

    @property
    def has_job(self) -> bool:
        return self in (
            AttemptState.PENDING,
            AttemptState.QUEUED,
            AttemptState.RUNNING,
            AttemptState.COMPLETED,
        )


class Candidate(BaseModel):
    """An offer held while the manager's offer window is open."""

    offer_uuid: str
    agent_key: str
    agent_site: str = ""
    load: float = 0.0
    ours: bool = False  # the offer came from a Caroni node like this one


class Attempt(BaseModel):
    """One try at a step: a request, the offer taken, and the job it became."""

    number: int
    request_uuid: str
    state: AttemptState = AttemptState.REQUESTING
    requested_at: float
    updated_at: float
    broadcasts: int = 1
    declines: int = 0
    offer_uuid: str | None = None
    agent_key: str | None = None
    agent_site: str = ""
    # The job lease applies to an agent that is one of ours (its envelopes name
    # their sender) or that has answered a status request about this job: a peer
    # that blocks while a job runs never answers one, and must not lose its job.
    agent_is_ours: bool = False
    polls_answered: bool = False
    job_uuid: str | None = None
    status_info: str = ""
    reason: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)
    completed_seen: bool = False  # the agent said COMPLETED (outputs may still be in flight)
    last_heard_at: float | None = None  # last message from the agent about the job
    last_polled_at: float | None = None  # last JobStatusRequest we sent
    candidates: list[Candidate] = Field(default_factory=list)  # offers held in the window
    window_closes_at: float | None = None
    claim_uuid: str | None = None  # assigned under this claim (caroni.claims/1)
    unclaimed: bool = False  # an assignment was refused: request it by broadcast only
    lease_expired: bool = False  # given up because its agent stayed silent


class StepState(StrEnum):
    WAITING = "waiting"  # for an agent's offer
    PLACED = "placed"  # a job exists for the current attempt
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Step(BaseModel):
    name: str
    job_type: str
    inputs: dict[str, str]  # input name -> source ("start_message" or "step1/jobout")
    outputs: list[str]
    state: StepState = StepState.WAITING
    attempts: list[Attempt] = Field(default_factory=list)
    reason: str = ""

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def agent(self) -> str:
        """Who serves the current attempt: the agent's site name, else its key ("" if none)."""
        current = self.current
        return (current.agent_site or current.agent_key or "") if current else ""

    @property
    def why(self) -> str:
        """The step's reason, else its current attempt's ("" if none)."""
        current = self.current
        return self.reason or (current.reason if current else "")


class Dataflow(BaseModel):
    """A value travelling from a source to one consumer (a step input or workflow output)."""

    source: str  # "start_message" (workflow input) or "step1/jobout"
    target_step: str | None  # None: the target is a workflow output
    target_name: str  # step input name, or workflow output name
    value: str | None = None
    delivered_to: str | None = None  # job uuid the value was last sent to

    @property
    def target(self) -> str:
        if self.target_step is None:
            return f"output {self.target_name}"
        return f"{self.target_step}/{self.target_name}"

    @property
    def state(self) -> str:
        if self.value is None:
            return "awaiting"
        if self.target_step is None or self.delivered_to is not None:
            return "delivered"
        return "available"


class Workflow(BaseModel):
    id: str
    name: str = ""
    template_name: str
    state: WorkflowState = WorkflowState.CREATED
    reason: str = ""
    submitter: str = ""  # reply_to of the WorkFlowCreate; told when the workflow ends
    # The key id that signed the WorkFlowCreate ("" unsigned, from an operator, or
    # from before it was recorded): with signatures required, only it may cancel.
    # Kept in the aggregate's JSON, so older rows read as "" without a migration.
    submitter_key: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    output_names: list[str] = Field(default_factory=list)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    steps: dict[str, Step] = Field(default_factory=dict)
    dataflows: list[Dataflow] = Field(default_factory=list)
    placed: bool = False  # every step has had a job: data may flow
    created_at: float
    updated_at: float
    finished_at: float | None = None

    def route_keys(self) -> set[str]:
        """Every request, offer and job uuid that names this workflow."""
        keys: set[str] = set()
        for step in self.steps.values():
            for attempt in step.attempts:
                keys.add(attempt.request_uuid)
                if attempt.offer_uuid:
                    keys.add(attempt.offer_uuid)
                if attempt.job_uuid:
                    keys.add(attempt.job_uuid)
        return keys

    def claims_in_use(self) -> Counter[str]:
        """Live jobs of this workflow under each claim, by claim uuid."""
        return Counter(
            step.current.claim_uuid
            for step in self.steps.values()
            if step.current is not None
            and step.current.claim_uuid is not None
            and step.current.state.live
        )

    def waiting_steps(self) -> dict[str, tuple[str, float]]:
        """Steps whose current attempt waits for an agent, by name: (job type, since
        when). Those an agent refused to take under a claim are left out."""
        if self.state.finished:
            return {}
        return {
            step.name: (step.job_type, step.current.requested_at)
            for step in self.steps.values()
            if step.current is not None
            and step.current.state == AttemptState.REQUESTING
            and not step.current.unclaimed
        }

    def find_attempt(self, key: str) -> tuple[Step, Attempt] | None:
        """The step and attempt that a request, offer or job uuid (hex) belongs to."""
        for step in self.steps.values():
            for attempt in step.attempts:
                if key in (attempt.request_uuid, attempt.offer_uuid, attempt.job_uuid):
                    return step, attempt
        return None
