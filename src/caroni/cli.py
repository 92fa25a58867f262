"""The `caroni` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from caroni.agent.model import Policy
from caroni.console import ProgressPrinter, console, errors, print_outputs
from caroni.errors import CaroniError
from caroni.manager.handlers import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMINGS, Timings
from caroni.protocol.routing import DEFAULT_EXCHANGE
from caroni.store import display_url
from caroni.web.cli import app as user_app

app = typer.Typer(
    help="Caroni: federated workflows over a message broker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(user_app, name="user")


def _print_version(given: bool) -> None:
    if given:
        from caroni import __version__

        console.print(f"caroni {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Caroni: federated workflows over a message broker."""


AmqpUrl = Annotated[
    str,
    typer.Option("--amqp", envvar="CARONI_AMQP_URL", help="RabbitMQ URL."),
]
Exchange = Annotated[
    str, typer.Option("--exchange", envvar="CARONI_EXCHANGE", help="Topic exchange name.")
]
Compat = Annotated[
    bool,
    typer.Option(
        "--compat",
        envvar="CARONI_AMQP_COMPAT",
        help="Declare the exchange exactly as existing peers do (non-durable).",
    ),
]
ManagerOpt = Annotated[
    str,
    typer.Option(
        "--manager",
        envvar="CARONI_MANAGER",
        help="The manager's routing key (wf.manager.<id>) or just its id.",
    ),
]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output.")]
KeyFile = Annotated[
    Path | None,
    typer.Option("--key", envvar="CARONI_KEY", help="This node's private key: sign what it sends."),
]
RequireSignatures = Annotated[
    bool,
    typer.Option(
        "--require-signatures",
        envvar="CARONI_REQUIRE_SIGNATURES",
        help="Refuse messages not signed by a trusted key (see `caroni trust`).",
    ),
]
_HTTP_HELP = "Serve the node's web site on HOST:PORT ('none': no site)."
ManagerHttp = Annotated[str, typer.Option("--http", envvar="CARONI_HTTP", help=_HTTP_HELP)]
AgentHttp = Annotated[str, typer.Option("--http", envvar="CARONI_HTTP", help=_HTTP_HELP)]

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose >= 2:
        logging.getLogger(_AIORMQ_CONNECTION).setLevel(logging.NOTSET)


def _amqp(url: str, exchange: str, compat: bool):  # type: ignore[no-untyped-def]
    from caroni.transport.amqp import AmqpSettings, AmqpTransport

    return AmqpTransport(AmqpSettings(url=url, exchange=exchange, compat=compat))


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/] {message}")
    return typer.Exit(2)


@app.command()
def demo(
    message: Annotated[str, typer.Argument(help="The workflow's input.")] = "caronirocks",
    template: Annotated[str, typer.Option(help="Demo template to run.")] = "test_simple",
    agents: Annotated[int, typer.Option(min=1, max=2, help="Agents to split job types over.")] = 1,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the nodes' databases here (default: a temp dir).")
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve the nodes' web sites (user admin, password 'password') and keep "
            "running after the workflow until Ctrl-C.",
        ),
    ] = False,
    http: Annotated[
        str,
        typer.Option(
            "--http",
            help="With --serve: the manager's HOST:PORT; agents take the next ports.",
        ),
    ] = "127.0.0.1:8000",
    verbose: Verbose = 0,
) -> None:
    """Run a manager and agents in one process and one workflow end to end."""
    from caroni.demo.main import main as demo_main
    from caroni.web import parse_http

    _logging(verbose)
    try:
        parse_http(http)
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(demo_main(message, template, agents, data_dir, http=http if serve else None))


async def _serve_until_signalled(start, stop, transport) -> None:  # type: ignore[no-untyped-def]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
    except BaseException:
        # Closed, or its reconnection would go on in the background of the error.
        await transport.close()
        raise
    try:
        await stopping.wait()
    finally:
        await stop()


