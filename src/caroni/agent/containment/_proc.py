"""What /proc says about processes, and making this process a child subreaper."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as /proc/<pid>/stat shows it."""

    pid: int
    ppid: int
    sid: int
    state: str  # "Z" for a zombie: dead, waiting for its parent to reap it
    start_time: int  # clock ticks after boot; with the pid it names one process for good

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def read_proc(pid: int) -> Proc | None:
    """The process ``pid``, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything; the
    # fields after its last ")" are plain numbers.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return Proc(
        pid=pid,
        state=fields[0].decode(),
        ppid=int(fields[1]),
        sid=int(fields[3]),
        start_time=int(fields[19]),
    )


def processes() -> Iterator[Proc]:
    """Every process this one can see (those that end meanwhile are left out)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name))
            if proc is not None:
                yield proc


def environ_has(pid: int, entry: bytes) -> bool:
    """Whether ``NAME=value`` is in the environment the process was started with."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            return entry in file.read().split(b"\0")
    except OSError:
        return False  # ended, or not ours to read


def boot_id() -> str:
    """This boot's id: a pid and start time recorded under another boot name nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children instead of init's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
