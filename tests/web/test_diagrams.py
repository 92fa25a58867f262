"""The pictures, as pure functions: DAG layers and colours, sequence lanes and arrows."""

from __future__ import annotations

import json
import re

from caroni.demo import demo_template_paths
from caroni.manager.model import Attempt, Step, StepState, Workflow
from caroni.manager.templates import load_template_file
from caroni.protocol import FULFILLMENT_KEY
from caroni.store.traffic import LoggedMessage
from caroni.web.diagrams import (
    assign_layers,
    message_detail,
    render_dag,
    render_sequence,
    sequence_lanes,
    template_dag,
    workflow_dag,
)
from caroni.web.states import PALETTE

MANAGER = "wf.manager.AAAAAAAAAAAAAAAAAAAAAA"
AGENT_1 = "wf.agent.BBBBBBBBBBBBBBBBBBBBBB"
AGENT_2 = "wf.agent.CCCCCCCCCCCCCCCCCCCCCC"
CLIENT = "wf.client.DDDDDDDDDDDDDDDDDDDDDD"


def test_steps_are_layered_after_everything_they_consume() -> None:
    template = load_template_file(demo_template_paths()["fan_out_fan_in"])
    layers = [[node.id for node in column] for column in assign_layers(template_dag(template))]
    assert layers == [
        ["input:start_text"],
        ["step:split"],
        ["step:process_left", "step:process_right"],
        ["step:join"],
        ["step:finalize"],
        ["output:result"],
    ]


def _workflow() -> Workflow:
    attempt = Attempt(
        number=1, request_uuid="r" * 32, requested_at=0, updated_at=0, agent_key=AGENT_1
    )
    attempt.agent_site = "agent-<1>"
    return Workflow(
        id="f" * 32,
        template_name="t",
        inputs={"x": "<script>alert(1)</script>"},
        output_names=["y"],
        steps={
            "a": Step(
                name="a",
                job_type="ja",
                inputs={"i": "x"},
                outputs=["o"],
                state=StepState.COMPLETED,
                attempts=[attempt],
            ),
            "b": Step(name="b", job_type="jb", inputs={"i": "a/o"}, outputs=["o"]),
        },
        created_at=0,
        updated_at=0,
    )


def test_a_workflows_steps_are_coloured_by_state_and_text_is_escaped() -> None:
    workflow = _workflow()
    svg = render_dag(workflow_dag(workflow), "graph of <t>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "agent-&lt;1&gt;" in svg and "graph of &lt;t&gt;" in svg
    completed = re.search(r'data-node="step:a" data-state="completed">.*?fill="([^"]+)"', svg, re.S)
    waiting = re.search(r'data-node="step:b" data-state="waiting">.*?fill="([^"]+)"', svg, re.S)
    assert completed and completed.group(1) == PALETTE["completed"][0]
    assert waiting and waiting.group(1) == PALETTE["waiting"][0]
    assert 'href="#step-a"' in svg


def _messages() -> list[LoggedMessage]:
    offer = {"requestUuid": "x", "site": {"siteIdentifier": "agent-two"}}
    return [
        LoggedMessage(1.0, "in", "WorkFlowCreate", CLIENT, '{"templateName":"t"}'),
        LoggedMessage(1.0, "out", "JobFulfillmentRequest", FULFILLMENT_KEY, '{"jobTypeName":"ja"}'),
        LoggedMessage(1.1, "in", "JobFulfillmentOffer", AGENT_2, json.dumps(offer)),
        LoggedMessage(1.2, "out", "JobFulfillmentOfferAccept", AGENT_2, "{}"),
        LoggedMessage(1.5, "in", "JobStatusUpdate", AGENT_1, '{"jobStatus":"JOB_STATUS_RUNNING"}'),
    ]


def test_sequence_lanes_put_clients_left_and_name_agents_by_site() -> None:
    lanes = sequence_lanes(_messages(), MANAGER, "manager", {AGENT_1: "agent-one"})
    assert [lane.key for lane in lanes] == [CLIENT, MANAGER, FULFILLMENT_KEY, AGENT_2, AGENT_1]
    assert [lane.label for lane in lanes][-1] == "agent-one"
    svg = render_sequence(
        _messages(), own_key=MANAGER, own_label="manager", names={AGENT_1: "agent-one"}, title="t"
    )
    assert ">agent-two<" in svg  # from the offer's site
    assert svg.count('<g class="message') == 5
    assert "JobStatusUpdate: running" in svg
    assert "+0.500s" in svg


def test_arrows_point_from_sender_to_receiver() -> None:
    svg = render_sequence(_messages()[:3], own_key=MANAGER, own_label="m", title="t")
    lines = re.findall(r'<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"', svg)
    # lanes: client, manager, broadcast, agent-2; x grows to the right.
    create, request, offer = [(float(a), float(b)) for a, b in lines if a != b][-3:]
    assert create[0] < create[1]  # client -> manager: rightwards
    assert request[0] < request[1]  # manager -> broadcast: rightwards
    assert offer[0] > offer[1]  # agent -> manager: leftwards


def test_arrow_labels_carry_the_useful_detail() -> None:
    assert message_detail("JobFulfillmentRequest", '{"jobTypeName":"foojob0"}') == "foojob0"
    assert (
        message_detail("JobDataAvailable", '{"parameters":[{"key":"out","value":"v"},{"key":"e"}]}')
        == "out=v, e="
    )
    assert message_detail("WorkFlowStatus", '{"state":"completed"}') == "completed"
    assert message_detail("JobStatusUpdate", "not json") == ""
    assert render_sequence([], own_key=MANAGER, own_label="m", title="t") == ""
