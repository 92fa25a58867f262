"""Roles of trusted keys: the table of what each may send, the policy that checks it,
its storage (and the migration of keys trusted before roles), and the CLI."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.message import Message
from typer.testing import CliRunner

from caroni.cli import app
from caroni.key_roles import (
    AGENT,
    CLIENT,
    MANAGER,
    MAY_SEND,
    KeyRole,
    may_send,
    parse_role,
    role_refusal,
)
from caroni.protocol import (
    MESSAGE_TYPES,
    agent_key,
    client_key,
    new_message_id,
    open_envelope,
    pb,
    seal,
)
from caroni.protocol.bundles import BUNDLE
from caroni.store import create_db_engine, migrate
from caroni.trust import (
    NodeKey,
    TrustPolicy,
    bound_nodes,
    key_roles,
    trust_key,
    trusted_key_list,
    trusted_keys,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
AGENT_NODE = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
OTHER_NODE = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")


# --- the table -------------------------------------------------------------------------


def test_every_message_type_has_a_sender_and_the_table_names_only_real_ones() -> None:
    named = {name for by in MAY_SEND.values() for names in by.values() for name in names}
    # A bundle is opened before trust is checked: its parts are checked one by one.
    assert named == set(MESSAGE_TYPES) - {BUNDLE}
    assert {receiver for by in MAY_SEND.values() for receiver in by} == {MANAGER, AGENT, CLIENT}


@pytest.mark.parametrize(
    ("role", "receiver", "allowed"),
    [
        (KeyRole.SUBMITTER, MANAGER, {"WorkFlowCreate", "WorkFlowCancel", "WorkFlowStatusRequest"}),
        (
            KeyRole.AGENT,
            MANAGER,
            {
                "JobFulfillmentOffer",
                "JobFulfillmentDecline",
                "JobAccepted",
                "JobStatusUpdate",
                "JobDataAvailable",
                "Claim",
                "JobAssignmentRefusal",
                "JobFinished",
            },
        ),
        (
            KeyRole.MANAGER,
            AGENT,
            {
                "JobFulfillmentRequest",
                "JobFulfillmentOfferAccept",
                "JobFulfillmentOfferReject",
                "JobStatusRequest",
                "JobKill",
                "JobDataAvailable",
                "JobAssignment",
            },
        ),
        (KeyRole.MANAGER, CLIENT, {"WorkFlowStatus"}),
        (KeyRole.SUBMITTER, AGENT, set()),
        (KeyRole.AGENT, AGENT, set()),
        (KeyRole.MANAGER, MANAGER, set()),
    ],
)
def test_what_each_role_may_send_to_each_receiver(
    role: KeyRole, receiver: str, allowed: set[str]
) -> None:
    assert {name for name in MESSAGE_TYPES if may_send(role, name, receiver)} == allowed


def test_data_flows_out_of_agents_and_into_them_from_managers_only() -> None:
    assert may_send(KeyRole.AGENT, "JobDataAvailable", MANAGER)
    assert not may_send(KeyRole.AGENT, "JobDataAvailable", AGENT)
    assert may_send(KeyRole.MANAGER, "JobDataAvailable", AGENT)
    assert not may_send(KeyRole.MANAGER, "JobDataAvailable", MANAGER)
    assert not may_send(KeyRole.SUBMITTER, "JobDataAvailable")  # to no receiver at all


def test_refusals_say_who_signed_what_and_what_the_role_may_send() -> None:
    assert role_refusal(KeyRole.AGENT, "a", "JobStatusUpdate", MANAGER) == ""
    assert role_refusal(KeyRole.SUBMITTER, "user", "JobFulfillmentOffer", MANAGER) == (
        "JobFulfillmentOffer signed by user, whose role is submitter: a submitter sends to "
        "a manager only WorkFlowCancel, WorkFlowCreate, WorkFlowStatusRequest"
    )
    assert role_refusal(KeyRole.AGENT, "agent-b", "JobKill", AGENT) == (
        "JobKill signed by agent-b, whose role is agent: an agent sends nothing to an agent"
    )
    assert role_refusal(None, "old", "JobKill", AGENT) == (
        "JobKill signed by old, a trusted key without a role "
        "(add it again with --role submitter|agent|manager)"
    )


def test_roles_are_parsed_from_their_names_only() -> None:
    assert parse_role("agent") is KeyRole.AGENT
    assert parse_role(" Submitter ") is KeyRole.SUBMITTER
    with pytest.raises(ValueError, match="'admin' is not a role: give one of submitter"):
        parse_role("admin")


# --- the policy ------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, NodeKey]:
    return {n: NodeKey.generate(tmp_path / f"{n}.key") for n in ("user", "agent", "old", "other")}


def policy(
    keys: dict[str, NodeKey], receiver: str, *, require_signatures: bool = True, **extra: object
) -> TrustPolicy:
    """user a submitter, agent an agent bound to AGENT_NODE, old trusted without a role."""
    return TrustPolicy(
        require_signatures=require_signatures,
        trusted={name: keys[name].key_id for name in ("user", "agent", "old")},
        roles={keys["user"].key_id: KeyRole.SUBMITTER, keys["agent"].key_id: KeyRole.AGENT},
        bound_nodes={keys["agent"].key_id: AGENT_NODE},
        receiver=receiver,
        **extra,  # type: ignore[arg-type]
    )


def refusal(
    policy: TrustPolicy, message: Message, signer: NodeKey | None, reply_to: str = ""
) -> str:
    body = seal(message, message_id=new_message_id(), sent_at=NOW, signer=signer)
    return policy.refusal(open_envelope(body), NOW.timestamp(), False, reply_to)


def offer(site_node: uuid.UUID | None = None) -> pb.JobFulfillmentOffer:
    site = pb.Site(site_identifier="x", site_uuid=site_node.bytes if site_node else b"")
    return pb.JobFulfillmentOffer(
        request_uuid=uuid.uuid4().bytes, offer_uuid=uuid.uuid4().bytes, site=site
    )


def test_a_submitter_key_cannot_offer_or_report_on_jobs(keys: dict[str, NodeKey]) -> None:
    manager = policy(keys, MANAGER)
    user, job = keys["user"], uuid.uuid4().bytes
    reply_to = client_key(uuid.uuid4())
    assert refusal(manager, pb.WorkFlowCreate(template_name="t"), user, reply_to) == ""
    for message in (
        offer(),
        pb.JobStatusUpdate(job_uuid=job, job_status=pb.JOB_STATUS_COMPLETED),
        pb.JobDataAvailable(job_uuid=job),
    ):
        assert refusal(manager, message, user, reply_to).startswith(
            f"{message.DESCRIPTOR.name} signed by user, whose role is submitter"
        )


def test_an_agent_key_may_not_act_as_a_manager_or_a_submitter(keys: dict[str, NodeKey]) -> None:
    agent, reply_to = keys["agent"], agent_key(AGENT_NODE)
    assert refusal(policy(keys, MANAGER), offer(AGENT_NODE), agent, reply_to) == ""
    cancel = pb.WorkFlowCancel(workflow_uuid=uuid.uuid4().bytes)
    assert "whose role is agent" in refusal(policy(keys, MANAGER), cancel, agent, reply_to)
    kill = pb.JobKill(job_uuid=uuid.uuid4().bytes)
    assert "an agent sends nothing to an agent" in refusal(
        policy(keys, AGENT), kill, agent, reply_to
    )


def test_a_key_trusted_without_a_role_is_refused(keys: dict[str, NodeKey]) -> None:
    found = refusal(policy(keys, MANAGER), pb.WorkFlowCreate(template_name="t"), keys["old"])
    assert found == (
        "WorkFlowCreate signed by old, a trusted key without a role "
        "(add it again with --role submitter|agent|manager)"
    )


def test_a_bound_agent_key_offers_only_for_its_own_node(keys: dict[str, NodeKey]) -> None:
    manager, agent, reply_to = policy(keys, MANAGER), keys["agent"], agent_key(AGENT_NODE)
    assert refusal(manager, offer(OTHER_NODE), agent, reply_to) == (
        f"JobFulfillmentOffer signed by agent, bound to agent {AGENT_NODE}, "
        f"but for the site of node {OTHER_NODE}"
    )
    decline = pb.JobFulfillmentDecline(
        request_uuid=uuid.uuid4().bytes, site=pb.Site(site_uuid=OTHER_NODE.bytes)
    )
    assert "but for the site of node" in refusal(manager, decline, agent, reply_to)
    # A job message naming another agent is the binding's refusal (its reply_to).
    update = pb.JobStatusUpdate(job_uuid=uuid.uuid4().bytes)
    assert refusal(manager, update, agent, agent_key(OTHER_NODE)).startswith(
        f"signed by agent, bound to node {AGENT_NODE}, but claims to be node {OTHER_NODE}"
    )


def test_without_required_signatures_roles_are_not_checked(keys: dict[str, NodeKey]) -> None:
    relaxed = policy(keys, MANAGER, require_signatures=False)
    assert refusal(relaxed, offer(), keys["user"], client_key(uuid.uuid4())) == ""
    assert refusal(relaxed, offer(), None) == ""


@pytest.mark.parametrize("require_signatures", [False, True])
def test_allowed_submitters_limit_cancels_too(
    keys: dict[str, NodeKey], require_signatures: bool
) -> None:
    limited = policy(
        keys,
        MANAGER,
        require_signatures=require_signatures,
        allowed_submitters=frozenset({"agent"}),
    )
    cancel = pb.WorkFlowCancel(workflow_uuid=uuid.uuid4().bytes)
    assert refusal(limited, cancel, keys["user"]) == (
        "WorkFlowCancel from a submitter that is not allowed"
    )
    if not require_signatures:
        assert refusal(limited, cancel, None) == (
            "WorkFlowCancel from a submitter that is not allowed"
        )
    status = pb.WorkFlowStatusRequest(workflow_uuid=uuid.uuid4().bytes)
    assert refusal(limited, status, keys["user"]) == ""


# --- storage and migration -------------------------------------------------------------


def test_roles_are_stored_with_the_keys(tmp_path: Path, keys: dict[str, NodeKey]) -> None:
    engine = create_db_engine(str(tmp_path / "node.sqlite3"))
    migrate(engine)
    with engine.begin() as conn:
        trust_key(conn, "user", keys["user"].key_id, 1.0, role=KeyRole.SUBMITTER)
        trust_key(conn, "agent", keys["agent"].key_id, 2.0, AGENT_NODE, role=KeyRole.AGENT)
        assert key_roles(conn) == {
            keys["user"].key_id: KeyRole.SUBMITTER,
            keys["agent"].key_id: KeyRole.AGENT,
        }
        trust_key(conn, "user", keys["user"].key_id, 3.0, role=KeyRole.MANAGER)  # re-added
        assert key_roles(conn)[keys["user"].key_id] is KeyRole.MANAGER
    engine.dispose()


def test_keys_trusted_before_roles_keep_no_role(tmp_path: Path, keys: dict[str, NodeKey]) -> None:
    from alembic import command
    from alembic.config import Config

    from caroni.store.db import MIGRATIONS_DIR

    engine = create_db_engine(str(tmp_path / "old.sqlite3"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        connection.exec_driver_sql(
            "INSERT INTO trusted_keys (name, key_id, added_at, node_uuid) VALUES (?, ?, ?, ?)",
            ("old", keys["old"].key_id, 1.0, str(AGENT_NODE)),
        )
    migrate(engine)
    with engine.connect() as conn:
        listed = trusted_key_list(conn)
        trusted, roles, bound = trusted_keys(conn), key_roles(conn), bound_nodes(conn)
    engine.dispose()
    assert [(k.name, k.node, k.role) for k in listed] == [("old", AGENT_NODE, None)]
    assert trusted == {"old": keys["old"].key_id} and roles == {}
    assert bound == {keys["old"].key_id: AGENT_NODE}  # still bound: no one else may be it
    strict = TrustPolicy(require_signatures=True, trusted=trusted, roles=roles, receiver=MANAGER)
    assert "a trusted key without a role" in refusal(strict, offer(), keys["old"])


# --- the command line ------------------------------------------------------------------


def test_trust_add_needs_a_known_role(tmp_path: Path, keys: dict[str, NodeKey]) -> None:
    runner = CliRunner()
    db = str(tmp_path / "node.sqlite3")
    key_id = keys["user"].key_id
    missing = runner.invoke(app, ["trust", "add", "user", key_id, "--db", db])
    assert missing.exit_code == 2
    assert "give the key's role: --role submitter|agent|manager" in missing.output
    bad = runner.invoke(app, ["trust", "add", "user", key_id, "--db", db, "--role", "admin"])
    assert bad.exit_code == 2
    assert "--role: 'admin' is not a role: give one of submitter|agent|manager" in bad.output
    assert runner.invoke(app, ["trust", "list", "--db", db]).output == ""  # nothing added
    good = runner.invoke(app, ["trust", "add", "user", key_id, "--db", db, "--role", "submitter"])
    assert good.exit_code == 0 and f"trusting user as submitter: {key_id}" in good.output
    listed = runner.invoke(app, ["trust", "list", "--db", db])
    assert listed.output.split() == ["user", "submitter", key_id, "-"]


@pytest.mark.parametrize("command", ["cancel", "status"])
def test_cancel_and_status_sign_with_key(tmp_path: Path, command: str) -> None:
    """They take --key like submit; a key that cannot be read fails before connecting."""
    done = CliRunner().invoke(
        app,
        [command, uuid.uuid4().hex, "--manager", "wf.manager.x", "--key", str(tmp_path / "no")],
    )
    assert done.exit_code == 2
    assert "no key at" in done.output