@app.command()
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
    http: ManagerHttp = "127.0.0.1:8000",
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
    verbose: Verbose = 0,
) -> None:
    """Run a workflow manager until interrupted."""
    from caroni.app import ManagerNode
    from caroni.demo import demo_template_paths
    from caroni.trust import TrustSettings

    _logging(verbose)
    transport = _amqp(amqp, exchange, compat)
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
    try:
        node = ManagerNode(
            transport,
            db,
            max_attempts=max_attempts,
            name=name,
            http=http,
            trust=trust,
            timings=timings,
            max_running=max_running,
        )
    except CaroniError as exc:
        raise _fail(str(exc)) from exc

    async def start() -> None:
        await transport.connect()
        await node.start()
        paths = dict(demo_template_paths()) if demo_content else {}
        for path in template or []:
            paths[path.stem] = path
        for name, path in paths.items():
            await node.add_template_file(path, name)
        console.print(f"manager key: {node.key}")
        await _announce_site(node)

    async def stop() -> None:
        await node.stop()
        await transport.close()

    _run_service(start, stop, transport)


@app.command()
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
    workdir: Annotated[Path | None, typer.Option(help="Where job working dirs go.")] = None,
    containment: Annotated[
        str,
        typer.Option(
            envvar="CARONI_CONTAINMENT",
            help="Where a job's processes are kept: auto (a cgroup where this process "
            "may make one, else a session), cgroup or session.",
        ),
    ] = "auto",
    http: AgentHttp = "127.0.0.1:8001",
    key: KeyFile = None,
    require_signatures: RequireSignatures = False,
    verbose: Verbose = 0,
) -> None:
    """Run an agent until interrupted."""
    from caroni.agent.containment import Mechanism
    from caroni.app import AgentNode
    from caroni.demo.main import DEMO_JOB_TYPES
    from caroni.trust import TrustSettings

    _logging(verbose)
    if containment not in ("auto", "cgroup", "session"):
        raise _fail(f"--containment must be auto, cgroup or session, not {containment!r}")
    transport = _amqp(amqp, exchange, compat)
    policy = Policy(
        slots=slots,
        max_reserved=max_reserved,
        max_offers_per_manager=max_offers_per_manager,
        offer_ttl=offer_ttl,
        site_identifier=name,
        allow_managers=frozenset(allow_manager) if allow_manager else None,
        deny_managers=frozenset(deny_manager or ()),
        run_as=run_as,
    )
    try:
        node = AgentNode(
            transport,
            db,
            policy=policy,
            workdir=workdir,
            http=http,
            trust=TrustSettings(key_file=key, require_signatures=require_signatures),
            containment=None if containment == "auto" else Mechanism(containment),
        )
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    files = ([DEMO_JOB_TYPES] if demo_content else []) + list(job_types or [])
    selected = {n.strip() for n in only.split(",") if n.strip()} or None

    async def start() -> None:
        await transport.connect()
        await node.start()
        for path in files:
            await node.add_job_types_file(path, selected)
        console.print(f"agent key: {node.key}")
        await _announce_site(node)

    async def stop() -> None:
        await node.stop()
        await transport.close()

    _run_service(start, stop, transport)


async def _announce_site(node) -> None:  # type: ignore[no-untyped-def]
    """Say where the site is, or why there is none, and how to make the first user."""
    if node.http is None:
        return
    if node.site is None or not node.site_url:
        reason = node.site.error if node.site is not None else "not started"
        errors.print(f"[yellow]site not served:[/] {reason} (choose another with --http)")
        return
    console.print(f"site: {node.site_url}")
    from caroni.web.auth import user_count

    if await node.node.db(_count_users, node.engine, user_count) == 0:
        console.print(
            f"no users yet: add one with `caroni user add NAME --db {display_url(node.db_url)}`"
            " to log in"
        )


def _count_users(engine, count) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(count(conn))


def _run_service(start, stop, transport) -> None:  # type: ignore[no-untyped-def]
    try:
        asyncio.run(_serve_until_signalled(start, stop, transport))
    except CaroniError as exc:
        raise _fail(str(exc)) from exc


