"""The manager's workflows as its pages and API list them: filtered, searched, paged.

Reads only, on the summary columns of ``workflows`` (the JSON documents are left
unparsed); each read comes with a *stamp* that changes whenever what it read
changes (see ``caroni.store.listing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from caroni.store.listing import PAGE_SIZE, stamp
from caroni.store.tables import workflows
from caroni.store.traffic import last_message_id


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    id: str
    name: str
    template_name: str
    state: str
    reason: str
    created_at: float
    updated_at: float
    version: int


@dataclass(frozen=True, slots=True)
class WorkflowList:
    rows: list[WorkflowRow]
    matching: int  # rows matching the filter (the page shows at most PAGE_SIZE)
    counts: dict[str, int]  # every workflow, by state
    stamp: str


def list_workflows(
    conn: Connection, state: str = "", search: str = "", offset: int = 0
) -> WorkflowList:
    """Newest first, PAGE_SIZE from ``offset``: those in ``state`` (any if empty)
    whose id starts with ``search`` or whose name or template name contains it."""
    conditions = []
    if state:
        conditions.append(workflows.c.state == state)
    if search:
        conditions.append(
            or_(
                workflows.c.id.istartswith(search.lower().replace("-", ""), autoescape=True),
                workflows.c.name.icontains(search, autoescape=True),
                workflows.c.template_name.icontains(search, autoescape=True),
            )
        )
    query = (
        select(
            workflows.c.id,
            workflows.c.name,
            workflows.c.template_name,
            workflows.c.state,
            workflows.c.reason,
            workflows.c.created_at,
            workflows.c.updated_at,
            workflows.c.version,
        )
        .where(*conditions)
        .order_by(workflows.c.created_at.desc(), workflows.c.id)
        .limit(PAGE_SIZE)
        .offset(offset)
    )
    rows = [WorkflowRow(*row) for row in conn.execute(query).all()]
    matching = conn.execute(
        select(func.count()).select_from(workflows).where(*conditions)
    ).scalar_one()
    counts = {
        state_name: count
        for state_name, count in conn.execute(
            select(workflows.c.state, func.count()).group_by(workflows.c.state)
        ).all()
    }
    listed = stamp([(r.id, r.version) for r in rows], matching, sorted(counts.items()))
    return WorkflowList(rows, matching, counts, listed)


def workflow_stamp(conn: Connection, workflow_id: str) -> str | None:
    """Changes whenever the workflow or its messages do; None: no such workflow."""
    version = conn.execute(
        select(workflows.c.version).where(workflows.c.id == workflow_id)
    ).scalar_one_or_none()
    if version is None:
        return None
    return stamp(version, last_message_id(conn, workflow_id))
