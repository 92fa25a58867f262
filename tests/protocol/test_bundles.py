"""Bundles on the wire: several envelopes in one body, split so that none grows
past what a receiver applies in one modest transaction."""

from __future__ import annotations

import pytest

from caroni.errors import EnvelopeError
from caroni.protocol import open_envelope, pb, seal
from caroni.protocol.bundles import (
    BUNDLE,
    BYTES_PER_BUNDLE,
    MAX_PARTS,
    PARTS_PER_BUNDLE,
    group_for_bundles,
    parts_of,
    seal_bundle,
)


def test_a_bundle_carries_whole_envelopes_each_as_sent() -> None:
    bodies = [
        seal(pb.JobStatusRequest(job_uuid=bytes([n]) * 16), message_id=f"m{n}") for n in (1, 2)
    ]
    opened = open_envelope(seal_bundle(bodies))
    assert opened.type_name == BUNDLE
    assert opened.message_id == ""  # the parts have theirs
    parts = parts_of(opened)
    assert parts == bodies
    assert [open_envelope(part).message_id for part in parts] == ["m1", "m2"]


def test_a_bundle_holds_at_least_one_and_at_most_max_parts_envelopes() -> None:
    with pytest.raises(ValueError, match="1 to"):
        seal_bundle([])
    with pytest.raises(ValueError, match="1 to"):
        seal_bundle([b"x"] * (MAX_PARTS + 1))
    # A peer may still send more: the receiver refuses the bundle with a reason.
    too_many = seal(pb.MessageBundle(envelopes=[b"x"] * (MAX_PARTS + 1)))
    with pytest.raises(EnvelopeError, match=f"more than {MAX_PARTS}"):
        parts_of(open_envelope(too_many))


def test_runs_end_at_the_parts_or_bytes_limit_and_keep_the_order() -> None:
    assert group_for_bundles([]) == []
    assert group_for_bundles([10] * 3) == [range(0, 3)]
    many = group_for_bundles([10] * (2 * PARTS_PER_BUNDLE + 1))
    assert [len(run) for run in many] == [PARTS_PER_BUNDLE, PARTS_PER_BUNDLE, 1]
    half = BYTES_PER_BUNDLE // 2
    assert group_for_bundles([half, half, 1, half]) == [range(0, 2), range(2, 4)]
    # A message larger than a bundle travels in a run of its own.
    assert group_for_bundles([1, 2 * BYTES_PER_BUNDLE, 1]) == [
        range(0, 1),
        range(1, 2),
        range(2, 3),
    ]
