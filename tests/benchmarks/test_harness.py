"""Smoke test of the benchmark harness: a tiny embedded run prints the expected rows."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

pytest.importorskip("psutil")

from benchmarks.run import run  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.skipif(
    not Path("/usr/bin/jq").is_file() or shutil.which("bash") is None,
    reason="the harness needs bash and /usr/bin/jq",
)
def test_quick_embedded_run_prints_a_row_per_configuration(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    buffer = io.StringIO()
    results = run(
        [
            "--quick",
            "--wait-idle",
            "0",
            "--mode",
            "embedded",
            "--no-celery",
            "--workload",
            "orchestration",
            "--sizes",
            "1,3",
            "--latency-repeats",
            "2",
            "--out",
            str(out),
        ],
        console=Console(file=buffer, width=250),
    )

    assert [(r.system, r.mode, r.workload, r.size) for r in results] == [
        ("caroni", "embedded", "orchestration", 1),
        ("caroni", "embedded", "orchestration", 3),
    ]
    for result in results:
        assert result.ok, (result.error, result.failures, result.stop_reason)
        assert result.steps_per_s > 0
        assert result.messages_per_step > 0
        assert result.rss["caroni"] > 0
    printed = buffer.getvalue()
    assert "1 (x3 in turn, 2 runs)" in printed and "Floor" in printed
    assert len(results[0].repeat_latencies) == 2  # each repeat in a fresh directory
    markdown = out.read_text()
    assert "| caroni | embedded | orchestration | 3 | 3/3 |" in markdown
