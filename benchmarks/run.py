"""Caroni's benchmark harness: ``python -m benchmarks.run`` (see benchmarks/README.md).

For every workload it measures the floor (spawning the bodies alone), then for
every size runs Caroni over RabbitMQ + PostgreSQL (manager and agent as OS
processes), Caroni embedded (one process, memory transport, SQLite) and the
Celery chain, and prints one table row per configuration with the Caroni/Celery
ratios and the issue's targets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from benchmarks.common import (
    PROJECT_DIR,
    STEPS_PER_WORKFLOW,
    WORKLOADS,
    HarnessError,
    check_jq,
    job_types_path,
)
from benchmarks.floor import Floor, measure_floor
from benchmarks.infra import (
    POSTGRES_NAMES,
    RABBIT_NAMES,
    Cpu,
    ManagedProcess,
    Postgres,
    PublishCounter,
    RssSampler,
    Watched,
    check_rabbit,
    machine_busy,
    rabbit_vhost,
    system_cpu,
    system_cpu_delta,
)
from benchmarks.report import RunResult, markdown_report, print_report

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
MODES = ("amqp", "embedded")
NODE_START_TIMEOUT = 90.0
READY_TIMEOUT = 120.0


@dataclass
class Context:
    args: argparse.Namespace
    work_dir: Path
    progress: Progress
    cores: int
    http_none: list[str] = field(default_factory=list)


class Profiler:
    """py-spy attached to some processes for the measured phase only (``--profile``)."""

    def __init__(self, ctx: Context, result: RunResult, pids: dict[str, int]) -> None:
        self.ctx = ctx
        self.result = result
        self.pids = pids
        self.processes: list[ManagedProcess] = []

    def start(self) -> None:
        out_dir = self.ctx.args.profile
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        r = self.result
        for label, pid in self.pids.items():
            name = f"{r.system}-{r.mode}-{r.workload}-{r.size}-{label}"
            self.processes.append(
                ManagedProcess(
                    f"py-spy-{label}",
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(self.ctx.args.profile_rate),
                        "--threads",
                        "--format",
                        "raw",
                        "--output",
                        str(out_dir / f"{name}.txt"),
                        "--nonblocking",
                        *(["--subprocesses"] if label == "worker" else []),
                    ],
                    log_dir=out_dir,
                    cwd=PROJECT_DIR,
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(60)  # writing a long profile takes a while
            process.stop(timeout=5)


# --- the driver process and its measurements -----------------------------------------


def _reader(stream: Any, into: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            into.put(json.loads(line))
        except ValueError:
            continue
    into.put(None)


def _driver_args(kind: str, workload: str, size: int, ctx: Context, **extra: str) -> list[str]:
    count = ctx.args.latency_runs if size == 1 else size
    args = [
        sys.executable,
        "-m",
        "benchmarks.driver",
        kind,
        "--workload",
        workload,
        "--count",
        str(count),
        "--timeout",
        str(config_timeout(ctx, count)),
        "--stall",
        "0",  # the harness watches for stalls (it sees the nodes' CPU too)
        "--slots",
        str(ctx.cores),
    ]
    if size == 1:
        args.append("--sequential")
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    return args


def wait_for_quiet(ctx: Context) -> None:
    """Wait (up to ``--wait-idle`` seconds) until the machine is quiet: other work on
    it (tests, demos) would be measured as ours."""
    limit, threshold = ctx.args.wait_idle, ctx.args.idle_threshold
    if limit <= 0:
        return
    deadline = time.monotonic() + limit
    busy = psutil.cpu_percent(interval=2.0)
    waited = 2.0
    while busy > threshold and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=2.0)
        waited += 2.0
    if busy > threshold:
        ctx.progress.console.log(
            f"[yellow]machine still {busy:.0f}% busy with other work after {waited:.0f}s; "
            "measuring anyway (see the 'other load' column)"
        )


def config_timeout(ctx: Context, count: int) -> float:
    if ctx.args.timeout:
        return float(ctx.args.timeout)
    # Generous (3 steps/s would still finish): a stall is cut short by --stall anyway.
    return 120.0 + count * STEPS_PER_WORKFLOW * 0.35


def drive(
    result: RunResult,
    driver: ManagedProcess,
    watched: dict[str, Watched],
    ctx: Context,
    *,
    job_children_of: str,
    shared_services: bool,
    profile: dict[str, int] | None = None,
    jobs_done: Callable[[], int] | None = None,
    sampler: RssSampler | None = None,
    on_ready: Callable[[], None] | None = None,
) -> float:
    """Let the driver warm up, take CPU baselines, start the measured phase, follow
    it, and fill ``result`` with what the driver and the processes report.
    Returns the wall-clock time (epoch) the measured phase started.

    A run is given up as stalled when nothing finished for ``--stall`` seconds and
    either no job completed meanwhile (``jobs_done``: the agent's count, when known)
    or, without that count, the system's processes were idle."""
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    assert driver.proc.stdout is not None and driver.proc.stdin is not None
    threading.Thread(target=_reader, args=(driver.proc.stdout, events), daemon=True).start()

    def next_event(timeout: float) -> dict[str, Any] | None:
        try:
            return events.get(timeout=timeout)
        except queue.Empty:
            raise HarnessError(
                f"no word from the driver for {timeout:.0f}s:\n{driver.log_tail()}"
            ) from None

    event = next_event(READY_TIMEOUT)
    while event is not None and event.get("event") != "ready":
        event = next_event(READY_TIMEOUT)
    if event is None:
        raise HarnessError(f"driver ended before it was ready:\n{driver.log_tail()}")

    task = ctx.progress.add_task(
        f"{result.system} {result.mode} {result.workload} {result.size_label}",
        total=result.count,
        failed=0,
    )
    before = {label: w.cpu() for label, w in watched.items()}
    rabbit_before = system_cpu(RABBIT_NAMES) if shared_services else {}
    pg_before = system_cpu(POSTGRES_NAMES) if shared_services else {}
    machine_before = machine_busy()
    profiler = Profiler(ctx, result, profile or {})
    profiler.start()
    if on_ready is not None:
        on_ready()
    started_at = time.time()
    driver.proc.stdin.write(b"go\n")
    driver.proc.stdin.flush()

    deadline = time.monotonic() + config_timeout(ctx, result.count) + 60
    final: dict[str, Any] | None = None
    last: dict[str, Any] = {"done": 0, "failed": 0}
    system = [label for label in watched if label != "client"]

    def busy_seconds() -> float:
        return sum(
            w.cpu().own + w.cpu().children for label, w in watched.items() if label in system
        )

    changed_at, busy_at_change = time.monotonic(), busy_seconds()
    jobs_at_change = _safe_count(jobs_done)
    try:
        while final is None:
            if time.monotonic() > deadline:
                final = _abandon(driver, last, result, "the driver did not report in time")
                break
            try:
                event = events.get(timeout=5.0)
            except queue.Empty:
                event = {"event": "tick"}
            if event is None:
                raise HarnessError(f"driver ended without a result:\n{driver.log_tail()}")
            if event.get("event") == "progress":
                if (event["done"], event["failed"]) != (last["done"], last["failed"]):
                    changed_at, busy_at_change = time.monotonic(), busy_seconds()
                last = event
                ctx.progress.update(
                    task, completed=event["done"] + event["failed"], failed=event["failed"]
                )
            elif event.get("event") == "result":
                final = event
                break
            if time.monotonic() - changed_at >= ctx.args.stall:
                # Nothing finished for a while. Workflows submitted at once may all
                # finish near the end, so only call it a stall when no job completed
                # either (or, not knowing that, when the system's processes idled).
                busy = busy_seconds() - busy_at_change
                jobs_now = _safe_count(jobs_done)
                if jobs_now is not None:
                    if jobs_now == jobs_at_change:
                        final = _abandon(
                            driver,
                            last,
                            result,
                            f"stalled: no workflow finished and no job completed for "
                            f"{ctx.args.stall:.0f}s (the nodes used {busy:.1f} CPU s "
                            "meanwhile: busy without progress)",
                        )
                    else:
                        changed_at, busy_at_change = time.monotonic(), busy_seconds()
                        jobs_at_change = jobs_now
                elif busy < 0.05 * ctx.args.stall:
                    final = _abandon(
                        driver,
                        last,
                        result,
                        f"stalled: nothing finished for {ctx.args.stall:.0f}s and the "
                        f"system's processes used only {busy:.1f} CPU s meanwhile",
                    )
                else:
                    changed_at, busy_at_change = time.monotonic(), busy_seconds()
    finally:
        after = {label: w.cpu() for label, w in watched.items()}
        if sampler is not None:
            _finish(result, sampler)
        profiler.stop()
        result.machine_cpu = machine_busy() - machine_before
        if shared_services:
            result.cpu["rabbitmq"] = system_cpu_delta(rabbit_before, system_cpu(RABBIT_NAMES))
            result.cpu["postgres"] = system_cpu_delta(pg_before, system_cpu(POSTGRES_NAMES))
        for label in watched:
            spent: Cpu = after[label] - before[label]
            result.cpu[label] = spent.own
            if label == job_children_of:
                result.cpu["jobs"] = spent.children
        ctx.progress.update(task, visible=False)

    result.completed = final["completed"]
    result.failed = final["failed"]
    result.incomplete = final["incomplete"]
    result.latencies = final["latencies"]
    result.span = final["span"]
    result.failures = final["failures"]
    result.stop_reason = final["stop_reason"]
    ctx.progress.console.log(
        f"{result.system} {result.mode} {result.workload} {result.size_label}: "
        f"{result.done_label} in {result.span:.1f}s"
        + (f" ({result.stop_reason})" if result.stop_reason else "")
    )
    return started_at


def _safe_count(count: Callable[[], int] | None) -> int | None:
    if count is None:
        return None
    try:
        return count()
    except Exception:  # noqa: BLE001 - a busy or locked database: no figure this time
        return None


def _completed_jobs_pg(url: str) -> Callable[[], int]:
    def count() -> int:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'completed'").fetchone()
        return int(row[0]) if row else 0

    return count


def _completed_jobs_sqlite(path: Path) -> Callable[[], int]:
    def count() -> int:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as c:
            row = c.execute("SELECT count(*) FROM jobs WHERE status = 'completed'").fetchone()
        return int(row[0]) if row else 0

    return count


def _abandon(
    driver: ManagedProcess, last: dict[str, Any], result: RunResult, why: str
) -> dict[str, Any]:
    """Stop a driver that will not finish; its last progress report is all we know."""
    driver.stop(timeout=5)
    return {
        "completed": last["done"],
        "failed": last["failed"],
        "incomplete": result.count - last["done"] - last["failed"],
        "latencies": [],
        "span": 0.0,
        "failures": [],
        "stop_reason": why + " (latencies unknown: the driver was stopped)",
    }


def _finish(result: RunResult, sampler: RssSampler) -> None:
    for w in sampler.watched:
        result.rss[w.label] = w.peak_rss


# --- message counts ---------------------------------------------------------------------


def _count_rows(rows: list[tuple[str, int]]) -> dict[str, int]:
    return {direction: int(count) for direction, count in rows}


def count_messages_pg(url: str, since: float) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT direction, count(*) FROM message_log WHERE at >= %s GROUP BY direction",
            (since,),
        ).fetchall()
    return _count_rows(rows)


