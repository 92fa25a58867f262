"""Running an agent's jobs in its slots: starting ready jobs, recording outcomes,
and after a crash, ending what the jobs it cut off left running.

A job takes a slot (marked running, and started once that is committed) in the same
transaction that made it ready or freed a slot: its data arriving, the job before
it finishing, a kill. Slots are counted in the database, where they are taken, so
the count is right whatever the transaction's outcome.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from caroni.agent import claims, handlers
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import AgentJob, JobResult, JobStatus
from caroni.agent.runner import run_job
from caroni.backoff import Backoff
from caroni.node.tx import Tx

if TYPE_CHECKING:
    from caroni.agent.service import AgentRole
    from caroni.node.runtime import Node

log = logging.getLogger("caroni.agent")


class Slots:
    """The jobs an agent runs at once, and the loops that start and record them."""

    def __init__(self, role: AgentRole) -> None:
        self.role = role
        self._node: Node | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()  # fill slots in a transaction of its own
        self._scheduler: asyncio.Task[None] | None = None
        # Outcomes of finished jobs not yet recorded (all that came in are recorded
        # in one transaction), and the task recording them.
        self._outcomes: list[tuple[str, JobResult]] = []
        self._outcomes_ready = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None

    async def start(self, node: Node) -> None:
        """End what a crashed predecessor's jobs left running, requeue those jobs, and
        start the loops."""
        self._node = node
        self.role.containments.adopt_orphans()
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
        if self.role.spares is not None:
            await self.role.spares.close()

    def _cut_off(self, tx: Tx) -> list[str]:
        return self.role.store.job_uuids_with_status(tx.conn, JobStatus.RUNNING)

    def _kill_leftovers(self, job_uuids: list[str]) -> None:
        """Before a cut-off job runs again, end every process its first run left."""
        if stale := self.role.containments.remove_stale_spares():
            log.info("removed %d spare shells' cgroups a stop or crash left", stale)
        for job_uuid in job_uuids:
            killed, what = self.role.containments.kill_leftovers(job_uuid)
            level = logging.WARNING if killed else logging.INFO
            log.log(level, "job %s: cut off by a stop or crash; %s", job_uuid, what)

    def _recover(self, tx: Tx) -> None:
        role = self.role
        role.catalogue = role.store.job_types(tx.conn)
        cut_off = role.store.job_uuids_with_status(tx.conn, JobStatus.RUNNING)
        for job in role.store.jobs(tx.conn, cut_off):
            # The body was cut off by a stop or crash: run it again from the start.
            job.set_status(JobStatus.QUEUED, tx.now, "requeued: the agent stopped while it ran")
            role.save(tx, job)
        self.fill(tx)

    def fill(self, tx: Tx) -> None:
        """Start the jobs ready longest, as many as there are free slots."""
        role = self.role
        role.write_changes(tx)  # what is ready is read from the database
        work = role.work(tx)
        if work.running is None:
            work.running = role.store.count_running(tx.conn)
        running = work.running
        free = role.policy.slots - running
        if free <= 0:
            return
        tx.tag_traffic()  # what this transaction noted so far stays under its own subject
        started = []
        for job in role.store.next_ready(tx.conn, free):
            spec = role.catalogue.get(job.job_type)
            tx.send_all(handlers.take_slot(job, spec, tx.now))
            if spec is not None:
                started.append((job, spec))
            role.save(tx, job)
            tx.subject = job.job_uuid
            tx.tag_traffic()
        work.running = running + len(started)
        if started:
            tx.after_commit(lambda: self._launch(started))

    def cancel(self, job_uuid: str) -> None:
        """Stop a running job's body (it was killed)."""
        task = self._running.get(job_uuid)
        if task is not None:
            task.cancel()

    def _launch(self, started: list[tuple[AgentJob, JobTypeSpec]]) -> None:
        for job, spec in started:
            if job.job_uuid not in self._running:
                self._running[job.job_uuid] = asyncio.create_task(self._run(job, spec))

    async def _schedule_loop(self) -> None:
        """Fill free slots in a transaction of its own when asked to (after a start or a
        failure)."""
        assert self._node is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._node.transact(self.fill)
            except Exception:
                log.exception("could not start queued jobs; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _run(self, job: AgentJob, spec: JobTypeSpec) -> None:
        role = self.role
        try:
            result = await run_job(
                spec,
                job.inputs,
                workdir_root=role.workdir,
                job_id=job.job_uuid,
                run_as=role.policy.run_as,
                containments=role.containments,
                spares=role.spares,
            )
        except asyncio.CancelledError:
            self._running.pop(job.job_uuid, None)
            raise
        log.info("job %s (%s) %s", job.job_uuid, spec.name, "ok" if result.ok else result.reason)
        self._outcomes.append((job.job_uuid, result))
        self._outcomes_ready.set()

    async def _record_loop(self) -> None:
        """Record finished jobs' outcomes (and start the next jobs) in one transaction
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
        role = self.role
        for job_uuid, result in outcomes:
            job = role.job(tx, job_uuid)
            if job is None:
                continue
            tx.subject = job_uuid
            claim = role.renewed_claim(tx, job)
            renewed = claims.claim_message(claim) if claim is not None else None
            waiting = {
                link.job_uuid: consumer
                for link in job.feeds
                if (consumer := role.job(tx, link.job_uuid)) is not None
            }
            tx.send_all(handlers.job_finished(job, result, tx.now, renewed, waiting))
            role.save(tx, job)
            for consumer in waiting.values():
                role.save(tx, consumer)
            tx.tag_traffic()
        self.fill(tx)
