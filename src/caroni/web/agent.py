"""The agent's site: jobs (live list and detail) and job types (add and edit).

An edited job type is stored and installed through ``AgentNode.add_job_type``:
jobs already running keep the body they started with, the next job that starts
uses the new one.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from caroni.agent.jobtypes import JobTypeSpec, job_type_from_dict
from caroni.agent.listing import job_stamp, list_jobs
from caroni.agent.model import JobStatus
from caroni.agent.store import JobTypeRow
from caroni.errors import JobTypeError
from caroni.store.listing import PAGE_SIZE
from caroni.store.traffic import messages_about
from caroni.web.diagrams import MAX_MESSAGES, render_sequence
from caroni.web.params import Filter, Name, Offset, Search
from caroni.web.site import Site, SiteInfo, new_app
from caroni.web.values import job_value

if TYPE_CHECKING:
    from caroni.app import AgentNode

NAV = [
    ("/jobs", "Jobs"),
    ("/job-types", "Job types"),
    ("/claims", "Claims"),
    ("/dead-letters", "Dead letters"),
    ("/users", "Users"),
]
NOTICES = {
    "job-type-saved": "Job type saved: the next job of this type that starts runs the new body.",
    "job-type-added": "Job type added: this agent now offers it.",
}
_FIELD = re.compile(r"field '(\w+)'")
_JOB_UUID = re.compile(r"[0-9a-f]{32}")


def create_agent_app(agent: AgentNode) -> FastAPI:
    name = agent.role.policy.site_identifier or "agent"
    site = Site(SiteInfo(role="agent", name=name, key=agent.key), agent.node, agent.engine, NAV)
    store = agent.role.store
    app = new_app(site, api=False)

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/jobs", status_code=303)

    @app.get("/jobs", include_in_schema=False)
    async def jobs_page(
        request: Request,
        status: Filter = "",
        q: Search = "",
        offset: Offset = 0,
        fragment: bool = False,
        since: str = "",
    ) -> Response:
        return await site.live_list(
            request,
            "agent/jobs.html",
            list_jobs,
            status,
            q,
            offset,
            fragment=fragment,
            since=since,
            title="Jobs",
            status=status,
            page_size=PAGE_SIZE,
            statuses=[str(s) for s in JobStatus],
        )

    @app.get("/jobs/{job_uuid}", include_in_schema=False)
    async def job_page(
        request: Request, job_uuid: str, fragment: bool = False, since: str = ""
    ) -> Response:
        session = await site.session(request)
        key = job_uuid.strip().lower().replace("-", "")
        if not _JOB_UUID.fullmatch(key):
            raise HTTPException(404, f"{job_uuid!r} is not a job id")
        stamp = await site.read(job_stamp, key)
        if stamp is None:
            raise HTTPException(404, f"no job {key} on this agent")
        if fragment and since == stamp:
            return Response(status_code=204)
        job = await site.read(store.job, key)
        if job is None:
            raise HTTPException(404, f"no job {key} on this agent")
        messages, total = await site.read(messages_about, [job.request_uuid, key], MAX_MESSAGES)
        return site.render(
            request,
            "agent/_job.html" if fragment else "agent/job.html",
            session=session,
            stamp=stamp,
            title=f"Job {key[:8]}",
            job=job,
            sequence=render_sequence(
                messages,
                own_key=agent.key,
                own_label=name,
                title=f"Messages about job {key[:8]} in time order",
            ),
            messages_shown=len(messages),
            messages_total=total,
        )

    @app.get("/jobs/{job_uuid}/full/{field:path}", include_in_schema=False)
    async def job_full_value(request: Request, job_uuid: str, field: str) -> Response:
        """The whole of a value the job's page clips."""
        await site.session(request)
        key = job_uuid.strip().lower().replace("-", "")
        job = await site.read(store.job, key) if _JOB_UUID.fullmatch(key) else None
        if job is None:
            raise HTTPException(404, f"no job {job_uuid!r} on this agent")
        value = job_value(job, field)
        if value is None:
            raise HTTPException(404, f"job {key} has no value {field!r}")
        return PlainTextResponse(value)

    @app.get("/job-types", include_in_schema=False)
    async def job_types_page(request: Request) -> Response:
        session = await site.session(request)
        rows = await site.read(store.job_type_rows)
        return site.render(
            request, "agent/job_types.html", session=session, title="Job types", rows=rows
        )

    @app.get("/claims", include_in_schema=False)
    async def claims_page(request: Request) -> Response:
        session = await site.session(request)
        rows = await site.read(store.claims)
        now = time.time()
        return site.render(
            request, "agent/claims.html", session=session, title="Claims", rows=rows, now=now
        )

    @app.get("/job-types/new", include_in_schema=False)
    async def new_job_type_form(request: Request) -> Response:
        session = await site.session(request)
        return _job_type_form(site, request, session, None, _blank_fields(), {})

    @app.post("/job-types/new", include_in_schema=False)
    async def add_job_type(request: Request) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        fields = {key: str(form.get(key, "")) for key in _blank_fields()}
        spec, errors = _parse_job_type(fields)
        if spec is not None and await site.read(store.job_type_row, spec.name) is not None:
            errors["name"] = f"A job type named {spec.name!r} exists already; edit it instead."
        if spec is None or errors:
            return _job_type_form(site, request, session, None, fields, errors)
        await agent.add_job_type(spec)
        return RedirectResponse(
            f"/job-types/{_quote(spec.name)}?notice=job-type-added", status_code=303
        )

    @app.get("/job-types/{job_type}", include_in_schema=False)
    async def job_type_page(request: Request, job_type: Name) -> Response:
        session = await site.session(request)
        row = await site.read(store.job_type_row, job_type)
        if row is None:
            raise HTTPException(404, f"no job type {job_type!r} on this agent")
        return _job_type_form(
            site,
            request,
            session,
            row,
            _fields_of(row.spec),
            {},
            notice=NOTICES.get(request.query_params.get("notice", ""), ""),
        )

    @app.post("/job-types/{job_type}", include_in_schema=False)
    async def edit_job_type(request: Request, job_type: Name) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        row = await site.read(store.job_type_row, job_type)
        if row is None:
            raise HTTPException(404, f"no job type {job_type!r} on this agent")
        fields = {key: str(form.get(key, "")) for key in _blank_fields()}
        fields["name"] = row.spec.name  # the name is the identity; it is not edited
        spec, errors = _parse_job_type(fields)
        if spec is None or errors:
            return _job_type_form(site, request, session, row, fields, errors)
        await agent.add_job_type(spec)
        return RedirectResponse(
            f"/job-types/{_quote(spec.name)}?notice=job-type-saved", status_code=303
        )

    return app


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _blank_fields() -> dict[str, str]:
    return {"name": "", "inputs": "", "outputs": "", "timeout": "", "body": ""}


