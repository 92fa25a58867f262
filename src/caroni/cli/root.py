"""The `caroni` command: the root app, `--version`, every command in its place, and
the entry point."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from caroni.cli import keys, trust, users
from caroni.cli.demo import demo
from caroni.cli.nodes import agent, manager
from caroni.cli.shared import AIORMQ_CONNECTION
from caroni.cli.workflows import cancel, status, submit
from caroni.console import console, print_error
from caroni.errors import CaroniError

app = typer.Typer(
    help="Caroni: federated workflows over a message broker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(users.app, name="user")
for command in (demo, manager, agent, submit, status, cancel):
    app.command()(command)
app.add_typer(keys.app, name="keys")
app.add_typer(trust.app, name="trust")


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


def main() -> None:
    logging.getLogger(AIORMQ_CONNECTION).setLevel(logging.CRITICAL)
    try:
        app()
    except CaroniError as exc:  # one raised outside the commands (each reports its own)
        print_error(str(exc))
        raise SystemExit(2) from None
