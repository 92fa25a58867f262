"""What the manager does when nothing is heard: rebroadcasts, polls, leases."""

from __future__ import annotations

from caroni.core import NewId, Send, random_ids
from caroni.manager.handlers.attempts import give_up, request_sends
from caroni.manager.handlers.common import DEFAULT_TIMINGS, Timings, raw_of
from caroni.manager.handlers.messages import close_window
from caroni.manager.model import (
    Attempt,
    AttemptState,
    Workflow,
    WorkflowState,
)
from caroni.protocol import pb


def _rebroadcast_at(attempt: Attempt, timings: Timings) -> float:
    delay = min(timings.rebroadcast_first * 2 ** (attempt.broadcasts - 1), timings.rebroadcast_max)
    return float(attempt.updated_at + delay)


def _heard_or_polled(attempt: Attempt) -> float:
    return max(attempt.last_heard_at or attempt.updated_at, attempt.last_polled_at or 0.0)


def _deadlines(attempt: Attempt, timings: Timings) -> list[float]:
    """When this attempt's timers fire, by its state."""
    if attempt.state == AttemptState.REQUESTING:
        # "stalled" is noticed at a rebroadcast, so it needs no timer of its own.
        due = [_rebroadcast_at(attempt, timings)]
        if attempt.window_closes_at is not None:
            due.append(attempt.window_closes_at)
        if timings.request_deadline is not None:
            due.append(attempt.requested_at + timings.request_deadline)
        return due
    if attempt.state == AttemptState.ACCEPTING:
        return [attempt.updated_at + timings.accept_timeout]
    if attempt.state.has_job and attempt.state.live:
        heard = attempt.last_heard_at or attempt.updated_at
        return [_heard_or_polled(attempt) + timings.status_interval, heard + timings.job_lease]
    return []


def next_wake(workflow: Workflow, timings: Timings = DEFAULT_TIMINGS) -> float | None:
    """When this workflow's earliest timer is due (stored, so timers survive restarts)."""
    if workflow.state.finished:
        return None
    due = [
        moment
        for step in workflow.steps.values()
        if step.current is not None
        for moment in _deadlines(step.current, timings)
    ]
    return min(due) if due else None


def on_tick(
    workflow: Workflow,
    now: float,
    timings: Timings = DEFAULT_TIMINGS,
    *,
    new_id: NewId = random_ids,
) -> list[Send]:
    """Fire due timers: broadcast unanswered requests again, replace lost acceptances,
    poll silent jobs and give up on those whose agent stays silent past the lease."""
    if workflow.state.finished:
        return []
    sends: list[Send] = []
    waiting: list[str] = []
    for step in list(workflow.steps.values()):
        current = step.current
        if current is None or workflow.state.finished:
            continue
        if current.state == AttemptState.REQUESTING:
            if current.window_closes_at is not None and now >= current.window_closes_at:
                sends += close_window(workflow, current, now)
                continue
            waited = now - current.requested_at
            if timings.request_deadline is not None and waited >= timings.request_deadline:
                why = f"no agent offered {step.job_type!r} within {timings.request_deadline:g}s"
                sends += give_up(
                    workflow, step, current, AttemptState.ABANDONED, why, now, new_id, retry=False
                )
                continue
            if now >= _rebroadcast_at(current, timings):
                current.broadcasts += 1
                current.updated_at = now
                sends += request_sends(step, current)
            if waited >= timings.stalled_after:
                waiting.append(step.job_type)
        elif current.state == AttemptState.ACCEPTING:
            if now >= current.updated_at + timings.accept_timeout:
                why = "no JobAccepted after the offer was accepted"
                sends += give_up(workflow, step, current, AttemptState.ABANDONED, why, now, new_id)
        elif current.state.has_job and current.state.live:
            heard = current.last_heard_at or current.updated_at
            leased = current.agent_is_ours or current.polls_answered
            if leased and now >= heard + timings.job_lease:
                why = f"agent silent for {now - heard:.0f}s about its job"
                current.lease_expired = True
                sends += give_up(workflow, step, current, AttemptState.ABANDONED, why, now, new_id)
            elif now >= _heard_or_polled(current) + timings.status_interval:
                current.last_polled_at = now
                assert current.job_uuid is not None and current.agent_key is not None
                poll = pb.JobStatusRequest(job_uuid=raw_of(current.job_uuid))
                sends.append(Send(current.agent_key, poll))
    if workflow.state.finished:
        return sends
    if waiting:
        if workflow.state != WorkflowState.STALLED:
            workflow.updated_at = now
        workflow.state = WorkflowState.STALLED
        workflow.reason = "waiting for an agent offering " + ", ".join(sorted(set(waiting)))
    elif workflow.state == WorkflowState.STALLED:
        workflow.state = WorkflowState.RUNNING
        workflow.reason = ""
    if sends:
        workflow.updated_at = now
    return sends
