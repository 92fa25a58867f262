"""The job runner, against real bash processes.

Nothing here waits a fixed time for something to happen: where a test must wait for
a side effect (a pid file, a dead process) it polls with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import caroni
from caroni.agent.containment import RECORD_DIR
from caroni.agent.jobtypes import JobTypeSpec, load_job_types
from caroni.agent.model import JobResult
from caroni.agent.runner import run_job

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
DEMO = {s.name: s for s in load_job_types(Path(caroni.__file__).parent / "demo" / "job_types.json")}


def spec(body: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ("o",)) -> JobTypeSpec:
    return JobTypeSpec("test", inputs, outputs, body)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "work"


async def run(job: JobTypeSpec, inputs: dict[str, str], root: Path, **kw: object) -> JobResult:
    kw.setdefault("job_id", "job-1")
    return await run_job(job, inputs, workdir_root=root, **kw)  # type: ignore[arg-type]


async def eventually(predicate: Callable[[], bool], deadline: float = 20.0) -> bool:
    """Poll until ``predicate`` holds; False if it still does not after ``deadline``."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie nobody has reaped yet counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def no_workdirs_left(root: Path) -> bool:
    """No work directory left under ``root``, nor a containment record of a job."""
    records = root / RECORD_DIR
    if records.exists() and any(records.iterdir()):
        return False
    return not root.exists() or all(entry == records for entry in root.iterdir())


def pwned_anywhere(*dirs: Path) -> list[Path]:
    return [hit for d in dirs for hit in d.rglob("pwned")]


def exists(path: Path) -> bool:
    return path.exists()