def count_messages_sqlite(path: Path, since: float) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT direction, count(*) FROM message_log WHERE at >= ? GROUP BY direction",
            (since,),
        ).fetchall()
    return _count_rows(rows)


def _broker_messages(result: RunResult, manager: dict[str, int], agent: dict[str, int]) -> None:
    result.messages = {
        "manager_in": manager.get("in", 0),
        "manager_out": manager.get("out", 0),
        "agent_in": agent.get("in", 0),
        "agent_out": agent.get("out", 0),
    }
    # Every message crosses the broker once: sent by a node (its "out" rows) or by
    # the client (one WorkFlowCreate per workflow).
    result.broker_messages = manager.get("out", 0) + agent.get("out", 0) + result.count


# --- configurations ---------------------------------------------------------------------


def _node_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "caroni", *args]


def run_caroni_amqp(ctx: Context, workload: str, size: int) -> RunResult:
    result = RunResult("caroni", "amqp", workload, size, _count(ctx, size))
    log_dir = _log_dir(ctx, result)
    processes: list[ManagedProcess] = []
    postgres = Postgres(ctx.args.pg)
    counter: PublishCounter | None = None
    try:
        with rabbit_vhost(ctx.args.amqp) as amqp_url, RssSampler() as sampler:
            if size == 1:
                counter = PublishCounter(amqp_url)
            manager_db, agent_db = postgres.create("manager"), postgres.create("agent")
            manager = ManagedProcess(
                "manager",
                _node_cmd(
                    "manager",
                    "--db",
                    manager_db,
                    "--amqp",
                    amqp_url,
                    "--demo-content",
                    *ctx.http_none,
                ),
                log_dir=log_dir,
                cwd=PROJECT_DIR,
            )
            processes.append(manager)
            key = manager.wait_for_line(r"manager key: (wf\.manager\.\S+)", NODE_START_TIMEOUT)
            agent = ManagedProcess(
                "agent",
                _node_cmd(
                    "agent",
                    "--db",
                    agent_db,
                    "--amqp",
                    amqp_url,
                    "--job-types",
                    str(job_types_path(workload)),
                    "--slots",
                    str(ctx.cores),
                    "--name",
                    "bench-agent",
                    *ctx.http_none,
                ),
                log_dir=log_dir,
                cwd=PROJECT_DIR,
            )
            processes.append(agent)
            agent.wait_for_line(r"agent key: ", NODE_START_TIMEOUT)
            driver = ManagedProcess(
                "driver",
                _driver_args(
                    "caroni-amqp", workload, size, ctx, amqp=amqp_url, manager=key.group(1)
                ),
                log_dir=log_dir,
                cwd=PROJECT_DIR,
                stdin=True,
                stdout_pipe=True,
            )
            processes.append(driver)
            watched = {
                "manager": sampler.add(Watched("manager", manager.pid)),
                "agent": sampler.add(Watched("agent", agent.pid)),
                "client": sampler.add(Watched("client", driver.pid)),
            }
            since = drive(
                result,
                driver,
                watched,
                ctx,
                job_children_of="agent",
                shared_services=True,
                profile={"manager": manager.pid, "agent": agent.pid},
                jobs_done=_completed_jobs_pg(agent_db),
                sampler=sampler,
                on_ready=counter.reset if counter is not None else None,
            )
            _finish(result, sampler)
            published = counter.count() if counter is not None else None
            for process in reversed(processes):
                process.stop()
            _broker_messages(
                result, count_messages_pg(manager_db, since), count_messages_pg(agent_db, since)
            )
            if published is not None:
                result.broker_messages = published  # the broker's count over the nodes'
    except HarnessError as exc:
        result.error = str(exc)
    finally:
        if counter is not None:
            counter.close()
        for process in reversed(processes):
            process.stop()
        postgres.close()
    return result


