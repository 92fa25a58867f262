"""Routing keys of the Caroni broker layout, and AMQP topic matching.

Node keys must be spelled exactly as existing peers spell them (URL-safe base64 of
the node's UUID bytes, unpadded), or replies would go to queues nobody reads.
:func:`topic_matches` lets in-memory transports and tests route like RabbitMQ.
"""

from __future__ import annotations

import base64
import re
import uuid

FULFILLMENT_KEY = "wf.agent.fulfillment"
"""Broadcast key for JobFulfillmentRequest; every agent binds it."""

_TYPED_PREFIX = FULFILLMENT_KEY + "."
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_MAX_KEY_BYTES = 255  # AMQP's limit on a routing key


def fulfillment_key_for(job_type: str) -> str | None:
    """The key requests for ``job_type`` go to between our nodes
    (``wf.agent.fulfillment.<job type>``, every character but letters, digits, ``_``
    and ``-`` percent-escaped so that the type is one word of the key); None when
    that key would be longer than AMQP allows (such requests use the plain key)."""
    word = "".join(
        char if _PLAIN.fullmatch(char) else "".join(f"%{b:02X}" for b in char.encode())
        for char in job_type
    )
    key = _TYPED_PREFIX + word
    return key if word and len(key.encode()) <= _MAX_KEY_BYTES else None


DEFAULT_EXCHANGE = "caroni_exchange"
"""The topic exchange existing peers use unless configured otherwise."""

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def node_key_id(node_uuid: uuid.UUID) -> str:
    """The 22-character ``<id>`` used in a node's routing key."""
    return base64.urlsafe_b64encode(node_uuid.bytes).rstrip(b"=").decode("ascii")


def node_uuid_from_key_id(key_id: str) -> uuid.UUID:
    """Inverse of :func:`node_key_id`; ValueError unless ``key_id`` is its exact output."""
    if not isinstance(key_id, str) or _KEY_ID.fullmatch(key_id) is None:
        raise ValueError(f"not a node key id (22 URL-safe base64 characters): {key_id!r}")
    node_uuid = uuid.UUID(bytes=base64.urlsafe_b64decode(key_id + "=="))
    # The last character carries 4 unused bits; only one spelling per UUID is valid,
    # so that two different keys never name the same node.
    if node_key_id(node_uuid) != key_id:
        raise ValueError(f"not a canonical node key id: {key_id!r}")
    return node_uuid


def agent_key(node_uuid: uuid.UUID) -> str:
    """An agent's own routing key."""
    return f"wf.agent.{node_key_id(node_uuid)}"


def manager_key(node_uuid: uuid.UUID) -> str:
    """A manager's own routing key."""
    return f"wf.manager.{node_key_id(node_uuid)}"


def client_key(node_uuid: uuid.UUID) -> str:
    """The routing key of one of our short-lived submit/status clients."""
    return f"wf.client.{node_key_id(node_uuid)}"


_NODE_KEY_PREFIXES = ("wf.agent.", "wf.manager.", "wf.client.")


def node_uuid_from_routing_key(routing_key: str) -> uuid.UUID | None:
    """The node a node's own routing key names (as :func:`agent_key`,
    :func:`manager_key` and :func:`client_key` spell it); ``None`` for any other key,
    including non-canonical spellings of a node id."""
    for prefix in _NODE_KEY_PREFIXES:
        if routing_key.startswith(prefix):
            try:
                return node_uuid_from_key_id(routing_key[len(prefix) :])
            except ValueError:
                return None
    return None


def _words(key: str) -> list[str]:
    # RabbitMQ treats the empty key as zero words, while "a." is ["a", ""].
    return key.split(".") if key else []


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding ``pattern`` matches ``routing_key``, as RabbitMQ decides.

    Words are separated by '.'; a word ``*`` matches exactly one word, a word ``#``
    matches zero or more words; every other word (including ``a*``) is literal.
    """
    pat = _words(pattern)
    key = _words(routing_key)
    p = k = 0
    # Most recent '#' seen and the key position it is currently assumed to end at;
    # on a mismatch, let that '#' swallow one more word and retry (classic glob
    # backtracking: only the latest '#' ever needs revisiting).
    hash_p = -1
    hash_k = 0
    while k < len(key):
        if p < len(pat) and pat[p] == "#":
            hash_p, hash_k = p, k
            p += 1
        elif p < len(pat) and (pat[p] == "*" or pat[p] == key[k]):
            p += 1
            k += 1
        elif hash_p >= 0:
            hash_k += 1
            p, k = hash_p + 1, hash_k
        else:
            return False
    while p < len(pat) and pat[p] == "#":
        p += 1
    return p == len(pat)
