"""Results of a benchmark run: the figures, the tables (rich and markdown), the targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import STEPS_PER_WORKFLOW, percentile
from benchmarks.floor import Floor

# Short names of the processes (and shared services) whose CPU and memory we report.
CPU_ORDER = ("manager", "agent", "caroni", "worker", "jobs", "client", "rabbitmq", "postgres")
CPU_SHORT = {
    "manager": "mgr",
    "agent": "agt",
    "caroni": "caroni",
    "worker": "wrk",
    "jobs": "jobs",
    "client": "cli",
    "rabbitmq": "mq",
    "postgres": "pg",
}


@dataclass
class RunResult:
    """One configuration: a system, a mode, a workload and a size."""

    system: str  # "caroni", "celery" or "celery durable"
    mode: str  # "amqp" or "embedded"
    workload: str
    size: int  # workflows at once; 1 means one at a time (``count`` of them)
    count: int
    completed: int = 0
    failed: int = 0
    incomplete: int = 0
    span: float = 0.0  # first submit to last completion, seconds
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds in the measured phase
    machine_cpu: float = 0.0
    cores: int = 1
    rss: dict[str, int] = field(default_factory=dict)  # peak bytes
    messages: dict[str, int] = field(default_factory=dict)  # message_log rows by node/direction
    broker_messages: float | None = None  # messages through the broker (None: not measured)
    broker_messages_note: str = ""
    stop_reason: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    # Each repeat's latencies, when the configuration ran more than once (see combined)
    repeat_latencies: list[list[float]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.system, self.mode, self.workload, self.size)

    @property
    def size_label(self) -> str:
        if self.size != 1:
            return str(self.size)
        if len(self.repeat_latencies) > 1:
            runs = len(self.repeat_latencies)
            return f"1 (x{self.count // runs} in turn, {runs} runs)"
        return f"1 (x{self.count} in turn)"

    def combined(self, repeat: RunResult) -> RunResult:
        """This configuration and a repeat of it as one result: counts, spans, CPU and
        messages add up, peaks are the higher, and latency percentiles become the
        medians of the repeats' own."""
        runs = (self.repeat_latencies or [self.latencies]) + (
            repeat.repeat_latencies or [repeat.latencies]
        )

        def added(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            return {key: a.get(key, 0) + b.get(key, 0) for key in a | b}

        broker = None
        if self.broker_messages is not None and repeat.broker_messages is not None:
            broker = self.broker_messages + repeat.broker_messages
        return replace(
            self,
            count=self.count + repeat.count,
            completed=self.completed + repeat.completed,
            failed=self.failed + repeat.failed,
            incomplete=self.incomplete + repeat.incomplete,
            span=self.span + repeat.span,
            latencies=self.latencies + repeat.latencies,
            repeat_latencies=runs,
            cpu=added(self.cpu, repeat.cpu),
            machine_cpu=self.machine_cpu + repeat.machine_cpu,
            rss={
                key: max(self.rss.get(key, 0), repeat.rss.get(key, 0))
                for key in self.rss | repeat.rss
            },
            messages=added(self.messages, repeat.messages),
            broker_messages=broker,
            broker_messages_note=self.broker_messages_note or repeat.broker_messages_note,
            stop_reason="; ".join(r for r in (self.stop_reason, repeat.stop_reason) if r),
            failures=self.failures + repeat.failures,
            error="\n".join(e for e in (self.error, repeat.error) if e),
        )

    @property
    def steps(self) -> int:
        return self.completed * STEPS_PER_WORKFLOW

    @property
    def ok(self) -> bool:
        return not self.error and self.completed == self.count

    @property
    def workflows_per_s(self) -> float:
        return self.completed / self.span if self.span > 0 else math.nan

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.span if self.span > 0 else math.nan

    def latency_ms(self, pct: float) -> float:
        runs = [run for run in self.repeat_latencies if run]
        if len(runs) > 1:
            return statistics.median(percentile(run, pct) for run in runs) * 1000
        return percentile(self.latencies, pct) * 1000

    def cpu_ms_per_step(self, label: str) -> float:
        if label not in self.cpu or not self.steps:
            return math.nan
        return self.cpu[label] * 1000 / self.steps

    @property
    def machine_cpu_ms_per_step(self) -> float:
        return self.machine_cpu * 1000 / self.steps if self.steps else math.nan

    @property
    def background_share(self) -> float:
        """CPU used by other processes on the machine during the measured phase, as a
        share of all its cores (the broker's and database's CPU counts as ours)."""
        if self.span <= 0:
            return math.nan
        ours = sum(self.cpu.values())
        return max(self.machine_cpu - ours, 0.0) / (self.span * self.cores)

    @property
    def messages_per_step(self) -> float:
        if self.broker_messages is None or not self.steps:
            return math.nan
        return self.broker_messages / self.steps

    @property
    def system_rss(self) -> int:
        """Peak RSS of the system's own processes (not the submitting client)."""
        return sum(value for label, value in self.rss.items() if label != "client")

    def floor_share(self, floor: Floor | None) -> float:
        """Steps/s as a share of what the spawns allow (in turn: of the sequential floor)."""
        if floor is None:
            return math.nan
        allowed = floor.sequential_steps_per_s if self.size == 1 else floor.parallel_steps_per_s
        return self.steps_per_s / allowed

    @property
    def done_label(self) -> str:
        text = f"{self.completed}/{self.count}"
        if self.failed:
            text += f" ({self.failed} failed)"
        if self.incomplete:
            text += f" ({self.incomplete} unfinished)"
        if self.error:
            text += " ERROR"
        return text


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (a, b)) or not b:
        return "-"
    return f"{a / b:.2f}"


