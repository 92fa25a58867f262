"""The agent's aggregates: offers it made and jobs it holds, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    PENDING = "pending"  # accepted, waiting for inputs
    QUEUED = "queued"  # every input arrived; waiting for a slot
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


class StatusChange(BaseModel):
    status: JobStatus
    at: float
    info: str = ""


class InputLink(BaseModel):
    """An input of one job (``job_uuid``) that an output of another job here fills
    (see ``caroni.agent.links``)."""

    job_uuid: str
    parameter: str
    source_job_uuid: str
    source_output: str


class AgentJob(BaseModel):
    job_uuid: str
    offer_uuid: str = ""  # "" for a job assigned under a claim
    request_uuid: str = ""  # "" for a job assigned under a claim
    claim_uuid: str | None = None  # the claim it was assigned under (caroni.claims/1)
    job_type: str
    manager_key: str  # the owner: every message about the job goes there
    status: JobStatus = JobStatus.PENDING
    expected_inputs: list[str]
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    reason: str = ""
    history: list[StatusChange] = Field(default_factory=list)
    runs: int = 0  # how many times the body was started (more than 1 after a crash)
    stdout_tail: str = ""
    stderr_tail: str = ""
    warnings: list[str] = Field(default_factory=list)
    created_at: float
    updated_at: float
    ready_at: float | None = None
    feeds: list[InputLink] = Field(default_factory=list)  # inputs of jobs waiting for it
    filled_from: list[InputLink] = Field(default_factory=list)  # its inputs other jobs filled

    def set_status(self, status: JobStatus, now: float, info: str = "") -> None:
        self.status = status
        self.updated_at = now
        self.history.append(StatusChange(status=status, at=now, info=info))


class OfferState(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(slots=True)
class Offer:
    offer_uuid: str
    request_uuid: str
    job_type: str
    manager_key: str
    parameters: list[str]
    state: OfferState
    created_at: float
    expires_at: float
    job_uuid: str | None = None


@dataclass(slots=True)
class GrantedClaim:
    """Capacity granted to a manager (caroni.claims/1): jobs of these types assigned
    straight to this agent, up to ``capacity`` live at once, until ``expires_at``."""

    claim_uuid: str
    manager_key: str
    job_types: list[str]
    capacity: int
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Load:
    """How busy the agent is right now."""

    running: int
    reserved: int  # offers open plus jobs pending or queued


@dataclass(frozen=True, slots=True)
class Policy:
    """What an agent is willing to take on."""

    slots: int = 2  # jobs running at once
    max_reserved: int = 1000  # open offers plus pending and queued jobs
    # Open offers to one manager: a flood of requests from one manager, perhaps a
    # made-up one, cannot hold every reservation while others wait.
    max_offers_per_manager: int = 100
    offer_ttl: float = 60.0  # seconds an offer stays valid
    # Claims granted to managers that speak caroni.claims/1: jobs live at once under
    # one (0: grant none), and how long one holds unless a finished job renews it.
    claim_capacity: int = 100
    claim_ttl: float = 60.0
    site_identifier: str = ""
    site_contact: str = ""
    # Managers served, by routing key or key id: None serves every manager not denied.
    allow_managers: frozenset[str] | None = None
    deny_managers: frozenset[str] = frozenset()
    run_as: str | None = None  # run job bodies as this user (the agent must be root)

    def serves(self, manager_key: str) -> bool:
        names = {manager_key, manager_key.rsplit(".", 1)[-1]}
        if names & self.deny_managers:
            return False
        return self.allow_managers is None or bool(names & self.allow_managers)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What came of one job run."""

    ok: bool
    outputs: dict[str, str]  # declared outputs only; non-string JSON values as json.dumps
    reason: str  # "" when ok; else why it failed, ending with the stderr tail
    exit_code: int | None  # None when killed / not started
    stdout_tail: str  # last ~4 KiB
    stderr_tail: str  # last ~4 KiB
    warnings: tuple[str, ...] = field(default=())
    duration: float = 0.0  # seconds
