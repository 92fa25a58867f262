"""The containment of a job's processes, with real processes: a body that escapes
its session with ``setsid`` is still found and killed, by the containment that
started it and, through its record, by a fresh one (as after an agent's crash)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from caroni.agent.containment import (
    MARK_VARIABLE,
    RECORD_DIR,
    Containments,
    JobContainment,
    Mechanism,
    _cgroup,
)
from caroni.agent.containment._cgroup import usable_parent
from caroni.agent.containment._proc import read_proc
from caroni.errors import ConfigError
from tests.waiting import eventually

# A child that leaves the body's session, says its pid, and stays; then the body
# waits for ever. ESCAPE_ORPHANED does the same from a subshell that ends at once,
# so the escaped child loses its parent too.
ESCAPE = "setsid bash -c 'echo $$ > escaped.pid; exec sleep 300' & sleep 300"
ESCAPE_ORPHANED = "(setsid bash -c 'echo $$ > escaped.pid; exec sleep 300' &); sleep 300"


def _mechanisms() -> list[object]:
    no_cgroup = pytest.mark.skip(
        reason="no cgroup v2 here that this process may make child cgroups in "
        "(needs a cgroup2 mount and a delegated, writable cgroup)"
    )
    cgroup = Mechanism.CGROUP
    return [
        Mechanism.SESSION,
        pytest.param(cgroup, marks=[] if usable_parent() is not None else [no_cgroup]),
    ]


@pytest.fixture(params=_mechanisms(), ids=str)
def mechanism(request: pytest.FixtureRequest) -> Mechanism:
    value: Mechanism = request.param
    return value


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "work"


class Body:
    """A bash body started in a containment the way the runner starts one."""

    def __init__(self, containment: JobContainment, script: str, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        command = containment.command(["bash", "-c", script])
        kwargs = containment.popen_kwargs()
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=workdir,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", **containment.env},
                stdin=subprocess.DEVNULL,
                **kwargs,
            )
        except BaseException:
            containment.spawn_failed()
            raise
        containment.started(self.proc.pid)

    async def escaped_pid(self) -> int:
        path = self.workdir / "escaped.pid"
        text = await eventually(lambda: path.exists() and path.read_text().strip(), "escaped.pid")
        return int(text)


def alive(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.alive


def exists(path: Path) -> bool:
    return path.exists()


@pytest.fixture
def bodies() -> Iterator[list[Body]]:
    """Reap the bodies (this test process is their parent); kill any a test left."""
    started: list[Body] = []
    yield started
    for body in started:
        if body.proc.poll() is None:
            body.proc.kill()
        body.proc.wait(timeout=30)


def job_id() -> str:
    return uuid.uuid4().hex


@pytest.mark.parametrize("script", [ESCAPE, ESCAPE_ORPHANED], ids=["escaped", "orphaned"])
async def test_kill_ends_a_body_and_the_child_that_left_its_session(
    mechanism: Mechanism, root: Path, script: str, bodies: list[Body]
) -> None:
    containments = Containments(root, mechanism)
    assert containments.mechanism == mechanism
    job = job_id()
    containment = containments.open(job, root / job)
    body = Body(containment, script, root / job)
    bodies.append(body)
    escaped = await body.escaped_pid()
    assert read_proc(escaped) is not None
    assert read_proc(escaped).sid != body.proc.pid  # type: ignore[union-attr]  # it left

    killed = containment.close()

    assert {body.proc.pid, escaped} <= killed
    assert not alive(escaped) and not alive(body.proc.pid)
    assert body.proc.wait(timeout=30) == -9
    assert not any((root / RECORD_DIR).iterdir()), "close() forgets the job's record"


async def test_the_body_sees_its_job_id(mechanism: Mechanism, root: Path) -> None:
    containments = Containments(root, mechanism)
    job = job_id()
    containment = containments.open(job, root / job)
    body = Body(containment, f'echo "${MARK_VARIABLE}" > id', root / job)
    assert body.proc.wait(timeout=30) == 0
    containment.close()
    assert (root / job / "id").read_text().strip() == job


async def test_a_fresh_object_kills_what_the_record_names(
    mechanism: Mechanism, root: Path, bodies: list[Body], caplog: pytest.LogCaptureFixture
) -> None:
    job, other = job_id(), job_id()
    first = Containments(root, mechanism)
    # Two jobs run; the agent "dies" (its objects are dropped unclosed).
    bodies.append(Body(first.open(job, root / job), ESCAPE_ORPHANED, root / job))
    bodies.append(Body(first.open(other, root / other), ESCAPE, root / other))
    escaped = await bodies[0].escaped_pid()
    other_escaped = await bodies[1].escaped_pid()
    assert (root / RECORD_DIR / f"{job}.json").exists()

    what = Containments(root, mechanism).kill_leftovers(job)[1]

    assert what.startswith("killed "), what
    assert str(escaped) in what and str(bodies[0].proc.pid) in what
    assert not alive(escaped) and not alive(bodies[0].proc.pid)
    assert not (root / job).exists(), "the cut-off run's work directory is removed"
    assert not (root / RECORD_DIR / f"{job}.json").exists()
    # The other job is not touched.
    assert alive(other_escaped) and bodies[1].proc.poll() is None
    what = Containments(root, mechanism).kill_leftovers(other)[1]
    assert str(other_escaped) in what and str(bodies[1].proc.pid) in what
    assert not alive(other_escaped)


async def test_leftovers_of_a_job_without_a_record_are_found_by_its_mark(
    root: Path, bodies: list[Body]
) -> None:
    job = job_id()
    containments = Containments(root, Mechanism.SESSION)
    bodies.append(Body(containments.open(job, root / job), ESCAPE_ORPHANED, root / job))
    escaped = await bodies[0].escaped_pid()
    (root / RECORD_DIR / f"{job}.json").unlink()  # as if the agent died before writing it

    what = Containments(root, Mechanism.SESSION).kill_leftovers(job)[1]

    assert str(escaped) in what and str(bodies[0].proc.pid) in what, what
    assert not alive(escaped)


async def test_a_reused_pid_is_not_the_body(root: Path, bodies: list[Body]) -> None:
    """A record whose pid now names another process (another start time) kills only
    what carries the job's mark: here, nothing."""
    containments = Containments(root, Mechanism.SESSION)
    bystander_job, job = job_id(), job_id()
    bystander = Body(containments.open(bystander_job, root / "b"), "sleep 300", root / "b")
    bodies.append(bystander)
    doc = json.loads((root / RECORD_DIR / f"{bystander_job}.json").read_text())
    assert doc["pid"] == bystander.proc.pid and doc["start_time"] > 0
    doc.update(job_id=job, start_time=doc["start_time"] - 1, workdir="")
    (root / RECORD_DIR / f"{job}.json").write_text(json.dumps(doc))

    what = Containments(root, Mechanism.SESSION).kill_leftovers(job)[1]

    assert what == "killed 0 processes in its session and mark", what
    assert bystander.proc.poll() is None


