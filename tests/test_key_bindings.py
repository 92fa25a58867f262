"""Trusted keys bound to the nodes they speak for: the policy, storage and CLI."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from caroni.cli import app
from caroni.key_roles import KeyRole
from caroni.protocol import (
    FULFILLMENT_KEY,
    agent_key,
    client_key,
    manager_key,
    new_message_id,
    node_key_id,
    node_uuid_from_routing_key,
    open_envelope,
    pb,
    seal,
)
from caroni.store import create_db_engine, migrate, node_uuid
from caroni.store.tables import trusted_keys as trusted_table
from caroni.trust import (
    NodeKey,
    TrustPolicy,
    TrustSettings,
    bound_nodes,
    key_roles,
    trust_key,
    trusted_key_list,
    trusted_keys,
)

AGENT = KeyRole.AGENT

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NODE_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
NODE_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")
NODE_C = uuid.UUID("cccccccc-0000-4000-8000-000000000003")  # bound to no key


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, NodeKey]:
    return {name: NodeKey.generate(tmp_path / f"{name}.key") for name in ("a", "b", "c", "x")}


def policy_for(keys: dict[str, NodeKey], *, require_signatures: bool = False) -> TrustPolicy:
    """site-a and site-b bound to nodes A and B; site-c trusted but unbound; x untrusted."""
    return TrustPolicy(
        require_signatures=require_signatures,
        trusted={
            "site-a": keys["a"].key_id,
            "site-b": keys["b"].key_id,
            "site-c": keys["c"].key_id,
        },
        bound_nodes={keys["a"].key_id: NODE_A, keys["b"].key_id: NODE_B},
        roles={keys[k].key_id: AGENT for k in ("a", "b", "c")},
    )


def check(
    policy: TrustPolicy,
    signer: NodeKey | None,
    *,
    reply_to: str = "",
    sender: uuid.UUID | None = None,
) -> str:
    body = seal(
        pb.JobStatusUpdate(job_uuid=uuid.uuid4().bytes, job_status=pb.JOB_STATUS_FAILED),
        message_id=new_message_id(),
        sender=sender,
        sent_at=NOW,
        signer=signer,
    )
    return policy.refusal(open_envelope(body), NOW.timestamp(), False, reply_to)


def test_node_routing_keys_name_their_node() -> None:
    for key_of in (agent_key, manager_key, client_key):
        assert node_uuid_from_routing_key(key_of(NODE_A)) == NODE_A
    assert node_uuid_from_routing_key(FULFILLMENT_KEY) is None
    assert node_uuid_from_routing_key("wf.other." + node_key_id(NODE_A)) is None
    assert node_uuid_from_routing_key(agent_key(NODE_A) + ".x") is None
    assert node_uuid_from_routing_key("") is None
    # The one canonical spelling only: another spelling is another routing key.
    canonical = node_key_id(NODE_A)
    other = canonical[:-1] + ("B" if canonical[-1] != "B" else "C")
    assert node_uuid_from_routing_key("wf.agent." + other) is None


@pytest.mark.parametrize("require_signatures", [False, True])
def test_a_bound_key_speaks_for_its_node(
    keys: dict[str, NodeKey], require_signatures: bool
) -> None:
    policy = policy_for(keys, require_signatures=require_signatures)
    assert check(policy, keys["a"], reply_to=agent_key(NODE_A), sender=NODE_A) == ""
    assert check(policy, keys["a"], reply_to=manager_key(NODE_A)) == ""
    assert check(policy, keys["a"]) == ""  # names no node at all


@pytest.mark.parametrize("require_signatures", [False, True])
def test_another_trusted_key_cannot_speak_for_a_bound_node(
    keys: dict[str, NodeKey], require_signatures: bool
) -> None:
    policy = policy_for(keys, require_signatures=require_signatures)
    by_reply_to = check(policy, keys["b"], reply_to=agent_key(NODE_A), sender=NODE_B)
    assert by_reply_to == (
        f"signed by site-b but claims to be node {NODE_A} "
        f"(reply_to {agent_key(NODE_A)!r}) bound to site-a"
    )
    by_sender = check(policy, keys["b"], reply_to=agent_key(NODE_B), sender=NODE_A)
    assert by_sender == (
        f"signed by site-b but claims to be node {NODE_A} (envelope sender) bound to site-a"
    )
    # An unbound trusted key may not claim a bound node either.
    assert check(policy, keys["c"], reply_to=agent_key(NODE_A)).startswith(
        f"signed by site-c but claims to be node {NODE_A}"
    )


def test_unsigned_and_unknown_signers_cannot_speak_for_a_bound_node(
    keys: dict[str, NodeKey],
) -> None:
    policy = policy_for(keys)  # signatures not required
    assert check(policy, None, reply_to=agent_key(NODE_A)) == (
        f"unsigned but claims to be node {NODE_A} (reply_to {agent_key(NODE_A)!r}) bound to site-a"
    )
    assert check(policy, keys["x"], sender=NODE_A).startswith(
        f"signed by untrusted key {keys['x'].key_id}"
    )
    # Naming an unbound node, they pass as before.
    assert check(policy, None, reply_to=agent_key(NODE_C)) == ""
    assert check(policy, keys["x"], reply_to=agent_key(NODE_C), sender=NODE_C) == ""


@pytest.mark.parametrize("require_signatures", [False, True])
def test_a_bound_key_cannot_speak_for_another_node(
    keys: dict[str, NodeKey], require_signatures: bool
) -> None:
    policy = policy_for(keys, require_signatures=require_signatures)
    assert check(policy, keys["b"], reply_to=agent_key(NODE_C)) == (
        f"signed by site-b, bound to node {NODE_B}, but claims to be node {NODE_C} "
        f"(reply_to {agent_key(NODE_C)!r})"
    )
    assert check(policy, keys["b"], reply_to=agent_key(NODE_B), sender=NODE_C) == (
        f"signed by site-b, bound to node {NODE_B}, but claims to be node {NODE_C} "
        "(envelope sender)"
    )
    assert check(policy, keys["b"], reply_to="somewhere.else") == (
        f"signed by site-b, bound to node {NODE_B}, but its reply_to 'somewhere.else' names no node"
    )


def test_unbound_keys_keep_working_as_before(keys: dict[str, NodeKey]) -> None:
    policy = policy_for(keys, require_signatures=True)
    assert check(policy, keys["c"], reply_to=agent_key(NODE_C), sender=NODE_C) == ""
    assert check(policy, keys["c"], reply_to="somewhere.else") == ""
    unbound = TrustPolicy(
        require_signatures=True,
        trusted={"site-b": keys["b"].key_id},
        roles={keys["b"].key_id: AGENT},
    )
    assert check(unbound, keys["b"], reply_to=agent_key(NODE_A), sender=NODE_A) == ""


def test_the_other_checks_come_first(keys: dict[str, NodeKey]) -> None:
    policy = policy_for(keys, require_signatures=True)
    assert check(policy, None, reply_to=agent_key(NODE_A)).startswith("unsigned message")
    assert check(policy, keys["x"], reply_to=agent_key(NODE_A)).startswith("unknown signer")
    envelope = pb.CaroniEnvelope()
    envelope.ParseFromString(
        seal(pb.JobKill(job_uuid=uuid.uuid4().bytes), sender=NODE_A, signer=keys["a"])
    )
    envelope.sender = NODE_B.bytes  # tampered
    tampered = open_envelope(envelope.SerializeToString())
    refusal = policy.refusal(tampered, NOW.timestamp(), False, agent_key(NODE_B))
    assert refusal.startswith("bad signature")


def test_one_node_cannot_be_bound_to_two_keys(keys: dict[str, NodeKey]) -> None:
    with pytest.raises(ValueError, match="bound to two keys"):
        TrustPolicy(bound_nodes={keys["a"].key_id: NODE_A, keys["b"].key_id: NODE_A})


def test_bindings_are_stored_with_the_trusted_keys(
    tmp_path: Path, keys: dict[str, NodeKey]
) -> None:
    engine = create_db_engine(str(tmp_path / "node.sqlite3"))
    migrate(engine)
    with engine.begin() as conn:
        trust_key(conn, "site-a", keys["a"].key_id, 1.0, NODE_A, role=AGENT)
        trust_key(conn, "site-c", keys["c"].key_id, 2.0, role=KeyRole.SUBMITTER)
        with pytest.raises(ValueError, match=f"node {NODE_A} is already bound to .*'site-a'"):
            trust_key(conn, "site-b", keys["b"].key_id, 3.0, NODE_A, role=AGENT)
        # a new key for site-a, renamed, and back
        trust_key(conn, "site-a", keys["b"].key_id, 4.0, NODE_A, role=AGENT)
        trust_key(conn, "site-a2", keys["b"].key_id, 5.0, NODE_A, role=AGENT)
        trust_key(conn, "site-a", keys["b"].key_id, 6.0, NODE_A, role=KeyRole.MANAGER)
        assert trusted_keys(conn) == {"site-a": keys["b"].key_id, "site-c": keys["c"].key_id}
        assert bound_nodes(conn) == {keys["b"].key_id: NODE_A}
        assert [(k.name, k.node, k.role) for k in trusted_key_list(conn)] == [
            ("site-a", NODE_A, KeyRole.MANAGER),
            ("site-c", None, KeyRole.SUBMITTER),
        ]
        policy = TrustSettings().policy(trusted_keys(conn), bound_nodes(conn), key_roles(conn))
    engine.dispose()
    assert policy.bound_nodes == {keys["b"].key_id: NODE_A}
    assert policy.roles == {keys["b"].key_id: KeyRole.MANAGER, keys["c"].key_id: "submitter"}


def test_trust_add_binds_list_shows_and_keys_show_prints_the_node_id(
    tmp_path: Path, keys: dict[str, NodeKey]
) -> None:
    runner = CliRunner()
    db = str(tmp_path / "node.sqlite3")
    key_a, key_b = keys["a"].key_id, keys["b"].key_id
    agent = ["--role", "agent"]
    added = runner.invoke(
        app, ["trust", "add", "site-a", key_a, "--db", db, *agent, "--node", str(NODE_A)]
    )
    assert added.exit_code == 0, added.output
    assert f"trusting site-a as agent for node {NODE_A}" in added.output
    submitter = ["--role", "submitter"]
    assert (
        runner.invoke(app, ["trust", "add", "site-b", key_b, "--db", db, *submitter]).exit_code == 0
    )
    listed = runner.invoke(app, ["trust", "list", "--db", db])
    assert [line.split() for line in listed.output.splitlines()] == [
        ["site-a", "agent", key_a, str(NODE_A)],
        ["site-b", "submitter", key_b, "-"],
    ]
    bad = runner.invoke(app, ["trust", "add", "site-b", key_b, "--db", db, *agent, "--node", "x"])
    assert bad.exit_code == 2 and "not a node id" in bad.output
    taken = runner.invoke(
        app, ["trust", "add", "site-b", key_b, "--db", db, *agent, "--node", str(NODE_A)]
    )
    assert taken.exit_code == 2 and "already bound" in taken.output

    key_file = str(tmp_path / "a.key")
    assert runner.invoke(app, ["keys", "show", "--key", key_file]).output.strip() == key_a
    own_db = str(tmp_path / "own.sqlite3")
    fresh = runner.invoke(app, ["keys", "show", "--key", key_file, "--db", own_db])
    assert fresh.exit_code == 0 and "none yet" in fresh.output
    engine = create_db_engine(own_db)
    agent_uuid = node_uuid(engine, "agent")  # as the agent does when it first starts
    engine.dispose()
    shown = runner.invoke(app, ["keys", "show", "--key", key_file, "--db", own_db])
    assert shown.output.splitlines() == [f"key id: {key_a}", f"agent node id: {agent_uuid}"]


def test_the_migration_keeps_existing_trusted_keys(
    tmp_path: Path, keys: dict[str, NodeKey]
) -> None:
    from alembic import command
    from alembic.config import Config

    from caroni.store.db import MIGRATIONS_DIR

    engine = create_db_engine(str(tmp_path / "old.sqlite3"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        # A key trusted before bindings existed (the table as 0004 made it).
        connection.exec_driver_sql(
            "INSERT INTO trusted_keys (name, key_id, added_at) VALUES (?, ?, ?)",
            ("old", keys["a"].key_id, 1.0),
        )
    migrate(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(trusted_table.c.name, trusted_table.c.node_uuid)).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("old", None)]
