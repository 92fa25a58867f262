"""run_job kills a job's whole containment: a child that left the body's session
with ``setsid`` is gone after a time limit, a cancel, and after the body ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from caroni.agent.containment import Containments, Mechanism
from caroni.agent.containment._cgroup import usable_parent
from caroni.agent.containment._proc import read_proc
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.runner import run_job
from caroni.agent.spare import SpareShells, SpawnKind
from tests.waiting import eventually

# Leaves the session from a subshell that ends at once (so it is orphaned too),
# writes its pid to $OUT, and stays.
ESCAPE = "(setsid bash -c 'echo $$ > \"$OUT\"; exec sleep 300' &)"


NO_CGROUP = pytest.mark.skipif(
    usable_parent() is None,
    reason="no cgroup v2 here that this process may make child cgroups in",
)
SPARE = "cgroup-spare"  # a cgroup, and the job starts in a spare shell (caroni.agent.spare)


@pytest.fixture(
    params=[
        Mechanism.SESSION,
        pytest.param(Mechanism.CGROUP, marks=NO_CGROUP),
        pytest.param(SPARE, marks=NO_CGROUP),
    ],
    ids=str,
)
def containments(request: pytest.FixtureRequest, tmp_path: Path) -> Containments:
    mechanism = Mechanism.CGROUP if request.param == SPARE else request.param
    return Containments(tmp_path / "work", mechanism)


@pytest.fixture
async def spares(
    request: pytest.FixtureRequest, containments: Containments
) -> AsyncIterator[SpareShells | None]:
    if request.node.callspec.params["containments"] != SPARE:
        yield None
        return
    shells = SpareShells(containments)
    assert await shells.prepare(SpawnKind(None, None, 4 * 1024 * 1024))
    yield shells
    assert shells.taken == 1
    await shells.close()


def alive(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.alive


async def escaped_pid(path: Path) -> int:
    return int(await eventually(lambda: path.exists() and path.read_text().strip(), "the pid"))


def spec(body: str, timeout: float | None = None) -> JobTypeSpec:
    return JobTypeSpec("escaper", (), ("o",), body, timeout)


async def test_a_time_limit_kills_the_child_that_left_the_session(
    containments: Containments, spares: SpareShells | None, tmp_path: Path
) -> None:
    out = tmp_path / "escaped.pid"
    body = f'{ESCAPE}; while [ ! -s "$OUT" ]; do sleep 0.01; done; sleep 300'
    result = await run_job(
        spec(body, timeout=1.0),
        {},
        workdir_root=containments.records.parent,
        job_id="timed-out",
        extra_env={"OUT": str(out)},
        containments=containments,
        spares=spares,
    )
    assert not result.ok and "time limit" in result.reason
    assert not alive(int(out.read_text()))


async def test_a_cancel_kills_the_child_that_left_the_session(
    containments: Containments, spares: SpareShells | None, tmp_path: Path
) -> None:
    out = tmp_path / "escaped.pid"
    task = asyncio.create_task(
        run_job(
            spec(f"{ESCAPE}; sleep 300"),
            {},
            workdir_root=containments.records.parent,
            job_id="cancelled",
            extra_env={"OUT": str(out)},
            containments=containments,
            spares=spares,
        )
    )
    pid = await escaped_pid(out)
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)
    assert not any(containments.records.iterdir())


async def test_the_end_of_the_body_kills_what_it_left(
    containments: Containments, spares: SpareShells | None, tmp_path: Path
) -> None:
    out = tmp_path / "escaped.pid"
    body = f'{ESCAPE}; while [ ! -s "$OUT" ]; do sleep 0.01; done; echo \'{{"o": "done"}}\''
    result = await run_job(
        spec(body),
        {},
        workdir_root=containments.records.parent,
        job_id="ended",
        extra_env={"OUT": str(out)},
        containments=containments,
        spares=spares,
    )
    assert result.ok and result.outputs == {"o": "done"}, result.reason
    assert not alive(int(out.read_text()))
