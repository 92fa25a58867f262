"""The agent's jobs as its pages list them: filtered, searched, paged.

Reads only, on the summary columns of ``jobs`` (the JSON documents are left
unparsed); each read comes with a *stamp* that changes whenever what it read
changes (see ``caroni.store.listing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from caroni.store.listing import PAGE_SIZE, stamp
from caroni.store.tables import jobs


@dataclass(frozen=True, slots=True)
class JobRow:
    job_uuid: str
    job_type: str
    manager_key: str
    status: str
    created_at: float
    updated_at: float
    version: int


@dataclass(frozen=True, slots=True)
class JobList:
    rows: list[JobRow]
    matching: int  # rows matching the filter (the page shows at most PAGE_SIZE)
    counts: dict[str, int]  # every job, by status
    stamp: str


def list_jobs(conn: Connection, status: str = "", search: str = "", offset: int = 0) -> JobList:
    """Newest first, PAGE_SIZE from ``offset``: those with ``status`` (any if empty)
    whose uuid starts with ``search`` or whose job type or manager contains it."""
    conditions = []
    if status:
        conditions.append(jobs.c.status == status)
    if search:
        conditions.append(
            or_(
                jobs.c.job_uuid.istartswith(search.lower().replace("-", ""), autoescape=True),
                jobs.c.job_type.icontains(search, autoescape=True),
                jobs.c.manager_key.icontains(search, autoescape=True),
            )
        )
    query = (
        select(
            jobs.c.job_uuid,
            jobs.c.job_type,
            jobs.c.manager_key,
            jobs.c.status,
            jobs.c.created_at,
            jobs.c.updated_at,
            jobs.c.version,
        )
        .where(*conditions)
        .order_by(jobs.c.created_at.desc(), jobs.c.job_uuid)
        .limit(PAGE_SIZE)
        .offset(offset)
    )
    rows = [JobRow(*row) for row in conn.execute(query).all()]
    matching = conn.execute(select(func.count()).select_from(jobs).where(*conditions)).scalar_one()
    counts = {
        name: count
        for name, count in conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
    }
    # The version column is not bumped by every save, so updated_at joins the stamp.
    listed = stamp(
        [(r.job_uuid, r.version, r.updated_at, r.status) for r in rows],
        matching,
        sorted(counts.items()),
    )
    return JobList(rows, matching, counts, listed)


def job_stamp(conn: Connection, job_uuid: str) -> str | None:
    """Changes whenever the job does; None: no such job."""
    doc = conn.execute(select(jobs.c.doc).where(jobs.c.job_uuid == job_uuid)).scalar_one_or_none()
    return None if doc is None else stamp(doc)
