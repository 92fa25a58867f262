"""Inputs that cannot fit a job's environment end a workflow at once, with the reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sqlalchemy import select

from caroni.agent.jobtypes import JobTypeSpec
from caroni.app import AgentNode, ManagerNode
from caroni.cluster import LocalCluster
from caroni.demo.main import load_demo_content
from caroni.manager.templates import parse_template
from caroni.store.tables import message_log

WAIT = 120.0  # generous: only reached when something is wrong

PRODUCE_THEN_CONSUME = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: Workflow
    $namespaces:
      caroni: https://caroni.example/cwl#
    inputs:
      size: string
    outputs:
      result:
        type: string
        outputSource: consume/out
    steps:
      produce:
        run:
          class: CommandLineTool
          hints:
            caroni:CaroniRequirement:
              CaroniJobName: produce
          inputs:
            size: string
          outputs:
            text: string
        in:
          size: size
        out: [text]
      consume:
        run:
          class: CommandLineTool
          hints:
            caroni:CaroniRequirement:
              CaroniJobName: consume
          inputs:
            text: string
          outputs:
            out: string
        in:
          text: produce/text
        out: [out]
    """
)


def logged_types(node: ManagerNode | AgentNode, direction: str) -> set[str]:
    with node.engine.connect() as conn:
        query = select(message_log.c.type_name).where(message_log.c.direction == direction)
        return set(conn.execute(query).scalars())


async def test_a_1_mb_input_is_refused_at_creation_and_nothing_is_requested(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        async with cluster.client() as client:
            workflow_id = await client.submit("test_simple", {"start_message": "x" * 1_000_000})
            status = await client.wait(workflow_id, timeout=WAIT)
        assert status.state == "failed"
        assert status.reason.startswith(
            "refused: step 'step1' cannot take its inputs: input 'message' is too large for "
            "the environment (1000020 bytes as CARONI_ENV_message; Linux allows 131072"
        )
        # The manager only answered its client; the agent never heard of the workflow.
        assert logged_types(cluster.manager, "out") == {"WorkFlowStatus"}
        assert logged_types(cluster.agents[0], "in") == set()


async def test_an_output_too_large_for_its_consumer_fails_the_workflow_once(
    tmp_path: Path,
) -> None:
    ran = tmp_path / "consumer-ran"
    produce = JobTypeSpec(
        "produce",
        ("size",),
        ("text",),
        "python3 -I -S -c 'import json, os; "
        'print(json.dumps({"text": "y" * int(os.environ["CARONI_ENV_size"])}))\'',
    )
    consume = JobTypeSpec("consume", ("text",), ("out",), f"touch '{ran}'; echo '{{\"out\": 1}}'")
    async with LocalCluster(tmp_path) as cluster:
        await cluster.manager.add_template(parse_template("pair", PRODUCE_THEN_CONSUME))
        await cluster.agents[0].add_job_type(produce)
        await cluster.agents[0].add_job_type(consume)
        async with cluster.client() as client:
            fits = await client.wait(await client.submit("pair", {"size": "1000"}), timeout=WAIT)
            assert fits.state == "completed", fits.reason
            ran.unlink()
            workflow_id = await client.submit("pair", {"size": "200000"})
            status = await client.wait(workflow_id, timeout=WAIT)
        # (The agent logs what it hears: the first test's empty log means something.)
        assert "JobFulfillmentRequest" in logged_types(cluster.agents[0], "in")
    assert status.state == "failed"
    assert status.reason.startswith(
        "step 'consume' cannot take its inputs (from 'produce'): input 'text' is too large "
        "for the environment (200017 bytes as CARONI_ENV_text;"
    )
    steps = {step.step_name: step for step in status.steps}
    assert (steps["produce"].state, steps["produce"].attempts) == ("completed", 1)
    assert (steps["consume"].state, steps["consume"].attempts) == ("failed", 1)
    assert steps["consume"].reason.startswith("cannot take its inputs: input 'text'")
    assert not ran.exists()