def _parse_inputs(pairs: list[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"input {pair!r} is not key=value")
        inputs[key] = value
    return inputs


async def _with_client(  # type: ignore[no-untyped-def]
    amqp: str, exchange: str, compat: bool, manager: str, work, key: Path | None = None
):
    from caroni.client import Client
    from caroni.trust import NodeKey

    if not manager:
        raise _fail("which manager? give --manager or set CARONI_MANAGER")
    signer = NodeKey.load(key) if key else None
    transport = _amqp(amqp, exchange, compat)
    await transport.connect()
    try:
        async with Client(transport, manager, signer) as client:
            return await work(client)
    finally:
        await transport.close()


@app.command()
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

    async def work(client):  # type: ignore[no-untyped-def]
        workflow_id = await client.submit(template, values, name=name, max_attempts=max_attempts)
        console.print(f"workflow {workflow_id.hex} submitted")
        if not wait:
            return None
        return await client.wait(
            workflow_id,
            on_progress=ProgressPrinter(workflow_id.hex[:8]),
            timeout=timeout or None,
        )

    try:
        status = asyncio.run(_with_client(amqp, exchange, compat, manager, work, key))
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    if status is not None:
        print_outputs(status)
        raise typer.Exit(0 if status.state == "completed" else 1)


@app.command()
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
            raise _fail("give a workflow id (with --manager), or --db for a node's summary")
        _print_summary(db)
        return
    workflow_id = _workflow_id(workflow)
    try:
        answer = asyncio.run(
            _with_client(amqp, exchange, compat, manager, lambda c: c.status(workflow_id), key)
        )
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    ProgressPrinter(workflow_id.hex)(answer)
    print_outputs(answer)


def _print_summary(db: str) -> None:
    import datetime

    from caroni.store.summary import summarize

    engine = _node_db(db)
    with engine.connect() as conn:
        summary = summarize(conn)
    engine.dispose()
    for role, node_uuid in summary.roles.items():
        console.print(f"{role} {node_uuid}")
    if summary.workflows:
        console.print("workflows: " + ", ".join(f"{n} {s}" for s, n in summary.workflows.items()))
    if summary.jobs:
        console.print("jobs: " + ", ".join(f"{n} {s}" for s, n in summary.jobs.items()))
    console.print(f"outbox: {summary.outbox_backlog} message(s) not yet published")
    console.print(f"dead letters: {summary.dead_letters}")
    for at, type_name, sender, reason in summary.recent_dead_letters:
        when = datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"  {when} {type_name or '?'} from {sender or '?'}: {escape(reason)}")


@app.command()
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
    try:
        asyncio.run(
            _with_client(
                amqp, exchange, compat, manager, lambda c: c.cancel(workflow_id, reason), key
            )
        )
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"cancel sent for workflow {workflow_id.hex}")


def _workflow_id(text: str) -> uuid.UUID:
    with contextlib.suppress(ValueError):
        return uuid.UUID(text)
    raise _fail(f"{text!r} is not a workflow id")


keys_app = typer.Typer(help="This node's signing key.", no_args_is_help=True)
trust_app = typer.Typer(
    help="Keys this node trusts, each for a role and optionally bound to the node it speaks for.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")

NodeDb = Annotated[str, typer.Option("--db", envvar="CARONI_DB", help="The node's database.")]


@keys_app.command("init")
def keys_init(
    key: Annotated[Path, typer.Option("--key", help="Where to write the private key.")],
) -> None:
    """Create a key pair; prints the key id (the public key) to give to peers."""
    from caroni.trust import NodeKey

    try:
        created = NodeKey.generate(key)
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"key id: {created.key_id}")
    console.print(f"private key written to {key} (readable by you only); keep it secret")