@pytest.mark.skipif(usable_parent() is None, reason="no usable cgroup v2 here")
async def test_a_cgroup_without_cgroup_kill_is_emptied_one_process_at_a_time(
    root: Path, bodies: list[Body]
) -> None:
    containments = Containments(root, Mechanism.CGROUP)
    job = job_id()
    containment = containments.open(job, root / job)
    body = Body(containment, ESCAPE_ORPHANED, root / job)
    bodies.append(body)
    escaped = await body.escaped_pid()
    cgroup = Path(json.loads((root / RECORD_DIR / f"{job}.json").read_text())["cgroup"])

    killed = _cgroup.kill(cgroup, job, use_kill_file=False)

    assert {body.proc.pid, escaped} <= killed
    assert not alive(escaped) and not alive(body.proc.pid)
    containment.close()
    assert not exists(cgroup)


def test_a_cgroup_is_refused_where_there_is_none(root: Path) -> None:
    if usable_parent() is not None:
        pytest.skip("this machine has a usable cgroup")
    with pytest.raises(ConfigError, match="may not make a cgroup"):
        Containments(root, Mechanism.CGROUP)


def test_records_in_a_directory_others_may_write_to_are_refused(root: Path) -> None:
    (root / RECORD_DIR).mkdir(parents=True)
    (root / RECORD_DIR).chmod(0o777)
    with pytest.raises(ConfigError, match="no one else may write to"):
        Containments(root, Mechanism.SESSION)
