"""Repeats of a benchmark configuration fold into one row."""

from __future__ import annotations

from benchmarks.report import RunResult


def result(latencies: list[float], broker: float | None = 30.0) -> RunResult:
    return RunResult(
        "caroni",
        "embedded",
        "seed",
        1,
        count=len(latencies),
        completed=len(latencies),
        span=sum(latencies),
        latencies=latencies,
        cpu={"caroni": 1.0},
        rss={"caroni": 100},
        broker_messages=broker,
    )


def test_repeats_add_up_and_report_the_median_of_their_percentiles() -> None:
    # Three runs whose medians are 0.1, 0.3 and 0.2 s; pooled, the median would be 0.2
    # too, so the highest values tell the two ways apart.
    runs = [[0.1, 0.1, 0.1, 0.9], [0.3, 0.3, 0.3, 0.4], [0.2, 0.2, 0.2, 0.5]]
    merged = result(runs[0]).combined(result(runs[1])).combined(result(runs[2], None))
    assert merged.count == merged.completed == 12
    assert merged.repeat_latencies == runs
    assert merged.latency_ms(50) == 200.0
    assert round(merged.latency_ms(100)) == 500  # the median of 0.9, 0.4 and 0.5
    assert merged.cpu == {"caroni": 3.0} and merged.rss == {"caroni": 100}
    assert merged.broker_messages is None  # one repeat did not count them
    assert merged.size_label == "1 (x4 in turn, 3 runs)"


def test_a_single_run_reports_its_own_percentiles() -> None:
    single = result([0.1, 0.2, 0.3])
    assert single.latency_ms(50) == 200.0
    assert single.size_label == "1 (x3 in turn)"
