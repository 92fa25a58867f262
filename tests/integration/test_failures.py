"""Failures users meet, in one process: broken job bodies, cancellation."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import select

from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import JobStatus
from caroni.client import Client
from caroni.cluster import LocalCluster
from caroni.demo.main import load_demo_content
from caroni.manager.templates import parse_template
from caroni.protocol import pb
from caroni.store.tables import jobs
from tests.integration.test_local_cluster import ONE_STEP
from tests.waiting import eventually

WAIT = 120.0


async def wait_until(client: Client, workflow_id: uuid.UUID, predicate, what: str):  # type: ignore[no-untyped-def]
    """The first status of the workflow for which ``predicate`` holds."""

    async def check():  # type: ignore[no-untyped-def]
        status = await client.status(workflow_id)
        return status if predicate(status) else None

    return await eventually(check, what)


def step(status: pb.WorkFlowStatus, name: str) -> pb.StepStatus:
    return next(s for s in status.steps if s.step_name == name)


def broken(spec: JobTypeSpec) -> JobTypeSpec:
    """The same job type with a body whose output is not valid JSON."""
    return JobTypeSpec(spec.name, spec.inputs, spec.outputs, "echo 'this is not {json'")


async def test_a_broken_body_is_retried_and_a_fixed_body_succeeds(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        agent = cluster.agents[0]
        good = agent.role.catalogue["foojob2"]
        await agent.add_job_type(broken(good))
        async with cluster.client() as client:
            # Plenty of attempts: the fix must land before they run out.
            workflow_id = await client.submit(
                "test_simple", {"start_message": "caronirocks"}, max_attempts=50
            )
            await wait_until(
                client, workflow_id, lambda s: step(s, "step3").attempts >= 2, "a retry of step3"
            )
            await agent.add_job_type(good)
            status = await client.wait(workflow_id, timeout=WAIT)
    assert status.state == "completed", status.reason
    assert [(o.key, o.value) for o in status.outputs] == [("result", "prependCARONIROCKS append")]
    assert step(status, "step3").attempts >= 2
    assert step(status, "step1").attempts == 1


async def test_a_body_left_broken_fails_the_workflow_after_five_attempts(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path) as cluster:
        await load_demo_content(cluster)
        agent = cluster.agents[0]
        await agent.add_job_type(broken(agent.role.catalogue["foojob2"]))
        async with cluster.client() as client:
            workflow_id = await client.submit("test_simple", {"start_message": "caronirocks"})
            status = await client.wait(workflow_id, timeout=WAIT)
    assert status.state == "failed"
    assert status.reason.startswith(
        "step 'step3' failed after 5 attempts: standard output is not a JSON object"
    )
    assert step(status, "step3").attempts == 5


async def test_cancel_kills_the_running_job_and_ends_the_workflow_cancelled(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleepy = JobTypeSpec(
        "flaky", ("x",), ("out",), f"echo $$ > '{pid_file}'; sleep 600; printf '{{\"out\": \"x\"}}'"
    )
    async with LocalCluster(tmp_path) as cluster:
        await cluster.manager.add_template(parse_template("one_step", ONE_STEP))
        await cluster.agents[0].add_job_type(sleepy)
        async with cluster.client() as client:
            workflow_id = await client.submit("one_step", {"x": "1"})
            await wait_until(
                client, workflow_id, lambda s: step(s, "only").state == "running", "the job to run"
            )
            # "running" means spawned: the body may not have written its pid yet.
            await eventually(pid_file.exists, "the job's body to start")
            await client.cancel(workflow_id, "not needed any more")
            status = await client.wait(workflow_id, timeout=WAIT)
        assert status.state == "cancelled"
        assert status.reason == "not needed any more"
        agent = cluster.agents[0]

        def job_statuses(tx):  # type: ignore[no-untyped-def]
            return [str(status) for status in tx.conn.execute(select(jobs.c.status)).scalars()]

        async def only_the_job_failed() -> bool:
            return await agent.node.transact(job_statuses) == [str(JobStatus.FAILED)]

        # The agent's one job, whatever its status before, ends failed by the kill.
        await eventually(only_the_job_failed, "the agent's one job to be failed by the cancel")
        pid = int(pid_file.read_text())
        await eventually(lambda: not _alive(pid), "the job's process to be killed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
