"""`caroni demo`: a manager and agents in one process, and one workflow end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caroni.cli.shared import Verbose, reports_errors, setup_logging


@reports_errors
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

    setup_logging(verbose)
    parse_http(http)  # a bad address is refused before anything starts
    raise typer.Exit(demo_main(message, template, agents, data_dir, http=http if serve else None))