def run_caroni_embedded(ctx: Context, workload: str, size: int) -> RunResult:
    result = RunResult("caroni", "embedded", workload, size, _count(ctx, size))
    log_dir = _log_dir(ctx, result)
    data_dir = log_dir / "data"
    data_dir.mkdir()
    driver: ManagedProcess | None = None
    try:
        with RssSampler() as sampler:
            driver = ManagedProcess(
                "driver",
                _driver_args("caroni-embedded", workload, size, ctx, data_dir=str(data_dir)),
                log_dir=log_dir,
                cwd=PROJECT_DIR,
                stdin=True,
                stdout_pipe=True,
            )
            watched = {"caroni": sampler.add(Watched("caroni", driver.pid))}
            since = drive(
                result,
                driver,
                watched,
                ctx,
                job_children_of="caroni",
                shared_services=False,
                profile={"caroni": driver.pid},
                jobs_done=_completed_jobs_sqlite(data_dir / "agent-1.sqlite3"),
                sampler=sampler,
            )
            _finish(result, sampler)
            driver.stop()
            _broker_messages(
                result,
                count_messages_sqlite(data_dir / "manager.sqlite3", since),
                count_messages_sqlite(data_dir / "agent-1.sqlite3", since),
            )
    except HarnessError as exc:
        result.error = str(exc)
    finally:
        if driver is not None:
            driver.stop()
    return result