@keys_app.command("show")
def keys_show(
    key: Annotated[Path, typer.Option("--key", help="The private key file.")],
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The node's database: also print the node's id, to bind the key to "
            "it at peers (`caroni trust add NAME KEY --role ROLE --node ID`).",
        ),
    ] = None,
) -> None:
    """Print the key id of a private key (and, with --db, the node id it speaks for)."""
    from sqlalchemy import select

    from caroni.store.tables import node_identity
    from caroni.trust import NodeKey

    try:
        key_id = NodeKey.load(key).key_id
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    if db is None:
        console.print(key_id)
        return
    console.print(f"key id: {key_id}")
    engine = _node_db(db)
    with engine.connect() as conn:
        nodes = conn.execute(select(node_identity.c.role, node_identity.c.node_uuid)).all()
    engine.dispose()
    for role, node in sorted(nodes):
        console.print(f"{role} node id: {node}")
    if not nodes:
        console.print("node id: none yet (it is created when the node first starts)")


def _node_db(db: str):  # type: ignore[no-untyped-def]
    from caroni.store import open_node_db

    return open_node_db(db)


@trust_app.command("add")
def trust_add(
    name: Annotated[str, typer.Argument(help="A name for the key's owner.")],
    key_id: Annotated[str, typer.Argument(help="Their key id (ed25519:...).")],
    db: NodeDb,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="What the key's owner is, which limits what it may send: submitter "
            "(starts, cancels and follows workflows), agent (offers for and runs jobs) "
            "or manager (requests and drives jobs). Required.",
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="Bind the key to the node (uuid) it speaks for: messages naming that "
            "node (reply-to or sender) must then be signed by this key, and this key may "
            "name no other node. The owner finds the id with `caroni keys show --key "
            "KEY --db DB` (or `caroni status --db DB`). Bind every peer: an unbound "
            "trusted key may still claim to be any unbound node.",
        ),
    ] = None,
) -> None:
    """Trust a key for a role, optionally bound to its node (takes effect when the node
    starts)."""
    import time

    from caroni.key_roles import ROLE_CHOICES, parse_role
    from caroni.trust import trust_key

    if role is None:
        raise _fail(
            f"give the key's role: --role {ROLE_CHOICES} (a submitter starts and cancels "
            "workflows, an agent runs jobs, a manager hands them out)"
        )
    try:
        key_role = parse_role(role)
    except ValueError as exc:
        raise _fail(f"--role: {exc}") from None
    node_uuid = None
    if node is not None:
        try:
            node_uuid = uuid.UUID(node)
        except ValueError:
            raise _fail(f"{node!r} is not a node id (a uuid)") from None
    engine = _node_db(db)
    try:
        with engine.begin() as conn:
            trust_key(conn, name, key_id, time.time(), node_uuid, role=key_role)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()
    bound = f" for node {node_uuid}" if node_uuid is not None else ""
    console.print(f"trusting {name} as {key_role}{bound}: {key_id}")


@trust_app.command("list")
def trust_list(db: NodeDb) -> None:
    """The keys this node trusts: name, role, key id and the node each is bound to
    ("-": none). A key without a role (trusted before roles existed) shows "-": a node
    that requires signatures refuses what it signs until it is added again."""
    from caroni.trust import trusted_key_list

    engine = _node_db(db)
    with engine.connect() as conn:
        keys = trusted_key_list(conn)
    engine.dispose()
    for entry in keys:
        console.print(f"{entry.name}\t{entry.role or '-'}\t{entry.key_id}\t{entry.node or '-'}")


@trust_app.command("remove")
def trust_remove(name: Annotated[str, typer.Argument()], db: NodeDb) -> None:
    """Stop trusting a key."""
    from caroni.trust import distrust_key

    engine = _node_db(db)
    with engine.begin() as conn:
        removed = distrust_key(conn, name)
    engine.dispose()
    if not removed:
        raise _fail(f"no trusted key named {name!r}")
    console.print(f"no longer trusting {name}")


# aiormq logs every failed connection attempt as an error of its own, in its words;
# the transport says the same in Caroni's (with the password masked). -vv shows both.
_AIORMQ_CONNECTION = "aiormq.connection"


def main() -> None:
    logging.getLogger(_AIORMQ_CONNECTION).setLevel(logging.CRITICAL)
    try:
        app()
    except CaroniError as exc:  # one a command did not put in its own words
        errors.print(f"[red]error:[/] {escape(str(exc))}")
        raise SystemExit(2) from None
