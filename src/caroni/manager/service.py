"""The manager role: binds the pure handlers to the service shell."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from caroni.core import Incoming, NewId, Send
from caroni.errors import SetAside
from caroni.manager import handlers
from caroni.manager.claim_store import ClaimStore
from caroni.manager.claims import ClaimBook
from caroni.manager.handlers.attempts import route_requests
from caroni.manager.handlers.claims import assign_claimed, assign_waiting, on_refusal
from caroni.manager.model import DEFAULT_MAX_ATTEMPTS, Workflow, WorkflowState
from caroni.manager.store import Loaded, WorkflowStore
from caroni.manager.templates import Template
from caroni.manager.work import ManagerWork
from caroni.node.tx import Tx
from caroni.protocol import pb
from caroni.protocol.extensions import CLAIMS, TYPED_REQUESTS

log = logging.getLogger("caroni.manager")

# A handler of a message about a job: (workflow, message, reply_to, now, new_id,
# ours: whether the sender is a Caroni node like this one).
JobHandler = Callable[[Workflow, Any, str, float, NewId, bool], list[Send]]


def _plain(handler: Callable[[Workflow, Any, str, float], list[Send]]) -> JobHandler:
    """A job handler that needs neither fresh ids nor who the sender is."""
    return lambda workflow, msg, reply_to, now, _, __: handler(workflow, msg, reply_to, now)


def _with_ids(handler: Callable[..., list[Send]]) -> JobHandler:
    """A job handler that takes fresh ids (``new_id=``) but not who the sender is."""
    return lambda workflow, msg, reply_to, now, new_id, _: handler(
        workflow, msg, reply_to, now, new_id=new_id
    )


DEFAULT_MAX_RUNNING = 300
MAX_PLACED_PER_TRANSACTION = 100
"""Workflows with waiting steps one transaction takes to assign them under claims."""


class ManagerRole:
    """Owns workflows: expands templates into steps and drives them to the end."""

    name = "manager"
    # Replicas share the database: timers another replica set are seen this often.
    max_tick_interval = 1.0

    def __init__(
        self,
        default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timings: handlers.Timings = handlers.DEFAULT_TIMINGS,
        max_running: int = DEFAULT_MAX_RUNNING,
        signed: bool = False,
        shared_requests: bool = False,
    ) -> None:
        self.store = WorkflowStore(timings)
        # Every request also to the plain key at once, not only when broadcast again:
        # for a federation whose agents of other implementations should not wait.
        self.shared_requests = shared_requests
        # Signatures required: a WorkFlowCancel must be signed by the workflow's submitter.
        self.signed = signed
        self.timings = timings
        self.default_max_attempts = default_max_attempts
        # Workflows requesting and running steps at once (0: no limit); the others
        # wait their turn, oldest first. Thousands of workflows negotiating at once
        # only fill agents with reservations for steps that cannot run yet.
        self.max_running = max_running
        # Which uuid field of each message finds its workflow, and the handler to apply.
        self._routed: dict[str, tuple[str, JobHandler]] = {
            "JobFulfillmentOffer": ("request_uuid", self._on_offer),
            "JobFulfillmentDecline": ("request_uuid", _plain(handlers.on_decline)),
            "JobAccepted": ("offer_uuid", _plain(handlers.on_job_accepted)),
            "JobStatusUpdate": ("job_uuid", _with_ids(handlers.on_status_update)),
            "JobDataAvailable": ("job_uuid", _plain(handlers.on_data)),
            "JobFinished": ("job_uuid", _with_ids(handlers.on_finished)),
            "JobAssignmentRefusal": ("job_uuid", _plain(on_refusal)),
        }
        self.claims = ClaimStore()
        # Job type -> the request seeking agents besides full claims, and since when
        # (``assign_claimed``); in memory: a restart costs at most one more request.
        self._seeking: dict[str, tuple[str, float]] = {}

    def _on_offer(
        self, workflow: Workflow, msg: Any, reply_to: str, now: float, _: NewId, ours: bool
    ) -> list[Send]:
        return handlers.on_offer(workflow, msg, reply_to, now, self.timings, ours=ours)

    def _send(self, tx: Tx, sends: list[Send], workflow: Workflow | None = None) -> None:
        """Send what a handler decided about ``workflow``: with claims, steps a claim
        covers are assigned rather than requested; requests go to their keys."""
        if (
            workflow is not None
            and CLAIMS in tx.speaks
            and any(isinstance(send.message, pb.JobFulfillmentRequest) for send in sends)
        ):
            hold = self.timings.stalled_after
            book = self._book(tx)
            sends = assign_claimed(workflow, sends, book, tx.now, tx.new_id, hold, self._seeking)
        typed = TYPED_REQUESTS in tx.speaks
        tx.send_all(route_requests(sends, typed=typed, shared=self.shared_requests))

    def _book(self, tx: Tx) -> ClaimBook:
        """The live claims, read once per transaction."""
        work = self._work(tx)
        if work.book is None:
            work.book = self.claims.live(tx.conn, tx.now)
        return work.book

    def _note_claims(self, tx: Tx, incoming: Incoming) -> None:
        """Record the claims an agent granted, renewed, shrank or revoked, and stop
        assigning under one it refused an assignment under."""
        if not tx.uses(CLAIMS, incoming):
            return
        msg = incoming.message
        kind = incoming.type_name
        if kind == "JobFulfillmentOffer" and msg.HasField("claim"):
            site = msg.site.site_identifier if msg.HasField("site") else ""
            self._book(tx).grant(msg.claim, incoming.reply_to, site, tx.now)
        elif kind == "JobFinished" and msg.HasField("claim"):
            self._book(tx).grant(msg.claim, incoming.reply_to, "", tx.now)
        elif kind == "JobAssignmentRefusal" and len(msg.claim_uuid) == 16:
            self._book(tx).drop(uuid.UUID(bytes=msg.claim_uuid).hex, incoming.reply_to)

    def bindings(self, own_key: str) -> list[str]:
        return [own_key]

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        kind = incoming.type_name
        msg = incoming.message
        self._note_claims(tx, incoming)
        if kind in self._routed:
            field, handler = self._routed[kind]
            key = uuid.UUID(bytes=getattr(msg, field)).hex
            loaded = self._by_key(tx, key)
            if loaded is None:
                raise SetAside(f"{kind} names {field} {key}, which no workflow here has")
            tx.subject = loaded.workflow.id
            ours = incoming.opened.sender is not None
            workflow = loaded.workflow
            self._send(
                tx, handler(workflow, msg, incoming.reply_to, tx.now, tx.new_id, ours), workflow
            )
            _log_state(loaded.workflow, kind)
        elif kind == "Claim":
            if not tx.uses(CLAIMS, incoming):
                raise SetAside("a Claim from a node that did not announce claims")
            self._book(tx).grant(msg, incoming.reply_to, "", tx.now)
        elif kind == "WorkFlowCreate":
            self.create(tx, msg, incoming.reply_to, incoming.opened.signator)
        elif kind == "WorkFlowStatusRequest":
            # A question, not a change: an unknown id gets an answer saying so.
            found = self._find(tx, msg.workflow_uuid)
            tx.subject = found.workflow.id if found is not None else ""
            answer = (
                handlers.status_message(found.workflow)
                if found is not None
                else pb.WorkFlowStatus(
                    workflow_uuid=msg.workflow_uuid, state="unknown", reason="no such workflow here"
                )
            )
            tx.send(incoming.reply_to, answer)
        elif kind == "WorkFlowCancel":
            found = self._find(tx, msg.workflow_uuid)
            if found is None:
                raise SetAside("no such workflow here")
            refusal = handlers.cancel_refusal(found.workflow, incoming.opened.signator, self.signed)
            if refusal:
                raise SetAside(refusal)
            self.cancel(tx, found.workflow.id, msg.reason)
        else:
            raise SetAside(f"a manager does not handle {kind}")

    def create(
        self, tx: Tx, msg: pb.WorkFlowCreate, submitter: str, submitter_key: str = ""
    ) -> Workflow:
        """Start a workflow (from a message, the CLI or the HTTP API); idempotent by id.

        ``submitter_key`` is the key id that signed the message ("" for none).
        """
        if msg.workflow_uuid:
            if len(msg.workflow_uuid) != 16:
                raise SetAside("workflow_uuid must be 16 bytes")
            workflow_id = uuid.UUID(bytes=msg.workflow_uuid).hex
            existing = self._load(tx, workflow_id)
            if existing is not None:
                return existing.workflow  # the same submission again
        else:
            workflow_id = tx.new_id()
        inputs: dict[str, str] = {}
        duplicated = []
        for item in msg.inputs:
            if item.key in inputs:
                duplicated.append(item.key)
            inputs[item.key] = item.value
        template = self.store.get_template(tx.conn, msg.template_name)
        start = not self.max_running or self._running(tx) < self.max_running
        workflow, sends = handlers.create_workflow(
            template,
            workflow_id=workflow_id,
            template_name=msg.template_name,
            name=msg.wf_name,
            inputs=inputs,
            submitter=submitter,
            max_attempts=msg.max_attempts or self.default_max_attempts,
            now=tx.now,
            start=start,
            submitter_key=submitter_key,
            given_twice=duplicated,
            new_id=tx.new_id,
        )
        self._opened(tx)[workflow.id] = Loaded(workflow)
        if self.max_running and workflow.state == WorkflowState.RUNNING:
            self._work(tx).running = self._running(tx) + 1
        tx.subject = workflow.id
        self._send(tx, sends, workflow)
        _log_state(workflow, "WorkFlowCreate")
        return workflow

    def cancel(self, tx: Tx, workflow_id: str, reason: str) -> Workflow | None:
        """Cancel a workflow (a WorkFlowCancel, the web site, the HTTP API); None if there is
        none.

        Cancelling a finished workflow changes nothing.
        """
        loaded = self._load(tx, workflow_id)
        if loaded is None:
            return None
        tx.subject = loaded.workflow.id
        self._send(tx, handlers.cancel(loaded.workflow, reason, tx.now))
        return loaded.workflow

    def add_template(self, tx: Tx, template: Template) -> None:
        self.store.put_template(tx.conn, template, tx.now)

    def tick(self, tx: Tx) -> float | None:
        for workflow_id in self.store.due(tx.conn, tx.now):
            loaded = self._load(tx, workflow_id)
            if loaded is None:
                continue
            tx.subject = workflow_id
            workflow = loaded.workflow
            sends = handlers.on_tick(workflow, tx.now, self.timings, new_id=tx.new_id)
            self._send(tx, sends, workflow)
            tx.tag_traffic()  # each workflow's messages logged under its own id
        # Written now, so that the next wake below counts these workflows' timers.
        admitted = self.save_opened(tx)
        if self.max_running and not admitted:
            self._admit(tx)  # should room have come some other way (a replica, a restart)
        self.claims.forget_expired(tx.conn, tx.now)
        return self.store.next_wake(tx.conn)

    def _find(self, tx: Tx, raw: bytes) -> Loaded | None:
        return self._load(tx, uuid.UUID(bytes=raw).hex) if len(raw) == 16 else None

    # --- one read and one write per workflow and transaction ------------------------------

    def open(self, tx: Tx) -> ManagerWork:
        return ManagerWork(self, tx)

    def _work(self, tx: Tx) -> ManagerWork:
        work = tx.work
        assert isinstance(work, ManagerWork), work
        return work

    def _opened(self, tx: Tx) -> dict[str, Loaded]:
        return self._work(tx).opened

    def _load(self, tx: Tx, workflow_id: str) -> Loaded | None:
        opened = self._opened(tx)
        loaded = opened.get(workflow_id)
        if loaded is None:
            loaded = self.store.load(tx.conn, workflow_id)
            if loaded is not None:
                opened[workflow_id] = loaded
        return loaded

    def _by_key(self, tx: Tx, key: str) -> Loaded | None:
        found = self._opened_with_key(tx, key)
        if found is None:
            self._read_by_keys(tx, [key])
            found = self._opened_with_key(tx, key)
        return found

    def _opened_with_key(self, tx: Tx, key: str) -> Loaded | None:
        return next((loaded for loaded in self._opened(tx).values() if key in loaded.keys), None)

    def prefetch(self, tx: Tx, incoming: Sequence[Incoming]) -> None:
        """Read the workflows a batch of messages concern in one statement."""
        keys = []
        for item in incoming:
            routed = self._routed.get(item.type_name)
            if routed is not None:
                keys.append(uuid.UUID(bytes=getattr(item.message, routed[0])).hex)
        if keys:
            self._read_by_keys(tx, keys)

    def _read_by_keys(self, tx: Tx, keys: Collection[str]) -> None:
        opened = self._opened(tx)
        for found in self.store.load_by_keys(tx.conn, keys):
            # Read already in this transaction: the copy read first counts.
            opened.setdefault(found.workflow.id, found)

    def _place_waiting(self, tx: Tx) -> None:
        """Assign steps that wait for an agent to live claims with room: those of the
        workflows at hand, then those waiting longest elsewhere. A claim gets room when
        its jobs end, which is when this runs (a JobFinished brings the claim along)."""
        work = self._work(tx)
        book = work.book
        if book is None or CLAIMS not in tx.speaks:
            return
        changed: Counter[str] = Counter()
        for loaded in work.opened.values():
            changed.update(loaded.claims_changed())
        book.recount(changed)
        tx.tag_traffic()  # what was noted so far stays under its own subject
        for loaded in list(work.opened.values()):
            if loaded.workflow.waiting_steps() and book.room(tx.now):
                self._assign_waiting(tx, loaded, book)
        room = book.room(tx.now)
        if not room:
            return
        limit = min(sum(room.values()), MAX_PLACED_PER_TRANSACTION)
        for loaded in self.store.waiting_for(tx.conn, room, limit, skip=work.opened.keys()):
            work.opened[loaded.workflow.id] = loaded
            self._assign_waiting(tx, loaded, book)

    def _assign_waiting(self, tx: Tx, loaded: Loaded, book: ClaimBook) -> None:
        workflow = loaded.workflow
        tx.subject = workflow.id
        self._send(tx, assign_waiting(workflow, book, tx.now, tx.new_id), workflow)
        tx.tag_traffic()

    def save_opened(self, tx: Tx) -> bool:
        """Write back the workflows read; start waiting ones in place of those that
        ended (True when it tried)."""
        self._place_waiting(tx)
        opened = self._opened(tx)
        ended = any(
            loaded.workflow.state.finished and not loaded.finished for loaded in opened.values()
        )
        self._save(tx, opened.values())
        if self.max_running and ended:
            self._admit(tx)
            return True
        return False

    def _running(self, tx: Tx) -> int:
        """Workflows requesting or running steps (counted once per transaction)."""
        work = self._work(tx)
        if work.running is None:
            work.running = self.store.count_running(tx.conn)
        return work.running

    def _admit(self, tx: Tx) -> None:
        """Start the workflows waiting longest, as many as there is room for."""
        self._work(tx).running = None  # what this transaction ended is written now
        room = self.max_running - self._running(tx)
        if room <= 0:
            return
        tx.tag_traffic()  # what was noted so far stays under its own subject
        started = self.store.waiting(tx.conn, room)
        for loaded in started:
            tx.subject = loaded.workflow.id
            workflow = loaded.workflow
            self._send(tx, handlers.start_workflow(workflow, tx.now, new_id=tx.new_id), workflow)
            tx.tag_traffic()
        self._save(tx, started)

    def _save(self, tx: Tx, loaded: Iterable[Loaded]) -> None:
        """Write workflows back, and with them the claims and the jobs under them."""
        in_use = self.store.save(tx.conn, loaded)
        book = self._work(tx).book
        if book is not None or any(in_use.values()):
            self.claims.write(tx.conn, book if book is not None else ClaimBook(), in_use)


def _log_state(workflow: Workflow, cause: str) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("workflow %s %s after %s", workflow.id, workflow.state, cause)
    if workflow.state.finished:
        log.info("workflow %s %s %s", workflow.id, workflow.state, workflow.reason)
