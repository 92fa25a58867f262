"""What makes a node a manager or an agent, as the service shell sees it."""

from __future__ import annotations

from typing import Protocol

from caroni.core import Incoming
from caroni.node.tx import Tx, UnitOfWork


class Role(Protocol):
    """What makes a node a manager or an agent: its bindings, handlers and timers."""

    name: str
    max_tick_interval: float
    """The longest the timers wait before they run again, when ``tick`` names no
    earlier time."""

    def bindings(self, own_key: str) -> list[str]:
        """Routing-key patterns this node's queue listens to."""
        ...

    def open(self, tx: Tx) -> UnitOfWork:
        """A fresh unit of work for the transaction ``tx`` begins (see ``Tx.work``)."""
        ...

    def handle(self, tx: Tx, incoming: Incoming) -> None:
        """Apply one message; raise SetAside to dead-letter it with a reason."""
        ...

    def tick(self, tx: Tx) -> float | None:
        """Fire due timers; return when to be called next (epoch seconds) or None."""
        ...
