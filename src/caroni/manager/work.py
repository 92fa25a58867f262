"""The manager's unit of work: the workflows one transaction reads once and writes once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from caroni.core import Incoming
from caroni.manager.claims import ClaimBook
from caroni.manager.store import Loaded
from caroni.node.tx import Tx

if TYPE_CHECKING:
    from caroni.manager.service import ManagerRole


@dataclass
class ManagerWork:
    """The workflows one transaction has read (and, on PostgreSQL, locked): the
    messages of a batch that concern one workflow share one read and one write."""

    role: ManagerRole
    tx: Tx
    opened: dict[str, Loaded] = field(default_factory=dict)
    running: int | None = None  # workflows requesting or running steps, once counted
    book: ClaimBook | None = None  # the live claims, once a message needed them

    def prefetch(self, incoming: Sequence[Incoming]) -> None:
        self.role.prefetch(self.tx, incoming)

    def write(self) -> None:
        self.role.save_opened(self.tx)

    def after_commit(self) -> None:
        self.role.store.remember(self.opened.values())
