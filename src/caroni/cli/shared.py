"""What the commands share: their common options, logging, the broker, and how an
error Caroni raised on purpose reaches the person at the terminal."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from caroni.console import print_error
from caroni.errors import CaroniError
from caroni.protocol.extensions import SPOKEN

if TYPE_CHECKING:
    from caroni.transport.amqp import AmqpTransport

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

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
SharedProtocolOnly = Annotated[
    bool,
    typer.Option(
        "--shared-protocol-only",
        envvar="CARONI_SHARED_PROTOCOL_ONLY",
        help="Speak only the shared Caroni protocol: announce and use no extension.",
    ),
]


def spoken(shared_protocol_only: bool) -> frozenset[str]:
    """The extensions a node started with these options speaks."""
    return frozenset() if shared_protocol_only else SPOKEN


NodeHttp = Annotated[
    str,
    typer.Option(
        "--http",
        envvar="CARONI_HTTP",
        help="Serve the node's web site on HOST:PORT ('none': no site).",
    ),
]

# aiormq logs every failed connection attempt as an error of its own, in its words;
# the transport says the same in Caroni's (with the password masked). -vv shows both.
AIORMQ_CONNECTION = "aiormq.connection"

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A command whose CaroniError (a refusal, a bad setting, an outage it gave up on)
    ends it with ``error: <why>`` on standard error and exit code 2, no traceback."""

    @functools.wraps(command)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CaroniError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from exc

    return reporting


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose >= 2:
        logging.getLogger(AIORMQ_CONNECTION).setLevel(logging.NOTSET)


def amqp_transport(url: str, exchange: str, compat: bool) -> AmqpTransport:
    # Imported when a command runs: `caroni` itself should start fast.
    from caroni.transport.amqp import AmqpSettings, AmqpTransport

    return AmqpTransport(AmqpSettings(url=url, exchange=exchange, compat=compat))
