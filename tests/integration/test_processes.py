"""A manager and two agents as separate OS processes over real RabbitMQ, each node
with its own PostgreSQL database; workflows submitted with `caroni submit`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.processes import NodeProcess, run_caroni

pytestmark = [pytest.mark.amqp, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def nodes(
    tmp_path: Path, amqp_url: str, postgres_url_factory: Callable[[], str]
) -> Iterator[dict[str, NodeProcess | str]]:
    common = ["--amqp", amqp_url]
    manager = NodeProcess(
        ["manager", "--db", postgres_url_factory(), "--demo-content", *common], cwd=tmp_path
    )
    # Complementary catalogues: every demo workflow needs both agents.
    agent1 = NodeProcess(
        [
            "agent",
            "--db",
            postgres_url_factory(),
            "--demo-content",
            "--name",
            "agent-1",
            "--only",
            "foojob0,foojob2,split_text,reverse,frame",
            *common,
        ],
        cwd=tmp_path,
    )
    agent2 = NodeProcess(
        [
            "agent",
            "--db",
            postgres_url_factory(),
            "--demo-content",
            "--name",
            "agent-2",
            "--only",
            "foojob1,shout,join_pair",
            *common,
        ],
        cwd=tmp_path,
    )
    started = []
    try:
        for process in (manager, agent1, agent2):
            process.start()
            started.append(process)
        key = manager.wait_for_line(r"manager key: (wf\.manager\.\S+)").group(1)
        agent1.wait_for_line(r"agent key: ")
        agent2.wait_for_line(r"agent key: ")
        yield {"manager": manager, "agent1": agent1, "agent2": agent2, "key": key, "amqp": amqp_url}
    finally:
        codes = [process.stop() for process in started]
    assert codes == [0] * len(started), "a node did not stop cleanly on SIGTERM"


def submit(nodes: dict, tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_caroni(
        [
            "submit",
            *args,
            "--manager",
            nodes["key"],
            "--amqp",
            nodes["amqp"],
            "--wait",
            "--timeout",
            "150",
        ],
        cwd=tmp_path,
    )


def test_the_demo_chain_runs_across_two_agent_processes(nodes: dict, tmp_path: Path) -> None:
    result = submit(nodes, tmp_path, "test_simple", "start_message=caronirocks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: prependCARONIROCKS append" in result.stdout
    assert "step1 [foojob0] completed on agent-1" in result.stdout
    assert "step2 [foojob1] completed on agent-2" in result.stdout


def test_fan_out_fan_in_runs_across_two_agent_processes(nodes: dict, tmp_path: Path) -> None:
    result = submit(nodes, tmp_path, "fan_out_fan_in", "start_text=caronirocks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: [CARON+skcori]" in result.stdout


def test_status_and_refusals_reach_the_submitter(nodes: dict, tmp_path: Path) -> None:
    refused = submit(nodes, tmp_path, "test_simple", "wrong=1")
    assert refused.returncode == 1
    assert "missing input(s): start_message" in refused.stdout
    assert "unknown input(s): wrong" in refused.stdout
    workflow_id = refused.stdout.split("workflow ", 1)[1].split()[0]
    status = run_caroni(
        ["status", workflow_id, "--manager", nodes["key"], "--amqp", nodes["amqp"]], cwd=tmp_path
    )
    assert status.returncode == 0, status.stderr
    assert "failed" in status.stdout