def cpu_cell(result: RunResult) -> str:
    parts = [
        f"{CPU_SHORT[label]} {_num(result.cpu_ms_per_step(label))}"
        for label in CPU_ORDER
        if label in result.cpu
    ]
    parts.append(f"all {_num(result.machine_cpu_ms_per_step)}")
    return " ".join(parts)


def rss_cell(result: RunResult) -> str:
    return " ".join(
        f"{CPU_SHORT.get(label, label)} {value / 2**20:.0f}"
        for label in CPU_ORDER
        if (value := result.rss.get(label)) is not None
    )


def msgs_cell(result: RunResult) -> str:
    text = _num(result.messages_per_step, 2)
    return text + ("*" if result.broker_messages_note else "")


RESULT_HEADERS = (
    "system",
    "mode",
    "workload",
    "workflows",
    "done",
    "wf/s",
    "steps/s",
    "% floor",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "msgs/step",
    "CPU ms/step",
    "peak RSS MB",
    "other load",
)


def result_rows(results: Sequence[RunResult], floors: dict[str, Floor]) -> list[list[str]]:
    rows = []
    for r in results:
        share = r.floor_share(floors.get(r.workload))
        rows.append(
            [
                r.system,
                r.mode,
                r.workload,
                r.size_label,
                r.done_label,
                _num(r.workflows_per_s),
                _num(r.steps_per_s),
                "-" if math.isnan(share) else f"{share:.0%}",
                _num(r.latency_ms(50)),
                _num(r.latency_ms(95)),
                _num(r.latency_ms(99)),
                msgs_cell(r),
                cpu_cell(r),
                rss_cell(r),
                "-" if math.isnan(r.background_share) else f"{r.background_share:.0%}",
            ]
        )
    return rows


RATIO_HEADERS = (
    "mode",
    "workload",
    "workflows",
    "wf/s & steps/s",
    "p50",
    "p95",
    "p99",
    "msgs/step",
    "machine CPU/step",
    "peak RSS",
)


def peer_of(result: RunResult, results: Sequence[RunResult]) -> RunResult | None:
    for other in results:
        if other.system == "celery" and (other.workload, other.size) == (
            result.workload,
            result.size,
        ):
            return other
    return None


def ratio_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        peer = peer_of(r, results) if r.system == "caroni" else None
        if peer is None:
            continue
        rows.append(
            [
                r.mode,
                r.workload,
                r.size_label,
                _ratio(r.steps_per_s, peer.steps_per_s),
                _ratio(r.latency_ms(50), peer.latency_ms(50)),
                _ratio(r.latency_ms(95), peer.latency_ms(95)),
                _ratio(r.latency_ms(99), peer.latency_ms(99)),
                _ratio(r.messages_per_step, peer.messages_per_step),
                _ratio(r.machine_cpu_ms_per_step, peer.machine_cpu_ms_per_step),
                _ratio(float(r.system_rss), float(peer.system_rss)),
            ]
        )
    return rows


