"""`caroni trust ...`: the keys a node trusts, each for a role and optionally bound to
the node it speaks for. Changes take effect when the node starts."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.markup import escape

from caroni.cli.shared import reports_errors
from caroni.console import console
from caroni.errors import ConfigError, RefusedError
from caroni.store import node_db

app = typer.Typer(
    help="Keys this node trusts, each for a role and optionally bound to the node it speaks for.",
    no_args_is_help=True,
)

NodeDb = Annotated[str, typer.Option("--db", envvar="CARONI_DB", help="The node's database.")]


@app.command("add")
@reports_errors
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
        raise ConfigError(
            f"give the key's role: --role {ROLE_CHOICES} (a submitter starts and cancels "
            "workflows, an agent runs jobs, a manager hands them out)"
        )
    try:
        key_role = parse_role(role)
    except ValueError as exc:
        raise ConfigError(f"--role: {exc}") from None
    node_uuid = None
    if node is not None:
        try:
            node_uuid = uuid.UUID(node)
        except ValueError:
            raise ConfigError(f"{node!r} is not a node id (a uuid)") from None
    with node_db(db) as engine, engine.begin() as conn:
        try:
            trust_key(conn, name, key_id, time.time(), node_uuid, role=key_role)
        except ValueError as exc:  # a malformed key id, or a node bound to another key
            raise RefusedError(str(exc)) from None
    bound = f" for node {node_uuid}" if node_uuid is not None else ""
    console.print(f"trusting {escape(name)} as {key_role}{bound}: {escape(key_id)}")


@app.command("list")
@reports_errors
def trust_list(db: NodeDb) -> None:
    """The keys this node trusts: name, role, key id and the node each is bound to
    ("-": none). A key without a role (trusted before roles existed) shows "-": a node
    that requires signatures refuses what it signs until it is added again."""
    from caroni.trust import trusted_key_list

    with node_db(db) as engine, engine.connect() as conn:
        keys = trusted_key_list(conn)
    for entry in keys:
        fields = (entry.name, entry.role or "-", entry.key_id, str(entry.node or "-"))
        console.print("\t".join(escape(field) for field in fields))


@app.command("remove")
@reports_errors
def trust_remove(name: Annotated[str, typer.Argument()], db: NodeDb) -> None:
    """Stop trusting a key."""
    from caroni.trust import distrust_key

    with node_db(db) as engine, engine.begin() as conn:
        removed = distrust_key(conn, name)
    if not removed:
        raise RefusedError(f"no trusted key named {name!r}")
    console.print(f"no longer trusting {escape(name)}")
