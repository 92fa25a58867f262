"""Several envelopes for one peer in one broker message (``caroni.bundles/1``).

A bundle is an ordinary ``CaroniEnvelope`` whose payload is a ``MessageBundle``: the
parts are whole envelopes, each as it would travel alone, so a part keeps its own
message id (the receiver's inbox still drops a redelivered part) and its own
signature (trust is checked per part, never per bundle). The bundle's envelope
itself carries neither.
"""

from __future__ import annotations

from collections.abc import Sequence

from caroni.errors import EnvelopeError
from caroni.protocol._generated import caroni_pb2 as pb
from caroni.protocol.envelope import Opened, seal

BUNDLE = pb.MessageBundle.DESCRIPTOR.name

MAX_PARTS = 256
"""Most parts a bundle may hold; more is refused as bad input. Senders bundle fewer
(``PARTS_PER_BUNDLE``), so that one broker message stays one modest transaction."""

PARTS_PER_BUNDLE = 64
BYTES_PER_BUNDLE = 1024 * 1024
"""A sender starts a new bundle past this many parts or body bytes."""


def seal_bundle(bodies: Sequence[bytes]) -> bytes:
    """One body holding the envelopes ``bodies``."""
    if not 0 < len(bodies) <= MAX_PARTS:
        raise ValueError(f"a bundle holds 1 to {MAX_PARTS} envelopes, not {len(bodies)}")
    return seal(pb.MessageBundle(envelopes=bodies))


def parts_of(opened: Opened) -> list[bytes]:
    """The envelopes an opened bundle holds; EnvelopeError when there are too many."""
    parts = list(opened.message.envelopes)
    if len(parts) > MAX_PARTS:
        raise EnvelopeError(f"bundle holds {len(parts)} envelopes, more than {MAX_PARTS}")
    return parts


def group_for_bundles(sizes: Sequence[int]) -> list[range]:
    """Split consecutive messages of these body sizes into runs that each fit a bundle."""
    runs: list[range] = []
    start, size = 0, 0
    for index, body_size in enumerate(sizes):
        full = index - start >= PARTS_PER_BUNDLE or size + body_size > BYTES_PER_BUNDLE
        if index > start and full:
            runs.append(range(start, index))
            start, size = index, 0
        size += body_size
    if sizes:
        runs.append(range(start, len(sizes)))
    return runs
