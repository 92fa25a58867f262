"""Reading and writing the manager's rows: templates and workflow aggregates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, update

from caroni.errors import CaroniError
from caroni.manager.handlers import DEFAULT_TIMINGS, Timings, next_wake
from caroni.manager.model import Workflow
from caroni.manager.templates import Template
from caroni.store.tables import templates, workflow_routes, workflows


class ConcurrentUpdate(CaroniError):
    """Another process changed the workflow between our read and our write."""


@dataclass
class Loaded:
    """A workflow as read, with what is needed to write it back safely."""

    workflow: Workflow
    version: int = 0  # 0: not stored yet
    keys: set[str] = field(default_factory=set)
    doc: str = ""  # as stored, so that an unchanged workflow is not written again


class WorkflowStore:
    """Workflows stored one row each (summary columns + the aggregate as JSON)."""

    def __init__(self, timings: Timings = DEFAULT_TIMINGS) -> None:
        self.timings = timings
        self._template_cache: dict[str, tuple[float, Template]] = {}

    # --- workflows --------------------------------------------------------------------

    def load(self, conn: Connection, workflow_id: str) -> Loaded | None:
        query = select(workflows.c.doc, workflows.c.version).where(workflows.c.id == workflow_id)
        return self._read(conn, query)

    def load_by_key(self, conn: Connection, key: str) -> Loaded | None:
        """The workflow that a request, offer or job uuid (hex) belongs to."""
        query = (
            select(workflows.c.doc, workflows.c.version)
            .join(workflow_routes, workflow_routes.c.workflow_id == workflows.c.id)
            .where(workflow_routes.c.key == key)
        )
        return self._read(conn, query)

    def _read(self, conn: Connection, query: Select[Any]) -> Loaded | None:
        if conn.dialect.name == "postgresql":
            # Replicas sharing the database take turns with a workflow.
            query = query.with_for_update(of=workflows)
        row = conn.execute(query).first()
        if row is None:
            return None
        workflow = Workflow.model_validate_json(row.doc)
        return Loaded(workflow, row.version, workflow.route_keys(), row.doc)

    def save(self, conn: Connection, loaded: Loaded) -> None:
        """Write the workflow back (nothing when it is unchanged since it was read)."""
        workflow = loaded.workflow
        doc = workflow.model_dump_json()
        if loaded.version and doc == loaded.doc:
            return
        values = {
            "name": workflow.name,
            "template_name": workflow.template_name,
            "state": str(workflow.state),
            "reason": workflow.reason,
            "updated_at": workflow.updated_at,
            "wake_at": next_wake(workflow, self.timings),
            "doc": doc,
        }
        if loaded.version == 0:
            conn.execute(
                insert(workflows).values(
                    id=workflow.id, created_at=workflow.created_at, version=1, **values
                )
            )
            loaded.version = 1
        else:
            result = conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow.id, workflows.c.version == loaded.version)
                .values(version=loaded.version + 1, **values)
            )
            if result.rowcount != 1:
                raise ConcurrentUpdate(f"workflow {workflow.id} changed under us")
            loaded.version += 1
        new_keys = workflow.route_keys() - loaded.keys
        if new_keys:
            conn.execute(
                insert(workflow_routes),
                [{"key": key, "workflow_id": workflow.id} for key in sorted(new_keys)],
            )
            loaded.keys |= new_keys
        loaded.doc = doc

    def due(self, conn: Connection, now: float, limit: int = 200) -> list[str]:
        """Ids of workflows whose timers are due."""
        query = (
            select(workflows.c.id)
            .where(workflows.c.wake_at.is_not(None), workflows.c.wake_at <= now)
            .order_by(workflows.c.wake_at)
            .limit(limit)
        )
        return list(conn.execute(query).scalars())

    def next_wake(self, conn: Connection) -> float | None:
        return conn.execute(select(func.min(workflows.c.wake_at))).scalar_one_or_none()

    # --- templates --------------------------------------------------------------------

    def put_template(self, conn: Connection, template: Template, now: float) -> None:
        """Add or replace a template (running workflows keep the copy they started with)."""
        existing = conn.execute(
            select(templates.c.version).where(templates.c.name == template.name)
        ).scalar_one_or_none()
        values = {"text": template.text, "parsed": template.to_json(), "updated_at": now}
        if existing is None:
            conn.execute(insert(templates).values(name=template.name, version=1, **values))
        else:
            conn.execute(
                update(templates)
                .where(templates.c.name == template.name)
                .values(version=existing + 1, **values)
            )

    def get_template(self, conn: Connection, name: str) -> Template | None:
        updated_at = conn.execute(
            select(templates.c.updated_at).where(templates.c.name == name)
        ).scalar_one_or_none()
        if updated_at is None:
            return None
        cached = self._template_cache.get(name)
        if cached is not None and cached[0] == updated_at:
            return cached[1]
        parsed = conn.execute(
            select(templates.c.parsed).where(templates.c.name == name)
        ).scalar_one()
        template = Template.from_json(parsed)
        self._template_cache[name] = (updated_at, template)
        return template

    def template_names(self, conn: Connection) -> list[str]:
        return list(conn.execute(select(templates.c.name).order_by(templates.c.name)).scalars())
