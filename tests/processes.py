"""Running `caroni` commands as real OS processes in tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class NodeProcess:
    """A `caroni manager` or `caroni agent` process whose output is collected as it runs."""

    def __init__(
        self, args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        self.args = [sys.executable, "-m", "caroni", *args]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self._pump_thread: threading.Thread | None = None

    def start(self) -> NodeProcess:
        self.lines.clear()
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (waiting for it up to ``timeout``)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if match := regex.search(line):
                return match
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (
                self.proc is not None and self.proc.poll() is not None and self._queue.empty()
            ):
                raise AssertionError(
                    f"no line matching {pattern!r} from {self.args[3:]} within {timeout}s; "
                    f"output so far:\n" + "\n".join(self.lines[-40:])
                )
            try:
                line = self._queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if match := regex.search(line):
                return match

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not stop in time. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._read_to_the_end()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._read_to_the_end()

    def _read_to_the_end(self) -> None:
        """Once the process has ended: wait until ``lines`` holds all its output."""
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=10)


def run_caroni(
    args: Sequence[str], *, cwd: Path, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caroni", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
