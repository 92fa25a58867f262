"""The manager's site: templates, workflows (live), the start form, cancel; and its API.

Reads come from the manager's store (:mod:`caroni.manager.store`, with the paged
list in :mod:`caroni.manager.listing`) and the traffic log; changes go through the manager's own
methods in one node transaction each (``Node.transact``), so a workflow started
here is stored and its requests are in the outbox in the same commit, exactly
as when a ``WorkFlowCreate`` message arrives.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from caroni.errors import RefusedError, TemplateError
from caroni.manager.listing import list_workflows, workflow_stamp
from caroni.manager.model import WorkflowState
from caroni.manager.store import TemplateRow, WorkflowStore
from caroni.store.listing import PAGE_SIZE
from caroni.store.traffic import messages_about
from caroni.web.actions import cancel_workflow, check_template, start_workflow, workflow_id_of
from caroni.web.api import api_router
from caroni.web.diagrams import (
    MAX_MESSAGES,
    render_dag,
    render_sequence,
    template_dag,
    workflow_dag,
)
from caroni.web.params import Filter, Name, Offset, Search
from caroni.web.site import Site, SiteInfo, new_app
from caroni.web.values import workflow_value

if TYPE_CHECKING:
    from caroni.app import ManagerNode

NAV = [
    ("/workflows", "Workflows"),
    ("/workflows/new", "Start a workflow"),
    ("/templates", "Templates"),
    ("/claims", "Claims"),
    ("/dead-letters", "Dead letters"),
    ("/users", "Users"),
]
NOTICES = {
    "template-saved": "Template saved.",
    "template-added": "Template added.",
    "cancelled": "Cancel requested: live jobs are being killed.",
    "already-finished": "The workflow had already finished; nothing changed.",
}


# --- the site ---------------------------------------------------------------------------------


def create_manager_app(manager: ManagerNode) -> FastAPI:
    info = SiteInfo(role="manager", name=manager.name, key=manager.key)
    site = Site(info, manager.node, manager.engine, NAV)
    store = manager.role.store
    app = new_app(site, api=True)
    app.include_router(api_router(site, manager))

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/workflows", status_code=303)

    # --- workflows -----------------------------------------------------------------

    @app.get("/workflows", include_in_schema=False)
    async def workflows_page(
        request: Request,
        state: Filter = "",
        q: Search = "",
        offset: Offset = 0,
        fragment: bool = False,
        since: str = "",
    ) -> Response:
        return await site.live_list(
            request,
            "manager/workflows.html",
            list_workflows,
            state,
            q,
            offset,
            fragment=fragment,
            since=since,
            title="Workflows",
            state=state,
            page_size=PAGE_SIZE,
            states=[str(s) for s in WorkflowState],
            notice=NOTICES.get(request.query_params.get("notice", ""), ""),
        )

    @app.get("/workflows/new", include_in_schema=False)
    async def start_form(request: Request, template: str = "") -> Response:
        session = await site.session(request)
        return await _start_form(site, store, request, session, template, {}, "", 0, {})

    @app.post("/workflows/new", include_in_schema=False)
    async def start(request: Request) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        template_name = str(form.get("template", ""))
        name = str(form.get("name", "")).strip()
        inputs = {
            key.removeprefix("input:"): str(value)
            for key, value in form.multi_items()
            if key.startswith("input:")
        }
        errors: dict[str, str] = {}
        attempts_text = str(form.get("max_attempts", "")).strip()
        max_attempts = 0
        if attempts_text:
            if attempts_text.isdigit() and 1 <= int(attempts_text) <= 100:
                max_attempts = int(attempts_text)
            else:
                errors["max_attempts"] = "A whole number from 1 to 100, or empty for the default."
        if not template_name:
            errors["template"] = "Choose a template."
        if not errors:
            try:
                workflow = await start_workflow(
                    manager, template_name, inputs, name=name, max_attempts=max_attempts
                )
            except RefusedError as exc:
                errors["form"] = str(exc)
            else:
                return RedirectResponse(f"/workflows/{workflow.id}", status_code=303)
        return await _start_form(
            site, store, request, session, template_name, inputs, name, max_attempts, errors
        )

    @app.get("/workflows/{workflow_id}", include_in_schema=False)
    async def workflow_page(
        request: Request, workflow_id: str, fragment: bool = False, since: str = ""
    ) -> Response:
        session = await site.session(request)
        wid = workflow_id_of(workflow_id)
        stamp = await site.read(workflow_stamp, wid)
        if stamp is None:
            raise HTTPException(404, f"no workflow {wid} on this manager")
        if fragment and since == stamp:
            return Response(status_code=204)
        workflow = await site.read(store.read, wid)
        messages, total = await site.read(messages_about, [wid], MAX_MESSAGES)
        if workflow is None:
            raise HTTPException(404, f"no workflow {wid} on this manager")
        agents = {
            attempt.agent_key: attempt.agent_site
            for step in workflow.steps.values()
            for attempt in step.attempts
            if attempt.agent_key and attempt.agent_site
        }
        label = workflow.name or workflow.id[:8]
        return site.render(
            request,
            "manager/_workflow.html" if fragment else "manager/workflow.html",
            session=session,
            stamp=stamp,
            title=f"Workflow {label}",
            workflow=workflow,
            dag=render_dag(workflow_dag(workflow), f"Steps of workflow {label} by state"),
            sequence=render_sequence(
                messages,
                own_key=manager.key,
                own_label=manager.name,
                names=agents,
                title=f"Messages of workflow {label} in time order",
            ),
            messages_shown=len(messages),
            messages_total=total,
            notice=NOTICES.get(request.query_params.get("notice", ""), ""),
        )

    @app.get("/workflows/{workflow_id}/full/{field:path}", include_in_schema=False)
    async def workflow_full_value(request: Request, workflow_id: str, field: str) -> Response:
        """The whole of a value the workflow's page clips."""
        await site.session(request)
        wid = workflow_id_of(workflow_id)
        workflow = await site.read(store.read, wid)
        if workflow is None:
            raise HTTPException(404, f"no workflow {wid} on this manager")
        value = workflow_value(workflow, field)
        if value is None:
            raise HTTPException(404, f"workflow {wid} has no value {field!r}")
        return PlainTextResponse(value)

    @app.post("/workflows/{workflow_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, workflow_id: str) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        wid = workflow_id_of(workflow_id)
        before = await site.read(store.read, wid)
        if before is None:
            raise HTTPException(404, f"no workflow {wid} on this manager")
        reason = str(form.get("reason", "")).strip() or f"cancelled by {session.username}"
        await cancel_workflow(manager, wid, reason)
        notice = "already-finished" if before.state.finished else "cancelled"
        return RedirectResponse(f"/workflows/{wid}?notice={notice}", status_code=303)

    # --- templates -----------------------------------------------------------------

    @app.get("/claims", include_in_schema=False)
    async def claims_page(request: Request) -> Response:
        session = await site.session(request)
        rows = await site.read(manager.role.claims.all)
        return site.render(
            request,
            "manager/claims.html",
            session=session,
            title="Claims",
            rows=rows,
            now=time.time(),
        )

    @app.get("/templates", include_in_schema=False)
    async def templates_page(request: Request) -> Response:
        session = await site.session(request)
        rows = await site.read(store.templates)
        return site.render(
            request,
            "manager/templates.html",
            session=session,
            title="Templates",
            rows=rows,
            notice=NOTICES.get(request.query_params.get("notice", ""), ""),
        )

    @app.get("/templates/new", include_in_schema=False)
    async def new_template_form(request: Request) -> Response:
        session = await site.session(request)
        return _template_form(site, request, session, None, "", "", {})

    @app.post("/templates/new", include_in_schema=False)
    async def add_template(request: Request) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        name = str(form.get("name", ""))
        text = str(form.get("text", ""))
        errors: dict[str, list[str]] = {}
        if await site.read(store.template_row, name) is not None:
            errors["name"] = [f"A template named {name!r} exists already; edit it instead."]
        else:
            errors = await _save_template(manager, name, text)
        if errors:
            return _template_form(site, request, session, None, name, text, errors)
        return RedirectResponse(f"/templates/{_quote(name)}?notice=template-added", status_code=303)

    @app.get("/templates/{name:path}", include_in_schema=False)
    async def template_page(request: Request, name: Name) -> Response:
        session = await site.session(request)
        row = await site.read(store.template_row, name)
        if row is None:
            raise HTTPException(404, f"no template {name!r} on this manager")
        return _template_form(
            site,
            request,
            session,
            row,
            row.name,
            row.template.text,
            {},
            notice=NOTICES.get(request.query_params.get("notice", ""), ""),
        )

    @app.post("/templates/{name:path}", include_in_schema=False)
    async def edit_template(request: Request, name: Name) -> Response:
        session = await site.session(request)
        form = await site.form(request, session)
        row = await site.read(store.template_row, name)
        if row is None:
            raise HTTPException(404, f"no template {name!r} on this manager")
        text = str(form.get("text", ""))
        errors = await _save_template(manager, name, text)
        if errors:
            return _template_form(site, request, session, row, name, text, errors)
        return RedirectResponse(f"/templates/{_quote(name)}?notice=template-saved", status_code=303)

    return app


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


async def _save_template(manager: ManagerNode, name: str, text: str) -> dict[str, list[str]]:
    """Validate and store; the problems by form field ("name" or "text") if invalid."""
    try:
        template = await check_template(name, text)
    except TemplateError as exc:
        errors: dict[str, list[str]] = {}
        for problem in exc.problems:
            field = "name" if problem.startswith("the template name") else "text"
            errors.setdefault(field, []).append(problem)
        return errors
    await manager.add_template(template)
    return {}


def _template_form(
    site: Site,
    request: Request,
    session: Any,
    row: TemplateRow | None,
    name: str,
    text: str,
    errors: dict[str, list[str]],
    notice: str = "",
) -> Response:
    dag = ""
    if row is not None:
        dag = render_dag(template_dag(row.template), f"Steps of template {row.name}")
    return site.render(
        request,
        "manager/template.html",
        session=session,
        status_code=422 if errors else 200,
        title=f"Template {row.name}" if row else "Add a template",
        row=row,
        name=name,
        text=text,
        errors=errors,
        dag=dag,
        notice=notice,
    )


async def _start_form(
    site: Site,
    store: WorkflowStore,
    request: Request,
    session: Any,
    template_name: str,
    inputs: dict[str, str],
    name: str,
    max_attempts: int,
    errors: dict[str, str],
) -> Response:
    rows = await site.read(store.templates)
    chosen = next((r for r in rows if r.name == template_name), None)
    if chosen is None and len(rows) == 1:
        chosen = rows[0]
    return site.render(
        request,
        "manager/start.html",
        session=session,
        status_code=422 if errors else 200,
        title="Start a workflow",
        rows=rows,
        chosen=chosen,
        inputs=inputs,
        name=name,
        max_attempts=max_attempts or "",
        errors=errors,
    )
