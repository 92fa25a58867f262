"""`caroni manager` and `caroni agent`: run one node over RabbitMQ until interrupted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caroni.agent.model import Policy
from caroni.cli.service import announce_site, run_service
from caroni.cli.shared import (
    DEFAULT_AMQP,
    AmqpUrl,
    Compat,
    Exchange,
    KeyFile,
    NodeHttp,
    RequireSignatures,
    SharedProtocolOnly,
    Verbose,
    amqp_transport,
    reports_errors,
    setup_logging,
    spoken,
)
from caroni.console import console
from caroni.errors import ConfigError
from caroni.manager.handlers import DEFAULT_TIMINGS, Timings
from caroni.manager.model import DEFAULT_MAX_ATTEMPTS
from caroni.protocol.routing import DEFAULT_EXCHANGE

CONTAINMENTS = ("auto", "cgroup", "session")


@reports_errors
def manager(
    db: Annotated[str, typer.Option(envvar="CARONI_DB", help="Database URL or SQLite path.")] = (
        "caroni-manager.sqlite3"
    ),
    amqp: AmqpUrl = DEFAULT_AMQP,
    exchange: Exchange = DEFAULT_EXCHANGE,
    compat: Compat = False,
    template: Annotated[
        list[Path] | None, typer.Option(help="CWL template file to add (repeatable).")
    ] = None,
    demo_content: Annotated[bool, typer.Option(help="Add the demo templates.")] = False,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="Attempts per step.")
    ] = DEFAULT_MAX_ATTEMPTS,
    max_running: Annotated[
        int,
        typer.Option(
            min=0, help="Workflows running at once; later ones wait their turn (0: no limit)."
        ),
    ] = 300,
    name: Annotated[str, typer.Option(help="Name shown on the web site.")] = "manager",
    http: NodeHttp = "127.0.0.1:8000",
    offer_window: Annotated[
        float, typer.Option(help="Seconds to collect offers and take the least loaded (0: first).")
    ] = DEFAULT_TIMINGS.offer_window,
    status_interval: Annotated[
        float, typer.Option(help="Ask a silent job's agent for its status this often (s).")
    ] = DEFAULT_TIMINGS.status_interval,
    job_lease: Annotated[
        float, typer.Option(help="Give a job up when its agent is silent this long (s).")
    ] = DEFAULT_TIMINGS.job_lease,
    accept_timeout: Annotated[
        float, typer.Option(help="Request again when an accepted offer is not confirmed (s).")
    ] = DEFAULT_TIMINGS.accept_timeout,
    request_deadline: Annotated[
        float | None, typer.Option(help="Fail a step no agent offers for within this (s).")
    ] = None,
    key: KeyFile = None,
    require_signatures: RequireSignatures = False,
    allowed_submitter: Annotated[
        list[str] | None,
        typer.Option(help="Trusted name allowed to start workflows (repeatable; default: any)."),
    ] = None,
    shared_protocol_only: SharedProtocolOnly = False,
    shared_requests: Annotated[
        bool,
        typer.Option(
            "--shared-requests",
            envvar="CARONI_SHARED_REQUESTS",
            help="Send every request to the plain key at once too, so that agents of "
            "other Caroni implementations need not wait for it to be broadcast again.",
        ),
    ] = False,
    verbose: Verbose = 0,
) -> None:
    """Run a workflow manager until interrupted."""
    from caroni.app import ManagerNode
    from caroni.demo import demo_template_paths
    from caroni.trust import TrustSettings

    setup_logging(verbose)
    transport = amqp_transport(amqp, exchange, compat)
    timings = Timings(
        offer_window=offer_window,
        status_interval=status_interval,
        job_lease=job_lease,
        accept_timeout=accept_timeout,
        request_deadline=request_deadline,
    )
    trust = TrustSettings(
        key_file=key,
        require_signatures=require_signatures,
        allowed_submitters=frozenset(allowed_submitter) if allowed_submitter else None,
    )
    node = ManagerNode(
        transport,
        db,
        max_attempts=max_attempts,
        name=name,
        http=http,
        trust=trust,
        timings=timings,
        max_running=max_running,
        speaks=spoken(shared_protocol_only),
        shared_requests=shared_requests,
    )

    async def start() -> None:
        await transport.connect()
        await node.start()
        paths = dict(demo_template_paths()) if demo_content else {}
        for path in template or []:
            paths[path.stem] = path
        for template_name, path in paths.items():
            await node.add_template_file(path, template_name)
        console.print(f"manager key: {node.key}")
        await announce_site(node)

    async def stop() -> None:
        await node.stop()
        await transport.close()

    run_service(start, stop, transport)


@reports_errors
def agent(
    db: Annotated[str, typer.Option(envvar="CARONI_DB", help="Database URL or SQLite path.")] = (
        "caroni-agent.sqlite3"
    ),
    amqp: AmqpUrl = DEFAULT_AMQP,
    exchange: Exchange = DEFAULT_EXCHANGE,
    compat: Compat = False,
    job_types: Annotated[
        list[Path] | None, typer.Option(help="Job types JSON file to add (repeatable).")
    ] = None,
    demo_content: Annotated[bool, typer.Option(help="Add the demo job types.")] = False,
    only: Annotated[
        str, typer.Option(help="Comma-separated job type names to take from the files.")
    ] = "",
    name: Annotated[str, typer.Option(help="Site name shown to managers.")] = "agent",
    slots: Annotated[int, typer.Option(min=1, help="Jobs running at once.")] = 2,
    max_reserved: Annotated[
        int, typer.Option(min=1, help="Open offers plus waiting jobs held before declining.")
    ] = 1000,
    max_offers_per_manager: Annotated[
        int,
        typer.Option(
            min=1, help="Open offers held for one manager at a time; beyond, requests are declined."
        ),
    ] = Policy().max_offers_per_manager,
    allow_manager: Annotated[
        list[str] | None,
        typer.Option(help="Serve only this manager (key or key id; repeatable)."),
    ] = None,
    deny_manager: Annotated[
        list[str] | None, typer.Option(help="Never serve this manager (repeatable).")
    ] = None,
    run_as: Annotated[
        str | None, typer.Option(help="Run job bodies as this user (the agent must be root).")
    ] = None,
    offer_ttl: Annotated[
        float, typer.Option(min=1, help="Seconds an offer stays valid.")
    ] = Policy().offer_ttl,
    claim_capacity: Annotated[
        int,
        typer.Option(
            min=0,
            help="Jobs a manager of ours may assign at once under the claim this agent "
            "grants it with an offer (0: grant no claims).",
        ),
    ] = Policy().claim_capacity,
    claim_ttl: Annotated[
        float,
        typer.Option(min=1, help="Seconds a claim holds unless a finished job renews it."),
    ] = Policy().claim_ttl,
    workdir: Annotated[Path | None, typer.Option(help="Where job working dirs go.")] = None,
    containment: Annotated[
        str,
        typer.Option(
            envvar="CARONI_CONTAINMENT",
            help="Where a job's processes are kept: auto (a cgroup where this process "
            "may make one, else a session), cgroup or session.",
        ),
    ] = "auto",
    http: NodeHttp = "127.0.0.1:8001",
    key: KeyFile = None,
    require_signatures: RequireSignatures = False,
    shared_protocol_only: SharedProtocolOnly = False,
    verbose: Verbose = 0,
) -> None:
    """Run an agent until interrupted."""
    from caroni.agent.containment import Mechanism
    from caroni.app import AgentNode
    from caroni.demo.main import DEMO_JOB_TYPES
    from caroni.trust import TrustSettings

    setup_logging(verbose)
    if containment not in CONTAINMENTS:
        raise ConfigError(f"--containment must be auto, cgroup or session, not {containment!r}")
    transport = amqp_transport(amqp, exchange, compat)
    policy = Policy(
        slots=slots,
        max_reserved=max_reserved,
        max_offers_per_manager=max_offers_per_manager,
        offer_ttl=offer_ttl,
        claim_capacity=claim_capacity,
        claim_ttl=claim_ttl,
        site_identifier=name,
        allow_managers=frozenset(allow_manager) if allow_manager else None,
        deny_managers=frozenset(deny_manager or ()),
        run_as=run_as,
    )
    node = AgentNode(
        transport,
        db,
        policy=policy,
        workdir=workdir,
        http=http,
        trust=TrustSettings(key_file=key, require_signatures=require_signatures),
        containment=None if containment == "auto" else Mechanism(containment),
        speaks=spoken(shared_protocol_only),
    )
    files = ([DEMO_JOB_TYPES] if demo_content else []) + list(job_types or [])
    selected = {n.strip() for n in only.split(",") if n.strip()} or None

    async def start() -> None:
        await transport.connect()
        await node.start()
        for path in files:
            await node.add_job_types_file(path, selected)
        console.print(f"agent key: {node.key}")
        await announce_site(node)

    async def stop() -> None:
        await node.stop()
        await transport.close()

    run_service(start, stop, transport)
