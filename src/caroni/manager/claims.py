"""Claims a manager holds (the caroni.claims/1 extension), as plain data.

An agent of ours may grant a manager a claim with an offer: capacity for some job
types, up to a number of jobs at once, until it expires. While a claim is live the
manager assigns steps of those types straight to its agent. The agent stays in
charge: it renews a claim with each result, may shrink or revoke it, and refuses an
assignment it will not take, whereupon the manager requests the step by broadcast.
So the manager's count of jobs under a claim (``in_use``) only spares the agent
assignments it would refuse; it need not be exact.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from caroni.protocol import pb

MAX_CLAIM_CAPACITY = 10_000
"""Most jobs at once a manager assigns under one claim, whatever the agent grants."""

ENOUGH_CLAIMS = 8
"""Live claims with room per job type past which a manager records no new one: it
only needs room for its work, and every claim it holds is read by each transaction
that places steps. An agent whose claim goes unrecorded is asked again, by
broadcast, once the claims held are full."""

MAX_CLAIM_LEASE = 3600.0
"""Longest a granted claim counts (seconds from when it arrives): a claim must be
renewed, so that one lost with its agent stops drawing assignments."""


@dataclass(slots=True)
class HeldClaim:
    claim_uuid: str
    agent_key: str
    agent_site: str
    job_types: frozenset[str]
    capacity: int
    expires_at: float
    in_use: int = 0  # as stored when the transaction read it


@dataclass
class ClaimBook:
    """The live claims one transaction works with, and what it changed of them."""

    claims: dict[str, HeldClaim] = field(default_factory=dict)
    granted: set[str] = field(default_factory=set)  # claim uuids to write
    dropped: set[str] = field(default_factory=set)  # claim uuids to delete
    # Jobs under each claim this transaction added (negative: ended), not yet stored.
    changed: Counter[str] = field(default_factory=Counter)

    def free(self, claim: HeldClaim, now: float) -> int:
        """Jobs ``claim`` takes now (0 once it expired)."""
        if now >= claim.expires_at:
            return 0
        return max(claim.capacity - claim.in_use - self.changed[claim.claim_uuid], 0)

    def room(self, now: float) -> Counter[str]:
        """Jobs the live claims take now, by job type."""
        room: Counter[str] = Counter()
        for claim in self.claims.values():
            free = self.free(claim, now)
            if free > 0:
                for job_type in claim.job_types:
                    room[job_type] += free
        return room

    def pick(self, job_type: str, now: float, avoid: Collection[str] = ()) -> HeldClaim | None:
        """The live claim for ``job_type`` with the most room (the latest to expire
        among equals), leaving out the claim uuids in ``avoid``; or None."""
        best: tuple[int, float] | None = None
        chosen: HeldClaim | None = None
        for claim in self.claims.values():
            free = self.free(claim, now)
            if job_type not in claim.job_types or free <= 0 or claim.claim_uuid in avoid:
                continue
            if best is None or (free, claim.expires_at) > best:
                best, chosen = (free, claim.expires_at), claim
        return chosen

    def covers(self, job_type: str, now: float, avoid: Collection[str] = ()) -> bool:
        """Whether a live claim covers ``job_type``, with room or not (leaving out the
        claim uuids in ``avoid``)."""
        return any(
            job_type in claim.job_types and now < claim.expires_at and claim_uuid not in avoid
            for claim_uuid, claim in self.claims.items()
        )

    def take(self, claim: HeldClaim) -> None:
        """One more job runs under ``claim`` (so far as this transaction knows)."""
        self.changed[claim.claim_uuid] += 1

    def stored(self, in_use: Mapping[str, int]) -> None:
        """These changes of the jobs under claims are written now."""
        for claim_uuid, delta in in_use.items():
            if claim_uuid in self.claims:
                self.claims[claim_uuid].in_use += delta
        self.changed.subtract(in_use)

    def recount(self, changed: Counter[str]) -> None:
        """What this transaction changed of the jobs under each claim, counted anew
        from its workflows (jobs ended count too)."""
        self.changed = changed

    def grant(self, msg: pb.Claim, agent_key: str, agent_site: str, now: float) -> None:
        """Record a claim ``agent_key`` granted, renewed, shrank or (capacity 0)
        revoked. Only the agent that granted a claim may change it."""
        claim_uuid = uuid.UUID(bytes=msg.claim_uuid).hex
        held = self.claims.get(claim_uuid)
        if held is not None and held.agent_key != agent_key:
            return
        expires_at = min(msg.expiration.ToNanoseconds() / 1e9, now + MAX_CLAIM_LEASE)
        if msg.capacity == 0 or expires_at <= now:
            self.drop(claim_uuid, agent_key)
            return
        if held is None and self._enough(msg.job_type_names, now):
            return
        self.claims[claim_uuid] = HeldClaim(
            claim_uuid=claim_uuid,
            agent_key=agent_key,
            agent_site=agent_site or (held.agent_site if held else ""),
            job_types=frozenset(msg.job_type_names),
            capacity=min(msg.capacity, MAX_CLAIM_CAPACITY),
            expires_at=expires_at,
            in_use=held.in_use if held else 0,
        )
        self.granted.add(claim_uuid)
        self.dropped.discard(claim_uuid)

    def _enough(self, job_types: Collection[str], now: float) -> bool:
        """Whether every one of ``job_types`` has ``ENOUGH_CLAIMS`` live claims with room."""
        with_room = Counter(
            job_type
            for claim in self.claims.values()
            if self.free(claim, now) > 0
            for job_type in claim.job_types
        )
        return bool(job_types) and all(with_room[t] >= ENOUGH_CLAIMS for t in job_types)

    def drop(self, claim_uuid: str, agent_key: str) -> None:
        """Stop assigning under a claim (its agent revoked it, or refused under it)."""
        held = self.claims.get(claim_uuid)
        if held is not None and held.agent_key != agent_key:
            return
        self.claims.pop(claim_uuid, None)
        self.granted.discard(claim_uuid)
        self.dropped.add(claim_uuid)