def run_celery(ctx: Context, workload: str, size: int) -> RunResult:
    return _run_celery(ctx, workload, size, durable=False)


def run_celery_durable(ctx: Context, workload: str, size: int) -> RunResult:
    return _run_celery(ctx, workload, size, durable=True)


def _run_celery(ctx: Context, workload: str, size: int, *, durable: bool) -> RunResult:
    system = "celery durable" if durable else "celery"
    result = RunResult(system, "amqp", workload, size, _count(ctx, size))
    log_dir = _log_dir(ctx, result)
    processes: list[ManagedProcess] = []
    counter: PublishCounter | None = None
    try:
        with rabbit_vhost(ctx.args.amqp) as amqp_url, RssSampler() as sampler:
            env = {"BENCH_CELERY_BROKER": amqp_url, "BENCH_WORKLOAD": workload}
            if durable:
                env["BENCH_CELERY_DURABLE"] = "1"
            if size == 1:
                counter = PublishCounter(amqp_url)
            worker = ManagedProcess(
                "celery-worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "benchmarks.celery_chain",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(ctx.cores),
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "WARNING",
                    "--hostname",
                    f"bench-{os.getpid()}@%h",
                ],
                log_dir=log_dir,
                cwd=PROJECT_DIR,
                env=env,
            )
            processes.append(worker)
            worker.wait_for_line("BENCH-CELERY-WORKER-READY", NODE_START_TIMEOUT)
            driver = ManagedProcess(
                "driver",
                _driver_args("celery", workload, size, ctx, amqp=amqp_url),
                log_dir=log_dir,
                cwd=PROJECT_DIR,
                env=env,
                stdin=True,
                stdout_pipe=True,
            )
            processes.append(driver)
            watched = {
                "worker": sampler.add(Watched("worker", worker.pid, tree=True)),
                "client": sampler.add(Watched("client", driver.pid)),
            }
            drive(
                result,
                driver,
                watched,
                ctx,
                job_children_of="worker",
                shared_services=True,
                profile={"worker": worker.pid},
                sampler=sampler,
                on_ready=counter.reset if counter is not None else None,
            )
            result.cpu.pop("postgres", None)  # Celery uses no database here
            _finish(result, sampler)
            if counter is not None:
                result.broker_messages = counter.count()
            else:
                # Counted in the one-at-a-time run (a tracer would slow this one).
                result.broker_messages = 2.0 * result.steps
                result.broker_messages_note = "as counted one at a time: a task and a result"
    except HarnessError as exc:
        result.error = str(exc)
    finally:
        if counter is not None:
            counter.close()
        for process in reversed(processes):
            process.stop()
    return result


