"""The agent role: binds the pure handlers to the shell."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from caroni.agent import claims, handlers, links
from caroni.agent.containment import Containments, Mechanism
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import AgentJob, GrantedClaim, JobStatus, Load, Offer, Policy
from caroni.agent.slots import Slots
from caroni.agent.spare import SpareShells
from caroni.agent.store import AgentStore
from caroni.agent.work import AgentWork
from caroni.core import Incoming
from caroni.errors import SetAside
from caroni.node.tx import Tx
from caroni.protocol import FULFILLMENT_KEY, fulfillment_key_for, pb
from caroni.protocol.extensions import CLAIMS, SILENT_DECLINES, TYPED_REQUESTS

if TYPE_CHECKING:
    from caroni.node.runtime import Node

log = logging.getLogger("caroni.agent")

_ABOUT_A_JOB = frozenset({"JobStatusRequest", "JobDataAvailable", "JobKill", "JobAssignment"})
"""The messages that name a job by its uuid."""


class AgentRole:
    """Offers its job types, holds jobs until their inputs arrive, runs them in slots."""

    name = "agent"
    # Its only timers are its offers' expiry, and a new offer runs them at once
    # (``tick_soon``): an idle agent need not run a transaction every second.
    max_tick_interval = 30.0

    def __init__(self, policy: Policy, workdir: Path, containment: Mechanism | None = None) -> None:
        self.policy = policy
        self.workdir = workdir
        # Where jobs' processes are kept, and what a crashed predecessor left
        # (``containment`` forces a mechanism; None picks a cgroup where it can).
        self.containments = Containments(workdir, containment)
        # Jobs' first processes, moved into their cgroups ahead of time.
        self.spares = (
            SpareShells(self.containments)
            if self.containments.mechanism == Mechanism.CGROUP
            else None
        )
        self.store = AgentStore()
        # Replaced whole (never mutated) so the database thread always sees a
        # consistent catalogue while the event loop installs an edit.
        self.catalogue: dict[str, JobTypeSpec] = {}
        self._node: Node | None = None
        self.slots = Slots(self)

    # --- life cycle -------------------------------------------------------------------

    async def start(self, node: Node) -> None:
        """Recover the jobs a crash cut off and start running jobs (see ``Slots``)."""
        self._node = node
        await self.slots.start(node)

    async def stop(self) -> None:
        await self.slots.stop()

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

    def _left_to_claim(self, tx: Tx, incoming: Incoming) -> bool:
        """Whether a request marked ``claims_full`` meets this agent's own claim for
        its manager, used enough (``claims.leaves_unanswered``): then it says nothing."""
        if not incoming.message.claims_full or not tx.uses(CLAIMS, incoming):
            return False
        claim = self.store.live_claim_for(tx.conn, incoming.reply_to, tx.now)
        under = 0 if claim is None else self.store.jobs_under_claim(tx.conn, claim.claim_uuid)
        return claims.leaves_unanswered(incoming.message, claim, under, tx.now)

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        kind = incoming.type_name
        msg = incoming.message
        if kind == "JobFulfillmentRequest":
            if self._heard_typed_copy(tx, incoming) or self._left_to_claim(tx, incoming):
                return
            tx.subject = uuid.UUID(bytes=msg.request_uuid).hex
            load = self._load(tx)
            work = self.work(tx)
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
                if self._node is not None:
                    tx.after_commit(self._node.tick_soon)  # to expire it in time
                work.open_offers[(offer.request_uuid, offer.manager_key)] = offer
                work.load = Load(load.running, load.reserved + 1)
                offers_to[offer.manager_key] = offers_to.get(offer.manager_key, 0) + 1
            if send is not None:
                if isinstance(send.message, pb.JobFulfillmentOffer) and tx.uses(CLAIMS, incoming):
                    claim = self._grant(tx, incoming.reply_to)
                    if claim is not None:
                        send.message.claim.CopyFrom(claims.claim_message(claim))
                tx.send(send.to, send.message)
            return
        # Everything else may change what jobs and offers count for.
        self.work(tx).forget_counts()
        if kind == "JobFulfillmentOfferAccept":
            self._accept(tx, incoming)
        elif kind == "JobAssignment":
            self._assigned(tx, incoming)
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
            self.save(tx, job)
            if job.status == JobStatus.QUEUED:
                self.slots.fill(tx)
        elif kind == "JobKill":
            job = self._owned_job(tx, incoming)
            tx.send_all(handlers.on_kill(job, msg, tx.now))
            self.save(tx, job)
            tx.after_commit(lambda: self.slots.cancel(job.job_uuid))
            self.slots.fill(tx)  # its slot is free
        else:
            raise SetAside(f"an agent does not handle {kind}")

    def _accept(self, tx: Tx, incoming: Incoming) -> None:
        offer_uuid = uuid.UUID(bytes=incoming.message.offer_uuid).hex
        offer = self.store.offer(tx.conn, offer_uuid)
        if offer is None:
            raise SetAside(f"accept for offer {offer_uuid}, which this agent never made")
        tx.subject = offer.request_uuid
        existing = self.job(tx, offer.job_uuid) if offer.job_uuid else None
        try:
            job, sends = handlers.on_accept(
                offer, existing, incoming.reply_to, tx.now, new_id=tx.new_id
            )
        except handlers.OfferUnavailable as exc:
            raise SetAside(str(exc)) from exc
        tx.send_all(sends)
        if job is not None:
            self.save(tx, job, new=True)
            self.store.update_offer(tx.conn, offer)
            if job.status == JobStatus.QUEUED:
                self.slots.fill(tx)

    def _assigned(self, tx: Tx, incoming: Incoming) -> None:
        msg = incoming.message
        if not tx.uses(CLAIMS, incoming):
            raise SetAside("a JobAssignment from a node that did not announce claims")
        job_uuid = uuid.UUID(bytes=msg.job_uuid).hex
        tx.subject = job_uuid
        claim_uuid = uuid.UUID(bytes=msg.claim_uuid).hex if len(msg.claim_uuid) == 16 else ""
        claim = self._claim(tx, claim_uuid)
        self.write_changes(tx)  # the jobs under the claim are counted in the database
        job, sends = claims.on_assignment(
            msg,
            incoming.reply_to,
            claim=claim,
            existing=self.job(tx, job_uuid),
            jobs_under_claim=self.store.jobs_under_claim(tx.conn, claim_uuid),
            catalogue=self.catalogue,
            load=self._load(tx),
            policy=self.policy,
            now=tx.now,
        )
        tx.send_all(sends)
        if job is None:
            return
        linked = links.wanted(job, msg.input_links)
        if linked:
            sources = {
                link.source_job_uuid: source
                for link in linked
                if (source := self.job(tx, link.source_job_uuid)) is not None
            }
            for source in links.attach(job, linked, sources):
                self.save(tx, source)
            tx.send_all(handlers.queue_if_ready(job, tx.now))
        self.save(tx, job, new=True)
        self.work(tx).forget_counts()
        if job.status == JobStatus.QUEUED:
            self.slots.fill(tx)

    def _grant(self, tx: Tx, manager_key: str) -> GrantedClaim | None:
        """The claim granted to ``manager_key`` to send with an offer, granted or
        renewed now if need be (see ``claims.grant``)."""
        work = self.work(tx)
        if manager_key not in work.claims_for:
            work.claims_for[manager_key] = self.store.live_claim_for(tx.conn, manager_key, tx.now)
        live = work.claims_for[manager_key]
        as_read = None if live is None else (live.expires_at, live.capacity, list(live.job_types))
        claim = claims.grant(live, manager_key, self.catalogue, self.policy, tx.now, tx.new_id)
        if claim is None:
            return None
        work.claims_for[manager_key] = claim
        work.claims[claim.claim_uuid] = claim
        if (claim.expires_at, claim.capacity, claim.job_types) != as_read:
            work.claims_changed.add(claim.claim_uuid)  # granted or renewed: to write
        return claim

    def _claim(self, tx: Tx, claim_uuid: str) -> GrantedClaim | None:
        work = self.work(tx)
        if claim_uuid and claim_uuid not in work.claims:
            work.claims[claim_uuid] = self.store.claim(tx.conn, claim_uuid)
        return work.claims.get(claim_uuid)

    def renewed_claim(self, tx: Tx, job: AgentJob) -> GrantedClaim | None:
        """The claim ``job`` was assigned under, renewed, while it lives: a claim in use
        stays live without messages of its own."""
        claim = self._claim(tx, job.claim_uuid or "")
        if claim is None or tx.now >= claim.expires_at:
            return None
        claim.expires_at = max(claim.expires_at, tx.now + self.policy.claim_ttl)
        self.work(tx).claims_changed.add(claim.claim_uuid)
        return claim

    def _owned_job(self, tx: Tx, incoming: Incoming) -> AgentJob:
        """The job a message names, if the sender is the manager that owns it."""
        job_uuid = uuid.UUID(bytes=incoming.message.job_uuid).hex
        job = self.job(tx, job_uuid)
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
        work = self.work(tx)
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
        self.store.forget_expired_claims(tx.conn, tx.now)
        return self.store.next_offer_expiry(tx.conn)

    # --- one read and one write per job and transaction ----------------------------------

    def prefetch(self, tx: Tx, incoming: Sequence[Incoming]) -> None:
        """Read the jobs and standing offers a batch of messages concern, all at once."""
        unit = self.work(tx)
        job_uuids, request_uuids = [], []
        for item in incoming:
            if item.type_name in _ABOUT_A_JOB:
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

    def work(self, tx: Tx) -> AgentWork:
        work = tx.work
        assert isinstance(work, AgentWork), work
        return work

    def job(self, tx: Tx, job_uuid: str) -> AgentJob | None:
        unit = self.work(tx)
        job = unit.jobs.get(job_uuid)
        if job is None:
            job = self.store.job(tx.conn, job_uuid)
            if job is not None:
                unit.jobs[job_uuid] = job
        return job

    def save(self, tx: Tx, job: AgentJob, *, new: bool = False) -> None:
        """Write ``job`` back before the transaction's rows are written."""
        unit = self.work(tx)
        unit.jobs[job.job_uuid] = job
        unit.changed[job.job_uuid] = unit.changed.get(job.job_uuid, False) or new

    def _standing_offer(self, tx: Tx, request_uuid: str, manager_key: str) -> Offer | None:
        unit = self.work(tx)
        if request_uuid not in unit.requests_read:
            self._read_open_offers(tx, unit, [request_uuid])
        return unit.open_offers.get((request_uuid, manager_key))

    def _read_open_offers(self, tx: Tx, unit: AgentWork, request_uuids: list[str]) -> None:
        for offer in self.store.open_offers_for(tx.conn, request_uuids):
            unit.open_offers[(offer.request_uuid, offer.manager_key)] = offer
        unit.requests_read.update(request_uuids)

    def write_changes(self, tx: Tx) -> None:
        """Write the offers made and the jobs changed so far in this transaction."""
        unit = self.work(tx)
        self.store.add_offers(tx.conn, unit.new_offers)
        unit.new_offers = []
        changed = (unit.claims[key] for key in sorted(unit.claims_changed))
        self.store.put_claims(tx.conn, [claim for claim in changed if claim is not None])
        unit.claims_changed.clear()
        self.store.save_jobs(tx.conn, [(unit.jobs[key], new) for key, new in unit.changed.items()])
        unit.changed.clear()
