"""The submitting side of one benchmark configuration, run as an OS process of its own.

``python -m benchmarks.driver KIND ...`` where KIND is

- ``caroni-amqp``: a Caroni client over RabbitMQ submits to a running manager;
- ``caroni-embedded``: a whole Caroni (LocalCluster: manager, one agent, memory
  transport, SQLite) and its client in this process;
- ``celery``: a Celery client submits chains to a running Celery worker.

It talks to the harness in JSON lines on standard output:

1. runs one warm-up workflow (not measured), prints ``{"event": "ready"}`` and
   waits for a line on standard input (the harness takes its CPU baselines then);
2. submits ``--count`` workflows, all at once or (``--sequential``) one after the
   other, printing ``{"event": "progress", ...}`` as they finish;
3. prints ``{"event": "result", ...}``: per-workflow latencies (submit to final
   status with outputs), the span from first submit to last completion, and what
   failed or did not finish before the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    TEMPLATE,
    TEMPLATE_INPUT,
    TEMPLATE_OUTPUT,
    expected_output,
    job_types_path,
    workflow_input,
)

PROGRESS_INTERVAL = 0.25


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass
class Tally:
    """What happened to the measured workflows."""

    total: int
    latencies: list[float] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    first_submit: float | None = None
    last_done: float | None = None
    stop_reason: str = ""
    _last_progress: float = 0.0

    def submitted(self, at: float) -> None:
        if self.first_submit is None:
            self.first_submit = at

    def finished(self, started: float, ok: bool, what: str = "", ident: str = "") -> None:
        now = time.monotonic()
        self.last_done = now
        if ok:
            self.latencies.append(now - started)
        else:
            self.failures.append({"id": ident, "why": what[:500]})
        self.progress()

    @property
    def done(self) -> int:
        return len(self.latencies) + len(self.failures)

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_INTERVAL or self.done == self.total:
            self._last_progress = now
            emit("progress", done=len(self.latencies), failed=len(self.failures), total=self.total)

    def result(self) -> None:
        span = 0.0
        if self.first_submit is not None and self.last_done is not None:
            span = self.last_done - self.first_submit
        emit(
            "result",
            total=self.total,
            completed=len(self.latencies),
            failed=len(self.failures),
            incomplete=self.total - self.done,
            latencies=self.latencies,
            span=span,
            failures=self.failures[:50],
            stop_reason=self.stop_reason,
        )


async def wait_for_go() -> None:
    emit("ready")
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise SystemExit("harness went away")


# --- Caroni ---------------------------------------------------------------------------


async def run_caroni_client(client: Any, args: argparse.Namespace) -> None:
    """Warm up, then submit and follow ``args.count`` workflows with ``client``."""

    async def one(index: int, tally: Tally | None, deadline: float) -> None:
        value = workflow_input(index)
        started = time.monotonic()
        if tally is not None:
            tally.submitted(started)
        workflow_id = await client.submit(TEMPLATE, {TEMPLATE_INPUT: value}, name=f"bench-{index}")
        status = await client.wait(
            workflow_id, poll_interval=None, timeout=max(deadline - time.monotonic(), 0.001)
        )
        outputs = {item.key: item.value for item in status.outputs}
        ok = status.state == "completed" and outputs.get(TEMPLATE_OUTPUT) == expected_output(value)
        why = "" if ok else f"{status.state}: {status.reason or outputs}"
        if tally is not None:
            tally.finished(started, ok, why, workflow_id.hex)
        elif not ok:
            raise SystemExit(f"warm-up workflow did not complete: {why}")

    await one(-1, None, time.monotonic() + 60)
    await wait_for_go()
    tally = Tally(args.count)
    await follow(tally, args, lambda index, deadline: one(index, tally, deadline))


async def follow(
    tally: Tally,
    args: argparse.Namespace,
    one: Callable[[int, float], Awaitable[None]],
) -> None:
    """Run ``one`` for every workflow, sequentially or all at once, within the
    deadline, stopping early when nothing finished for ``args.stall`` seconds."""
    deadline = time.monotonic() + args.timeout
    tally.progress(force=True)
    if args.sequential:
        for index in range(args.count):
            if time.monotonic() >= deadline:
                tally.stop_reason = f"deadline of {args.timeout:.0f}s reached"
                break
            try:
                await one(index, deadline)
            except Exception as exc:  # noqa: BLE001 - a timeout or a broker error: report it
                tally.failures.append({"id": str(index), "why": f"{type(exc).__name__}: {exc}"})
                tally.stop_reason = f"workflow {index}: {type(exc).__name__}"
                break
        tally.result()
        return

    async def guarded(index: int) -> None:
        try:
            await one(index, deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            if "did not finish" not in str(exc):
                tally.failures.append({"id": str(index), "why": f"{type(exc).__name__}: {exc}"})

    tasks = [asyncio.create_task(guarded(index)) for index in range(args.count)]
    watch_from = time.monotonic()
    last_done = -1
    while True:
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        now = time.monotonic()
        if tally.done != last_done:
            last_done, watch_from = tally.done, now
        if now >= deadline:
            tally.stop_reason = f"deadline of {args.timeout:.0f}s reached"
            break
        if args.stall > 0 and now - watch_from >= args.stall:
            tally.stop_reason = f"stalled: nothing finished for {args.stall:.0f}s"
            break
        await asyncio.wait(pending, timeout=1.0)
        tally.progress()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tally.result()


async def caroni_amqp(args: argparse.Namespace) -> None:
    from caroni.client import Client
    from caroni.transport.amqp import AmqpSettings, AmqpTransport

    transport = AmqpTransport(AmqpSettings(url=args.amqp))
    await transport.connect()
    try:
        async with Client(transport, args.manager) as client:
            await run_caroni_client(client, args)
    finally:
        await transport.close()


async def caroni_embedded(args: argparse.Namespace) -> None:
    from caroni.agent.model import Policy
    from caroni.cluster import LocalCluster
    from caroni.demo import demo_template_paths

    data_dir = Path(args.data_dir)  # the harness made it
    async with LocalCluster(data_dir, agents=1, policy=Policy(slots=args.slots)) as cluster:
        await cluster.manager.add_template_file(demo_template_paths()[TEMPLATE], TEMPLATE)
        await cluster.agents[0].add_job_types_file(job_types_path(args.workload))
        async with cluster.client() as client:
            await run_caroni_client(client, args)


# --- Celery ---------------------------------------------------------------------------


def celery_driver(args: argparse.Namespace) -> None:
    os.environ["BENCH_CELERY_BROKER"] = args.amqp
    os.environ["BENCH_WORKLOAD"] = args.workload
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import ResultSet

    from benchmarks.celery_chain import app, workflow

    def run(indices: list[int], tally: Tally | None, timeout: float) -> None:
        started: dict[str, tuple[float, str]] = {}
        results = []
        for index in indices:
            value = workflow_input(index)
            at = time.monotonic()
            if tally is not None:
                tally.submitted(at)
            result = workflow(value).apply_async()
            started[result.id] = (at, value)
            results.append(result)

        def arrived(task_id: str, value: Any) -> None:
            at, given = started[task_id]
            ok = value == expected_output(given)
            if tally is not None:
                tally.finished(at, ok, "" if ok else f"got {value!r}", task_id)
            elif not ok:
                raise SystemExit(f"warm-up chain did not complete: {value!r}")

        ResultSet(results, app=app).join_native(
            timeout=timeout, propagate=False, callback=arrived, no_ack=True
        )

    run([-1], None, 60)
    emit("ready")
    if not sys.stdin.readline():
        raise SystemExit("harness went away")
    tally = Tally(args.count)
    tally.progress(force=True)
    deadline = time.monotonic() + args.timeout
    try:
        if args.sequential:
            for index in range(args.count):
                run([index], tally, max(deadline - time.monotonic(), 0.001))
        else:
            run(list(range(args.count)), tally, args.timeout)
    except (TimeoutError, CeleryTimeout):
        tally.stop_reason = f"deadline of {args.timeout:.0f}s reached"
    except Exception as exc:  # noqa: BLE001 - report, do not hide
        tally.stop_reason = f"{type(exc).__name__}: {exc}"
    tally.result()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.driver")
    parser.add_argument("kind", choices=("caroni-amqp", "caroni-embedded", "celery"))
    parser.add_argument("--workload", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--stall", type=float, default=0.0, help="0: the harness watches")
    parser.add_argument("--amqp", default="")
    parser.add_argument("--manager", default="")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.kind == "celery":
        celery_driver(args)
    elif args.kind == "caroni-amqp":
        asyncio.run(caroni_amqp(args))
    else:
        asyncio.run(caroni_embedded(args))


if __name__ == "__main__":
    main()