def processes_with(token: str) -> list[int]:
    """Live processes whose environment holds ``token``: those a job started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if token.encode() in environ and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def read_pids(path: Path) -> list[int] | None:
    return [int(p) for p in path.read_text().split()] if path.exists() else None


# --- demo job types -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "inputs", "expected"),
    [
        ("foojob0", {"message": "caronirocks"}, {"jobout": "CARONIROCKS"}),
        ("foojob1", {"text": "abc"}, {"outSB": "prependabc"}),
        ("foojob2", {"final_text": "abc"}, {"out": "abc append"}),
        ("split_text", {"text": "caronirocks"}, {"left": "caron", "right": "irocks"}),
        ("split_text", {"text": ""}, {"left": "", "right": ""}),
        ("shout", {"text": "caron"}, {"shouted": "CARON"}),
        ("reverse", {"text": "irocks"}, {"reversed": "skcori"}),
        ("join_pair", {"first": "CARON", "second": "skcori"}, {"joined": "CARON+skcori"}),
        ("frame", {"text": "CARON+skcori"}, {"framed": "[CARON+skcori]"}),
    ],
)
async def test_demo_job_type(
    name: str, inputs: dict[str, str], expected: dict[str, str], root: Path
) -> None:
    result = await run(DEMO[name], inputs, root)
    assert result.ok, result.reason
    assert result.outputs == expected
    assert result.exit_code == 0 and result.reason == "" and result.warnings == ()


async def chain(types: dict[str, JobTypeSpec], message: str, root: Path) -> str:
    r0 = await run(types["foojob0"], {"message": message}, root)
    r1 = await run(types["foojob1"], {"text": r0.outputs["jobout"]}, root)
    r2 = await run(types["foojob2"], {"final_text": r1.outputs["outSB"]}, root)
    assert r0.ok and r1.ok and r2.ok, (r0.reason, r1.reason, r2.reason)
    return r2.outputs["out"]


async def fan(text: str, root: Path) -> str:
    split = await run(DEMO["split_text"], {"text": text}, root)
    shout, rev = await asyncio.gather(
        run(DEMO["shout"], {"text": split.outputs["left"]}, root, job_id="a"),
        run(DEMO["reverse"], {"text": split.outputs["right"]}, root, job_id="b"),
    )
    joined = await run(
        DEMO["join_pair"],
        {"first": shout.outputs["shouted"], "second": rev.outputs["reversed"]},
        root,
    )
    framed = await run(DEMO["frame"], {"text": joined.outputs["joined"]}, root)
    assert framed.ok, framed.reason
    return framed.outputs["framed"]


async def test_demo_chains(root: Path) -> None:
    assert await chain(DEMO, "caronirocks", root) == "prependCARONIROCKS append"
    assert await fan("caronirocks", root) == "[CARON+skcori]"
    assert no_workdirs_left(root)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("caronirocks", "prependCARONIROCKS append"),
        ("$(touch pwned) `touch pwned`", "prepend$(TOUCH PWNED) `TOUCH PWNED` append"),
    ],
)
async def test_fixture_job_types_run_with_jq(
    message: str, expected: str, root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = FIXTURES / "job_types.json"
    if not path.exists():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    if not exists(Path("/usr/bin/jq")):
        pytest.skip("/usr/bin/jq is not installed; the users' fixture bodies need it")
    monkeypatch.chdir(tmp_path)
    types = {s.name: s for s in load_job_types(path)}
    assert await chain(types, message, root) == expected
    assert not pwned_anywhere(tmp_path)


# --- hostile inputs stay data ------------------------------------------------------

_BIG = ("A$(touch pwned)`touch pwned`\n'\"\\; rm -rf ~ é☃ " * 3000)[:100_000]

HOSTILE = [
    "$(touch pwned)",
    "; rm -rf ~",
    "`touch pwned`",
    "'; touch pwned; echo '",
    '"; touch pwned; echo "',
    "line one\nline two\n\n",
    'back\\slash \\n \\u0000 \\"',
    "-n",
    "%s%n %(x)s {o}",
    "unicode é ☃ 𝄞 \u200b",
    "\x1b[31mred\t\r\x7f",
    "",
    _BIG,
]


def _guarded(job: JobTypeSpec) -> JobTypeSpec:
    # Same body, then fail loudly if anything created "pwned" in the work directory.
    body = job.body + "\n[ ! -e pwned ] || { echo 'pwned exists' >&2; exit 99; }"
    return JobTypeSpec(job.name, job.inputs, job.outputs, body)


@pytest.mark.parametrize("value", HOSTILE, ids=[f"v{i}" for i in range(len(HOSTILE))])
async def test_hostile_inputs_stay_data(
    value: str, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    half = len(value) // 2
    cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("foojob0", {"message": value}, {"jobout": value.upper()}),
        ("foojob1", {"text": value}, {"outSB": "prepend" + value}),
        ("foojob2", {"final_text": value}, {"out": value + " append"}),
        ("split_text", {"text": value}, {"left": value[:half], "right": value[half:]}),
        ("reverse", {"text": value}, {"reversed": value[::-1]}),
        ("join_pair", {"first": value, "second": value}, {"joined": value + "+" + value}),
        ("frame", {"text": value}, {"framed": "[" + value + "]"}),
    ]
    results = await asyncio.gather(
        *(run(_guarded(DEMO[n]), i, root, job_id=n) for n, i, _ in cases)
    )
    for (name, _, expected), result in zip(cases, results, strict=True):
        assert result.ok, (name, result.reason)
        assert result.outputs == expected, name
    assert not pwned_anywhere(tmp_path, Path.cwd())
    assert no_workdirs_left(root)


async def test_input_that_cannot_be_in_an_environment_fails_without_running(
    root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job = spec(f"touch {marker}; echo '{{\"o\": 1}}'", inputs=("x",))
    nul = await run(job, {"x": "a\0b"}, root)
    assert not nul.ok and "NUL" in nul.reason and nul.exit_code is None
    huge = await run(job, {"x": "x" * 200_000}, root)
    assert not huge.ok and "too large for the environment" in huge.reason
    assert not marker.exists()


async def test_inputs_too_large_together_fail_with_the_reason_not_an_exec_error(
    root: Path, tmp_path: Path
) -> None:
    # Each fits in one variable, but 20 x 120 kB pass ARG_MAX (2 MiB): exec would
    # fail with E2BIG.
    marker = tmp_path / "ran"
    names = tuple(f"i{n}" for n in range(20))
    job = spec(f"touch {marker}; echo '{{\"o\": 1}}'", inputs=names)
    result = await run(job, dict.fromkeys(names, "x" * 120_000), root)
    assert not result.ok and result.exit_code is None
    assert "too large for the environment together" in result.reason
    assert result.reason.endswith("; the job was not started")
    assert "could not start bash" not in result.reason
    assert not marker.exists()


# --- failure modes ---------------------------------------------------------------


async def test_nonzero_exit_code_with_stderr(root: Path) -> None:
    result = await run(spec("echo '{\"o\": 1}'; echo oops >&2; exit 3"), {}, root)
    assert not result.ok
    assert result.reason == "exit code 3; stderr: oops"
    assert result.exit_code == 3 and result.outputs == {}
    assert result.stderr_tail == "oops\n"


async def test_reason_ends_with_last_stderr_lines(root: Path) -> None:
    result = await run(spec("for i in $(seq 1 100); do echo line $i >&2; done; exit 1"), {}, root)
    tail = "\n".join(f"line {i}" for i in range(81, 101))
    assert result.reason == f"exit code 1; stderr: {tail}"


@pytest.mark.parametrize(
    ("body", "preview"),
    [
        ("echo hello", "hello"),
        ("echo '[1, 2]'", "[1, 2]"),
        ("true", "(empty)"),
        ('echo \'{"o": 1} {"o": 2}\'', '{"o": 1} {"o": 2}'),
        ("echo '\"o\"'", '"o"'),
        ("printf 'x%.0s' $(seq 1 500)", "x" * 200 + "..."),
    ],
)
async def test_stdout_not_a_json_object(body: str, preview: str, root: Path) -> None:
    result = await run(spec(body), {}, root)
    assert not result.ok and result.exit_code == 0
    assert result.reason == f"standard output is not a JSON object: {preview}"


async def test_stdout_not_utf8(root: Path) -> None:
    result = await run(spec("printf '\\xff\\xfe'"), {}, root)
    assert result.reason.startswith("standard output is not a JSON object")


async def test_declared_output_missing(root: Path) -> None:
    result = await run(spec('echo \'{"a": "1"}\'', outputs=("a", "b")), {}, root)
    assert not result.ok
    assert result.reason == "declared output 'b' missing from the JSON object"
    result = await run(spec("echo '{}' ; echo why >&2", outputs=("a", "b")), {}, root)
    assert result.reason == "declared outputs 'a', 'b' missing from the JSON object; stderr: why"


async def test_missing_input_fails_without_running(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = spec(f"touch {marker}; echo '{{\"o\": 1}}'", inputs=("x", "y"))
    result = await run(job, {"y": "1"}, root)
    assert not result.ok and result.exit_code is None
    assert "'x' missing" in result.reason and "not started" in result.reason
    assert not marker.exists()
    assert no_workdirs_left(root)


async def test_time_limit_kills_the_whole_group(root: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    body = 'sleep 60 & echo $! > "$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"; sleep 60'
    started = time.monotonic()
    result = await run(spec(body), {}, root, timeout=1.0, extra_env={"PIDFILE": str(pidfile)})
    assert time.monotonic() - started < 30
    assert not result.ok and result.exit_code is None
    assert result.reason == "killed after 1.0 s (time limit)"
    pids = read_pids(pidfile)
    if pids is not None:  # written unless bash needed more than the whole second to start
        assert await eventually(lambda: not alive(pids[0]))
    assert no_workdirs_left(root)


async def test_spec_timeout_applies_and_argument_overrides_it(root: Path) -> None:
    limited = JobTypeSpec("slow", (), ("o",), "sleep 60", timeout=0.5)
    started = time.monotonic()
    result = await run(limited, {}, root)
    assert result.reason == "killed after 0.5 s (time limit)"
    assert time.monotonic() - started < 30
    quick = JobTypeSpec("quick", (), ("o",), "echo '{\"o\": 1}'", timeout=0.001)
    assert (await run(quick, {}, root, timeout=60)).ok
    with pytest.raises(ValueError):
        await run(quick, {}, root, timeout=0)


async def test_output_larger_than_limit_is_killed(root: Path) -> None:
    started = time.monotonic()
    result = await run(spec("yes"), {}, root, max_output_bytes=1000)
    assert time.monotonic() - started < 30
    assert not result.ok and result.exit_code is None
    assert result.reason == "output larger than 1000 bytes"
    assert result.stdout_tail.startswith("y\ny\n")


async def test_output_over_limit_fails_even_when_the_job_ends_first(root: Path) -> None:
    result = await run(
        spec("printf '{\"o\": \"%s\"}' $(printf 'x%.0s' $(seq 1 50))"),
        {},
        root,
        max_output_bytes=20,
    )
    assert result.reason == "output larger than 20 bytes"
    just_fits = await run(spec('printf \'{"o":"v"}\''), {}, root, max_output_bytes=9)
    assert just_fits.ok and just_fits.outputs == {"o": "v"}


async def test_killed_by_signal(root: Path) -> None:
    result = await run(spec("kill -9 $$"), {}, root)
    assert not result.ok and result.exit_code is None
    assert result.reason == "killed by signal SIGKILL"


async def test_big_stderr_and_stdout_do_not_deadlock(root: Path) -> None:
    body = (
        "head -c 10000000 /dev/zero | tr '\\0' e >&2; "
        'python3 -I -S -c \'import json; print(json.dumps({"o": "x" * 3000000}))\''
    )
    result = await run(spec(body), {}, root)
    assert result.ok, result.reason
    assert result.outputs == {"o": "x" * 3_000_000}
    assert len(result.stderr_tail) <= 4096 and result.stderr_tail.endswith("eee")
    assert len(result.stdout_tail) <= 4096


async def test_undeclared_outputs_give_a_warning(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="caroni.agent.runner"):
        result = await run(spec('echo \'{"o": "1", "extra": "2"}\''), {"stray": "x"}, root)
    assert result.ok and result.outputs == {"o": "1"}
    assert result.warnings == (
        "undeclared input 'stray' ignored",
        "undeclared output 'extra' ignored",
    )
    assert any("undeclared output 'extra'" in r.getMessage() for r in caplog.records)


async def test_non_string_values_are_stringified(root: Path) -> None:
    document = {"n": 3, "f": 1.5, "b": True, "z": None, "l": [1, "é"], "d": {"k": 1}, "s": "x"}
    body = f"cat <<'EOF'\n{json.dumps(document)}\nEOF"
    result = await run(spec(body, outputs=tuple(document)), {}, root)
    assert result.ok, result.reason
    assert result.outputs == {
        "n": "3",
        "f": "1.5",
        "b": "true",
        "z": "null",
        "l": '[1, "é"]',
        "d": '{"k": 1}',
        "s": "x",
    }


async def test_environment_workdir_and_cleanup(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARONI_TEST_LEAK", "secret")
    script = (
        "import json, os\n"
        "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ),"
        " 'stdin': os.readlink('/proc/self/fd/0'), 'pgid': os.getpgid(0), 'sid': os.getsid(0)}))"
    )
    job = JobTypeSpec(
        "envcheck", ("value",), ("cwd", "env", "stdin", "pgid", "sid"), 'python3 -I -S -c "$SCRIPT"'
    )
    result = await run(
        job, {"value": "v 1"}, root, job_id="env/job 1", extra_env={"SCRIPT": script}
    )
    assert result.ok, result.reason
    workdir = Path(result.outputs["cwd"])
    env = json.loads(result.outputs["env"])
    assert workdir.parent == root and workdir.name.startswith("env_job_1-")
    assert env["HOME"] == env["TMPDIR"] == str(workdir)
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["LANG"] == "C.UTF-8"
    assert env["CARONI_ENV_value"] == "v 1" and env["SCRIPT"] == script
    assert "CARONI_TEST_LEAK" not in env
    assert result.outputs["stdin"] == "/dev/null"
    # The job runs in a session (and process group) of its own, not in ours.
    assert result.outputs["pgid"] == result.outputs["sid"] != str(os.getsid(0))
    assert not exists(workdir)
    assert no_workdirs_left(root)


async def test_body_that_removes_its_own_workdir(root: Path) -> None:
    result = await run(spec('rm -rf ~; echo \'{"o": "gone"}\''), {}, root)
    assert result.ok and result.outputs == {"o": "gone"}
    assert no_workdirs_left(root)


async def test_bad_extra_env_is_refused(root: Path) -> None:
    with pytest.raises(ValueError):
        await run(spec("true"), {}, root, extra_env={"A=B": "x"})


async def test_every_log_line_names_the_job(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="caroni.agent.runner"):
        await run(spec('echo \'{"o": 1, "x": 2}\''), {}, root, job_id="job-xyz")
        await run(spec("exit 4"), {}, root, job_id="job-xyz")
    records = [r for r in caplog.records if r.name == "caroni.agent.runner"]
    assert records and all("job-xyz" in r.getMessage() for r in records)


# --- cancellation and concurrency ------------------------------------------------


async def test_cancel_kills_the_process_group_and_removes_the_workdir(
    root: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    body = 'sleep 1000 & echo "$$ $!" > "$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"; wait'
    task = asyncio.create_task(run(spec(body), {}, root, extra_env={"PIDFILE": str(pidfile)}))
    assert await eventually(pidfile.exists), "the job never wrote its pid file"
    bash_pid, sleep_pid = read_pids(pidfile) or []
    assert alive(sleep_pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)  # bounded: a hang here is the bug we test for
    assert await eventually(lambda: not alive(sleep_pid)), "background child survived"
    assert await eventually(lambda: not alive(bash_pid)), "bash survived"
    assert no_workdirs_left(root)


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8, 13, 30])
async def test_cancel_at_any_point_of_the_start_leaves_nothing_behind(
    steps: int, root: Path
) -> None:
    # Cancelling after a varying number of loop iterations lands in every window of
    # the start: before the spawn, while asyncio connects the pipes, once running.
    token = f"caroni-test-{uuid.uuid4().hex}"
    body = "sleep 1000 & sleep 1000 & wait"
    task = asyncio.create_task(run(spec(body), {}, root, extra_env={"CARONI_TOKEN": token}))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert await eventually(lambda: not processes_with(token)), processes_with(token)
    assert no_workdirs_left(root)


async def test_jobs_run_concurrently(root: Path) -> None:
    jobs = [run(DEMO["shout"], {"text": f"t{i}"}, root, job_id=f"c{i}") for i in range(6)] + [
        run(spec(f'printf \'{{"o": "%s"}}\' {i}'), {}, root, job_id=f"b{i}") for i in range(6)
    ]
    results = await asyncio.gather(*jobs)
    assert [r.outputs for r in results[:6]] == [{"shouted": f"T{i}"} for i in range(6)]
    assert [r.outputs for r in results[6:]] == [{"o": str(i)} for i in range(6)]
    assert no_workdirs_left(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_a_body_can_run_as_another_user(tmp_path: Path) -> None:
    spec = JobTypeSpec("whoami", (), ("user",), 'printf \'{"user": "%s"}\' "$(id -un)"')
    result = await run_job(spec, {}, workdir_root=tmp_path, job_id="as-nobody", run_as="nobody")
    assert result.ok, result.reason
    assert result.outputs == {"user": "nobody"}


async def test_an_unknown_user_to_run_as_is_refused(tmp_path: Path) -> None:
    spec = JobTypeSpec("whoami", (), ("user",), "true")
    with pytest.raises(ValueError, match="no user"):
        await run_job(spec, {}, workdir_root=tmp_path, job_id="x", run_as="no-such-user-here")
