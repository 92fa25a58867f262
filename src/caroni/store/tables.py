"""Every table of a node's database, in one SQLAlchemy metadata.

One schema serves both roles (a manager leaves the agent tables empty and the
other way round): a single migration chain is simpler to keep right than one per
role, and the demo runs both roles side by side anyway.

Aggregates (a manager's workflow, an agent's job) are stored as one row each: a
few summary columns that pages filter and sort on, plus the whole aggregate as a
JSON document. A message touches exactly one aggregate, so handling it is one
read and one write, and the pure handlers work on plain objects.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# --- shared by both roles --------------------------------------------------------

node_identity = Table(
    "node_identity",
    metadata,
    Column("role", String(16), primary_key=True),
    Column("node_uuid", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
)

# Message ids already handled: a delivery whose id is here is a duplicate.
inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("received_at", Float, nullable=False, index=True),
)

# Messages written in the same transaction as the state change that caused them,
# published after commit, deleted once the broker confirmed them.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("routing_key", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("reply_to", String(255), nullable=False, default=""),
    Column("message_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# Deliveries that could not be handled, kept with the reason instead of lost.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False, index=True),
    Column("routing_key", String(255), nullable=False, default=""),
    Column("reply_to", String(255), nullable=False, default=""),
    Column("message_id", String(64), nullable=False, default=""),
    Column("type_name", String(64), nullable=False, default=""),
    Column("reason", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
)

# Every message a node received or sent, with the aggregate it concerned
# ("subject": a workflow id on a manager, a job uuid on an agent), for the
# operators' pages (message sequence of one workflow) and for debugging.
message_log = Table(
    "message_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("direction", String(3), nullable=False),  # "in" or "out"
    Column("type_name", String(64), nullable=False),
    Column("peer", String(255), nullable=False),  # sender (in) or routing key (out)
    Column("subject", String(32), nullable=False, default="", index=True),
    Column("message_id", String(64), nullable=False, default=""),
    Column("summary", Text, nullable=False),
)

# Keys this node trusts, by a name its operator chose (see caroni.trust).
trusted_keys = Table(
    "trusted_keys",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("key_id", String(128), nullable=False, unique=True),
    Column("added_at", Float, nullable=False),
    # The node (uuid) this key speaks for, when bound: messages naming that node
    # must be signed by this key, and this key may name no other node.
    Column("node_uuid", String(36), nullable=True, unique=True, index=True),
    # What the key may send (caroni.key_roles.KeyRole); NULL for keys trusted before
    # roles existed, which a node requiring signatures refuses until re-added.
    Column("role", String(16), nullable=True),
)

# --- manager ------------------------------------------------------------------------

templates = Table(
    "templates",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("text", Text, nullable=False),
    Column("parsed", Text, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("updated_at", Float, nullable=False),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False, default=""),
    Column("template_name", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("wake_at", Float, nullable=True),
    Column("version", Integer, nullable=False, default=1),
    Column("doc", Text, nullable=False),
    Index("ix_workflows_state_created", "state", "created_at"),
    Index("ix_workflows_wake_at", "wake_at"),
)

# Maps each request, offer and job uuid to the workflow it belongs to, so a
# message that names only one of them finds its aggregate in one lookup.
workflow_routes = Table(
    "workflow_routes",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("workflow_id", String(32), nullable=False, index=True),
)

# Claims agents granted this manager (caroni.claims/1): under a live one, steps of
# its job types are assigned straight to its agent. ``in_use`` is this manager's
# count of live jobs under it; the agent keeps the real count and refuses past it.
held_claims = Table(
    "held_claims",
    metadata,
    Column("claim_uuid", String(32), primary_key=True),
    Column("agent_key", String(255), nullable=False),
    Column("agent_site", String(255), nullable=False, default=""),
    Column("job_types", Text, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("in_use", Integer, nullable=False, default=0),
    Column("expires_at", Float, nullable=False, index=True),
)

# Steps whose current attempt waits for an agent (requested, none placed yet), kept
# with the workflow they belong to: when a claim has room, the manager assigns the
# longest waiting of its job types at once instead of at their next broadcast.
waiting_steps = Table(
    "waiting_steps",
    metadata,
    Column("workflow_id", String(32), primary_key=True),
    Column("step_name", String(255), primary_key=True),
    Column("job_type", String(255), nullable=False),
    Column("since", Float, nullable=False),
    Index("ix_waiting_steps_job_type_since", "job_type", "since"),
)

# --- agent --------------------------------------------------------------------------

# Claims this agent granted managers (caroni.claims/1).
granted_claims = Table(
    "granted_claims",
    metadata,
    Column("claim_uuid", String(32), primary_key=True),
    Column("manager_key", String(255), nullable=False, index=True),
    Column("job_types", Text, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

job_types = Table(
    "job_types",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

offers = Table(
    "offers",
    metadata,
    Column("offer_uuid", String(32), primary_key=True),
    Column("request_uuid", String(32), nullable=False, index=True),
    Column("job_type", String(255), nullable=False),
    Column("manager_key", String(255), nullable=False),
    Column("parameters", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("job_uuid", String(32), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    # Open offers are counted with every batch of requests and expired at timer passes.
    Index("ix_offers_state_expires", "state", "expires_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_uuid", String(32), primary_key=True),
    Column("job_type", String(255), nullable=False),
    Column("manager_key", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("ready_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("doc", Text, nullable=False),
    Column("claim_uuid", String(32), nullable=True, index=True),  # assigned under a claim
    Index("ix_jobs_status_ready", "status", "ready_at"),
)

# --- web sites (both roles) ----------------------------------------------------------
# Each node's management site has its own users: a node is administered on its
# own, and sharing accounts across nodes would need a shared store we do not have.

# Passwords are stored only as salted scrypt hashes (see caroni.web.auth).
users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
)

# API tokens for the HTTP API; only the SHA-256 of a token is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
)

# Logged-in browser sessions, server side so that logging out ends them for good.
# The cookie holds a random token; only its SHA-256 is kept. ``csrf`` is the
# per-session token every form must send back.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)
