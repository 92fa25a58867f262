"""An agent SIGKILLed while a job runs: the restarted agent kills what the first run
left (a child that called setsid too) before running the job again, so the job's
body never runs twice at once, and the workflow completes.

A manager and an agent as OS processes over real RabbitMQ, each with a SQLite
database, once for each containment. The agent's foojob0 is replaced by a body
that logs its runs to a file, notes an overlap (an earlier run still alive when it
starts), starts a child in a session of its own, and waits for the test to
release it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import caroni
from caroni.agent.containment._cgroup import usable_parent
from caroni.agent.containment._proc import read_proc
from tests.processes import NodeProcess
from tests.waiting import eventually

pytestmark = [pytest.mark.amqp, pytest.mark.slow]

DEMO_JOB_TYPES = Path(caroni.__file__).parent / "demo" / "job_types.json"

# {dir} is the test's directory for the runs' traces. The body says "start <pid>",
# "overlap <pid>" when the run before it is still alive, "child <pid>" for a child
# that left its session, and "end <pid>" once released.
COUNTED_BODY = r"""
d={dir}
echo "start $$" >> "$d/runs.log"
# An earlier run still alive (a zombie is dead: its parent has not reaped it yet).
if [ -s "$d/running.pid" ] && read -r _ _ state _ < "/proc/$(cat "$d/running.pid")/stat" &&
   [ "$state" != Z ]; then
  echo "overlap $$" >> "$d/runs.log"
fi 2>/dev/null
echo $$ > "$d/running.pid"
setsid bash -c 'echo "child $$" >> "$0/runs.log"; exec sleep 300' "$d" &
while [ ! -e "$d/release" ]; do sleep 0.05; done
echo "end $$" >> "$d/runs.log"
printf '{{"jobout": "%s"}}' "${{CARONI_ENV_message^^}}"
"""


def alive(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.alive


def events(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [
        (word, int(pid))
        for word, pid in (line.split() for line in log.read_text().split("\n") if line)
    ]


def pids(log: Path, word: str) -> list[int]:
    return [pid for seen, pid in events(log) if seen == word]


@pytest.fixture
def job_types(tmp_path: Path) -> Path:
    trace = tmp_path / "trace"
    trace.mkdir()
    specs = json.loads(DEMO_JOB_TYPES.read_text())
    for spec in specs:
        if spec["name"] == "foojob0":
            spec["body"] = COUNTED_BODY.format(dir=trace)
            spec["timeout"] = 300
    path = tmp_path / "job_types.json"
    path.write_text(json.dumps(specs))
    return path


@pytest.fixture
def manager(tmp_path: Path, amqp_url: str) -> Iterator[tuple[NodeProcess, str]]:
    node = NodeProcess(
        ["manager", "--db", str(tmp_path / "manager.sqlite3"), "--demo-content"]
        + ["--amqp", amqp_url, "--http", "none"],
        cwd=tmp_path,
    ).start()
    try:
        yield node, node.wait_for_line(r"manager key: (wf\.manager\.\S+)").group(1)
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize(
    "containment",
    [
        "session",
        pytest.param(
            "cgroup",
            marks=pytest.mark.skipif(
                usable_parent() is None,
                reason="no cgroup v2 here that this process may make child cgroups in",
            ),
        ),
    ],
)
async def test_a_restarted_agent_kills_the_cut_off_run_before_running_it_again(
    tmp_path: Path,
    amqp_url: str,
    manager: tuple[NodeProcess, str],
    job_types: Path,
    containment: str,
) -> None:
    _, manager_key = manager
    trace = tmp_path / "trace"
    log = trace / "runs.log"
    agent = NodeProcess(
        ["agent", "--db", str(tmp_path / "agent.sqlite3"), "--job-types", str(job_types)]
        + ["--name", "agent-1", "--workdir", str(tmp_path / "jobs")]
        + ["--containment", containment, "--amqp", amqp_url, "--http", "none", "-v"],
        cwd=tmp_path,
    ).start()
    agent.wait_for_line(r"agent key: ")
    submit = NodeProcess(
        ["submit", "test_simple", "start_message=caronirocks", "--manager", manager_key]
        + ["--amqp", amqp_url, "--wait", "--timeout", "150"],
        cwd=tmp_path,
    ).start()
    try:
        # The first run is under way, with its child out of its session.
        await eventually(lambda: pids(log, "start") and pids(log, "child"), "the first run")
        [first], [first_child] = pids(log, "start"), pids(log, "child")
        assert read_proc(first_child).sid != read_proc(first).sid  # type: ignore[union-attr]

        agent.kill()  # SIGKILL, mid-job
        assert alive(first) and alive(first_child), "the agent's death alone ends nothing"

        agent.start()
        agent.wait_for_line(r"agent key: ")
        await eventually(lambda: len(pids(log, "start")) == 2, "the second run")
        # Before the second run started, the first was killed, child and all.
        assert not alive(first) and not alive(first_child)
        killed = agent.wait_for_line(r"job (\w+): cut off by a stop or crash; killed (.*)")
        assert str(first) in killed.group(2) and str(first_child) in killed.group(2)

        (trace / "release").touch()
        submit.wait_for_line(r"result: prependCARONIROCKS append", timeout=150)
        assert submit.proc is not None and submit.proc.wait(timeout=60) == 0
    finally:
        (trace / "release").touch()
        submit.stop()
        agent.stop()

    second = pids(log, "start")[1]
    # One run cut off (no end), one completed; never two at once.
    assert pids(log, "overlap") == []
    assert pids(log, "end") == [second], events(log)
    # The second run's own child went with it when it ended.
    assert not any(alive(pid) for pid in pids(log, "child"))
