"""Chaos harness: nothing lost, nothing stuck.

A manager and two agents run as OS processes on RabbitMQ (a vhost of their own),
each node with a PostgreSQL database of its own. Many workflows of the demo
template ``fan_out_fan_in`` are submitted, each with a distinct random input, so
that data routed to the wrong job would show as a wrong output. While they run,
each node process is SIGKILLed once at a random moment and started again shortly
after (same database, same command), and the RabbitMQ application is restarted once
(``rabbitmqctl stop_app`` / ``start_app``: its durable state survives, and the
nodes must reconnect by themselves).

Progress and results are read straight from the nodes' databases (the manager's
``workflows``, the agents' ``jobs``, every node's ``dead_letters`` and ``outbox``),
never from a reply queue that a broker restart would take away.

A quarter of the workflows is held back and submitted only once every event has
struck, so that nodes, however fast, cannot finish the run before the chaos.

The run passes when every workflow completed with the correct output within the
timeout. Job bodies that ran more than once (allowed after an agent crash) and
dead letters are counted and shown. Everything the run creates (processes, vhost,
databases) is removed at the end, whatever happens; the broker application is
always started again.

    .venv/bin/python -m tests.chaos.chaos [--workflows 200] [--seed N] [--timeout S]

Exit code 0 on pass, 1 on fail. ``tests/chaos/test_chaos.py`` runs a smaller
version of the same function in CI.

The RabbitMQ restart stops the whole broker application for a few seconds, so
anything else using the local broker at that moment sees it go away too
(``--no-broker-restart`` leaves the broker alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.processes import NodeProcess

RABBIT_HOST = "127.0.0.1"
RABBIT_PORT = 5672
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

TEMPLATE = "fan_out_fan_in"
INPUT_NAME = "start_text"
OUTPUT_NAME = "result"
STEPS_PER_WORKFLOW = 5
FINISHED_STATES = ("completed", "failed", "cancelled")

MANAGER_READY = r"manager key: (wf\.manager\.\S+)"
AGENT_READY = r"agent key: (wf\.agent\.\S+)"
AGENTS = ("agent-1", "agent-2")
BROKER = "rabbitmq"

START_TIMEOUT = 90.0  # a node process prints its key within this
POLL_INTERVAL = 0.5  # how often the databases are read while waiting

Out = Callable[[str], None]


class HarnessError(Exception):
    """The harness itself could not do its job (a service missing, a node not starting)."""


def expected_result(text: str) -> str:
    """What ``fan_out_fan_in`` makes of ``text``: halves shouted and reversed, framed."""
    half = len(text) // 2
    return "[" + text[:half].upper() + "+" + text[half:][::-1] + "]"


def make_inputs(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct random lower-case texts of varied lengths."""
    alphabet = string.ascii_lowercase + string.digits
    seen: set[str] = set()
    texts: list[str] = []
    while len(texts) < count:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(6, 24)))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


# --- options and results ------------------------------------------------------------------


@dataclass
class ChaosOptions:
    """One chaos run. The defaults are the full run of the issue."""

    workflows: int = 200
    seed: int | None = None  # None: a random seed (printed, so a run can be repeated)
    timeout: float = 900.0  # for every workflow to finish, from the first submission
    kill_nodes: bool = True  # SIGKILL and restart each node once
    restart_broker: bool = True  # restart the RabbitMQ application once
    # Chaos strikes when a random share of the jobs in this range is done.
    window: tuple[float, float] = (0.05, 0.6)
    # This share of the workflows is submitted only once every chaos event has struck,
    # so that however fast the nodes are, the run cannot end before the chaos does.
    # Must leave the window's shares of the jobs reachable without them.
    reserve: float = 0.25
    node_down: tuple[float, float] = (0.5, 3.0)  # seconds a killed node stays down
    broker_down: tuple[float, float] = (1.0, 4.0)  # seconds the broker stays stopped
    slots: int = 2  # jobs each agent runs at once
    manager_args: tuple[str, ...] = ()  # extra `caroni manager` options
    verbose: int = 0  # -v given to every node
    log_dir: Path | None = None  # keep node logs here (default: temp, kept on failure)
    progress_every: float = 2.0  # seconds between progress lines
    settle_timeout: float = 30.0  # after the last workflow: outboxes and queues drain


