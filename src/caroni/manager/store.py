"""Reading and writing the manager's rows: templates and workflow aggregates."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from caroni.errors import CaroniError
from caroni.manager.handlers import DEFAULT_TIMINGS, Timings, next_wake
from caroni.manager.model import Workflow, WorkflowState
from caroni.manager.templates import Template
from caroni.store.tables import templates, waiting_steps, workflow_routes, workflows

# The statements of the message path, built once: building a statement costs more
# than the round trip that runs it (measured: ~250 us against ~200 us). Workflows
# are read FOR UPDATE: on PostgreSQL, replicas sharing the database take turns with
# a workflow (SQLite, which locks the whole database, leaves the clause out).
_LOAD = (
    select(workflows.c.id, workflows.c.doc, workflows.c.version)
    .where(workflows.c.id == bindparam("workflow_id"))
    .with_for_update()
)
_LOAD_BY_KEYS = (
    select(workflows.c.id, workflows.c.doc, workflows.c.version)
    .where(
        workflows.c.id.in_(
            select(workflow_routes.c.workflow_id).where(
                workflow_routes.c.key.in_(bindparam("keys", expanding=True))
            )
        )
    )
    .order_by(workflows.c.id)  # replicas lock rows in one order: no deadlock
    .with_for_update()
)
_TEMPLATE_VERSION = select(templates.c.version).where(templates.c.name == bindparam("name"))
_INSERT_WORKFLOWS = insert(workflows)
_UPDATE_WORKFLOWS = update(workflows).where(
    workflows.c.id == bindparam("b_id"), workflows.c.version == bindparam("b_version")
)
_INSERT_ROUTES = insert(workflow_routes)
_STOP_WAITING = delete(waiting_steps).where(
    waiting_steps.c.workflow_id == bindparam("b_workflow_id"),
    waiting_steps.c.step_name == bindparam("b_step_name"),
)
_START_WAITING = insert(waiting_steps)
_COUNT_RUNNING = select(func.count()).where(
    workflows.c.state.in_([str(WorkflowState.RUNNING), str(WorkflowState.STALLED)])
)

# How many parsed workflows a manager keeps (see ``WorkflowStore.remember``): more
# than it runs at once by default, so that the running ones stay parsed.
PARSED_CACHE_SIZE = 1024

# Templates as the pages and the API list them.
_TEMPLATE_ROWS = select(
    templates.c.name, templates.c.version, templates.c.updated_at, templates.c.parsed
)


class ConcurrentUpdate(CaroniError):
    """Another process changed the workflow between our read and our write."""


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """A stored template with its version and when it last changed (for pages)."""

    name: str
    version: int
    updated_at: float
    template: Template


@dataclass
class Loaded:
    """A workflow as read, with what is needed to write it back safely."""

    workflow: Workflow
    version: int = 0  # 0: not stored yet
    keys: set[str] = field(default_factory=set)
    doc: str = ""  # as stored, so that an unchanged workflow is not written again
    finished: bool = False  # as stored
    claimed: Counter[str] = field(default_factory=Counter)  # live jobs by claim, as stored
    waiting: dict[str, tuple[str, float]] = field(default_factory=dict)  # as stored

    def claims_changed(self) -> Counter[str]:
        """Live jobs under each claim now, less those stored (negative: ended)."""
        changed = self.workflow.claims_in_use()
        changed.subtract(self.claimed)
        return changed


class WorkflowStore:
    """Workflows stored one row each (summary columns + the aggregate as JSON)."""

    def __init__(self, timings: Timings = DEFAULT_TIMINGS) -> None:
        self.timings = timings
        self._template_cache: dict[str, tuple[int, Template]] = {}
        # Workflows as this process committed them, by id, with their version: a read
        # that finds the row still at that version takes the object instead of
        # parsing the JSON again (a cost that grows with the workflow). A read
        # takes the object out, so that only one transaction ever holds it; it comes
        # back only once that transaction committed, so a rollback never leaves a
        # half-changed copy behind. Another process's write bumps the version, so a
        # replica sharing the database never reads a stale copy.
        self._parsed: OrderedDict[str, tuple[int, Workflow, set[str]]] = OrderedDict()
        self._parsed_lock = threading.Lock()  # reads on the database thread, puts after commit

    # --- workflows --------------------------------------------------------------------

    def load(self, conn: Connection, workflow_id: str) -> Loaded | None:
        found = self._read(conn, _LOAD, {"workflow_id": workflow_id})
        return found[0] if found else None

    def load_by_keys(self, conn: Connection, keys: Collection[str]) -> list[Loaded]:
        """The workflows that these request, offer or job uuids (hex) belong to."""
        return self._read(conn, _LOAD_BY_KEYS, {"keys": list(keys)})

    def read(self, conn: Connection, workflow_id: str) -> Workflow | None:
        """A workflow as stored, to look at only: no lock is taken and the parsed
        copies the message path keeps are left alone (pages read here)."""
        doc = conn.execute(
            select(workflows.c.doc).where(workflows.c.id == workflow_id)
        ).scalar_one_or_none()
        return None if doc is None else Workflow.model_validate_json(doc)

    def _read(
        self, conn: Connection, query: Select[Any], params: dict[str, Any] | None = None
    ) -> list[Loaded]:
        loaded = []
        for row in conn.execute(query, params):
            with self._parsed_lock:
                parsed = self._parsed.pop(row.id, None)
            if parsed is not None and parsed[0] == row.version:
                _, workflow, keys = parsed
            else:
                workflow = Workflow.model_validate_json(row.doc)
                keys = workflow.route_keys()
            finished = workflow.state.finished
            claimed = workflow.claims_in_use()
            waiting = workflow.waiting_steps()
            loaded.append(Loaded(workflow, row.version, keys, row.doc, finished, claimed, waiting))
        return loaded

    def save(self, conn: Connection, loaded: Iterable[Loaded]) -> Counter[str]:
        """Write workflows back, a few statements for all of them; unchanged ones (as
        read) are left alone. Returns how many live jobs each claim has more (or
        fewer) than before, for the claims' counts."""
        inserts, updates, routes = [], [], []
        changed = []
        claimed: Counter[str] = Counter()
        stop_waiting: list[dict[str, str]] = []
        start_waiting: list[dict[str, Any]] = []
        for item in loaded:
            workflow = item.workflow
            doc = workflow.model_dump_json()
            if item.version and doc == item.doc:
                continue
            values = {
                "name": workflow.name,
                "template_name": workflow.template_name,
                "state": str(workflow.state),
                "reason": workflow.reason,
                "updated_at": workflow.updated_at,
                "wake_at": next_wake(workflow, self.timings),
                "doc": doc,
            }
            if item.version == 0:
                inserts.append(
                    {"id": workflow.id, "created_at": workflow.created_at, "version": 1, **values}
                )
            else:
                updates.append(
                    {"b_id": workflow.id, "b_version": item.version, "version": item.version + 1}
                    | values
                )
            keys = workflow.route_keys()
            routes += [{"key": k, "workflow_id": workflow.id} for k in sorted(keys - item.keys)]
            claimed.update(item.claims_changed())
            now_waiting = workflow.waiting_steps()
            for name, was in item.waiting.items():
                if now_waiting.get(name) != was:
                    stop_waiting.append({"b_workflow_id": workflow.id, "b_step_name": name})
            for name, (job_type, since) in now_waiting.items():
                if item.waiting.get(name) != (job_type, since):
                    start_waiting.append(
                        {
                            "workflow_id": workflow.id,
                            "step_name": name,
                            "job_type": job_type,
                            "since": since,
                        }
                    )
            changed.append((item, doc, keys, now_waiting))
        if inserts:
            conn.execute(_INSERT_WORKFLOWS, inserts)
        if updates:
            result = conn.execute(_UPDATE_WORKFLOWS, updates)
            if result.rowcount != len(updates):
                raise ConcurrentUpdate("a workflow changed under us (another process wrote it)")
        if routes:
            conn.execute(_INSERT_ROUTES, routes)
        if stop_waiting:
            conn.execute(_STOP_WAITING, stop_waiting)
        if start_waiting:
            conn.execute(_START_WAITING, start_waiting)
        for item, doc, keys, now_waiting in changed:
            item.version += 1
            item.doc = doc
            item.keys = keys
            item.finished = item.workflow.state.finished
            item.claimed = item.workflow.claims_in_use()
            item.waiting = now_waiting
        return claimed

    def remember(self, loaded: Iterable[Loaded]) -> None:
        """Keep these workflows parsed for the next read (call once their transaction
        has committed). Finished ones are rarely read again; the least recently
        committed go first when there are too many."""
        with self._parsed_lock:
            for item in loaded:
                workflow_id = item.workflow.id
                if item.version and not item.workflow.state.finished:
                    self._parsed[workflow_id] = (item.version, item.workflow, item.keys)
                    self._parsed.move_to_end(workflow_id)
                else:
                    self._parsed.pop(workflow_id, None)
            while len(self._parsed) > PARSED_CACHE_SIZE:
                self._parsed.popitem(last=False)

    def waiting_for(
        self, conn: Connection, job_types: Collection[str], limit: int, skip: Collection[str]
    ) -> list[Loaded]:
        """Workflows with a step of one of ``job_types`` waiting for an agent, the
        longest waiting first, at most ``limit``, none of the ids in ``skip`` and (on
        PostgreSQL) none another transaction holds."""
        longest = (
            select(waiting_steps.c.workflow_id)
            .where(waiting_steps.c.job_type.in_(list(job_types)))
            .group_by(waiting_steps.c.workflow_id)
            .order_by(func.min(waiting_steps.c.since))
            .limit(limit + len(skip))
        )
        found = conn.execute(longest).scalars()
        ids = [workflow_id for workflow_id in found if workflow_id not in skip]
        if not ids:
            return []
        query = (
            select(workflows.c.id, workflows.c.doc, workflows.c.version)
            .where(workflows.c.id.in_(ids[:limit]))
            .order_by(workflows.c.id)
            .with_for_update(skip_locked=True)
        )
        return self._read(conn, query)

    def count_running(self, conn: Connection) -> int:
        return conn.execute(_COUNT_RUNNING).scalar_one()

    def waiting(self, conn: Connection, limit: int) -> list[Loaded]:
        """Created workflows waiting for their turn, oldest first (none another
        replica holds)."""
        query = (
            select(workflows.c.id, workflows.c.doc, workflows.c.version)
            .where(workflows.c.state == str(WorkflowState.CREATED))
            .order_by(workflows.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._read(conn, query)

    def due(self, conn: Connection, now: float, limit: int = 200) -> list[str]:
        """Ids of workflows whose timers are due.

        On PostgreSQL they are locked for this transaction, skipping those another
        transaction holds: replicas sharing the database never fire one workflow's
        timers twice (a row is locked, then its ``wake_at`` checked again), and a tick
        never waits for a lock while holding others, so it cannot deadlock with a
        batch of messages. A workflow skipped here is due again at the next tick.
        """
        query = (
            select(workflows.c.id)
            .where(workflows.c.wake_at.is_not(None), workflows.c.wake_at <= now)
            .order_by(workflows.c.wake_at)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list(conn.execute(query).scalars())

    def next_wake(self, conn: Connection) -> float | None:
        """When the earliest timer is due, leaving out (on PostgreSQL) the workflows
        another transaction holds: the replica holding one deals with it, and should it
        still be due afterwards, a later tick (a second at most) finds it. Counted, it
        would make this replica's tick loop run again and again while it is held."""
        if conn.dialect.name != "postgresql":
            return conn.execute(select(func.min(workflows.c.wake_at))).scalar_one_or_none()
        query = (
            select(workflows.c.wake_at)
            .where(workflows.c.wake_at.is_not(None))
            .order_by(workflows.c.wake_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        return conn.execute(query).scalar_one_or_none()

    # --- templates --------------------------------------------------------------------

    def put_template(self, conn: Connection, template: Template, now: float) -> None:
        """Add or replace a template (running workflows keep the copy they started with).

        One statement that inserts or bumps the version, so that replicas sharing the
        database may add the same template at once (they do on every start).
        """
        values = {"text": template.text, "parsed": template.to_json(), "updated_at": now}
        upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            upsert(templates)
            .values(name=template.name, version=1, **values)
            .on_conflict_do_update(
                index_elements=[templates.c.name],
                set_={"version": templates.c.version + 1, **values},
            )
        )

    def get_template(self, conn: Connection, name: str) -> Template | None:
        # Cached by version: every change (by any replica) bumps it.
        version = conn.execute(_TEMPLATE_VERSION, {"name": name}).scalar_one_or_none()
        if version is None:
            return None
        cached = self._template_cache.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        parsed = conn.execute(
            select(templates.c.parsed).where(templates.c.name == name)
        ).scalar_one()
        template = Template.from_json(parsed)
        self._template_cache[name] = (version, template)
        return template

    def templates(self, conn: Connection) -> list[TemplateRow]:
        """Every template, by name."""
        query = _TEMPLATE_ROWS.order_by(templates.c.name)
        return [self._template_row(row) for row in conn.execute(query).all()]

    def template_row(self, conn: Connection, name: str) -> TemplateRow | None:
        row = conn.execute(_TEMPLATE_ROWS.where(templates.c.name == name)).first()
        return None if row is None else self._template_row(row)

    @staticmethod
    def _template_row(row: Any) -> TemplateRow:
        return TemplateRow(row.name, row.version, row.updated_at, Template.from_json(row.parsed))
