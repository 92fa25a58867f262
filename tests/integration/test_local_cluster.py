"""Whole workflows in one process: in-process broker, SQLite, real job processes."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from caroni.agent.jobtypes import JobTypeSpec
from caroni.cluster import LocalCluster
from caroni.demo.main import load_demo_content, run_demo
from caroni.manager.templates import parse_template
from caroni.protocol import new_message_id, pb, seal
from caroni.store.summary import summarize
from caroni.store.tables import dead_letters, workflows
from tests.waiting import eventually

WAIT = 120.0  # generous: only reached when something is wrong

ONE_STEP = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: Workflow
    $namespaces:
      caroni: https://caroni.example/cwl#
    inputs:
      x: string
    outputs:
      result:
        type: string
        outputSource: only/out
    steps:
      only:
        run:
          class: CommandLineTool
          hints:
            caroni:CaroniRequirement:
              CaroniJobName: flaky
          inputs:
            x: string
          outputs:
            out: string
        in:
          x: x
        out: [out]
    """
)


def flaky_job_type(counter: Path, failures: int) -> JobTypeSpec:
    """Fails the first ``failures`` runs, then succeeds; counts runs in ``counter``."""
    body = textwrap.dedent(
        f"""\
        n=$(( $(cat '{counter}' 2>/dev/null || echo 0) + 1 ))
        echo "$n" > '{counter}'
        if [ "$n" -le {failures} ]; then echo "planned failure $n" >&2; exit 1; fi
        printf '{{"out": "ok after %s runs"}}' "$n"
        """
    )
    return JobTypeSpec("flaky", ("x",), ("out",), body)


@pytest.mark.parametrize(
    ("template", "message", "agents", "expected"),
    [
        ("test_simple", "caronirocks", 1, "prependCARONIROCKS append"),
        ("test_simple", "caronirocks", 2, "prependCARONIROCKS append"),
        ("fan_out_fan_in", "caronirocks", 1, "[CARON+skcori]"),
        ("fan_out_fan_in", "caronirocks", 2, "[CARON+skcori]"),
    ],
)
async def test_demo_workflows_complete_with_the_right_output(
    tmp_path: Path, template: str, message: str, agents: int, expected: str
) -> None:
    status = await run_demo(message, template=template, agents=agents, data_dir=tmp_path)
    assert status.state == "completed", status.reason
    assert {o.key: o.value for o in status.outputs} == {"result": expected}
    served_by = {step.agent for step in status.steps}
    assert len(served_by) == agents


