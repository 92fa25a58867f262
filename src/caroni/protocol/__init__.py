"""The Caroni wire protocol: message classes, envelopes and routing keys.

Pure code with no I/O, so every transport, node and test shares one definition of
what goes on the wire. Import message classes through ``pb``.
"""

from caroni.protocol._generated import caroni_pb2 as pb
from caroni.protocol.bounds import UUID_FIELDS
from caroni.protocol.envelope import (
    MAX_BODY_BYTES,
    MESSAGE_ALIASES,
    MESSAGE_TYPES,
    TYPE_URL_PREFIX,
    Opened,
    Signer,
    new_message_id,
    open_envelope,
    seal,
    signed_bytes,
    uuid_from_bytes,
    uuid_to_bytes,
)
from caroni.protocol.routing import (
    DEFAULT_EXCHANGE,
    FULFILLMENT_KEY,
    agent_key,
    client_key,
    fulfillment_key_for,
    manager_key,
    node_key_id,
    node_uuid_from_key_id,
    node_uuid_from_routing_key,
    topic_matches,
)

__all__ = [
    "DEFAULT_EXCHANGE",
    "FULFILLMENT_KEY",
    "MAX_BODY_BYTES",
    "MESSAGE_ALIASES",
    "MESSAGE_TYPES",
    "TYPE_URL_PREFIX",
    "UUID_FIELDS",
    "Opened",
    "Signer",
    "agent_key",
    "fulfillment_key_for",
    "client_key",
    "manager_key",
    "new_message_id",
    "node_key_id",
    "node_uuid_from_key_id",
    "node_uuid_from_routing_key",
    "open_envelope",
    "pb",
    "seal",
    "signed_bytes",
    "topic_matches",
    "uuid_from_bytes",
    "uuid_to_bytes",
]