def _add_result(results: list[RunResult], result: RunResult) -> None:
    """Add ``result``, or fold it into the earlier repeat of its configuration."""
    for index, earlier in enumerate(results):
        if earlier.key == result.key:
            results[index] = earlier.combined(result)
            return
    results.append(result)


def _count(ctx: Context, size: int) -> int:
    return ctx.args.latency_runs if size == 1 else size


def _log_dir(ctx: Context, result: RunResult) -> Path:
    """A fresh directory for this run of a configuration (a repeat gets its own)."""
    name = f"{result.system}-{result.mode}-{result.workload}-{result.size}".replace(" ", "-")
    for repeat in itertools.count(1):
        path = ctx.work_dir / (name if repeat == 1 else f"{name}-run{repeat}")
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise AssertionError("unreachable")


# --- the command ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Caroni throughput and latency, side by side with a Celery chain.",
    )
    parser.add_argument("--mode", choices=("amqp", "embedded", "both"), default="both")
    parser.add_argument("--workload", choices=("seed", "orchestration", "both"), default="both")
    parser.add_argument(
        "--sizes",
        default="",
        help="comma-separated workflows at once; 1 = one at a time (default 1,200,2000)",
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=0,
        help="workflows run one at a time for size 1 (default 20)",
    )
    parser.add_argument(
        "--latency-repeats",
        type=int,
        default=0,
        help="how often each one-at-a-time configuration runs, the systems interleaved; "
        "its percentiles are the medians of the repeats' (default 3)",
    )
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    parser.add_argument(
        "--no-celery-durable",
        action="store_true",
        help="skip the durable Celery row (acks late, publisher confirms)",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the spawn floor")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: sizes 1,10, 3 latency runs, short floor"
    )
    parser.add_argument("--amqp", default=DEFAULT_AMQP, help="RabbitMQ (a vhost is made per run)")
    parser.add_argument(
        "--pg", default=DEFAULT_PG, help="PostgreSQL admin URL (creates and drops databases)"
    )
    parser.add_argument("--out", type=Path, help="also write the tables as markdown here")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument(
        "--timeout", type=float, default=0, help="seconds per configuration (default: by size)"
    )
    parser.add_argument(
        "--stall", type=float, default=120.0, help="give up when nothing finished for this long"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record py-spy profiles (collapsed stacks) of the nodes into this directory "
        "during each measured phase; summarise them with python -m benchmarks.hotspots",
    )
    parser.add_argument(
        "--profile-rate", type=int, default=50, help="py-spy samples per second (--profile)"
    )
    parser.add_argument(
        "--caroni-src",
        type=Path,
        help="benchmark the caroni package in this src directory (e.g. a snapshot made with "
        "`git archive`) instead of the installed one: put on PYTHONPATH of every process",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="before each configuration, wait up to this many seconds for the machine to "
        "be quiet (0: do not wait)",
    )
    parser.add_argument(
        "--idle-threshold",
        type=float,
        default=15.0,
        help="machine CPU %% under which it counts as quiet",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (process logs, SQLite files)"
    )
    args = parser.parse_args(argv)
    if not args.sizes:
        args.sizes = "1,10" if args.quick else "1,200,2000"
    try:
        args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: comma-separated numbers expected")
    if any(size < 1 for size in args.size_list):
        parser.error("sizes must be at least 1")
    if not args.latency_runs:
        args.latency_runs = 3 if args.quick else 20
    if not args.latency_repeats:
        args.latency_repeats = 1 if args.quick else 3
    return args