@dataclass
class ChaosEvent:
    """One planned fault: what, at which share of jobs done, and what happened."""

    target: str  # "manager", "agent-1", "agent-2" or "rabbitmq"
    threshold: float  # strikes once this share of the jobs is done
    jitter: float  # and this many seconds later
    down_for: float  # seconds until the node or broker is started again
    struck_at: float | None = None  # seconds since the first submission
    progress_at_strike: float | None = None
    finished_at_strike: int | None = None  # workflows finished when it struck
    back_at: float | None = None  # ready again (node printed its key, broker started)
    note: str = ""

    def describe(self) -> str:
        what = "restart" if self.target == BROKER else "SIGKILL"
        if self.struck_at is None:
            return f"{what} {self.target}: did not strike ({self.note or 'run ended first'})"
        text = (
            f"{what} {self.target} at {self.struck_at:6.1f}s "
            f"(jobs {100 * (self.progress_at_strike or 0):.0f}% done, "
            f"{self.finished_at_strike} workflows finished)"
        )
        if self.back_at is not None:
            text += f", back at {self.back_at:.1f}s"
        else:
            text += ", never came back"
        return text + (f" [{self.note}]" if self.note else "")


@dataclass
class ChaosReport:
    """What a run found; ``passed`` when every workflow completed with the right output."""

    seed: int
    workflows: int
    correct: int = 0
    wrong: list[tuple[str, str, str]] = field(default_factory=list)  # id, got, expected
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # id, state, reason
    unfinished: list[tuple[str, str, str]] = field(default_factory=list)  # id, state, detail
    missing: list[str] = field(default_factory=list)  # submitted, not in the manager's db
    jobs: int = 0
    jobs_run_again: int = 0  # jobs whose body started more than once
    extra_runs: int = 0  # body starts beyond the first, summed
    jobs_by_agent: dict[str, int] = field(default_factory=dict)
    assigned_jobs: int = 0  # jobs placed under claims (the rest by offers)
    dead_letters: dict[str, Counter[str]] = field(default_factory=dict)
    outbox_left: dict[str, int] = field(default_factory=dict)
    queues_left: dict[str, int] | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    events: list[ChaosEvent] = field(default_factory=list)
    duration: float | None = None  # first submission to last workflow finished
    elapsed: float = 0.0  # the whole run, set-up and clean-up included
    timed_out: bool = False
    errors: list[str] = field(default_factory=list)
    log_dir: str = ""

    @property
    def passed(self) -> bool:
        return not self.errors and self.correct == self.workflows

    @property
    def dead_letter_total(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.dead_letters.values())

    def summary(self) -> str:
        lines = [
            f"chaos run: {self.workflows} {TEMPLATE} workflows, seed {self.seed}",
            "events:",
            *(f"  {event.describe()}" for event in self.events),
        ]
        if not self.events:
            lines.append("  (none)")
        lines.append(
            f"workflows completed with correct outputs: {self.correct}/{self.workflows}"
            + (" (timed out)" if self.timed_out else "")
        )
        for workflow_id, got, expected in self.wrong[:20]:
            lines.append(f"  WRONG {workflow_id}: got {got!r}, expected {expected!r}")
        for workflow_id, state, reason in self.failed[:20]:
            lines.append(f"  {state.upper()} {workflow_id}: {reason}")
        for workflow_id, state, detail in self.unfinished[:20]:
            lines.append(f"  STUCK {workflow_id} ({state}): {detail}")
        if self.missing:
            lines.append(f"  MISSING (never reached the manager's db): {len(self.missing)}")
        shown = len(self.wrong[:20]) + len(self.failed[:20]) + len(self.unfinished[:20])
        hidden = len(self.wrong) + len(self.failed) + len(self.unfinished) - shown
        if hidden > 0:
            lines.append(f"  ... and {hidden} more")
        per_agent = ", ".join(f"{name} {count}" for name, count in self.jobs_by_agent.items())
        lines.append(
            f"job bodies run more than once: {self.jobs_run_again} job(s), "
            f"{self.extra_runs} extra run(s), of {self.jobs} jobs ({per_agent}); "
            f"{self.assigned_jobs} assigned under claims"
        )
        lines.append(
            f"dead letters: {self.dead_letter_total} ("
            + ", ".join(f"{node} {sum(c.values())}" for node, c in self.dead_letters.items())
            + ")"
        )
        for node, reasons in self.dead_letters.items():
            for reason, count in reasons.most_common():
                lines.append(f"  {node}: {count} x {reason}")
        if self.outbox_left and any(self.outbox_left.values()):
            lines.append(f"outbox rows left unpublished: {self.outbox_left}")
        if self.queues_left is not None and any(self.queues_left.values()):
            lines.append(f"messages left in queues: {self.queues_left}")
        bad_exits = {node: code for node, code in self.exit_codes.items() if code != 0}
        if bad_exits:
            lines.append(f"nodes that did not stop cleanly on SIGTERM: {bad_exits}")
        for error in self.errors:
            lines.append(f"error: {error}")
        duration = "n/a" if self.duration is None else f"{self.duration:.1f}s"
        lines.append(
            f"duration: {duration} from first submission to last workflow finished "
            f"({self.elapsed:.1f}s in all)"
        )
        if self.log_dir:
            lines.append(f"node logs: {self.log_dir}")
        lines.append(f"RESULT: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


_HEX_ID = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\b")
_NODE_KEY = re.compile(r"\bwf\.(manager|agent|client)\.[0-9A-Za-z_-]+")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")


def reason_group(type_name: str, reason: str) -> str:
    """A dead letter's reason with ids and numbers blanked, so alike ones group."""
    text = _HEX_ID.sub("<id>", reason)
    text = _NODE_KEY.sub(lambda m: f"wf.{m.group(1)}.<id>", text)
    text = _NUMBER.sub("<n>", text)
    return f"{type_name or 'delivery'}: {text}"


# --- services: the broker and the databases ---------------------------------------------


def _rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    try:
        result = subprocess.run(
            ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise HarnessError("rabbitmqctl not found (it manages the chaos run's vhost)") from exc
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"rabbitmqctl {' '.join(args)} failed: {exc.stderr.strip()}") from exc
    return result.stdout


def services_missing() -> str:
    """Why a chaos run cannot happen here ("" when RabbitMQ and PostgreSQL are ready)."""
    missing = []
    try:
        with socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=2):
            pass
        if shutil.which("rabbitmqctl") is None:
            missing.append("rabbitmqctl")
    except OSError:
        missing.append(f"RabbitMQ on {RABBIT_HOST}:{RABBIT_PORT}")
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5).close()
    except Exception:  # noqa: BLE001 - any failure means "not available"
        missing.append("PostgreSQL on 127.0.0.1:5432")
    return ", ".join(missing)


