"""The agent role: binds the pure handlers to the shell, and runs jobs in slots."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from caroni.agent import handlers
from caroni.agent.containment import Containments, Mechanism
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import AgentJob, JobResult, JobStatus, Load, Offer, Policy
from caroni.agent.runner import run_job
from caroni.agent.store import AgentStore
from caroni.agent.work import AgentWork
from caroni.backoff import Backoff
from caroni.core import Incoming
from caroni.errors import SetAside
from caroni.node.tx import Tx
from caroni.protocol import FULFILLMENT_KEY, fulfillment_key_for
from caroni.protocol.extensions import SILENT_DECLINES, TYPED_REQUESTS

if TYPE_CHECKING:
    from caroni.node.runtime import Node

log = logging.getLogger("caroni.agent")


class AgentRole:
    """Offers its job types, holds jobs until their inputs arrive, runs them in slots."""

    name = "agent"

    def __init__(self, policy: Policy, workdir: Path, containment: Mechanism | None = None) -> None:
        self.policy = policy
        self.workdir = workdir
        # Where jobs' processes are kept, and what a crashed predecessor left
        # (``containment`` forces a mechanism; None picks a cgroup where it can).
        self.containments = Containments(workdir, containment)
        self.store = AgentStore()
        # Replaced whole (never mutated) so the database thread always sees a
        # consistent catalogue while the event loop installs an edit.
        self.catalogue: dict[str, JobTypeSpec] = {}
        self._node: Node | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()  # claim ready jobs in a transaction of their own
        self._scheduler: asyncio.Task[None] | None = None
        # Outcomes of finished jobs not yet recorded (all that came in are recorded
        # in one transaction), and the task recording them.
        self._outcomes: list[tuple[str, JobResult]] = []
        self._outcomes_ready = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------

    async def start(self, node: Node) -> None:
        """Kill what a crashed predecessor's jobs left running, load the catalogue,
        requeue the jobs it interrupted, start the scheduler."""
        self._node = node
        self.containments.adopt_orphans()
        cut_off = await node.transact(self._cut_off)
        await asyncio.to_thread(self._kill_leftovers, cut_off)
        await node.transact(self._recover)
        self._scheduler = asyncio.create_task(self._schedule_loop())
        self._recorder = asyncio.create_task(self._record_loop())
        self._wake.set()

    async def stop(self) -> None:
        loops = [task for task in (self._scheduler, self._recorder) if task is not None]
        for task in loops:
            task.cancel()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *loops, return_exceptions=True)

    def _cut_off(self, tx: Tx) -> list[str]:
        return self.store.job_uuids_with_status(tx.conn, JobStatus.RUNNING)

    def _kill_leftovers(self, job_uuids: list[str]) -> None:
        """Before a cut-off job runs again, end every process its first run left."""
        for job_uuid in job_uuids:
            killed, what = self.containments.kill_leftovers(job_uuid)
            level = logging.WARNING if killed else logging.INFO
            log.log(level, "job %s: cut off by a stop or crash; %s", job_uuid, what)

    def _recover(self, tx: Tx) -> None:
        self.catalogue = self.store.job_types(tx.conn)
        cut_off = self.store.job_uuids_with_status(tx.conn, JobStatus.RUNNING)
        for job in self.store.jobs(tx.conn, cut_off):
            # The body was cut off by a stop or crash: run it again from the start.
            job.set_status(JobStatus.QUEUED, tx.now, "requeued: the agent stopped while it ran")
            self._save(tx, job)
        self._claim(tx)

    async def put_job_type(self, spec: JobTypeSpec) -> None:
        """Add or replace a job type; the next job that starts uses the new body."""
        assert self._node is not None

        def write(tx: Tx) -> None:
            self.store.put_job_type(tx.conn, spec, tx.now)
            tx.after_commit(lambda: self._install(spec))

        await self._node.transact(write)
        typed = fulfillment_key_for(spec.name)
        if TYPED_REQUESTS in self._node.speaks and typed is not None:
            await self._node.listen_to(typed)

    def _install(self, spec: JobTypeSpec) -> None:
        self.catalogue = {**self.catalogue, spec.name: spec}

    # --- messages -----------------------------------------------------------------------

    def bindings(self, own_key: str) -> list[str]:
        """The plain broadcast key (every manager's requests), its own key, and with
        typed requests the keys of the job types it serves."""
        keys = [FULFILLMENT_KEY, own_key]
        if self._node is not None and TYPED_REQUESTS in self._node.speaks:
            typed = (fulfillment_key_for(name) for name in self.catalogue)
            keys += sorted(key for key in typed if key is not None)
        return keys

    @staticmethod
    def _heard_typed_copy(tx: Tx, incoming: Incoming) -> bool:
        """Whether a request is the plain copy of one its manager also sent to the key
        of its job type: this agent has that copy if it serves the type, and nothing
        to say if it does not."""
        return (
            incoming.routing_key == FULFILLMENT_KEY
            and tx.uses(TYPED_REQUESTS, incoming)
            and fulfillment_key_for(incoming.message.job_type_name) is not None
        )

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        kind = incoming.type_name
        msg = incoming.message
        if kind == "JobFulfillmentRequest":
            if self._heard_typed_copy(tx, incoming):
                return
            tx.subject = uuid.UUID(bytes=msg.request_uuid).hex
            load = self._load(tx)
            work = self._work(tx)
            offers_to = work.offers_to
            assert offers_to is not None  # counted with the load
            offer, send = handlers.on_request(
                msg,
                incoming.reply_to,
                catalogue=self.catalogue,
                load=load,
                policy=self.policy,
                node_uuid=tx.node_uuid,
                now=tx.now,
                offers_to_manager=offers_to.get(incoming.reply_to, 0),
                standing=self._standing_offer(tx, tx.subject, incoming.reply_to),
                new_id=tx.new_id,
                silent_about_unserved=tx.uses(SILENT_DECLINES, incoming),
            )
            if offer is not None:
                work.new_offers.append(offer)
                work.open_offers[(offer.request_uuid, offer.manager_key)] = offer
                work.load = Load(load.running, load.reserved + 1)
                offers_to[offer.manager_key] = offers_to.get(offer.manager_key, 0) + 1
            if send is not None:
                tx.send(send.to, send.message)
            return
        # Everything else may change what jobs and offers count for.
        self._work(tx).forget_counts()
        if kind == "JobFulfillmentOfferAccept":
            self._accept(tx, incoming)
        elif kind == "JobFulfillmentOfferReject":
            tx.subject = uuid.UUID(bytes=msg.request_uuid).hex
            offer = self.store.offer(tx.conn, uuid.UUID(bytes=msg.offer_uuid).hex)
            if offer is None:
                return  # expired and forgotten: nothing is reserved for it
            try:
                changed = handlers.on_reject(offer, incoming.reply_to)
            except handlers.OfferUnavailable as exc:
                raise SetAside(str(exc)) from exc
            if changed:
                self.store.update_offer(tx.conn, offer)
        elif kind == "JobStatusRequest":
            tx.send_all([handlers.status_update(self._owned_job(tx, incoming))])
        elif kind == "JobDataAvailable":
            job = self._owned_job(tx, incoming)
            tx.send_all(handlers.on_data(job, msg, tx.now))
            self._save(tx, job)
            if job.status == JobStatus.QUEUED:
                self._claim(tx)
        elif kind == "JobKill":
            job = self._owned_job(tx, incoming)
            tx.send_all(handlers.on_kill(job, msg, tx.now))
            self._save(tx, job)
            tx.after_commit(lambda: self._cancel(job.job_uuid))
            self._claim(tx)  # its slot is free
        else:
            raise SetAside(f"an agent does not handle {kind}")

    def _accept(self, tx: Tx, incoming: Incoming) -> None:
        offer_uuid = uuid.UUID(bytes=incoming.message.offer_uuid).hex
        offer = self.store.offer(tx.conn, offer_uuid)
        if offer is None:
            raise SetAside(f"accept for offer {offer_uuid}, which this agent never made")
        tx.subject = offer.request_uuid
        existing = self._job(tx, offer.job_uuid) if offer.job_uuid else None
        try:
            job, sends = handlers.on_accept(
                offer, existing, incoming.reply_to, tx.now, new_id=tx.new_id
            )
        except handlers.OfferUnavailable as exc:
            raise SetAside(str(exc)) from exc
        tx.send_all(sends)
        if job is not None:
            self._save(tx, job, new=True)
            self.store.update_offer(tx.conn, offer)
            if job.status == JobStatus.QUEUED:
                self._claim(tx)

    def _owned_job(self, tx: Tx, incoming: Incoming) -> AgentJob:
        """The job a message names, if the sender is the manager that owns it."""
        job_uuid = uuid.UUID(bytes=incoming.message.job_uuid).hex
        job = self._job(tx, job_uuid)
        if job is None:
            raise SetAside(
                f"{incoming.type_name} for job {job_uuid}, which this agent does not hold"
            )
        if incoming.reply_to != job.manager_key:
            raise SetAside(
                f"{incoming.type_name} for job {job_uuid} from {incoming.reply_to!r}, "
                f"but it belongs to {job.manager_key!r}"
            )
        tx.subject = job.job_uuid
        return job

    def _load(self, tx: Tx) -> Load:
        """How busy this agent is; counted once per transaction (a batch of requests).

        Also counts the open offers by manager (``AgentWork.offers_to``).
        """
        work = self._work(tx)
        if work.load is None:
            self.write_changes(tx)  # count what this transaction changed too
            counts = self.store.count_live(tx.conn)
            reserved = sum(counts.get(str(s), 0) for s in (JobStatus.PENDING, JobStatus.QUEUED))
            work.offers_to = self.store.open_offers(tx.conn)
            work.load = Load(
                running=counts.get(str(JobStatus.RUNNING), 0),
                reserved=reserved + sum(work.offers_to.values()),
            )
        return work.load

    def tick(self, tx: Tx) -> float | None:
        self.store.expire_offers(tx.conn, tx.now)
        return self.store.next_offer_expiry(tx.conn)

    # --- one read and one write per job and transaction ----------------------------------

    def prefetch(self, tx: Tx, incoming: Sequence[Incoming]) -> None:
        """Read the jobs and standing offers a batch of messages concern, all at once."""
        unit = self._work(tx)
        job_uuids, request_uuids = [], []
        for item in incoming:
            if item.type_name in ("JobStatusRequest", "JobDataAvailable", "JobKill"):
                job_uuids.append(uuid.UUID(bytes=item.message.job_uuid).hex)
            elif item.type_name == "JobFulfillmentRequest":
                request_uuids.append(uuid.UUID(bytes=item.message.request_uuid).hex)
        if job_uuids:
            for job in self.store.jobs(tx.conn, job_uuids):
                unit.jobs.setdefault(job.job_uuid, job)
        if request_uuids:
            self._read_open_offers(tx, unit, request_uuids)

    def open(self, tx: Tx) -> AgentWork:
        return AgentWork(self, tx)

    def _work(self, tx: Tx) -> AgentWork:
        work = tx.work
        assert isinstance(work, AgentWork), work
        return work

    def _job(self, tx: Tx, job_uuid: str) -> AgentJob | None:
        unit = self._work(tx)
        job = unit.jobs.get(job_uuid)
        if job is None:
            job = self.store.job(tx.conn, job_uuid)
            if job is not None:
                unit.jobs[job_uuid] = job
        return job

    def _save(self, tx: Tx, job: AgentJob, *, new: bool = False) -> None:
        """Write ``job`` back before the transaction's rows are written."""
        unit = self._work(tx)
        unit.jobs[job.job_uuid] = job
        unit.changed[job.job_uuid] = unit.changed.get(job.job_uuid, False) or new

    def _standing_offer(self, tx: Tx, request_uuid: str, manager_key: str) -> Offer | None:
        unit = self._work(tx)
        if request_uuid not in unit.requests_read:
            self._read_open_offers(tx, unit, [request_uuid])
        return unit.open_offers.get((request_uuid, manager_key))

    def _read_open_offers(self, tx: Tx, unit: AgentWork, request_uuids: list[str]) -> None:
        for offer in self.store.open_offers_for(tx.conn, request_uuids):
            unit.open_offers[(offer.request_uuid, offer.manager_key)] = offer
        unit.requests_read.update(request_uuids)

    def write_changes(self, tx: Tx) -> None:
        """Write the offers made and the jobs changed so far in this transaction."""
        unit = self._work(tx)
        self.store.add_offers(tx.conn, unit.new_offers)
        unit.new_offers = []
        self.store.save_jobs(tx.conn, [(unit.jobs[key], new) for key, new in unit.changed.items()])
        unit.changed.clear()

    # --- running jobs -------------------------------------------------------------------
    #
    # A job is claimed (marked running, and started once that is committed) in the
    # same transaction that made it ready or freed a slot: its data arriving, the
    # job before it finishing, a kill. Slots are counted in the database, where the
    # claims are made, so the count is right whatever the transaction's outcome.

    def _claim(self, tx: Tx) -> None:
        """Claim the jobs ready longest, as many as there are free slots."""
        self.write_changes(tx)  # the claim reads the jobs' state from the database
        work = self._work(tx)
        if work.running is None:
            work.running = self.store.count_running(tx.conn)
        running = work.running
        free = self.policy.slots - running
        if free <= 0:
            return
        tx.tag_traffic()  # what this transaction noted so far stays under its own subject
        claimed = []
        for job in self.store.next_ready(tx.conn, free):
            spec = self.catalogue.get(job.job_type)
            tx.send_all(handlers.claim(job, spec, tx.now))
            if spec is not None:
                claimed.append((job, spec))
            self._save(tx, job)
            tx.subject = job.job_uuid
            tx.tag_traffic()
        work.running = running + len(claimed)
        if claimed:
            tx.after_commit(lambda: self._start(claimed))

    def _start(self, claimed: list[tuple[AgentJob, JobTypeSpec]]) -> None:
        for job, spec in claimed:
            if job.job_uuid not in self._running:
                self._running[job.job_uuid] = asyncio.create_task(self._run(job, spec))

    async def _schedule_loop(self) -> None:
        """Claim in a transaction of its own when asked to (after a start or a failure)."""
        assert self._node is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._node.transact(self._claim)
            except Exception:
                log.exception("could not claim queued jobs; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _run(self, job: AgentJob, spec: JobTypeSpec) -> None:
        assert self._node is not None
        try:
            result = await run_job(
                spec,
                job.inputs,
                workdir_root=self.workdir,
                job_id=job.job_uuid,
                run_as=self.policy.run_as,
                containments=self.containments,
            )
        except asyncio.CancelledError:
            self._running.pop(job.job_uuid, None)
            raise
        log.info("job %s (%s) %s", job.job_uuid, spec.name, "ok" if result.ok else result.reason)
        self._outcomes.append((job.job_uuid, result))
        self._outcomes_ready.set()

    async def _record_loop(self) -> None:
        """Record finished jobs' outcomes (and claim the next jobs) in one transaction
        for all the outcomes that have come in; a job's slot counts as taken until then."""
        assert self._node is not None
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready.clear()
            outcomes, self._outcomes = self._outcomes, []
            backoff = Backoff(first=0.5, most=10.0)
            while True:
                try:
                    await self._node.transact(functools.partial(self._finish, outcomes=outcomes))
                    break
                except Exception as exc:
                    # The outcomes must be recorded (and the slots freed): keep trying.
                    log.warning(
                        "recording %d job outcomes failed, retrying: %s", len(outcomes), exc
                    )
                    await asyncio.sleep(backoff.next())  # a retry pause
            for job_uuid, _ in outcomes:
                self._running.pop(job_uuid, None)

    def _finish(self, tx: Tx, outcomes: list[tuple[str, JobResult]]) -> None:
        for job_uuid, result in outcomes:
            job = self._job(tx, job_uuid)
            if job is None:
                continue
            tx.subject = job_uuid
            tx.send_all(handlers.job_finished(job, result, tx.now))
            self._save(tx, job)
            tx.tag_traffic()
        self._claim(tx)

    def _cancel(self, job_uuid: str) -> None:
        task = self._running.get(job_uuid)
        if task is not None:
            task.cancel()
