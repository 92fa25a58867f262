"""`caroni submit`, `status` and `cancel`: a workflow on a manager, over the broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from caroni.cli.shared import (
    DEFAULT_AMQP,
    AmqpUrl,
    Compat,
    Exchange,
    KeyFile,
    ManagerOpt,
    amqp_transport,
    reports_errors,
)
from caroni.cli.summary import print_summary
from caroni.console import ProgressPrinter, console, print_outputs
from caroni.errors import ConfigError
from caroni.protocol.routing import DEFAULT_EXCHANGE

if TYPE_CHECKING:
    from caroni.client import Client
    from caroni.protocol import pb

T = TypeVar("T")


@reports_errors
def submit(
    template: Annotated[str, typer.Argument(help="Template name on the manager.")],
    inputs: Annotated[list[str] | None, typer.Argument(help="Inputs as key=value.")] = None,
    manager: ManagerOpt = "",
    name: Annotated[str, typer.Option(help="A name for the workflow.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds.")] = 0,
    max_attempts: Annotated[int, typer.Option(help="Attempts per step (0: manager's).")] = 0,
    amqp: AmqpUrl = DEFAULT_AMQP,
    exchange: Exchange = DEFAULT_EXCHANGE,
    compat: Compat = False,
    key: KeyFile = None,
) -> None:
    """Start a workflow on a manager (and optionally wait for its outputs)."""
    values = _parse_inputs(inputs or [])

    async def work(client: Client) -> pb.WorkFlowStatus | None:
        workflow_id = await client.submit(template, values, name=name, max_attempts=max_attempts)
        console.print(f"workflow {workflow_id.hex} submitted")
        if not wait:
            return None
        return await client.wait(
            workflow_id,
            on_progress=ProgressPrinter(workflow_id.hex[:8]),
            timeout=timeout or None,
        )

    status = asyncio.run(_with_client(amqp, exchange, compat, manager, work, key))
    if status is not None:
        print_outputs(status)
        raise typer.Exit(0 if status.state == "completed" else 1)


@reports_errors
def status(
    workflow: Annotated[
        str | None, typer.Argument(help="Workflow id (omit, with --db, for the node's summary).")
    ] = None,
    manager: ManagerOpt = "",
    db: Annotated[
        str | None, typer.Option(help="A node's database: print its summary instead.")
    ] = None,
    amqp: AmqpUrl = DEFAULT_AMQP,
    exchange: Exchange = DEFAULT_EXCHANGE,
    compat: Compat = False,
    key: KeyFile = None,
) -> None:
    """Show a workflow's state, steps and outputs; or, with --db, a node's summary:
    work by state, unpublished messages and dead letters with their reasons."""
    if workflow is None:
        if db is None:
            raise ConfigError("give a workflow id (with --manager), or --db for a node's summary")
        print_summary(db)
        return
    workflow_id = _workflow_id(workflow)
    answer = asyncio.run(
        _with_client(amqp, exchange, compat, manager, lambda c: c.status(workflow_id), key)
    )
    ProgressPrinter(workflow_id.hex)(answer)
    print_outputs(answer)


@reports_errors
def cancel(
    workflow: Annotated[str, typer.Argument(help="Workflow id.")],
    manager: ManagerOpt = "",
    reason: Annotated[str, typer.Option(help="Why (kept with the workflow).")] = "",
    amqp: AmqpUrl = DEFAULT_AMQP,
    exchange: Exchange = DEFAULT_EXCHANGE,
    compat: Compat = False,
    key: KeyFile = None,
) -> None:
    """Cancel a workflow: its running jobs are killed. A manager that requires
    signatures takes a cancel only signed (--key) by the key that submitted it."""
    workflow_id = _workflow_id(workflow)
    asyncio.run(
        _with_client(amqp, exchange, compat, manager, lambda c: c.cancel(workflow_id, reason), key)
    )
    console.print(f"cancel sent for workflow {workflow_id.hex}")


async def _with_client(
    amqp: str,
    exchange: str,
    compat: bool,
    manager: str,
    work: Callable[[Client], Awaitable[T]],
    key: Path | None = None,
) -> T:
    from caroni.client import Client
    from caroni.trust import NodeKey

    if not manager:
        raise ConfigError("which manager? give --manager or set CARONI_MANAGER")
    signer = NodeKey.load(key) if key else None
    transport = amqp_transport(amqp, exchange, compat)
    await transport.connect()
    try:
        async with Client(transport, manager, signer) as client:
            return await work(client)
    finally:
        await transport.close()


def _parse_inputs(pairs: list[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"input {pair!r} is not key=value")
        inputs[key] = value
    return inputs


def _workflow_id(text: str) -> uuid.UUID:
    with contextlib.suppress(ValueError):
        return uuid.UUID(text)
    raise ConfigError(f"{text!r} is not a workflow id")
