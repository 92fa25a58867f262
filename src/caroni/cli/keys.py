"""`caroni keys ...`: this node's signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from caroni.cli.shared import reports_errors
from caroni.console import console
from caroni.store import node_db

app = typer.Typer(help="This node's signing key.", no_args_is_help=True)


@app.command("init")
@reports_errors
def keys_init(
    key: Annotated[Path, typer.Option("--key", help="Where to write the private key.")],
) -> None:
    """Create a key pair; prints the key id (the public key) to give to peers."""
    from caroni.trust import NodeKey

    created = NodeKey.generate(key)
    console.print(f"key id: {created.key_id}")
    console.print(
        f"private key written to {escape(str(key))} (readable by you only); keep it secret"
    )


@app.command("show")
@reports_errors
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

    key_id = NodeKey.load(key).key_id
    if db is None:
        console.print(key_id)
        return
    console.print(f"key id: {key_id}")
    with node_db(db) as engine, engine.connect() as conn:
        nodes = conn.execute(select(node_identity.c.role, node_identity.c.node_uuid)).all()
    for role, node in sorted(nodes):
        console.print(f"{role} node id: {node}")
    if not nodes:
        console.print("node id: none yet (it is created when the node first starts)")
