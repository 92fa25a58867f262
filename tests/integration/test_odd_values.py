"""Over-long and odd values in every field a node stores, thrown through the whole
shell of a manager and an agent on PostgreSQL (which, unlike SQLite, refuses what
does not fit a column): each message is handled or set aside at once, none is
refused by the database, and afterwards the nodes still run a workflow.

Hypothesis picks the values; it prints the seed of a failing run
(``--hypothesis-seed`` replays it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.templates import load_template_file
from caroni.protocol import FULFILLMENT_KEY, pb, seal
from caroni.protocol.extensions import SPOKEN
from caroni.store.tables import dead_letters
from caroni.transport.memory import MemoryBroker, MemoryTransport
from tests.waiting import eventually

pytestmark = [pytest.mark.postgres]

_chars = st.characters(blacklist_categories=("Cs",))  # protobuf strings are valid UTF-8
# Short text of any character (NUL and controls included), and long runs around
# the column limits (64, 128, 255) and beyond.
text = st.one_of(
    st.text(_chars, max_size=12),
    st.builds(lambda c, n: c * n, _chars, st.sampled_from([63, 64, 65, 128, 129, 255, 256, 300])),
)
# Mostly well-formed ids and keys, so that most messages get past the envelope to
# the handlers and the columns; odd ones as often as it takes to test those too.
# (Hypothesis draws the same ids again and again: FRESH is a new one at each send,
# so that a message is not merely dropped as a duplicate.)
FRESH = "fresh"
_ids = st.just(FRESH)
uuids = st.binary(min_size=16, max_size=16)
parameters = st.lists(st.builds(pb.JobParameter, key=text, value=text), max_size=3)
links = st.lists(
    st.builds(
        pb.InputLink,
        job_uuid=st.one_of(st.just(b""), uuids),
        parameter=text,
        source_job_uuid=st.one_of(st.just(b""), uuids),
        source_output=text,
    ),
    max_size=2,
)
signature = st.builds(pb.Signature, signator_certificate=text, payload_signature=text)
site = st.builds(pb.Site, site_identifier=text, site_uuid=uuids, site_contact=text)

# A workflow the manager stores, with odd values in every field it keeps.
creates = st.builds(
    pb.WorkFlowCreate,
    template_name=st.just("test_simple"),
    wf_name=text,
    inputs=st.lists(st.builds(pb.WorkFlowInput, key=text, value=text), max_size=2).flatmap(
        lambda extra: text.map(
            lambda value: [pb.WorkFlowInput(key="start_message", value=value), *extra]
        )
    ),
    workflow_uuid=uuids,
)
expirations = st.integers(-(2**40), 2**40).map(lambda seconds: Timestamp(seconds=seconds))
claims = st.builds(
    pb.Claim,
    claim_uuid=uuids,
    job_type_names=st.lists(st.one_of(st.just("foojob0"), text), max_size=3),
    capacity=st.integers(0, 2**32 - 1),
    expiration=expirations,
)
to_manager = st.one_of(
    creates,
    claims,
    st.builds(
        pb.JobFinished,
        job_uuid=uuids,
        job_status=st.integers(0, 6),
        status_info=text,
        parameters=parameters,
        claim=claims,
        filled=links,
        filled_from=links,
    ),
    st.builds(pb.JobAssignmentRefusal, job_uuid=uuids, refusal_message=text, claim_uuid=uuids),
    st.builds(
        pb.WorkFlowCreate,
        template_name=text,
        wf_name=text,
        inputs=st.lists(st.builds(pb.WorkFlowInput, key=text, value=text), max_size=3),
        workflow_uuid=uuids,
        signature=signature,
    ),
    st.builds(
        pb.JobFulfillmentOffer,
        request_uuid=uuids,
        offer_uuid=uuids,
        site=site,
        offer_message=text,
        claim=st.one_of(st.none(), claims),  # None: no claim (protobuf leaves it unset)
    ),
    st.builds(pb.JobFulfillmentDecline, request_uuid=uuids, site=site, decline_message=text),
    st.builds(pb.JobAccepted, job_uuid=uuids, offer_uuid=uuids),
    st.builds(pb.JobStatusUpdate, job_uuid=uuids, job_status=st.integers(0, 6), status_info=text),
    st.builds(pb.JobDataAvailable, job_uuid=uuids, parameters=parameters),
    st.builds(pb.WorkFlowStatusRequest, workflow_uuid=uuids),
    st.builds(pb.WorkFlowCancel, workflow_uuid=uuids, reason=text),
)
# A request the agent offers for, with odd values in what it keeps.
requests = st.builds(
    pb.JobFulfillmentRequest,
    request_uuid=uuids,
    job_type_name=st.just("foojob0"),
    parameters=text.map(lambda value: [pb.JobParameter(key="message", value=value)]),
)
to_agent = st.one_of(
    requests,
    st.builds(
        pb.JobFulfillmentRequest, request_uuid=uuids, job_type_name=text, parameters=parameters
    ),
    st.builds(pb.JobFulfillmentOfferAccept, request_uuid=uuids, offer_uuid=uuids),
    st.builds(pb.JobFulfillmentOfferReject, request_uuid=uuids, offer_uuid=uuids),
    st.builds(pb.JobStatusRequest, job_uuid=uuids),
    st.builds(pb.JobKill, job_uuid=uuids, kill_info=text),
    st.builds(pb.JobDataAvailable, job_uuid=uuids, parameters=parameters),
    st.builds(
        pb.JobAssignment,
        claim_uuid=uuids,
        job_uuid=uuids,
        job_type_name=st.one_of(st.just("foojob0"), text),
        parameters=parameters,
        awaited_parameters=st.lists(text, max_size=2),
        input_links=links,
    ),
)
_odd_delivery = st.fixed_dictionaries(
    {
        "message_id": st.one_of(_ids, st.just(""), text),
        "reply_to": st.one_of(st.just("wf.client.odd"), text),
        "envelope_id": st.one_of(_ids, text),
    }
)
_good_delivery = st.just({"message_id": FRESH, "reply_to": "wf.client.odd", "envelope_id": FRESH})
# Three in four deliveries well-formed, so that their messages reach the handlers.
delivery = st.integers(0, 3).flatmap(lambda n: _good_delivery if n else _odd_delivery)


def _taken(node: ManagerNode | AgentNode) -> int:
    """Deliveries the node is done with: handled, dropped as duplicates or set aside."""
    counters = node.node.counters
    return counters["handled"] + counters["duplicates"] + counters["dead_lettered"]


def _refused_by_the_database(node: ManagerNode | AgentNode) -> list[str]:
    with node.engine.connect() as conn:
        reasons = conn.execute(select(dead_letters.c.reason)).scalars()
        return [r for r in reasons if r.startswith(("the database refused", "failed "))]


def test_odd_values_in_every_stored_field_never_reach_the_database(
    tmp_path: Path, postgres_url_factory: Callable[[], str]
) -> None:
    loop = asyncio.new_event_loop()
    broker = MemoryBroker()
    manager = ManagerNode(MemoryTransport(broker), postgres_url_factory())
    agent = AgentNode(
        MemoryTransport(broker),
        postgres_url_factory(),
        policy=Policy(site_identifier="odd"),
        workdir=tmp_path / "jobs",
    )
    sender = MemoryTransport(broker)

    async def start() -> None:
        for node in (manager, agent):
            await node.transport.connect()
            await node.start()
        await manager.add_template(load_template_file(demo_template_paths()["test_simple"]))
        for spec in load_job_types(DEMO_JOB_TYPES):
            await agent.add_job_type(spec)
        await sender.connect()

    async def send(messages: list[tuple[str, Any, dict[str, str]]]) -> None:
        before = {id(node): _taken(node) for node in (manager, agent)}
        expected = {id(manager): 0, id(agent): 0}
        for key, message, fields in messages:
            fields = {k: uuid.uuid4().hex if v == FRESH else v for k, v in fields.items()}
            # Announcing every extension, so that the messages of claims are handled.
            body = seal(message, message_id=fields["envelope_id"], extensions=SPOKEN)
            props = {"message_id": fields["message_id"], "reply_to": fields["reply_to"]}
            await sender.publish(key, body, **props)
            expected[id(manager if key == manager.key else agent)] += 1
        for node in (manager, agent):
            want = before[id(node)] + expected[id(node)]
            await eventually(lambda n=node, w=want: _taken(n) >= w, "every delivery taken")

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("manager"), creates, delivery),
                st.tuples(st.just("manager"), to_manager, delivery),
                st.tuples(st.just("agent"), requests, delivery),
                st.tuples(st.sampled_from(["agent", "broadcast"]), to_agent, delivery),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def throw(drawn: list[tuple[str, Any, dict[str, str]]]) -> None:
        keys = {"manager": manager.key, "agent": agent.key, "broadcast": FULFILLMENT_KEY}
        loop.run_until_complete(send([(keys[to], m, d) for to, m, d in drawn]))

    async def workflow_still_runs() -> None:
        client_transport = MemoryTransport(broker)
        await client_transport.connect()
        async with Client(client_transport, manager.key) as client:
            workflow_id = await client.submit("test_simple", {"start_message": "after"})
            status = await client.wait(workflow_id, timeout=120)
        await client_transport.close()
        assert status.state == "completed", status.reason
        assert [o.value for o in status.outputs] == ["prependAFTER append"]

    async def stop() -> None:
        await sender.close()
        for node in (agent, manager):
            await node.stop()
            await node.transport.close()

    loop.run_until_complete(start())
    try:
        throw()
        assert _refused_by_the_database(manager) == []
        assert _refused_by_the_database(agent) == []
        loop.run_until_complete(workflow_still_runs())
    finally:
        loop.run_until_complete(stop())
        loop.close()
