"""`caroni user ...`: the users of a node's web site and their API tokens.

These work on the node's database directly (the node may be running: every
change is one short transaction), so the first user can be made before the
node ever starts. There is no default user outside the demo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from caroni.cli.shared import reports_errors
from caroni.console import console
from caroni.errors import ConfigError
from caroni.store import node_db

if TYPE_CHECKING:
    from sqlalchemy import Connection

T = TypeVar("T")

app = typer.Typer(
    help="Users of a node's web site, and their API tokens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="CARONI_DB",
        help="The node's database URL or SQLite path.",
        show_default=False,
    ),
]
Username = Annotated[str, typer.Argument(help="User name.", show_default=False)]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from standard input instead of asking."
    ),
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise ConfigError("the password is empty")
    return password


def _run(db: str, work: Callable[[Connection], T]) -> T:
    # Migrated, so that a user can be made before the node starts.
    with node_db(db) as engine, engine.begin() as conn:
        return work(conn)


@app.command("add")
@reports_errors
def add(username: Username, db: Db, password_stdin: PasswordStdin = False) -> None:
    """Add a user who can log into the node's site."""
    from caroni.web import auth  # imported when used: `caroni` itself should start fast

    auth.check_username(username)
    password_hash = auth.hash_password(_password(password_stdin))
    _run(db, lambda conn: auth.add_user(conn, username, password_hash))
    console.print(f"user {escape(username)} added")


@app.command("password")
@reports_errors
def password(username: Username, db: Db, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (ends the user's open sessions)."""
    from caroni.web import auth

    password_hash = auth.hash_password(_password(password_stdin))
    _run(db, lambda conn: auth.set_password(conn, username, password_hash))
    console.print(f"password of {escape(username)} changed")


@app.command("token")
@reports_errors
def token(username: Username, db: Db) -> None:
    """Print a new API token for the user (shown once; only its hash is kept)."""
    from caroni.web import auth

    value = _run(db, lambda conn: auth.new_api_token(conn, username))
    # Plain print: the token alone on stdout, for scripts (`TOKEN=$(caroni user token ...)`).
    print(value)


@app.command("list")
@reports_errors
def list_users(db: Db) -> None:
    """List the users."""
    from caroni.web import auth

    names = _run(db, auth.usernames)
    for name in names:
        console.print(escape(name))


@app.command("remove")
@reports_errors
def remove(username: Username, db: Db) -> None:
    """Remove a user, with their sessions and API tokens."""
    from caroni.web import auth

    _run(db, lambda conn: auth.remove_user(conn, username))
    console.print(f"user {escape(username)} removed")
