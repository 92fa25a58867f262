"""Services and processes for one benchmark configuration: a throwaway RabbitMQ vhost,
throwaway PostgreSQL databases, OS processes with their logs, and what they cost
(CPU seconds and peak RSS, sampled with psutil)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psutil

from benchmarks.common import HarnessError

LOCAL_HOSTS = ("127.0.0.1", "localhost")
BODY_PROCESS_NAMES = frozenset({"bash", "sh", "jq", "tr"})


def _require_local(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise HarnessError(f"{what} must be on 127.0.0.1, not {host!r} ({url})")


# --- RabbitMQ ---------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    try:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)
    except FileNotFoundError as exc:
        raise HarnessError("rabbitmqctl not found: it creates the benchmark's vhosts") from exc
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"rabbitmqctl {' '.join(args)} failed: {exc.stderr!r}") from exc


@contextlib.contextmanager
def rabbit_vhost(base_url: str) -> Iterator[str]:
    """A fresh vhost on the local broker; yields its AMQP URL, deletes it afterwards."""
    _require_local(base_url, "RabbitMQ")
    parts = urlsplit(base_url)
    user = parts.username or "guest"
    vhost = f"caroni-bench-{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))
    finally:
        for attempt in range(3):
            try:
                _rabbitmqctl("delete_vhost", vhost)
                break
            except HarnessError as exc:
                if "not found" in str(exc).lower() or "no_such_vhost" in str(exc).lower():
                    break
                if attempt == 2:
                    print(f"warning: could not delete vhost {vhost}: {exc}", file=sys.stderr)
                time.sleep(1)


class PublishCounter:
    """Counts every message published in a vhost, at the broker: RabbitMQ's firehose
    tracer (``rabbitmqctl trace_on``) copies each publish to ``amq.rabbitmq.trace``,
    where a queue of ours keeps the copies. Tracing costs the broker a publish per
    message, so it is for the one-at-a-time runs, whose time is in the job bodies."""

    QUEUE = "caroni-bench-publishes"

    def __init__(self, amqp_url: str) -> None:
        import amqp  # py-amqp, which Celery brings: a benchmark-only dependency

        parts = urlsplit(amqp_url)
        vhost = unquote(parts.path[1:]) or "/"
        _rabbitmqctl("trace_on", "-p", vhost)
        self._connection = amqp.Connection(
            host=f"{parts.hostname}:{parts.port or 5672}",
            userid=parts.username or "guest",
            password=parts.password or "guest",
            virtual_host=vhost,
        )
        self._connection.connect()
        self._channel = self._connection.channel()
        self._channel.queue_declare(self.QUEUE, exclusive=True)
        # publish.<exchange>: every publish, to any exchange (the default one too)
        self._channel.queue_bind(self.QUEUE, "amq.rabbitmq.trace", "publish.#")

    def reset(self) -> None:
        self._channel.queue_purge(self.QUEUE)

    def count(self, settle: float = 1.0) -> int:
        """Messages published since ``reset``; waits until the count stops moving
        (the copies arrive asynchronously), at most a few seconds."""
        last, deadline = -1, time.monotonic() + 10 * settle
        while time.monotonic() < deadline:
            _, count, _ = self._channel.queue_declare(self.QUEUE, passive=True)
            if count == last:
                return int(count)
            last = count
            time.sleep(settle)  # a pause between readings, not a synchronisation
        return int(last)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.close()


def check_rabbit(base_url: str) -> None:
    _require_local(base_url, "RabbitMQ")
    if shutil.which("rabbitmqctl") is None:
        raise HarnessError("rabbitmqctl not found: it creates the benchmark's vhosts")
    parts = urlsplit(base_url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 5672), timeout=3):
            pass
    except OSError as exc:
        raise HarnessError(f"RabbitMQ is not reachable at {base_url}: {exc}") from exc


# --- PostgreSQL -----------------------------------------------------------------------


class Postgres:
    """Creates throwaway databases through an admin URL and drops them on close."""

    def __init__(self, admin_url: str) -> None:
        _require_local(admin_url, "PostgreSQL")
        import psycopg

        self.admin_url = admin_url
        try:
            self._admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot use it"
            raise HarnessError(f"PostgreSQL is not reachable at {admin_url}: {exc}") from exc
        self._created: list[str] = []

    def create(self, label: str) -> str:
        name = f"caroni_bench_{label}_{uuid.uuid4().hex[:8]}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        parts = urlsplit(self.admin_url)
        return urlunsplit(("postgresql", parts.netloc, "/" + name, "", ""))

    def drop_all(self) -> None:
        for name in self._created:
            with contextlib.suppress(Exception):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()

    def close(self) -> None:
        self.drop_all()
        self._admin.close()


# --- processes ----------------------------------------------------------------------


class ManagedProcess:
    """An OS process started by the harness, its output going to a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.args,
            cwd=cwd,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first log line matching ``pattern``, or HarnessError after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if match := regex.search(line):
                    return match
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited ({self.proc.returncode}) before printing "
                    f"{pattern!r}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{self.name} did not print {pattern!r} within {timeout:.0f}s:\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL to its whole process group if it does not stop in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it left behind
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


# --- what processes cost -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds: the process itself, and its reaped children (job bodies)."""

    own: float = 0.0
    children: float = 0.0

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.own - other.own, self.children - other.children)


class Watched:
    """A process the harness measures; ``tree`` adds its long-lived descendants (a
    Celery worker's pool), leaving out short-lived job bodies."""

    def __init__(self, label: str, pid: int, *, tree: bool = False) -> None:
        self.label = label
        self.pid = pid
        self.tree = tree
        self.peak_rss = 0
        self._root = psutil.Process(pid)
        self._last_cpu = Cpu()

    def _processes(self) -> list[psutil.Process]:
        if not self.tree:
            return [self._root]
        processes = [self._root]
        with contextlib.suppress(psutil.Error):
            for child in self._root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.name() not in BODY_PROCESS_NAMES:
                        processes.append(child)
        return processes

    def cpu(self) -> Cpu:
        own = children = 0.0
        try:
            for process in self._processes():
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    own += times.user + times.system
                    children += times.children_user + times.children_system
        except psutil.Error:
            return self._last_cpu
        self._last_cpu = Cpu(own, children)
        return self._last_cpu

    def sample_rss(self) -> None:
        total = 0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        self.peak_rss = max(self.peak_rss, total)


def system_cpu(names: Sequence[str]) -> dict[int, float]:
    """CPU seconds so far of every process whose name is in ``names``, by pid."""
    found: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        info = process.info
        if info.get("name") in names and info.get("cpu_times") is not None:
            times = info["cpu_times"]
            found[process.pid] = times.user + times.system
    return found


def system_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle, so far."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


RABBIT_NAMES = ("beam.smp",)
POSTGRES_NAMES = ("postgres",)


class RssSampler:
    """Samples the peak RSS of watched processes in a background thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.watched: list[Watched] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def add(self, watched: Watched) -> Watched:
        watched.sample_rss()
        self.watched.append(watched)
        return watched

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for watched in list(self.watched):
                watched.sample_rss()
