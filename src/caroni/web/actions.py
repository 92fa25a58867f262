"""Changes the manager's pages and API make, each in one node transaction.

They go through the manager's own methods (``ManagerRole.create``, ``.cancel``,
``ManagerNode.add_template``), so a workflow started from a form is stored with
its requests in the outbox in one commit, exactly as for a ``WorkFlowCreate``
message.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from fastapi import HTTPException

from caroni.errors import RefusedError
from caroni.manager import handlers
from caroni.manager.model import Workflow
from caroni.manager.templates import Template, parse_template
from caroni.node.tx import Tx
from caroni.protocol import pb

if TYPE_CHECKING:
    from caroni.app import ManagerNode


def workflow_id_of(text: str) -> str:
    """A workflow id as stored (32 hex digits), accepting the dashed form too."""
    try:
        return uuid.UUID(text.strip()).hex
    except ValueError:
        raise HTTPException(404, f"{text!r} is not a workflow id") from None


async def start_workflow(
    manager: ManagerNode,
    template_name: str,
    inputs: dict[str, str],
    *,
    name: str = "",
    max_attempts: int = 0,
) -> Workflow:
    """Create a workflow; RefusedError (nothing stored) if it could not start."""

    def create(tx: Tx) -> Workflow:
        # Checked here first so that a user's typo is an error on the form, not a
        # failed workflow in the list (a WorkFlowCreate message stores refusals).
        template = manager.role.store.get_template(tx.conn, template_name)
        reason = handlers.refusal_reason(template, template_name, inputs)
        if reason:
            raise RefusedError(reason)
        message = pb.WorkFlowCreate(
            template_name=template_name,
            wf_name=name,
            inputs=[pb.WorkFlowInput(key=k, value=v) for k, v in inputs.items()],
            max_attempts=max(max_attempts, 0),
        )
        return manager.role.create(tx, message, submitter="")

    return await manager.node.transact(create)


async def cancel_workflow(manager: ManagerNode, workflow_id: str, reason: str) -> Workflow | None:
    return await manager.node.transact(lambda tx: manager.role.cancel(tx, workflow_id, reason))


async def check_template(name: str, text: str) -> Template:
    """Parse and validate (cwl-utils is CPU-heavy: off the event loop)."""
    return await asyncio.to_thread(parse_template, name, text)
