"""What the pages read, straight from the node's tables.

Plain functions of a connection, run on the node's database thread (never on the
event loop). Pages only read here; every change goes through the node's own
methods, so the outbox and the traffic log see it like any other change.

Each live page also has a *stamp*: a short string that changes whenever what
the page shows changes, so a browser polling for news costs one small query
when nothing happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from caroni.agent.jobtypes import JobTypeSpec, job_type_from_dict
from caroni.agent.model import AgentJob
from caroni.store.listing import PAGE_SIZE, stamp
from caroni.store.tables import job_types, jobs

# --- agent: jobs -------------------------------------------------------------------------------


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
    matching: int
    counts: dict[str, int]
    stamp: str


def list_jobs(conn: Connection, status: str = "", search: str = "", offset: int = 0) -> JobList:
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


def load_job(conn: Connection, job_uuid: str) -> AgentJob | None:
    doc = conn.execute(select(jobs.c.doc).where(jobs.c.job_uuid == job_uuid)).scalar_one_or_none()
    return None if doc is None else AgentJob.model_validate_json(doc)


def job_stamp(conn: Connection, job_uuid: str) -> str | None:
    doc = conn.execute(select(jobs.c.doc).where(jobs.c.job_uuid == job_uuid)).scalar_one_or_none()
    if doc is None:
        return None
    return stamp(doc)


# --- agent: job types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobTypeRow:
    spec: JobTypeSpec
    updated_at: float
    jobs: int


def list_job_types(conn: Connection) -> list[JobTypeRow]:
    per_type: dict[str, int] = dict(
        conn.execute(select(jobs.c.job_type, func.count()).group_by(jobs.c.job_type)).all()
    )
    query = select(job_types.c.spec, job_types.c.updated_at).order_by(job_types.c.name)
    rows = []
    for spec_text, updated_at in conn.execute(query).all():
        spec = job_type_from_dict(json.loads(spec_text))
        rows.append(JobTypeRow(spec, updated_at, per_type.get(spec.name, 0)))
    return rows


def get_job_type(conn: Connection, name: str) -> JobTypeRow | None:
    row = conn.execute(
        select(job_types.c.spec, job_types.c.updated_at).where(job_types.c.name == name)
    ).first()
    if row is None:
        return None
    count = conn.execute(
        select(func.count()).select_from(jobs).where(jobs.c.job_type == name)
    ).scalar_one()
    return JobTypeRow(job_type_from_dict(json.loads(row.spec)), row.updated_at, count)
