"""Who a node is talking to: Ed25519 node keys, signatures, and the trust policy.

Every node may hold a key pair. Its key id is ``ed25519:`` followed by the raw
public key in URL-safe base64, so a key id is also the public key: a signature
can be checked without a lookup, and *trusting* a key means listing its id.

What is signed: the payload and the envelope fields replay checks rely on (see
:func:`caroni.protocol.envelope.signed_bytes`).

A trusted key may also be *bound* to the node (uuid) it speaks for. Then a message
that names that node, by its ``reply_to`` routing key or its envelope ``sender``,
must be signed by that key, and that key may name no other node: one trusted peer
can no longer speak as another. Unbound keys may still name any node.

Every trusted key also has a role (see :mod:`caroni.key_roles`): with signatures
required, a key may send only the messages its role may send.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, delete, insert, select

from caroni.errors import ConfigError
from caroni.key_roles import KeyRole, role_refusal
from caroni.protocol import Opened, node_uuid_from_routing_key
from caroni.store.tables import trusted_keys as trusted_table

KEY_ID_PREFIX = "ed25519:"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_ID_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def public_key_from_id(key_id: str) -> Ed25519PublicKey:
    """The public key a key id spells; ValueError when it spells none."""
    if not key_id.startswith(KEY_ID_PREFIX):
        raise ValueError(f"not an {KEY_ID_PREFIX} key id: {key_id[:60]!r}")
    encoded = key_id[len(KEY_ID_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"malformed key id {key_id[:60]!r}") from exc


class NodeKey:
    """A node's private key; signs envelopes (implements protocol.Signer)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.key_id = key_id_of(private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(data)

    @classmethod
    def generate(cls, path: Path) -> NodeKey:
        """Create a key pair and write the private key, readable by its owner only."""
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a node key")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Created 0600 from the start, so the key is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        """Read a private key; refuse one that others may read."""
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"no key at {path} (create one with `caroni keys init`)") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} is readable by others; run: chmod 600 {path}")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} does not hold an Ed25519 private key")
        return cls(key)


def signature_valid(opened: Opened) -> bool:
    """Whether a signed message's signature matches its key id and content."""
    try:
        public_key = public_key_from_id(opened.signator)
        public_key.verify(base64.b64decode(opened.signature, validate=True), opened.signed_bytes)
    except (ValueError, InvalidSignature, binascii.Error):
        return False
    return True


