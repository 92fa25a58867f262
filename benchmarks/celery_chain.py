"""The peer: the same three-step chain as a Celery chain (benchmark-only dependency).

A task runs a job type's bash body the way a Caroni agent does -- the input in the
environment as ``CARONI_ENV_<input name>``, standard output parsed as JSON -- and
returns the one output value, which Celery hands to the next task of the chain.

Configured from the environment, so the worker (``celery -A benchmarks.celery_chain
worker``) and the submitting driver agree:

- ``BENCH_CELERY_BROKER``: the AMQP URL (the benchmark's own RabbitMQ vhost);
- ``BENCH_WORKLOAD``: ``seed`` or ``orchestration`` (which job types file to read);
- ``BENCH_CELERY_DURABLE``: ``1`` for the durable settings (acks late, publisher
  confirms) beside Celery's defaults.

The result backend is ``rpc://``: results travel back over the same broker to the
submitting client's reply queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from celery import Celery, chain
from celery.signals import worker_ready

from benchmarks.common import CHAIN, load_bodies

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"

app = Celery(
    "caroni_bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

if os.environ.get("BENCH_CELERY_DURABLE") == "1":
    # A task is acknowledged after it ran (so a worker that dies loses none) and
    # every publish waits for the broker's confirm; messages are persistent either way.
    app.conf.update(task_acks_late=True, broker_transport_options={"confirm_publish": True})

BODIES = load_bodies(os.environ.get("BENCH_WORKLOAD", "seed"))


@app.task(name="bench.step")
def step(value: str, job_type: str) -> str:
    """Run ``job_type``'s body with ``value`` as its input; return its output value."""
    body = BODIES[job_type]
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as workdir:
        env = {
            "PATH": BASE_PATH,
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            f"CARONI_ENV_{body.input}": value,
        }
        proc = subprocess.run(
            ["bash", "-c", body.body, job_type],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{job_type} exited {proc.returncode}: {proc.stderr[-500:]!r}")
    return str(json.loads(proc.stdout)[body.output])


def workflow(value: str):  # type: ignore[no-untyped-def]
    """The chain foojob0 -> foojob1 -> foojob2 for one input."""
    first, *rest = CHAIN
    return chain(step.s(value, first), *(step.s(name) for name in rest))


@worker_ready.connect
def _announce(**_: object) -> None:
    # The harness waits for this line before it submits anything.
    print("BENCH-CELERY-WORKER-READY", flush=True)
    sys.stdout.flush()
