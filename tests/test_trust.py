"""Node keys, envelope signatures and the trust policy."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from caroni.errors import ConfigError
from caroni.key_roles import KeyRole
from caroni.protocol import new_message_id, open_envelope, pb, seal
from caroni.trust import NodeKey, TrustPolicy, public_key_from_id, signature_valid

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def key(tmp_path: Path) -> NodeKey:
    return NodeKey.generate(tmp_path / "node.key")


def signed(key: NodeKey, message=None, *, sent_at=NOW, message_id=None) -> bytes:  # type: ignore[no-untyped-def]
    message = message or pb.JobStatusRequest(job_uuid=uuid.uuid4().bytes)
    return seal(
        message,
        message_id=new_message_id() if message_id is None else message_id,
        sender=uuid.uuid4(),
        sent_at=sent_at,
        signer=key,
    )


def test_the_private_key_file_is_readable_by_its_owner_only(tmp_path: Path, key: NodeKey) -> None:
    path = tmp_path / "node.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeKey.load(path).key_id == key.key_id
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        NodeKey.load(path)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        NodeKey.generate(path)


def test_a_key_id_is_the_public_key(key: NodeKey) -> None:
    assert key.key_id.startswith("ed25519:")
    public = public_key_from_id(key.key_id)
    public.verify(key.sign(b"x"), b"x")
    with pytest.raises(ValueError):
        public_key_from_id("ed25519:not-base64!")


def test_a_signed_envelope_verifies_and_unsigned_peers_still_read_it(key: NodeKey) -> None:
    opened = open_envelope(signed(key))
    assert opened.signator == key.key_id
    assert signature_valid(opened)
    # A peer that ignores signatures parses the same message.
    plain = pb.CaroniEnvelope()
    plain.ParseFromString(signed(key))
    assert plain.payload.type_url.endswith("JobStatusRequest")


@pytest.mark.parametrize("part", ["payload", "message_id", "sent_at", "sender"])
def test_tampering_with_any_signed_part_breaks_the_signature(key: NodeKey, part: str) -> None:
    envelope = pb.CaroniEnvelope()
    envelope.ParseFromString(signed(key))
    if part == "payload":
        envelope.payload.value = pb.JobStatusRequest(
            job_uuid=uuid.uuid4().bytes
        ).SerializeToString()
    elif part == "message_id":
        envelope.message_id = new_message_id()
    elif part == "sent_at":
        envelope.sent_at.seconds += 1
    else:
        envelope.sender = uuid.uuid4().bytes
    assert not signature_valid(open_envelope(envelope.SerializeToString()))


def test_a_signature_by_another_key_under_our_key_id_is_refused(
    tmp_path: Path, key: NodeKey
) -> None:
    forger = NodeKey.generate(tmp_path / "forger.key")
    forger.key_id = key.key_id  # claims to be us
    opened = open_envelope(signed(forger))
    policy = TrustPolicy(require_signatures=True, trusted={"us": key.key_id})
    assert policy.refusal(opened, NOW.timestamp(), seen_before=False).startswith("bad signature")


def refusal(policy: TrustPolicy, body: bytes, *, seen: bool = False, now: datetime = NOW) -> str:
    return policy.refusal(open_envelope(body), now.timestamp(), seen_before=seen)


def test_what_a_node_that_requires_signatures_refuses(tmp_path: Path, key: NodeKey) -> None:
    stranger = NodeKey.generate(tmp_path / "stranger.key")
    policy = TrustPolicy(
        require_signatures=True,
        trusted={"site-a": key.key_id},
        roles={key.key_id: KeyRole.MANAGER},  # the test messages are JobStatusRequests
    )
    unsigned = seal(pb.JobStatusRequest(job_uuid=uuid.uuid4().bytes), message_id=new_message_id())
    assert refusal(policy, signed(key)) == ""
    assert refusal(policy, unsigned).startswith("unsigned message")
    assert refusal(policy, signed(stranger)).startswith("unknown signer")
    assert refusal(policy, signed(key), seen=True).startswith("replay")
    assert refusal(policy, signed(key, message_id="")).startswith(
        "signed message without a message id"
    )
    old = NOW - timedelta(seconds=policy.max_age + 1)
    assert refusal(policy, signed(key, sent_at=old)).startswith("too old")
    future = NOW + timedelta(seconds=policy.max_future_skew + 1)
    assert "in the future" in refusal(policy, signed(key, sent_at=future))


def test_a_node_that_does_not_require_signatures_still_refuses_bad_ones(key: NodeKey) -> None:
    policy = TrustPolicy()
    unsigned = seal(pb.JobStatusRequest(job_uuid=uuid.uuid4().bytes), message_id=new_message_id())
    assert refusal(policy, unsigned) == ""
    envelope = pb.CaroniEnvelope()
    envelope.ParseFromString(signed(key))
    envelope.message_id = "changed"
    assert refusal(policy, envelope.SerializeToString()).startswith("bad signature")


def test_only_allowed_submitters_may_start_workflows(tmp_path: Path, key: NodeKey) -> None:
    other = NodeKey.generate(tmp_path / "other.key")
    policy = TrustPolicy(
        trusted={"site-a": key.key_id, "site-b": other.key_id},
        allowed_submitters=frozenset({"site-a"}),
    )
    create = pb.WorkFlowCreate(template_name="t")
    assert refusal(policy, signed(key, create)) == ""
    assert (
        refusal(policy, signed(other, create))
        == "WorkFlowCreate from a submitter that is not allowed"
    )
    unsigned = seal(create, message_id=new_message_id())
    assert refusal(policy, unsigned) == "WorkFlowCreate from a submitter that is not allowed"
