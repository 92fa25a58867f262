"""The manager's protocol, as pure functions of (workflow, message) -> messages to send.

Nothing here does I/O: each function changes the workflow aggregate it is given
and returns the messages to publish. The service shell loads and stores the
aggregate and writes the messages to the outbox in one transaction.

Every handler is idempotent: applying the same message twice leaves the workflow
as applying it once did (an offer for an attempt that already accepted one is
rejected, data already recorded is not forwarded again, and so on).
"""

from caroni.manager.handlers.attempts import request_message
from caroni.manager.handlers.common import DEFAULT_TIMINGS, Timings, hex_of, raw_of
from caroni.manager.handlers.creating import create_workflow, refusal_reason, start_workflow
from caroni.manager.handlers.ending import cancel, cancel_refusal, finish, status_message
from caroni.manager.handlers.messages import (
    on_data,
    on_decline,
    on_finished,
    on_job_accepted,
    on_offer,
    on_status_update,
)
from caroni.manager.handlers.timers import next_wake, on_tick

__all__ = [
    "DEFAULT_TIMINGS",
    "Timings",
    "cancel",
    "cancel_refusal",
    "create_workflow",
    "finish",
    "hex_of",
    "next_wake",
    "on_data",
    "on_decline",
    "on_finished",
    "on_job_accepted",
    "on_offer",
    "on_status_update",
    "on_tick",
    "raw_of",
    "refusal_reason",
    "request_message",
    "start_workflow",
    "status_message",
]
