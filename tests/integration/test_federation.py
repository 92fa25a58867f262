"""Two managers share three agents, as OS processes over RabbitMQ, each node with its
own PostgreSQL database; one agent is killed for good in the middle of the run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.demo_runs import expected, query, submit_demo_workflows
from tests.processes import NodeProcess
from tests.waiting import eventually

pytestmark = [pytest.mark.amqp, pytest.mark.postgres, pytest.mark.slow]

# Workflows submitted by each manager (CARONI_FEDERATION_WORKFLOWS to change it).
WORKFLOWS = int(os.environ.get("CARONI_FEDERATION_WORKFLOWS", "100"))
LIVE_JOBS = "select count(*) from jobs where status in ('pending', 'queued', 'running')"


async def test_two_managers_share_three_agents_and_losing_one_agent_loses_nothing(
    tmp_path: Path, amqp_url: str, postgres_url_factory: Callable[[], str]
) -> None:
    common = ["--amqp", amqp_url]
    timing = ["--job-lease", "10", "--status-interval", "2", "--accept-timeout", "10"]
    manager_dbs = [postgres_url_factory(), postgres_url_factory()]
    agent_dbs = [postgres_url_factory() for _ in range(3)]
    managers = [
        NodeProcess(["manager", "--db", db, "--demo-content", *timing, *common], cwd=tmp_path)
        for db in manager_dbs
    ]
    agents = [
        NodeProcess(
            ["agent", "--db", db, "--demo-content", "--name", f"agent-{n}", *common],
            cwd=tmp_path,
        )
        for n, db in enumerate(agent_dbs, start=1)
    ]
    processes = [*managers, *agents]
    doomed = agents[2]
    try:
        # The doomed agent starts alone, so it surely holds work when it is killed.
        for process in (*managers, doomed):
            process.start()
        keys = [m.wait_for_line(r"manager key: (wf\.manager\.\S+)").group(1) for m in managers]
        doomed.wait_for_line(r"agent key: ")

        submitted = await asyncio.gather(
            *(
                submit_demo_workflows(amqp_url, key, WORKFLOWS, f"m{n}-")
                for n, key in enumerate(keys)
            )
        )
        # Killed while it holds a job its manager follows: frozen first, so that the
        # job cannot finish between looking and killing.
        assert doomed.proc is not None
        pid = doomed.proc.pid

        def frozen_holding_a_job() -> bool:
            os.kill(pid, signal.SIGSTOP)
            if query(agent_dbs[2], LIVE_JOBS)[0][0] > 0:
                return True
            os.kill(pid, signal.SIGCONT)
            return False

        await eventually(frozen_holding_a_job, "agent-3 to hold a job it has not finished")
        for agent in agents[:2]:
            agent.start()
            agent.wait_for_line(r"agent key: ")
        doomed.kill()

        def all_finished() -> bool:
            return all(
                query(
                    db,
                    "select count(*) from workflows where state in "
                    "('completed', 'failed', 'cancelled')",
                )[0][0]
                == WORKFLOWS
                for db in manager_dbs
            )

        await eventually(all_finished, "every workflow to finish", timeout=600)
    finally:
        for process in processes:
            if process.proc is not None:
                process.stop()

    for db, mine in zip(manager_dbs, submitted, strict=True):
        rows = query(db, "select id, state, reason, doc from workflows")
        assert {row[0] for row in rows} == set(mine), "a manager sees exactly its own workflows"
        for workflow_id, state, reason, doc in rows:
            assert state == "completed", reason
            outputs = json.loads(doc)["outputs"]
            assert outputs == {"result": expected(mine[workflow_id])}
    # The job the killed agent held unfinished was given up, and its step requested
    # again: by the job lease if the manager had heard of the job, else by the accept
    # timeout (its JobAccepted may have been committed but not yet published).
    given_up = [
        attempt["reason"]
        for db in manager_dbs
        for (doc,) in query(db, "select doc from workflows")
        for step in json.loads(doc)["steps"].values()
        for attempt in step["attempts"]
        if attempt["state"] == "abandoned"
    ]
    lost = ("agent silent for", "no JobAccepted after the offer was accepted")
    assert any(reason.startswith(lost) for reason in given_up), given_up
    completed = [
        query(db, "select count(*) from jobs where status = 'completed'")[0][0] for db in agent_dbs
    ]
    print("completed jobs per agent:", completed)
    assert completed[0] > 0 and completed[1] > 0, "work is spread over the agents"
    assert sum(completed) >= 2 * WORKFLOWS * 3