def _http_none() -> list[str]:
    """``--http none`` if the node commands have grown a web site option."""
    helptext = subprocess.run(
        [sys.executable, "-m", "caroni", "manager", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    ).stdout
    return ["--http", "none"] if "--http" in helptext else []


def caroni_location() -> str:
    """Where the node processes will import caroni from, and which commit that is."""
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import caroni, pathlib; print(pathlib.Path(caroni.__file__).parent)",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        timeout=60,
    )
    if found.returncode != 0:
        raise HarnessError(f"cannot import caroni: {found.stderr.strip()[-2000:]}")
    package = Path(found.stdout.strip())
    root = package.parent.parent
    commit = ""
    if (root / "COMMIT").is_file():
        commit = (root / "COMMIT").read_text().strip()
    else:
        described = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        commit = described.stdout.strip()
    return f"{package}" + (f" (commit {commit})" if commit else "")


def machine_facts() -> dict[str, str]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def run(argv: list[str] | None = None, console: Console | None = None) -> list[RunResult]:
    """Run the benchmark; prints the tables and returns the results."""
    args = parse_args(argv)
    console = console or Console(width=max(Console().width, 220))
    check_jq()
    if args.caroni_src is not None:
        src = args.caroni_src.resolve()
        if not (src / "caroni" / "__init__.py").is_file():
            raise HarnessError(f"--caroni-src {src}: no caroni package there")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p
        )
    caroni_from = caroni_location()
    console.print(f"benchmarking caroni from {caroni_from}")
    modes = MODES if args.mode == "both" else (args.mode,)
    workloads = WORKLOADS if args.workload == "both" else (args.workload,)
    needs_broker = "amqp" in modes or not args.no_celery
    if needs_broker:
        check_rabbit(args.amqp)
    if "amqp" in modes:
        Postgres(args.pg).close()  # fail early and clearly when it is not there
    work_dir = Path(tempfile.mkdtemp(prefix="caroni-bench-"))
    results: list[RunResult] = []
    floors: dict[str, Floor] = {}
    started = time.monotonic()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    ctx = Context(args, work_dir, progress, os.cpu_count() or 1)
    if "amqp" in modes:
        ctx.http_none = _http_none()
    try:
        with progress:
            for workload in workloads:
                if not args.no_floor:
                    floor_task = progress.add_task(f"floor {workload}", total=None, failed=0)
                    quick = args.quick
                    if workload == "seed":
                        sequential, parallel = (5, 10) if quick else (20, 60)
                    else:
                        sequential, parallel = (20, 50) if quick else (100, 600)
                    floors[workload] = measure_floor(
                        workload, sequential=sequential, parallel_per_worker=parallel
                    )
                    progress.update(floor_task, visible=False)
            # Small sizes first: the long 2,000-workflow runs come last, and every
            # finished configuration is written out at once (--out, --json).
            runners = []
            if "amqp" in modes:
                runners.append(run_caroni_amqp)
            if "embedded" in modes:
                runners.append(run_caroni_embedded)
            if not args.no_celery:
                runners.append(run_celery)
                if not args.no_celery_durable:
                    runners.append(run_celery_durable)
            for size in args.size_list:
                # One at a time, every system runs once before any runs again, so a
                # drift of the machine falls on all of them alike.
                repeats = args.latency_repeats if size == 1 else 1
                for _ in range(repeats):
                    for workload in workloads:
                        for runner in runners:
                            wait_for_quiet(ctx)
                            result = runner(ctx, workload, size)
                            result.cores = ctx.cores
                            _add_result(results, result)
                            if result.error:
                                progress.console.log(
                                    f"[red]{result.system} {result.mode} {workload} "
                                    f"{result.size_label} failed:[/] {result.error.splitlines()[0]}"
                                )
                            write_outputs(
                                args,
                                argv,
                                time.monotonic() - started,
                                results,
                                floors,
                                caroni_from,
                                partial=True,
                            )
    finally:
        if args.keep or any(r.error for r in results):
            console.print(f"process logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print_report(console, results, floors)
    console.print(f"caroni from {caroni_from}")
    write_outputs(args, argv, elapsed, results, floors, caroni_from, partial=False)
    if args.out:
        console.print(f"markdown written to {args.out}")
    return results


def write_outputs(
    args: argparse.Namespace,
    argv: list[str] | None,
    elapsed: float,
    results: list[RunResult],
    floors: dict[str, Floor],
    caroni_from: str,
    *,
    partial: bool,
) -> None:
    """Write --out and --json (after every configuration too, marked partial)."""
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        text = _markdown_document(command.strip(), elapsed, results, floors, caroni_from)
        if partial:
            text = "**Partial: the run was still going when this was written.**\n\n" + text
        args.out.write_text(text)
    if args.json:
        data = _as_json(results, floors)
        data["partial"] = partial
        data["command"] = command.strip()
        data["caroni"] = caroni_from
        args.json.write_text(json.dumps(data, indent=1))


def _markdown_document(
    command: str,
    elapsed: float,
    results: list[RunResult],
    floors: dict[str, Floor],
    caroni_from: str,
) -> str:
    facts = machine_facts()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"Command: `{command}` (took {elapsed / 60:.1f} min)",
            "",
            f"Date: {now}. Machine: {facts['cores']} cores ({facts['cpu']}), "
            f"{facts['ram']} RAM, Python {facts['python']}, {facts['os']}.",
            "",
            f"Caroni benchmarked: {caroni_from}.",
            "",
            markdown_report(results, floors),
        ]
    )


def _as_json(results: list[RunResult], floors: dict[str, Floor]) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "machine": machine_facts(),
        "floors": {name: asdict(floor) for name, floor in floors.items()},
        "results": [asdict(result) for result in results],
    }


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # Started in the background, a shell leaves SIGINT ignored; SIGTERM would end us
    # without cleanup. Both must stop the run *and* its processes, vhosts and databases.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = run(argv)
    except HarnessError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", markup=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