FLOOR_HEADERS = (
    "workload",
    "ms per spawn (foojob0/1/2, one at a time)",
    "chain of 3 (latency floor) ms",
    "steps/s one at a time",
    "steps/s with N at once (throughput floor)",
)


def floor_rows(floors: dict[str, Floor]) -> list[list[str]]:
    return [
        [
            f.workload,
            " / ".join(f"{ms:.1f}" for ms in f.per_body_ms.values()),
            f"{f.chain_ms:.1f}",
            f"{f.sequential_steps_per_s:.1f}",
            f"{f.parallel_steps_per_s:.1f} (N={f.parallelism})",
        ]
        for f in floors.values()
    ]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    measured: str
    verdict: str  # "holds", "misses", "n/a"


def _find(results: Sequence[RunResult], *key: object) -> RunResult | None:
    for r in results:
        if r.key == key:
            return r
    return None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("holds" if ok else "MISSES")


def _unfinished(r: RunResult | None) -> tuple[bool | None, str]:
    """A run that was measured but completed nothing misses its target."""
    if r is None:
        return None, "not measured"
    why = r.stop_reason or (r.error.splitlines()[0] if r.error else "")
    why = why.split(" (")[0].rstrip(":")  # the details are listed under "Problems"
    return False, f"{r.completed}/{r.count} completed" + (f" ({why})" if why else "")


def targets(results: Sequence[RunResult], floors: dict[str, Floor]) -> list[Target]:
    """The issue's targets, checked against this run (n/a when not measured)."""
    found: list[Target] = []

    def usable(r: RunResult | None) -> bool:
        return r is not None and r.completed > 0 and not r.error

    for workload in ("seed", "orchestration"):
        for mode in ("amqp", "embedded"):
            r = _find(results, "caroni", mode, workload, 1)
            peer = _find(results, "celery", "amqp", workload, 1)
            if r is None:
                continue
            ok = None
            measured = "not measured"
            if usable(r) and usable(peer):
                assert r is not None and peer is not None
                ratio = r.latency_ms(50) / peer.latency_ms(50)
                ok = ratio <= 1.0 and r.ok
                measured = (
                    f"p50 {r.latency_ms(50):.0f} ms vs Celery {peer.latency_ms(50):.0f} ms "
                    f"(ratio {ratio:.2f})"
                )
            found.append(
                Target(f"latency, {workload}, {mode}: ratio <= 1.0", measured, _verdict(ok))
            )

    for size in (200, 2000):
        for mode in ("amqp", "embedded"):
            r = _find(results, "caroni", mode, "seed", size)
            if r is None:
                continue
            peer = _find(results, "celery", "amqp", "seed", size)
            share = r.floor_share(floors.get("seed"))
            ok, measured = _unfinished(r)
            if usable(r):
                assert r is not None
                ok = share >= 0.9 and r.ok
                measured = f"{r.steps_per_s:.1f} steps/s = {share:.0%} of floor"
                if usable(peer):
                    assert peer is not None
                    ok = ok and r.steps_per_s >= peer.steps_per_s
                    measured += f"; Celery {peer.steps_per_s:.1f} steps/s"
            found.append(
                Target(
                    f"seed {size} at once, {mode}: >= 90% of floor and >= Celery",
                    measured,
                    _verdict(ok),
                )
            )

    r = _find(results, "caroni", "amqp", "orchestration", 2000)
    peer = _find(results, "celery", "amqp", "orchestration", 2000)
    if r is not None:
        ok, measured = _unfinished(r)
        if not usable(peer):
            ok, measured = None, "Celery not measured"
        if usable(r) and usable(peer):
            assert r is not None and peer is not None
            ok = r.steps_per_s >= peer.steps_per_s and r.ok
            measured = f"{r.steps_per_s:.1f} vs Celery {peer.steps_per_s:.1f} steps/s"
        found.append(
            Target("orchestration 2000, amqp: >= Celery throughput", measured, _verdict(ok))
        )
    r = _find(results, "caroni", "embedded", "orchestration", 2000)
    if r is not None:
        ok, measured = _unfinished(r)
        if usable(r):
            assert r is not None
            share = r.floor_share(floors.get("orchestration"))
            ok = share >= 0.8 and r.ok
            measured = f"{r.steps_per_s:.1f} steps/s = {share:.0%} of floor"
        found.append(
            Target("orchestration 2000, embedded: >= 80% of floor", measured, _verdict(ok))
        )

    for workload in ("seed", "orchestration"):
        for mode in ("amqp", "embedded"):
            big = _find(results, "caroni", mode, workload, 2000)
            small = _find(results, "caroni", mode, workload, 200)
            if big is None:
                continue
            label = "manager" if mode == "amqp" else "caroni"
            rss = big.rss.get(label) or None
            ok = None if rss is None else rss < 300 * 2**20
            what = "manager" if mode == "amqp" else "whole embedded process"
            found.append(
                Target(
                    f"2000 in flight, {workload}, {mode}: {what} RSS < 300 MB",
                    "-" if rss is None else f"{rss / 2**20:.0f} MB",
                    _verdict(ok),
                )
            )
            ok, measured = _unfinished(big)
            if usable(big) and usable(small):
                assert big is not None and small is not None
                ratio = big.steps_per_s / small.steps_per_s
                ok = ratio >= 0.8 and big.ok
                measured = (
                    f"{big.steps_per_s:.1f} vs {small.steps_per_s:.1f} steps/s at 200 ({ratio:.0%})"
                )
            found.append(
                Target(
                    f"2000 in flight, {workload}, {mode}: throughput within 20% of 200",
                    measured,
                    _verdict(ok),
                )
            )
    return found


