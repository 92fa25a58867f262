"""The manager's HTTP API for sites: templates, start, follow, cancel (OpenAPI at
``/api/openapi.json``, browsable at ``/api/docs``). Every call needs an API token
(``Authorization: Bearer <token>``, made with ``caroni user token``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from caroni.errors import RefusedError
from caroni.manager import listing
from caroni.manager.model import Workflow, WorkflowState
from caroni.web.actions import cancel_workflow, start_workflow, workflow_id_of
from caroni.web.params import Offset, Search, Text
from caroni.web.site import Site, bearer

if TYPE_CHECKING:
    from caroni.app import ManagerNode


class TemplateStep(BaseModel):
    name: str
    job_type: str
    inputs: dict[str, str] = Field(description="step input -> its source")
    outputs: list[str]


class TemplateOut(BaseModel):
    name: str
    version: int
    inputs: list[str] = Field(description="what a workflow from this template must be given")
    outputs: list[str]
    steps: list[TemplateStep]


class StartWorkflow(BaseModel):
    template: Text = Field(description="template name", examples=["test_simple"])
    inputs: dict[Text, Text] = Field(
        default_factory=dict, examples=[{"start_message": "caronirocks"}]
    )
    name: Text = Field("", description="a name to find the workflow by")
    max_attempts: int = Field(0, ge=0, le=100, description="attempts per step; 0: the default")


class StepOut(BaseModel):
    name: str
    job_type: str
    state: str
    attempts: int
    agent: str = Field(description="site name (or routing key) of the agent of the last attempt")
    reason: str


class WorkflowOut(BaseModel):
    id: str
    name: str
    template: str
    state: WorkflowState
    reason: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    created_at: float
    updated_at: float
    finished_at: float | None
    steps: list[StepOut]


class WorkflowSummary(BaseModel):
    id: str
    name: str
    template: str
    state: str
    reason: str
    created_at: float
    updated_at: float


class CancelWorkflow(BaseModel):
    reason: Text = ""


class Problem(BaseModel):
    detail: str


def workflow_out(workflow: Workflow) -> WorkflowOut:
    steps = []
    for step in workflow.steps.values():
        steps.append(
            StepOut(
                name=step.name,
                job_type=step.job_type,
                state=str(step.state),
                attempts=len(step.attempts),
                agent=step.agent,
                reason=step.why,
            )
        )
    return WorkflowOut(
        id=workflow.id,
        name=workflow.name,
        template=workflow.template_name,
        state=workflow.state,
        reason=workflow.reason,
        inputs=workflow.inputs,
        outputs=workflow.outputs,
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
        finished_at=workflow.finished_at,
        steps=steps,
    )


def api_router(site: Site, manager: ManagerNode) -> APIRouter:
    async def user(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        return await site.api_user(credentials)

    store = manager.role.store
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(user)],
        responses={401: {"model": Problem, "description": "no or unknown API token"}},
    )

    @router.get("/templates", tags=["templates"])
    async def list_templates() -> list[TemplateOut]:
        """Every template this manager can start workflows from."""
        rows = await site.read(store.templates)
        return [
            TemplateOut(
                name=row.name,
                version=row.version,
                inputs=list(row.template.inputs),
                outputs=list(row.template.outputs),
                steps=[
                    TemplateStep(
                        name=step.name,
                        job_type=step.job_type,
                        inputs={k: str(v) for k, v in step.inputs.items()},
                        outputs=list(step.outputs),
                    )
                    for step in row.template.steps.values()
                ],
            )
            for row in rows
        ]

    @router.get("/workflows", tags=["workflows"])
    async def list_workflows(
        state: Annotated[WorkflowState | None, Query()] = None,
        q: Search = "",
        offset: Offset = 0,
    ) -> list[WorkflowSummary]:
        """Workflows, newest first, 50 at a time."""
        found = await site.read(listing.list_workflows, str(state or ""), q, offset)
        return [
            WorkflowSummary(
                id=row.id,
                name=row.name,
                template=row.template_name,
                state=row.state,
                reason=row.reason,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in found.rows
        ]

    @router.post(
        "/workflows",
        status_code=201,
        tags=["workflows"],
        responses={422: {"model": Problem, "description": "unknown template or wrong inputs"}},
    )
    async def start(body: StartWorkflow, response: Response) -> WorkflowOut:
        """Start a workflow; it runs on its own, follow it with GET."""
        try:
            workflow = await start_workflow(
                manager,
                body.template,
                body.inputs,
                name=body.name,
                max_attempts=body.max_attempts,
            )
        except RefusedError as exc:
            raise HTTPException(422, str(exc)) from None
        response.headers["Location"] = f"/api/v1/workflows/{workflow.id}"
        return workflow_out(workflow)

    @router.get(
        "/workflows/{workflow_id}",
        tags=["workflows"],
        responses={404: {"model": Problem, "description": "no such workflow"}},
    )
    async def get(workflow_id: str) -> WorkflowOut:
        """A workflow's state, steps and (once known) outputs."""
        wid = workflow_id_of(workflow_id)
        workflow = await site.read(store.read, wid)
        if workflow is None:
            raise HTTPException(404, f"no workflow {wid}")
        return workflow_out(workflow)

    @router.post(
        "/workflows/{workflow_id}/cancel",
        tags=["workflows"],
        responses={404: {"model": Problem, "description": "no such workflow"}},
    )
    async def cancel(workflow_id: str, body: CancelWorkflow | None = None) -> WorkflowOut:
        """Cancel a workflow: its live jobs are killed. A finished workflow stays as it is."""
        wid = workflow_id_of(workflow_id)
        reason = (body.reason if body else "") or "cancelled through the API"
        workflow = await cancel_workflow(manager, wid, reason)
        if workflow is None:
            raise HTTPException(404, f"no workflow {wid}")
        return workflow_out(workflow)

    return router
