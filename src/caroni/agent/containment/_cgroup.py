"""cgroup v2: a job's processes in a cgroup of their own, which nothing inside can leave.

A job's cgroup is a child of the agent's own cgroup. Its body is moved there
before it runs (so even its first child is inside), and the whole cgroup is killed
with ``cgroup.kill`` (Linux 5.14), or else by SIGKILLing every process listed in
it until none is left.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from caroni.agent.containment._proc import read_proc

logger = logging.getLogger("caroni.agent.containment")

KILL_DEADLINE_SECONDS = 5.0
_POLL_SECONDS = 0.002


def _unescape(field: str) -> str:
    # mountinfo writes a space, tab, newline or backslash in a path as \040 etc.
    return field.encode().decode("unicode_escape")


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        if tail.split(" ", 1)[0] == "cgroup2":
            return Path(_unescape(head.split(" ")[4]))
    return None


def _own_cgroup() -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return None


def mover(path: Path) -> tuple[int, Callable[[], None]]:
    """An open ``cgroup.procs`` of ``path`` and a function that, run in a child
    between fork and exec, moves the child there (it writes "0": "myself")."""
    fd = open_procs(path)

    def move() -> None:
        os.write(fd, b"0")

    return fd, move


ENTER_FAILED = 125
"""Exit status of a job whose process could not enter its cgroup."""

# The shell writes "0" ("myself") to the cgroup's cgroup.procs, which the agent
# opened and passed down as file descriptor $1 (so that a body run as another user
# enters too), closes it, then execs the job's command: same pid, now inside.
# Moving the child between fork and exec instead (a preexec_fn) makes every spawn
# fork the whole agent and wait for Python to run in the child, on the event loop:
# about 20 ms a job, measured.
_ENTER = f'echo 0 >&"$1" || exit {ENTER_FAILED}; eval "exec $1>&-"; shift; exec "$@"'


def open_procs(path: Path) -> int:
    """The cgroup ``path``'s ``cgroup.procs``, open for writing (close-on-exec)."""
    return os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


def entering(procs_fd: int, argv: list[str]) -> list[str]:
    """``argv`` run by a shell that first moves itself into the cgroup whose
    ``cgroup.procs`` is open as ``procs_fd`` (pass it down: ``pass_fds``)."""
    bash = shutil.which("bash") or "/bin/bash"  # ">&$1" takes any descriptor number
    return [bash, "-c", _ENTER, "caroni-enter-cgroup", str(procs_fd), *argv]


@functools.cache
def usable_parent() -> Path | None:
    """The cgroup this process is in, when it can make a child cgroup there and move a
    process into it; else None (no cgroup v2, or not delegated to us)."""
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None or own is None:
        return None
    parent = mount / own.lstrip("/")
    probe = parent / f"caroni-probe-{os.getpid()}"
    fd = -1
    try:
        probe.mkdir(exist_ok=True)
        fd, move = mover(probe)
        true = shutil.which("true") or "/bin/true"
        subprocess.run([true], preexec_fn=move, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.info("cgroup %s cannot hold jobs (%s); using sessions", parent, exc)
        return None
    finally:
        if fd >= 0:
            os.close(fd)
        remove(probe)
    return parent


def _pids(path: Path) -> list[int]:
    """The live processes in the cgroup ``path`` and the cgroups below it."""
    pids = []
    for procs in path.rglob("cgroup.procs"):
        try:
            text = procs.read_text()
        except OSError:
            continue  # removed meanwhile
        for word in text.split():
            proc = read_proc(int(word))
            if proc is not None and proc.alive:
                pids.append(proc.pid)
    return pids


def kill(path: Path, job_id: str, *, use_kill_file: bool = True) -> set[int]:
    """Kill every process in the cgroup ``path``; the pids that were in it.
    (``use_kill_file=False`` kills one process at a time, as before Linux 5.14.)"""
    if not path.is_dir():
        return set()
    killed: set[int] = set()
    has_kill = use_kill_file and (path / "cgroup.kill").exists()
    deadline = time.monotonic() + KILL_DEADLINE_SECONDS
    while pids := _pids(path):
        killed.update(pids)
        if has_kill:
            (path / "cgroup.kill").write_text("1")
        else:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            logger.warning("job %s: processes %s still in %s after SIGKILL", job_id, pids, path)
            break
        time.sleep(_POLL_SECONDS)  # the kernel ends them; nothing tells us when
    return killed


def remove(path: Path) -> None:
    """Remove the cgroup ``path`` and those below it (they must be empty)."""
    if not path.is_dir():
        return
    below = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for group in [*below, path]:
        deadline = time.monotonic() + KILL_DEADLINE_SECONDS
        while True:
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:  # EBUSY while the last process is still ending
                if time.monotonic() > deadline:
                    logger.warning("could not remove cgroup %s: %s", group, exc)
                    break
                time.sleep(_POLL_SECONDS)