class Services:
    """The run's own vhost and databases on the local services, and the broker's life.

    ``cleanup`` undoes everything and is safe to call whatever state the run is in;
    above all it starts the broker application again if the run stopped it.
    """

    def __init__(self) -> None:
        self.vhost = ""
        self.databases: list[str] = []
        self._admin: psycopg.Connection[Any] | None = None
        self.broker_stopped = False

    def create_vhost(self) -> str:
        vhost = f"caroni-chaos-{uuid.uuid4().hex[:12]}"
        _rabbitmqctl("add_vhost", vhost)
        self.vhost = vhost
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"

    def create_database(self) -> str:
        """A fresh database; returns its plain ``postgresql://`` URL."""
        if self._admin is None:
            self._admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
        name = f"caroni_chaos_{uuid.uuid4().hex[:12]}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    def stop_broker(self) -> None:
        self.broker_stopped = True  # before: if stop_app half-works we still start it
        _rabbitmqctl("stop_app")

    def start_broker(self) -> None:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup", "--timeout", "120", timeout=150)
        self.broker_stopped = False

    def queue_depths(self) -> dict[str, int]:
        """Messages (ready + unacked) in each queue of the run's vhost."""
        text = _rabbitmqctl(
            "list_queues", "-p", self.vhost, "name", "messages", "--formatter", "json", "-q"
        )
        return {row["name"]: int(row["messages"]) for row in json.loads(text or "[]")}

    def cleanup(self) -> list[str]:
        """Undo everything; returns what could not be undone."""
        problems = []
        if self.broker_stopped:
            try:
                self.start_broker()
            except HarnessError as exc:
                problems.append(f"could not start the broker again: {exc}")
        if self.vhost:
            try:
                _rabbitmqctl("delete_vhost", self.vhost)
                self.vhost = ""
            except HarnessError as exc:
                problems.append(str(exc))
        if self.databases:
            try:
                if self._admin is None or self._admin.closed:
                    self._admin = psycopg.connect(
                        POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5
                    )
                for name in list(self.databases):
                    self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    self.databases.remove(name)
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning
                problems.append(f"could not drop databases {self.databases}: {exc}")
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        return problems


