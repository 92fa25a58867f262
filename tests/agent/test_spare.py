"""A job started in a spare shell (caroni.agent.spare) is the job a direct spawn
starts: same environment, directory, stdin, session and cgroup rules; spares the
agent no longer needs are killed with their cgroups."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from caroni.agent.containment import Containments, Mechanism
from caroni.agent.containment._cgroup import usable_parent
from caroni.agent.containment._proc import read_proc
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.runner import run_job
from caroni.agent.spare import MAX_JOB_BYTES, SpareShells, SpawnKind
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(
    usable_parent() is None,
    reason="no cgroup v2 here that this process may make child cgroups in",
)

KIND = SpawnKind(None, None, 4 * 1024 * 1024)  # what run_job asks for by default

# Everything a body can tell about where it runs.
SCRIPT = (
    "import json, os\n"
    "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ),"
    " 'stdin': os.readlink('/proc/self/fd/0'), 'sid': os.getsid(0),"
    " 'pid': os.getpid(), 'cgroup': open('/proc/self/cgroup').read()}))"
)
WHERE = JobTypeSpec(
    "where",
    ("value",),
    ("cwd", "env", "stdin", "sid", "pid", "cgroup"),
    'python3 -I -S -c "$SCRIPT"',
)


@pytest.fixture
def containments(tmp_path: Path) -> Containments:
    return Containments(tmp_path / "work", Mechanism.CGROUP)


@pytest.fixture
async def spares(containments: Containments) -> AsyncIterator[SpareShells]:
    shells = SpareShells(containments)
    yield shells
    await shells.close()


def alive(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.alive


async def spare_pid(containments: Containments) -> int:
    """The pid of the one spare, once it has moved into its cgroup."""
    (cgroup,) = spare_cgroups(containments)
    procs = cgroup / "cgroup.procs"
    return int(await eventually(lambda: procs.read_text().strip(), "the spare in its cgroup"))


def spare_cgroups(containments: Containments) -> list[Path]:
    assert containments.cgroup_parent is not None
    return list(containments.cgroup_parent.glob(f"caroni-spare-{containments._root_tag}-*"))


async def where(
    containments: Containments, spares: SpareShells | None, value: str = "v 1"
) -> dict[str, str]:
    result = await run_job(
        WHERE,
        {"value": value},
        workdir_root=containments.work_root,
        job_id="job-1",
        extra_env={"SCRIPT": SCRIPT},
        containments=containments,
        spares=spares,
    )
    assert result.ok, result.reason
    return result.outputs


async def test_a_job_in_a_spare_runs_as_a_directly_spawned_one(
    containments: Containments, spares: SpareShells, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARONI_TEST_LEAK", "secret")
    direct = await where(containments, None)
    assert await spares.prepare(KIND)
    spared = await where(containments, spares)
    assert spares.taken == 1

    direct_env, spared_env = json.loads(direct["env"]), json.loads(spared["env"])
    # Each run has a work directory of its own; everything else is the same.
    for env, out in ((direct_env, direct), (spared_env, spared)):
        assert env.pop("HOME") == env.pop("TMPDIR") == env.pop("PWD") == out["cwd"]
    assert spared_env == direct_env
    assert "CARONI_TEST_LEAK" not in spared_env and spared_env["CARONI_ENV_value"] == "v 1"
    assert Path(spared["cwd"]).parent == containments.work_root
    assert spared["stdin"] == direct["stdin"] == "/dev/null"
    # A session of its own (the body is its leader: the spare exec'd into it).
    assert spared["sid"] == spared["pid"] != str(os.getsid(0))
    assert "caroni-spare-" in spared["cgroup"] and "caroni-job-" in direct["cgroup"]
    # Its cgroup went with the job, and the next spare is ready or on its way.
    assert await spares.prepare(KIND)
    assert len(spare_cgroups(containments)) == 1
    assert not any(containments.records.iterdir())


async def test_a_job_too_large_for_a_spare_is_spawned_directly(
    containments: Containments, spares: SpareShells
) -> None:
    assert await spares.prepare(KIND)
    big = "x" * MAX_JOB_BYTES
    outputs = await where(containments, spares, big)
    assert json.loads(outputs["env"])["CARONI_ENV_value"] == big
    assert spares.taken == 0 and "caroni-job-" in outputs["cgroup"]


async def test_a_spare_killed_meanwhile_is_not_used(
    containments: Containments, spares: SpareShells
) -> None:
    assert await spares.prepare(KIND)
    pid = await spare_pid(containments)
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: not alive(pid), "the spare's end")
    outputs = await where(containments, spares)
    assert spares.taken == 0 and "caroni-job-" in outputs["cgroup"]


async def test_close_kills_the_spares_and_removes_their_cgroups(
    containments: Containments, spares: SpareShells
) -> None:
    assert await spares.prepare(KIND)
    pid = await spare_pid(containments)
    (cgroup,) = spare_cgroups(containments)
    await spares.close()
    assert not alive(pid)
    assert not cgroup.exists()
    await eventually(lambda: read_proc(pid) is None, "the spare reaped")


async def test_a_restarted_agent_removes_what_its_predecessors_spares_left(
    containments: Containments, tmp_path: Path
) -> None:
    crashed = SpareShells(containments)  # never closed: its agent was killed
    assert await crashed.prepare(KIND)
    pid = await spare_pid(containments)
    (cgroup,) = spare_cgroups(containments)
    other = Containments(tmp_path / "other-work", Mechanism.CGROUP)

    restarted = Containments(containments.work_root, Mechanism.CGROUP)
    assert other.remove_stale_spares() == 0  # another agent's spares are not its own
    assert restarted.remove_stale_spares() == 1
    assert not cgroup.exists()
    await eventually(lambda: not alive(pid), "the spare's end")
    await crashed.close()  # only its pipes are left to close
