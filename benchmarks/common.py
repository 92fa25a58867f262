"""What every part of the harness shares: workloads, inputs, expected outputs, statistics."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent

WORKLOADS = ("seed", "orchestration")
TEMPLATE = "test_simple"
TEMPLATE_INPUT = "start_message"
TEMPLATE_OUTPUT = "result"
STEPS_PER_WORKFLOW = 3  # test_simple: foojob0 -> foojob1 -> foojob2
CHAIN = ("foojob0", "foojob1", "foojob2")
JQ = "/usr/bin/jq"


class HarnessError(Exception):
    """The benchmark cannot run (missing tool, service down, bad option)."""


def job_types_path(workload: str) -> Path:
    if workload not in WORKLOADS:
        raise HarnessError(f"unknown workload {workload!r}; choose from {WORKLOADS}")
    return BENCH_DIR / f"job_types_{workload}.json"


@dataclass(frozen=True, slots=True)
class Body:
    """One job type of a workload: its bash body and its single input and output."""

    name: str
    body: str
    input: str
    output: str


def load_bodies(workload: str) -> dict[str, Body]:
    specs = json.loads(job_types_path(workload).read_text())
    return {
        spec["name"]: Body(spec["name"], spec["body"], spec["inputs"][0], spec["outputs"][0])
        for spec in specs
    }


def workflow_input(index: int) -> str:
    """The benchmark's inputs are plain alphanumeric (the orchestration bodies do not
    JSON-escape their input; see README)."""
    return f"caronirocks{index}"


def expected_output(value: str) -> str:
    """What the three-step chain makes of ``value`` (seed and orchestration alike)."""
    return f"prepend{value.upper()} append"


def check_jq() -> None:
    if not Path(JQ).is_file() or shutil.which("bash") is None:
        raise HarnessError(
            f"the seed workload's bodies call {JQ} (as users' job types do) and every body "
            "runs in bash: install jq and bash (e.g. `apt-get install jq`)"
        )


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
