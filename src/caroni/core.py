"""What handlers and the service shell share: the types of a pure decision.

Handlers decide; the shell does the I/O. A handler is given what it needs (the
message, the clock, a source of fresh ids) and returns or queues what it wants
sent. This module imports nothing that does I/O, so the handlers that depend on it
can be read, tested and replayed without a database, a broker or a clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from caroni.protocol import Opened

NewId = Callable[[], str]
"""A source of fresh ids (32 hex digits), passed to handlers so they stay deterministic."""


def random_ids() -> str:
    """A fresh random id: what nodes use."""
    return uuid.uuid4().hex


def counting_ids(prefix: int = 0) -> NewId:
    """Ids that count up from ``prefix``: what tests and replays use."""
    numbers: Iterator[int] = iter(range(prefix << 64, (prefix + 1) << 64))
    return lambda: f"{next(numbers):032x}"


@dataclass(frozen=True, slots=True)
class Send:
    """A message a pure handler wants sent: where to, and what."""

    to: str
    message: Message


@dataclass(frozen=True, slots=True)
class Incoming:
    """One opened delivery as a handler sees it."""

    opened: Opened
    reply_to: str
    routing_key: str

    @property
    def message(self) -> Any:
        return self.opened.message

    @property
    def type_name(self) -> str:
        return self.opened.type_name