@dataclass(frozen=True)
class TrustPolicy:
    """What a node accepts.

    A signature that is present is always checked, and a bad one refused. With
    ``require_signatures``, a message must also be signed by a trusted key, carry a
    message id not seen before, and a sent-at that is neither older than
    ``max_age`` nor further in the future than ``max_future_skew``.
    ``allowed_submitters`` (trusted names) limits who may start workflows.

    ``bound_nodes`` (key id -> node uuid) binds keys to the nodes they speak for,
    whether signatures are required or not: a message whose ``reply_to`` routing
    key or envelope ``sender`` names a bound node must be signed by that node's
    key (an unsigned one is refused too), and a bound key may only sign messages
    that name its own node (a ``reply_to`` naming another node, or no node at all,
    is refused). Messages signed by unbound keys and naming unbound nodes pass as
    before.

    ``roles`` (key id -> role) says what each trusted key may send to a node of
    kind ``receiver`` ("manager" or "agent"; "" checks against every receiver).
    With ``require_signatures``, a message of a type its signer's role may not send,
    or signed by a trusted key without a role, is refused; and an agent's bound key
    may offer (or decline) only for its own node: the offer's site uuid must be it.
    ``allowed_submitters`` applies to WorkFlowCancel as to WorkFlowCreate.
    """

    require_signatures: bool = False
    trusted: Mapping[str, str] = field(default_factory=dict)  # name -> key id
    max_age: float = 24 * 3600.0
    max_future_skew: float = 300.0
    allowed_submitters: frozenset[str] | None = None
    bound_nodes: Mapping[str, uuid.UUID] = field(default_factory=dict)  # key id -> node
    roles: Mapping[str, KeyRole] = field(default_factory=dict)  # key id -> role
    receiver: str = ""  # the kind of node applying the policy: "manager", "agent"
    _key_of_node: Mapping[uuid.UUID, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key_of_node: dict[uuid.UUID, str] = {}
        for key_id, node in self.bound_nodes.items():
            if node in key_of_node:
                raise ValueError(f"node {node} is bound to two keys: {key_of_node[node]}, {key_id}")
            key_of_node[node] = key_id
        object.__setattr__(self, "_key_of_node", key_of_node)

    def signer_name(self, key_id: str) -> str | None:
        for name, trusted_id in self.trusted.items():
            if trusted_id == key_id:
                return name
        return None

    def refusal(self, opened: Opened, now: float, seen_before: bool, reply_to: str = "") -> str:
        """Why ``opened`` must be set aside, or "" when it may be handled.

        ``reply_to`` is the delivery's reply-to routing key (not covered by the
        signature, so it is checked against the key bindings here).
        """
        if opened.signator and not signature_valid(opened):
            return f"bad signature (claimed signer {opened.signator[:60]})"
        name = self.signer_name(opened.signator) if opened.signator else None
        limited = opened.type_name in _SUBMITTERS_ONLY and self.allowed_submitters is not None
        if limited and (name is None or name not in self.allowed_submitters):  # type: ignore[operator]
            return f"{opened.type_name} from a submitter that is not allowed"
        if self.require_signatures:
            if not opened.signator:
                return "unsigned message (this node requires signatures)"
            if name is None:
                return f"unknown signer {opened.signator[:60]}"
            role = self.roles.get(opened.signator)
            wrong_role = role_refusal(role, name, opened.type_name, self.receiver)
            if wrong_role:
                return wrong_role
        if self.bound_nodes:
            impersonation = self._binding_refusal(opened, reply_to, name)
            if impersonation:
                return impersonation
        if not self.require_signatures:
            return ""
        if self.roles.get(opened.signator) == KeyRole.AGENT:
            elsewhere = self._site_refusal(opened, name or "")
            if elsewhere:
                return elsewhere
        if not opened.message_id:
            return "signed message without a message id (replays could not be detected)"
        if seen_before:
            return f"replay: message id {opened.message_id} was already handled"
        if opened.sent_at is None:
            return "signed message without a sent-at time"
        sent = opened.sent_at.timestamp()
        if now - sent > self.max_age:
            return f"too old: sent {now - sent:.0f}s ago (limit {self.max_age:.0f}s)"
        if sent - now > self.max_future_skew:
            return f"sent-at {sent - now:.0f}s in the future (limit {self.max_future_skew:.0f}s)"
        return ""

    def _binding_refusal(self, opened: Opened, reply_to: str, name: str | None) -> str:
        """Why ``opened`` speaks for a node its signer is not bound to, or ""."""
        claims: list[tuple[uuid.UUID, str]] = []  # (node, where the message names it)
        reply_node = node_uuid_from_routing_key(reply_to) if reply_to else None
        if reply_node is not None:
            claims.append((reply_node, f"reply_to {_shown(reply_to)}"))
        if opened.sender is not None:
            claims.append((opened.sender, "envelope sender"))
        signer = self._describe(opened.signator, name) if opened.signator else ""
        for node, where in claims:
            bound_key = self._key_of_node.get(node)
            if bound_key is not None and bound_key != opened.signator:
                who = f"signed by {signer}" if signer else "unsigned"
                owner = self._describe(bound_key, self.signer_name(bound_key))
                return f"{who} but claims to be node {node} ({where}) bound to {owner}"
        own_node = self.bound_nodes.get(opened.signator) if opened.signator else None
        if own_node is None:
            return ""
        for node, where in claims:
            if node != own_node:
                return (
                    f"signed by {signer}, bound to node {own_node}, "
                    f"but claims to be node {node} ({where})"
                )
        if reply_to and reply_node is None:
            return (
                f"signed by {signer}, bound to node {own_node}, but its reply_to "
                f"{_shown(reply_to)} names no node"
            )
        return ""

    def _site_refusal(self, opened: Opened, name: str) -> str:
        """Why an agent's bound key offers (or declines) for another agent's site, or ""."""
        own_node = self.bound_nodes.get(opened.signator)
        site = getattr(opened.message, "site", None)
        if own_node is None or site is None or len(site.site_uuid) != 16:
            return ""
        named = uuid.UUID(bytes=site.site_uuid)
        if named == own_node:
            return ""
        return (
            f"{opened.type_name} signed by {name}, bound to agent {own_node}, "
            f"but for the site of node {named}"
        )

    @staticmethod
    def _describe(key_id: str, name: str | None) -> str:
        return name if name is not None else f"untrusted key {key_id[:60]}"


# Who may start a workflow may also be who cancels one: the same list limits both.
_SUBMITTERS_ONLY = frozenset({"WorkFlowCreate", "WorkFlowCancel"})


def _shown(text: str) -> str:
    """Peer-supplied text, quoted and cut short, for a refusal reason."""
    return repr(text[:120]) + ("..." if len(text) > 120 else "")


# --- configuration and storage -------------------------------------------------------


@dataclass(frozen=True)
class TrustSettings:
    """A node's trust configuration (the trusted keys themselves live in its database)."""

    key_file: Path | None = None  # sign with this key when given
    require_signatures: bool = False
    allowed_submitters: frozenset[str] | None = None  # manager only: trusted names

    def policy(
        self,
        trusted: Mapping[str, str],
        bound_nodes: Mapping[str, uuid.UUID] | None = None,
        roles: Mapping[str, KeyRole] | None = None,
        receiver: str = "",
    ) -> TrustPolicy:
        return TrustPolicy(
            require_signatures=self.require_signatures,
            trusted=dict(trusted),
            allowed_submitters=self.allowed_submitters,
            bound_nodes=dict(bound_nodes or {}),
            roles=dict(roles or {}),
            receiver=receiver,
        )


@dataclass(frozen=True)
class TrustedKey:
    """One row of a node's trusted keys."""

    name: str
    key_id: str
    node: uuid.UUID | None  # the node the key is bound to, if any
    added_at: float
    role: KeyRole | None  # None: trusted before roles existed; refused until re-added


def trusted_key_list(conn: Connection) -> list[TrustedKey]:
    """Every key this node trusts, by name."""
    rows = conn.execute(select(trusted_table).order_by(trusted_table.c.name)).all()
    return [
        TrustedKey(
            row.name,
            row.key_id,
            uuid.UUID(row.node_uuid) if row.node_uuid else None,
            row.added_at,
            _role_of(row.role),
        )
        for row in rows
    ]


def _role_of(stored: str | None) -> KeyRole | None:
    if not stored:
        return None
    try:
        return KeyRole(stored)
    except ValueError:  # a value this version does not know grants nothing
        return None


def trusted_keys(conn: Connection) -> dict[str, str]:
    """Name -> key id of every key this node trusts."""
    rows = conn.execute(select(trusted_table.c.name, trusted_table.c.key_id)).all()
    return {name: key_id for name, key_id in rows}


def bound_nodes(conn: Connection) -> dict[str, uuid.UUID]:
    """Key id -> node uuid of every trusted key bound to a node."""
    query = select(trusted_table.c.key_id, trusted_table.c.node_uuid).where(
        trusted_table.c.node_uuid.is_not(None)
    )
    return {key_id: uuid.UUID(node) for key_id, node in conn.execute(query).all()}


def key_roles(conn: Connection) -> dict[str, KeyRole]:
    """Key id -> role of every trusted key that has one."""
    rows = conn.execute(select(trusted_table.c.key_id, trusted_table.c.role)).all()
    return {key_id: role for key_id, stored in rows if (role := _role_of(stored)) is not None}


def trust_key(
    conn: Connection,
    name: str,
    key_id: str,
    now: float,
    node: uuid.UUID | None = None,
    *,
    role: KeyRole,
) -> None:
    """Trust ``key_id`` under ``name`` for ``role`` (replacing what that name meant
    before), bound to ``node`` when given; ValueError when ``node`` is bound to another
    name."""
    public_key_from_id(key_id)  # refuse what is not a key id
    if node is not None:
        holder = conn.execute(
            select(trusted_table.c.name, trusted_table.c.key_id).where(
                trusted_table.c.node_uuid == str(node)
            )
        ).first()
        # Rebinding the same name or the same key replaces it; another one may not.
        if holder is not None and name != holder.name and key_id != holder.key_id:
            raise ValueError(
                f"node {node} is already bound to the key trusted as {holder.name!r}; "
                f"remove that first (caroni trust remove {holder.name})"
            )
    conn.execute(delete(trusted_table).where(trusted_table.c.name == name))
    conn.execute(delete(trusted_table).where(trusted_table.c.key_id == key_id))
    conn.execute(
        insert(trusted_table).values(
            name=name,
            key_id=key_id,
            added_at=now,
            node_uuid=str(node) if node is not None else None,
            role=KeyRole(role).value,
        )
    )


def distrust_key(conn: Connection, name: str) -> bool:
    result = conn.execute(delete(trusted_table).where(trusted_table.c.name == name))
    return bool(result.rowcount)