async def test_a_job_that_fails_twice_then_succeeds_records_three_attempts(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    async with LocalCluster(tmp_path) as cluster:
        await cluster.manager.add_template(parse_template("one_step", ONE_STEP))
        await cluster.agents[0].add_job_type(flaky_job_type(counter, failures=2))
        async with cluster.client() as client:
            workflow_id = await client.submit("one_step", {"x": "1"})
            status = await client.wait(workflow_id, timeout=WAIT)
    assert status.state == "completed", status.reason
    assert [(o.key, o.value) for o in status.outputs] == [("result", "ok after 3 runs")]
    assert [(s.step_name, s.attempts) for s in status.steps] == [("only", 3)]
    assert counter.read_text().strip() == "3"


async def test_a_job_that_always_fails_fails_the_workflow_after_five_attempts(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "runs"
    async with LocalCluster(tmp_path) as cluster:
        await cluster.manager.add_template(parse_template("one_step", ONE_STEP))
        await cluster.agents[0].add_job_type(flaky_job_type(counter, failures=1000))
        async with cluster.client() as client:
            workflow_id = await client.submit("one_step", {"x": "1"})
            status = await client.wait(workflow_id, timeout=WAIT)
    assert status.state == "failed"
    assert status.reason.startswith("step 'only' failed after 5 attempts: exit code 1")
    assert "planned failure 5" in status.reason
    assert counter.read_text().strip() == "5"


async def test_an_unknown_template_or_missing_input_is_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        async with cluster.client() as client:
            unknown = await client.wait(await client.submit("nosuch", {"a": "b"}), timeout=WAIT)
            missing = await client.wait(await client.submit("test_simple", {}), timeout=WAIT)
    assert unknown.state == "failed"
    assert unknown.reason == "refused: unknown template 'nosuch'"
    assert missing.state == "failed"
    assert "missing input(s): start_message" in missing.reason


async def test_a_message_delivered_twice_has_the_effect_of_one(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        async with cluster.client() as client:
            workflow_id = uuid.uuid4()
            create = pb.WorkFlowCreate(
                template_name="test_simple",
                inputs=[pb.WorkFlowInput(key="start_message", value="twice")],
                workflow_uuid=workflow_id.bytes,
            )
            body = seal(create, message_id=new_message_id())
            for _ in range(2):
                await client.transport.publish(cluster.manager.key, body, reply_to=client.key)
            status = await client.wait(workflow_id, timeout=WAIT)
        assert status.state == "completed"
        with cluster.manager.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(workflows)).scalar_one() == 1
        assert cluster.manager.node.counters["duplicates"] >= 1


async def test_garbage_is_set_aside_with_a_reason_and_the_node_keeps_serving(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        async with cluster.client() as client:
            await client.transport.publish(
                cluster.manager.key, b"\x00not protobuf", reply_to=client.key
            )
            stray = pb.JobStatusUpdate(
                job_uuid=uuid.uuid4().bytes, job_status=pb.JOB_STATUS_COMPLETED
            )
            await client.transport.publish(
                cluster.manager.key, seal(stray, message_id=new_message_id()), reply_to=client.key
            )
            status = await client.wait(
                await client.submit("test_simple", {"start_message": "still"}), timeout=WAIT
            )
        assert status.state == "completed"
        with cluster.manager.engine.connect() as conn:
            reasons = list(
                conn.execute(select(dead_letters.c.reason).order_by(dead_letters.c.id)).scalars()
            )
        assert len(reasons) == 2
        assert reasons[0].startswith("cannot open envelope")
        assert "which no workflow here has" in reasons[1]
        with cluster.manager.engine.connect() as conn:
            summary = summarize(conn)
        assert summary.dead_letters == 2
        assert [row[3] for row in summary.recent_dead_letters] == reasons[::-1]


async def test_an_edited_job_type_applies_to_the_next_job(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        agent = cluster.agents[0]
        original = agent.role.catalogue["foojob2"]
        edited = JobTypeSpec(
            original.name,
            original.inputs,
            original.outputs,
            "python3 -c 'import json, os; "
            'print(json.dumps({"out": os.environ["CARONI_ENV_final_text"] + " edited"}))\'',
        )
        async with cluster.client() as client:
            first = await client.wait(
                await client.submit("test_simple", {"start_message": "a"}), timeout=WAIT
            )
            await agent.add_job_type(edited)
            second = await client.wait(
                await client.submit("test_simple", {"start_message": "a"}), timeout=WAIT
            )
    assert [o.value for o in first.outputs] == ["prependA append"]
    assert [o.value for o in second.outputs] == ["prependA edited"]


async def test_a_manager_runs_a_limited_number_of_workflows_the_rest_wait_their_turn(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path, agents=0) as cluster:
        cluster.manager.role.max_running = 2
        await load_demo_content(cluster)
        async with cluster.client() as client:
            # No agent: the first two keep requesting, the other two must wait.
            ids = [await client.submit("test_simple", {"start_message": f"m{n}"}) for n in range(4)]

            async def states_are(first: set[str], rest: list[str]) -> bool:
                got = [(await client.status(workflow_id)).state for workflow_id in ids]
                return set(got[:2]) <= first and got[2:] == rest

            running = {"running", "stalled"}
            await eventually(lambda: states_are(running, ["created", "created"]), "two running")
            assert "waiting for its turn" in (await client.status(ids[3])).reason
            await client.cancel(ids[0], "make room")
            # The one waiting longest takes the place; the last one still waits.
            await eventually(
                lambda: states_are(running | {"cancelled"}, ["running", "created"]),
                "the oldest waiting one started",
            )