# --- rendering ------------------------------------------------------------------------


def _rich_table(title: str, headers: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def print_report(console: Console, results: Sequence[RunResult], floors: dict[str, Floor]) -> None:
    if floors:
        console.print(
            _rich_table("Floor: spawning the bodies alone", FLOOR_HEADERS, floor_rows(floors))
        )
    console.print(_rich_table("Results", RESULT_HEADERS, result_rows(results, floors)))
    ratios = ratio_rows(results)
    if ratios:
        console.print(
            _rich_table(
                "Caroni / Celery (throughput: > 1 is better; "
                "latency, messages, CPU, RSS: < 1 is better)",
                RATIO_HEADERS,
                ratios,
            )
        )
    checks = targets(results, floors)
    if checks:
        console.print(
            _rich_table(
                "Targets",
                ("target", "measured", "verdict"),
                [[t.name, t.measured, t.verdict] for t in checks],
            )
        )
    for r in results:
        if r.error or r.failures or r.stop_reason:
            console.print(f"[yellow]{r.system} {r.mode} {r.workload} {r.size_label}:[/]")
            if r.error:
                console.print(f"  error: {r.error}", markup=False)
            if r.stop_reason:
                console.print(f"  stopped: {r.stop_reason}", markup=False)
            for failure in r.failures[:5]:
                console.print(f"  failed {failure['id']}: {failure['why']}", markup=False)


def _md_table(headers: Sequence[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(results: Sequence[RunResult], floors: dict[str, Floor]) -> str:
    parts = []
    if floors:
        parts += [
            "### Floor: spawning the bodies alone",
            "",
            _md_table(FLOOR_HEADERS, floor_rows(floors)),
            "",
        ]
    parts += ["### Results", "", _md_table(RESULT_HEADERS, result_rows(results, floors)), ""]
    marked = sorted({r.broker_messages_note for r in results if r.broker_messages_note})
    if marked:
        parts += [f"msgs/step marked *: {'; '.join(marked)}.", ""]
    ratios = ratio_rows(results)
    if ratios:
        parts += [
            "### Caroni / Celery",
            "",
            "Throughput: above 1 means Caroni is faster. Latency, messages, CPU, RSS: "
            "below 1 means Caroni needs less.",
            "",
            _md_table(RATIO_HEADERS, ratios),
            "",
        ]
    checks = targets(results, floors)
    if checks:
        parts += [
            "### Targets",
            "",
            _md_table(
                ("target", "measured", "verdict"), [[t.name, t.measured, t.verdict] for t in checks]
            ),
            "",
        ]
    notes = []
    for r in results:
        if r.error or r.failures or r.stop_reason:
            note = f"- {r.system} {r.mode} {r.workload} {r.size_label}:"
            if r.error:
                note += f" error: {r.error.splitlines()[0] if r.error else ''}"
            if r.stop_reason:
                note += f" stopped: {r.stop_reason}."
            for failure in r.failures[:3]:
                note += f" failed {failure['id']}: {failure['why'][:200]}."
            notes.append(note)
    if notes:
        parts += ["### Problems", "", *notes, ""]
    return "\n".join(parts)
