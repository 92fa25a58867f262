"""The agent's unit of work: what one transaction reads once and writes once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from caroni.agent.model import AgentJob, GrantedClaim, Load, Offer
from caroni.core import Incoming
from caroni.node.tx import Tx

if TYPE_CHECKING:
    from caroni.agent.service import AgentRole


@dataclass
class AgentWork:
    """The jobs and offers one transaction has read or changed (a batch of messages
    about many jobs costs a statement or two, not one or two per message), and how
    busy the agent is, counted once per transaction."""

    role: AgentRole
    tx: Tx
    jobs: dict[str, AgentJob] = field(default_factory=dict)
    changed: dict[str, bool] = field(default_factory=dict)  # job uuid -> is new
    new_offers: list[Offer] = field(default_factory=list)
    open_offers: dict[tuple[str, str], Offer] = field(default_factory=dict)
    requests_read: set[str] = field(default_factory=set)  # their open offers are known
    load: Load | None = None  # jobs running and reserved, once counted
    offers_to: dict[str, int] | None = None  # open offers by manager, counted with load
    running: int | None = None  # jobs running, once counted to fill slots
    # Claims granted (caroni.claims/1) as read: the live one by manager, any by uuid
    # (None: there is none), and the uuids of those granted or renewed, to write.
    claims_for: dict[str, GrantedClaim | None] = field(default_factory=dict)
    claims: dict[str, GrantedClaim | None] = field(default_factory=dict)
    claims_changed: set[str] = field(default_factory=set)

    def forget_counts(self) -> None:
        """What jobs and offers count for may change: count them again when asked."""
        self.load = self.offers_to = self.running = None

    def prefetch(self, incoming: Sequence[Incoming]) -> None:
        self.role.prefetch(self.tx, incoming)

    def write(self) -> None:
        self.role.write_changes(self.tx)

    def after_commit(self) -> None:
        pass
