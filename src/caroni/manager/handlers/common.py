"""Timings, ids and the wire status of attempts: what every part of the manager's protocol uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from caroni.manager.model import (
    AttemptState,
)
from caroni.protocol import pb


@dataclass(frozen=True, slots=True)
class Timings:
    """How long the manager waits before it acts (seconds)."""

    rebroadcast_first: float = 2.0  # a request with no offer is broadcast again after this
    rebroadcast_max: float = 60.0  # ... the wait doubling up to this
    stalled_after: float = 10.0  # a request waiting this long marks the workflow stalled
    request_deadline: float | None = None  # fail the step if no agent offers within this
    accept_timeout: float = 60.0  # an accepted offer must become a job within this
    status_interval: float = 30.0  # ask a silent job's agent for its status this often
    job_lease: float = 180.0  # give a job up when its agent stays silent this long
    # 0: take the first offer. Otherwise collect offers this long after the first
    # one and take the least loaded (load as the agents report it).
    offer_window: float = 0.0


DEFAULT_TIMINGS = Timings()


STATUS_TO_ATTEMPT = {
    pb.JOB_STATUS_PENDING: AttemptState.PENDING,
    pb.JOB_STATUS_QUEUED: AttemptState.QUEUED,
    pb.JOB_STATUS_RUNNING: AttemptState.RUNNING,
    pb.JOB_STATUS_PAUSED: AttemptState.QUEUED,
}


def hex_of(raw: bytes) -> str:
    return uuid.UUID(bytes=raw).hex


def raw_of(key: str) -> bytes:
    return uuid.UUID(hex=key).bytes
