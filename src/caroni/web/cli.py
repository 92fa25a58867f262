"""`caroni user ...`: the users of a node's web site and their API tokens.

These work on the node's database directly (the node may be running: every
change is one short transaction), so the first user can be made before the
node ever starts. There is no default user outside the demo.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from caroni.console import console, errors
from caroni.errors import CaroniError

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


def _engine(db: str):  # type: ignore[no-untyped-def]
    from caroni.store import open_node_db

    return open_node_db(db)  # migrated, so that a user can be made before the node starts


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise _fail("the password is empty")
    return password


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/] {message}")
    return typer.Exit(2)


def _auth():  # type: ignore[no-untyped-def]
    # Imported when a command runs: `caroni` itself should start fast.
    from caroni.web import auth

    return auth


def _run(db: str, work) -> object:  # type: ignore[no-untyped-def]
    try:
        engine = _engine(db)
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    try:
        with engine.begin() as conn:
            return work(conn)
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()


@app.command("add")
def add(username: Username, db: Db, password_stdin: PasswordStdin = False) -> None:
    """Add a user who can log into the node's site."""
    auth = _auth()
    try:
        auth.check_username(username)
    except CaroniError as exc:
        raise _fail(str(exc)) from exc
    password_hash = auth.hash_password(_password(password_stdin))
    _run(db, lambda conn: auth.add_user(conn, username, password_hash))
    console.print(f"user {username} added")


@app.command("password")
def password(username: Username, db: Db, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (ends the user's open sessions)."""
    auth = _auth()
    password_hash = auth.hash_password(_password(password_stdin))
    _run(db, lambda conn: auth.set_password(conn, username, password_hash))
    console.print(f"password of {username} changed")


@app.command("token")
def token(username: Username, db: Db) -> None:
    """Print a new API token for the user (shown once; only its hash is kept)."""
    auth = _auth()
    value = _run(db, lambda conn: auth.new_api_token(conn, username))
    # Plain print: the token alone on stdout, for scripts (`TOKEN=$(caroni user token ...)`).
    print(value)


@app.command("list")
def list_users(db: Db) -> None:
    """List the users."""
    auth = _auth()
    names = _run(db, auth.usernames)
    assert isinstance(names, list)
    for name in names:
        console.print(name)


@app.command("remove")
def remove(username: Username, db: Db) -> None:
    """Remove a user, with their sessions and API tokens."""
    auth = _auth()
    _run(db, lambda conn: auth.remove_user(conn, username))
    console.print(f"user {username} removed")