# --- node processes ---------------------------------------------------------------------------


def _lists_option(command: str, option: str) -> bool:
    """Whether ``caroni <command> --help`` mentions ``option``."""
    result = subprocess.run(
        [sys.executable, "-m", "caroni", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    return re.search(rf"(^|\s){re.escape(option)}(\s|$|,)", result.stdout, re.M) is not None


class NodeRunner:
    """One node: its command line, its current process and every process it has had."""

    def __init__(self, name: str, args: Sequence[str], ready: str, db_url: str, cwd: Path) -> None:
        self.name = name
        self.args = list(args)
        self.ready = ready
        self.db_url = db_url
        self.cwd = cwd
        self.process: NodeProcess | None = None
        self.incarnations: list[NodeProcess] = []
        self.up = False

    def start(self) -> str:
        """Start a process with the node's command; returns the key it printed."""
        # A new NodeProcess each time: each has its own output queue, so waiting for
        # the ready line never matches a line of the process before.
        process = NodeProcess(self.args, cwd=self.cwd)
        self.process = process
        self.incarnations.append(process)
        process.start()
        try:
            key = process.wait_for_line(self.ready, timeout=START_TIMEOUT).group(1)
        except AssertionError as exc:
            raise HarnessError(f"{self.name} did not start: {exc}") from exc
        self.up = True
        return key

    def kill(self) -> None:
        self.up = False
        if self.process is not None and self.process.proc is not None:
            self.process.kill()

    def stop(self) -> int | None:
        self.up = False
        if self.process is None or self.process.proc is None:
            return None
        return self.process.stop(timeout=30)

    def write_logs(self, directory: Path) -> None:
        for number, process in enumerate(self.incarnations, start=1):
            path = directory / f"{self.name}.{number}.log"
            code = process.proc.returncode if process.proc is not None else None
            header = f"# {' '.join(process.args)}\n# exit code: {code}\n"
            path.write_text(header + "\n".join(process.lines) + "\n")


# --- reading the nodes' databases ---------------------------------------------------------


class Observer:
    """Reads the nodes' databases (autocommit, one connection each)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self._conns: dict[str, psycopg.Connection[Any]] = {}

    def _query(self, node: str, sql: str) -> list[tuple[Any, ...]]:
        conn = self._conns.get(node)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.urls[node], autocommit=True, connect_timeout=5)
            self._conns[node] = conn
        try:
            return list(conn.execute(sql).fetchall())
        except psycopg.OperationalError:
            conn.close()
            raise

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def workflow_states(self) -> Counter[str]:
        rows = self._query("manager", "SELECT state, count(*) FROM workflows GROUP BY state")
        return Counter({state: count for state, count in rows})

    def jobs_completed(self) -> int:
        return sum(
            self._query(agent, "SELECT count(*) FROM jobs WHERE status = 'completed'")[0][0]
            for agent in AGENTS
        )

    def workflows(self) -> dict[str, tuple[str, str, dict[str, Any]]]:
        rows = self._query("manager", "SELECT id, state, reason, doc FROM workflows")
        return {row[0]: (row[1], row[2], json.loads(row[3])) for row in rows}

    def job_runs(self, agent: str) -> tuple[int, int, int]:
        """(jobs, jobs whose body started more than once, extra starts)."""
        row = self._query(
            agent,
            "SELECT count(*),"
            " count(*) FILTER (WHERE (doc::json->>'runs')::int > 1),"
            " coalesce(sum(greatest((doc::json->>'runs')::int - 1, 0)), 0)"
            " FROM jobs",
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    def assigned_jobs(self, agent: str) -> int:
        """Jobs the agent took under a claim."""
        query = "SELECT count(*) FROM jobs WHERE claim_uuid IS NOT NULL"
        return int(self._query(agent, query)[0][0])

    def dead_letters(self, node: str) -> Counter[str]:
        rows = self._query(node, "SELECT type_name, reason FROM dead_letters")
        return Counter(reason_group(type_name, reason) for type_name, reason in rows)

    def outbox_rows(self, node: str) -> int:
        return int(self._query(node, "SELECT count(*) FROM outbox")[0][0])


def describe_stuck(doc: dict[str, Any]) -> str:
    """Where a workflow that did not finish stands: each unfinished step's attempt."""
    parts = []
    for name, step in doc.get("steps", {}).items():
        if step.get("state") == "completed":
            continue
        attempts = step.get("attempts") or []
        if not attempts:
            parts.append(f"{name}={step.get('state')}")
            continue
        current = attempts[-1]
        agent = (current.get("agent_key") or "-").rsplit(".", 1)[-1][:8]
        job = (current.get("job_uuid") or "-")[:8]
        info = current.get("status_info") or current.get("reason") or ""
        parts.append(
            f"{name}={step.get('state')} (attempt {current.get('number')} "
            f"{current.get('state')}, agent {agent}, job {job}"
            + (f", {info[:60]}" if info else "")
            + ")"
        )
    return "; ".join(parts) or "every step completed, workflow not"


# --- the run --------------------------------------------------------------------------------


class _Run:
    """State shared by the monitor loop and the chaos tasks of one run."""

    def __init__(self, options: ChaosOptions, report: ChaosReport, out: Out) -> None:
        self.options = options
        self.report = report
        self.out = out
        self.services = Services()
        self.nodes: dict[str, NodeRunner] = {}
        self.observer: Observer | None = None
        self.progress = 0.0  # share of the jobs done
        self.finished = 0  # workflows in a final state
        self.ended = False  # every workflow finished, or the run gave up
        self.changed = asyncio.Condition()
        # Nodes start only while the broker runs, and the broker stops only while no
        # node is starting: a node must survive a broker restart, but one that is
        # still starting may fail to (that would be a test of the harness, not of it).
        self.gate = asyncio.Condition()
        self.starting = 0
        self.broker_up = True
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def wait_for_progress(self, threshold: float) -> bool:
        """Wait until ``threshold`` of the jobs are done; False if the run ended first."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.ended or self.progress >= threshold)
        return not self.ended

    def _mark(self, event: ChaosEvent) -> None:
        event.struck_at = self.now()
        event.progress_at_strike = self.progress
        event.finished_at_strike = self.finished

    async def node_event(self, event: ChaosEvent) -> None:
        node = self.nodes[event.target]
        if not await self.wait_for_progress(event.threshold):
            return
        await asyncio.sleep(event.jitter)  # the chaos schedule: a random moment
        if self.ended:
            return
        node.kill()
        self._mark(event)
        self.out(f"[{self.now():6.1f}s] SIGKILL {event.target}")
        await asyncio.sleep(event.down_for)  # the chaos schedule: how long it stays down
        async with self.gate:
            await self.gate.wait_for(lambda: self.broker_up)
            self.starting += 1
        try:
            await asyncio.to_thread(node.start)
        finally:
            async with self.gate:
                self.starting -= 1
                self.gate.notify_all()
        event.back_at = self.now()
        self.out(f"[{self.now():6.1f}s] {event.target} restarted")

    async def submit_reserve(
        self, amqp_url: str, manager_key: str, reserve: list[tuple[uuid.UUID, str]]
    ) -> None:
        """Submit the workflows held back, once every chaos event has struck (and the
        broker runs)."""
        events = self.report.events
        async with self.changed:  # the monitor notifies after every look
            await self.changed.wait_for(
                lambda: self.ended or all(event.struck_at is not None for event in events)
            )
        async with self.gate:
            await self.gate.wait_for(lambda: self.broker_up)
        if self.ended:
            return
        await _submit(amqp_url, manager_key, reserve)
        self.out(f"[{self.now():6.1f}s] submitted the {len(reserve)} workflows held back")

    async def broker_event(self, event: ChaosEvent) -> None:
        if not await self.wait_for_progress(event.threshold):
            return
        await asyncio.sleep(event.jitter)
        if self.ended:
            return
        async with self.gate:
            await self.gate.wait_for(lambda: self.starting == 0)
            self.broker_up = False
        self._mark(event)
        self.out(f"[{self.now():6.1f}s] rabbitmqctl stop_app")
        try:
            await asyncio.to_thread(self.services.stop_broker)
            await asyncio.sleep(event.down_for)  # the chaos schedule: broker down
            self.out(f"[{self.now():6.1f}s] rabbitmqctl start_app")
        finally:
            # Shielded: even a cancelled run must not leave the broker stopped
            # (Services.cleanup checks again).
            await asyncio.shield(asyncio.to_thread(self.services.start_broker))
        async with self.gate:
            self.broker_up = True
            self.gate.notify_all()
        event.back_at = self.now()
        self.out(f"[{self.now():6.1f}s] rabbitmq running again")

    def status_line(self, states: Counter[str]) -> str:
        total = self.options.workflows
        jobs = STEPS_PER_WORKFLOW * total
        running = sum(count for state, count in states.items() if state not in FINISHED_STATES)
        down = [name for name, node in self.nodes.items() if not node.up]
        if not self.broker_up:
            down.append(BROKER)
        return (
            f"[{self.now():6.1f}s] workflows: {states.get('completed', 0)}/{total} completed, "
            f"{states.get('failed', 0) + states.get('cancelled', 0)} failed, {running} running"
            f" ({states.get('stalled', 0)} stalled) | jobs done ~{int(self.progress * jobs)}/{jobs}"
            + (f" | down: {', '.join(down)}" if down else "")
        )


def plan_events(options: ChaosOptions, rng: random.Random) -> list[ChaosEvent]:
    targets: list[str] = []
    if options.kill_nodes:
        targets += ["manager", *AGENTS]
    if options.restart_broker:
        targets.append(BROKER)
    rng.shuffle(targets)
    # One event in each equal slice of the window, in random order, so that they
    # spread over the run instead of bunching (progress comes in bursts).
    low, high = options.window
    width = (high - low) / max(len(targets), 1)
    events = []
    for number, target in enumerate(targets):
        down = options.broker_down if target == BROKER else options.node_down
        start = low + number * width
        events.append(
            ChaosEvent(
                target=target,
                threshold=rng.uniform(start, start + width),
                jitter=rng.uniform(0.0, 2.0),
                down_for=rng.uniform(*down),
            )
        )
    return sorted(events, key=lambda event: event.threshold)


async def _submit(amqp_url: str, manager_key: str, ids_inputs: list[tuple[uuid.UUID, str]]) -> None:
    from caroni.client import Client
    from caroni.transport.amqp import AmqpSettings, AmqpTransport

    transport = AmqpTransport(AmqpSettings(url=amqp_url))
    await transport.connect()
    try:
        async with Client(transport, manager_key) as client:
            for start in range(0, len(ids_inputs), 50):
                chunk = ids_inputs[start : start + 50]
                await asyncio.gather(
                    *(
                        client.submit(
                            TEMPLATE,
                            {INPUT_NAME: text},
                            name=f"chaos-{start + number}",
                            workflow_id=workflow_id,
                        )
                        for number, (workflow_id, text) in enumerate(chunk)
                    )
                )
    finally:
        await transport.close()


async def _run_chaos(options: ChaosOptions, report: ChaosReport, out: Out, work: Path) -> None:
    run = _Run(options, report, out)
    rng = random.Random(report.seed)
    inputs = make_inputs(rng, options.workflows)
    ids_inputs = [(uuid.UUID(int=rng.getrandbits(128), version=4), text) for text in inputs]
    report.events = plan_events(options, rng)
    tasks: list[asyncio.Task[None]] = []
    try:
        amqp_url = await asyncio.to_thread(run.services.create_vhost)
        urls = {name: run.services.create_database() for name in ("manager", *AGENTS)}
        common = ["--amqp", amqp_url] + ["-v"] * options.verbose
        manager_args = ["manager", "--db", urls["manager"], "--demo-content", *common]
        if await asyncio.to_thread(_lists_option, "manager", "--http"):
            manager_args += ["--http", "none"]
        manager_args += list(options.manager_args)
        run.nodes["manager"] = NodeRunner(
            "manager", manager_args, MANAGER_READY, urls["manager"], work
        )
        agent_http = await asyncio.to_thread(_lists_option, "agent", "--http")
        for agent in AGENTS:
            workdir = work / f"{agent}-jobs"
            workdir.mkdir()
            args = ["agent", "--db", urls[agent], "--demo-content", "--name", agent]
            args += ["--slots", str(options.slots), "--workdir", str(workdir), *common]
            if agent_http:
                args += ["--http", "none"]
            run.nodes[agent] = NodeRunner(agent, args, AGENT_READY, urls[agent], work)
        out(f"starting a manager and two agents (vhost {run.services.vhost})")
        keys = await asyncio.gather(*(asyncio.to_thread(n.start) for n in run.nodes.values()))
        manager_key = keys[0]
        run.observer = Observer(urls)

        held = round(options.reserve * options.workflows) if report.events else 0
        first, reserve = ids_inputs[: len(ids_inputs) - held], ids_inputs[len(ids_inputs) - held :]
        run.t0 = time.monotonic()
        await _submit(amqp_url, manager_key, first)
        out(f"[{run.now():6.1f}s] submitted {len(first)} workflows to {manager_key}")
        for event in report.events:
            handler = run.broker_event if event.target == BROKER else run.node_event
            tasks.append(asyncio.create_task(handler(event)))
        if reserve:
            tasks.append(asyncio.create_task(run.submit_reserve(amqp_url, manager_key, reserve)))

        await _monitor(run, tasks)
        if not report.timed_out and not report.errors:
            await _settle(run)
        await _collect(run, ids_inputs)
    finally:
        run.ended = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name, node in run.nodes.items():
            try:
                report.exit_codes[name] = await asyncio.to_thread(node.stop)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                report.errors.append(f"stopping {name}: {exc}")
        if run.observer is not None:
            run.observer.close()
        report.errors += await asyncio.to_thread(run.services.cleanup)
        log_dir = options.log_dir or work / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for node in run.nodes.values():
            node.write_logs(log_dir)
        report.log_dir = str(log_dir)


async def _monitor(run: _Run, tasks: list[asyncio.Task[None]]) -> None:
    """Follow the workflows until all are finished (and chaos is over) or time is up."""
    options, report = run.options, run.report
    assert run.observer is not None
    observer = run.observer
    deadline = run.t0 + options.timeout
    next_line = 0.0
    jobs = STEPS_PER_WORKFLOW * options.workflows
    while True:
        try:
            states = await asyncio.to_thread(observer.workflow_states)
            done_jobs = await asyncio.to_thread(observer.jobs_completed)
        except psycopg.Error as exc:
            run.out(f"[{run.now():6.1f}s] reading the databases failed: {exc}")
            states, done_jobs = Counter(), int(run.progress * jobs)
        finished = sum(states.get(state, 0) for state in FINISHED_STATES)
        async with run.changed:
            run.progress = min(done_jobs / jobs, 1.0)
            run.finished = finished
            if finished >= options.workflows:
                run.ended = True  # chaos not struck yet will not strike now
                if report.duration is None:
                    report.duration = run.now()
            run.changed.notify_all()
        for task in list(tasks):
            if task.done() and not task.cancelled() and task.exception() is not None:
                report.errors.append(f"chaos step failed: {task.exception()}")
                tasks.remove(task)
        if time.monotonic() >= next_line or (run.ended and all(t.done() for t in tasks)):
            run.out(run.status_line(states))
            next_line = time.monotonic() + options.progress_every
        if report.errors:
            return
        if run.ended and all(task.done() for task in tasks):
            return
        if time.monotonic() >= deadline:
            report.timed_out = True
            run.out(f"[{run.now():6.1f}s] timed out after {options.timeout:.0f}s")
            return
        await asyncio.sleep(POLL_INTERVAL)  # polling the databases: nothing signals us


async def _settle(run: _Run) -> None:
    """After the last workflow: wait (bounded) for outboxes and queues to drain, so the
    dead letters counted include the late messages (kills of abandoned jobs and such)."""
    assert run.observer is not None
    observer = run.observer
    deadline = time.monotonic() + run.options.settle_timeout
    quiet = 0
    while time.monotonic() < deadline:
        try:
            outbox = 0
            for node in run.nodes:
                outbox += await asyncio.to_thread(observer.outbox_rows, node)
            queued = sum((await asyncio.to_thread(run.services.queue_depths)).values())
        except (psycopg.Error, HarnessError):
            outbox = queued = -1
        quiet = quiet + 1 if outbox == 0 and queued == 0 else 0
        if quiet >= 3:
            return
        await asyncio.sleep(POLL_INTERVAL)  # polling: nothing signals us


async def _collect(run: _Run, ids_inputs: list[tuple[uuid.UUID, str]]) -> None:
    """Read the final results from every node's database into the report."""
    assert run.observer is not None
    observer, report = run.observer, run.report
    try:
        stored = await asyncio.to_thread(observer.workflows)
        for workflow_id, text in ids_inputs:
            row = stored.get(workflow_id.hex)
            if row is None:
                report.missing.append(workflow_id.hex)
                continue
            state, reason, doc = row
            if state == "completed":
                got = doc.get("outputs", {}).get(OUTPUT_NAME, "<no output>")
                expected = expected_result(text)
                if doc.get("inputs", {}).get(INPUT_NAME) != text:
                    report.wrong.append((workflow_id.hex, f"input {doc.get('inputs')}", text))
                elif got == expected:
                    report.correct += 1
                else:
                    report.wrong.append((workflow_id.hex, got, expected))
            elif state in FINISHED_STATES:
                report.failed.append((workflow_id.hex, state, reason))
            else:
                detail = (f"{reason}; " if reason else "") + describe_stuck(doc)
                report.unfinished.append((workflow_id.hex, state, detail))
        for agent in AGENTS:
            jobs, again, extra = await asyncio.to_thread(observer.job_runs, agent)
            report.jobs += jobs
            report.jobs_by_agent[agent] = jobs
            report.jobs_run_again += again
            report.extra_runs += extra
            report.assigned_jobs += await asyncio.to_thread(observer.assigned_jobs, agent)
        for node in run.nodes:
            report.dead_letters[node] = await asyncio.to_thread(observer.dead_letters, node)
            report.outbox_left[node] = await asyncio.to_thread(observer.outbox_rows, node)
        with contextlib.suppress(HarnessError):
            report.queues_left = await asyncio.to_thread(run.services.queue_depths)
    except psycopg.Error as exc:
        report.errors.append(f"reading the results failed: {exc}")


def run_chaos(options: ChaosOptions, out: Out = print) -> ChaosReport:
    """One chaos run, start to finish (set-up, chaos, checks, clean-up); see the module doc."""
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**9)
    report = ChaosReport(seed=seed, workflows=options.workflows)
    started = time.monotonic()
    missing = services_missing()
    if missing:
        report.errors.append(f"not available: {missing}")
        return report
    if options.window[1] >= 1.0 - options.reserve:
        report.errors.append(
            f"the chaos window must end below {1.0 - options.reserve:.2f} of the jobs: the "
            f"{options.reserve:.0%} of workflows held back until the chaos struck add the rest"
        )
        return report
    out(
        f"chaos run: {options.workflows} workflows, seed {seed}, timeout {options.timeout:.0f}s"
        f", kill nodes: {options.kill_nodes}, restart broker: {options.restart_broker}"
    )
    work = Path(tempfile.mkdtemp(prefix="caroni-chaos-"))
    try:
        asyncio.run(_run_chaos(options, report, out, work))
    except HarnessError as exc:
        report.errors.append(str(exc))
    except KeyboardInterrupt:
        report.errors.append("interrupted")
    except Exception as exc:  # noqa: BLE001 - a harness bug still gets a report
        report.errors.append(f"harness failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        report.elapsed = time.monotonic() - started
        if options.log_dir is None:
            if report.passed:
                shutil.rmtree(work, ignore_errors=True)
                report.log_dir = ""
            else:
                # Keep the node logs of a failed run; drop the jobs' working dirs.
                for agent in AGENTS:
                    shutil.rmtree(work / f"{agent}-jobs", ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.chaos",
        description="Kill every Caroni node and restart RabbitMQ while workflows run; "
        "check that every workflow completes with the right output.",
    )
    parser.add_argument("--workflows", type=int, default=200, help="how many (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds for all to finish (default 900)"
    )
    parser.add_argument("--no-kill", action="store_true", help="do not kill the nodes")
    parser.add_argument("--no-broker-restart", action="store_true", help="do not restart RabbitMQ")
    parser.add_argument(
        "--window",
        type=_range,
        default=(0.05, 0.6),
        help="chaos strikes between these shares of jobs done (default 0.05,0.6)",
    )
    parser.add_argument("--slots", type=int, default=2, help="jobs each agent runs at once")
    parser.add_argument(
        "--manager-arg",
        action="append",
        default=[],
        help="extra option for `caroni manager` (repeatable), e.g. --manager-arg=--max-attempts=3",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep node logs here")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v for the nodes")
    args = parser.parse_args(argv)
    options = ChaosOptions(
        workflows=args.workflows,
        seed=args.seed,
        timeout=args.timeout,
        kill_nodes=not args.no_kill,
        restart_broker=not args.no_broker_restart,
        window=args.window,
        slots=args.slots,
        manager_args=tuple(args.manager_arg),
        verbose=args.verbose,
        log_dir=args.log_dir,
    )
    # A terminated harness cleans up like an interrupted one (above all, it starts
    # the broker again if it had stopped it).
    signal.signal(signal.SIGTERM, _interrupt)
    report = run_chaos(options, out=lambda line: print(line, flush=True))
    print()
    print(report.summary(), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