def _fields_of(spec: JobTypeSpec) -> dict[str, str]:
    timeout = "" if spec.timeout is None else f"{spec.timeout:g}"
    return {
        "name": spec.name,
        "inputs": " ".join(spec.inputs),
        "outputs": " ".join(spec.outputs),
        "timeout": timeout,
        "body": spec.body,
    }


def _names(text: str) -> list[str]:
    return [name for name in re.split(r"[\s,]+", text.strip()) if name]


def _parse_job_type(fields: dict[str, str]) -> tuple[JobTypeSpec | None, dict[str, str]]:
    """A validated spec, or the problems keyed by the form field they are about."""
    errors: dict[str, str] = {}
    timeout: float | None = None
    if fields["timeout"].strip():
        try:
            timeout = float(fields["timeout"])
        except ValueError:
            errors["timeout"] = "A number of seconds, or empty for no limit."
        else:
            if not math.isfinite(timeout) or timeout <= 0:
                errors["timeout"] = "A positive number of seconds, or empty for no limit."
    if errors:
        return None, errors
    # Bodies typed in a browser come with CRLF line ends; bash wants LF.
    body = fields["body"].replace("\r\n", "\n").replace("\r", "\n")
    data: dict[str, Any] = {
        "name": fields["name"].strip(),
        "inputs": _names(fields["inputs"]),
        "outputs": _names(fields["outputs"]),
        "body": body,
    }
    if timeout is not None:
        data["timeout"] = timeout
    try:
        return job_type_from_dict(data), {}
    except JobTypeError as exc:
        message = str(exc)
        found = _FIELD.search(message)
        field = found.group(1) if found and found.group(1) in fields else "form"
        return None, {field: message}


def _job_type_form(
    site: Site,
    request: Request,
    session: Any,
    row: JobTypeRow | None,
    fields: dict[str, str],
    errors: dict[str, str],
    notice: str = "",
) -> Response:
    return site.render(
        request,
        "agent/job_type.html",
        session=session,
        status_code=422 if errors else 200,
        title=f"Job type {row.spec.name}" if row else "Add a job type",
        row=row,
        fields=fields,
        errors=errors,
        notice=notice,
    )
