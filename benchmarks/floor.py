"""The floor: what spawning the job bodies alone costs on this machine.

Each body runs as ``bash -c BODY`` with its input in the environment, exactly as
an agent would start it, but with nothing around it: first one after the other
(the cost of one spawn, and so the shortest possible chain), then with as many
at once as there are cores (the most steps per second the machine allows).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from benchmarks.common import CHAIN, Body, load_bodies, workflow_input

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Floor:
    workload: str
    per_body_ms: dict[str, float]  # median ms of one spawn, one at a time
    chain_ms: float  # the three bodies one after the other: the latency floor
    sequential_steps_per_s: float
    parallel_steps_per_s: float  # with os.cpu_count() at once: the throughput floor
    parallelism: int


def _spawn(body: Body, value: str, home: str) -> tuple[float, str]:
    env = {
        "PATH": BASE_PATH,
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        f"CARONI_ENV_{body.input}": value,
    }
    started = time.perf_counter()
    proc = subprocess.run(
        ["bash", "-c", body.body, body.name],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started, proc.stdout.decode()


def measure_floor(workload: str, *, sequential: int, parallel_per_worker: int) -> Floor:
    """Spawn every body ``sequential`` times one by one, then ``parallel_per_worker``
    chained bodies on each of ``os.cpu_count()`` threads at once."""
    import json

    bodies = load_bodies(workload)
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as home:
        per_body: dict[str, float] = {}
        all_times: list[float] = []
        for name in CHAIN:
            times = [_spawn(bodies[name], workflow_input(i), home)[0] for i in range(sequential)]
            per_body[name] = statistics.median(times) * 1000
            all_times.extend(times)

        errors: list[BaseException] = []

        def worker(number: int) -> None:
            try:
                value = workflow_input(number)
                for count in range(parallel_per_worker):
                    body = bodies[CHAIN[count % len(CHAIN)]]
                    if count % len(CHAIN) == 0:
                        value = workflow_input(number * 100000 + count)
                    _, out = _spawn(body, value, home)
                    value = json.loads(out)[body.output]
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        if errors:
            raise errors[0]
    return Floor(
        workload=workload,
        per_body_ms=per_body,
        chain_ms=sum(per_body.values()),
        sequential_steps_per_s=len(all_times) / sum(all_times),
        parallel_steps_per_s=workers * parallel_per_worker / wall,
        parallelism=workers,
    )
