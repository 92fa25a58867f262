"""The fallback: a job's processes are found by session, environment mark and parentage.

A job's body starts as the leader of a session of its own, with the job's mark in
its environment. A process belongs to the job when it started no earlier than the
body and is in the body's session, or carries the mark, or descends from a
process that belongs. A process that both leaves the session (``setsid``) and
drops the mark (``env -i``), and whose parent has ended, is not found: against a
hostile body only a cgroup holds.

When the agent is a child subreaper, processes that lose their parent become the
agent's children; it reaps those it killed, and those that ended by themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable

from caroni.agent.containment._proc import Proc, environ_has, processes, read_proc

logger = logging.getLogger("caroni.agent.containment")

KILL_DEADLINE_SECONDS = 5.0
_POLL_SECONDS = 0.002


class Children:
    """What this process knows about its own children: the bodies it started (which
    asyncio reaps) and whether it reaps orphans as a subreaper."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spawning = 0  # bodies being started, whose pid is not known yet
        self.leaders: set[int] = set()
        self.subreaper = False

    def spawn_begins(self) -> None:
        with self.lock:
            self.spawning += 1

    def spawn_ends(self, pid: int | None) -> None:
        with self.lock:
            self.spawning -= 1
            if pid is not None:
                self.leaders.add(pid)

    def leader_gone(self, pid: int) -> None:
        """Forget a body once whoever waits for it has reaped it."""
        proc = read_proc(pid)
        if proc is not None and proc.ppid == os.getpid():
            return  # not reaped yet: still not ours to reap
        with self.lock:
            self.leaders.discard(pid)

    def reap_orphans(self) -> None:
        """Reap the zombies this subreaper adopted (never a body asyncio waits for,
        nor a child of our own session, which someone else in this process started)."""
        if not self.subreaper:
            return
        me, my_sid = os.getpid(), os.getsid(0)
        with self.lock:
            if self.spawning:
                return  # a body just forked may be a zombie before we know its pid
            for proc in processes():
                if (
                    proc.ppid == me
                    and not proc.alive
                    and proc.sid != my_sid
                    and proc.pid not in self.leaders
                ):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(proc.pid, os.WNOHANG)


CHILDREN = Children()


def members(sid: int | None, since: int, mark: bytes) -> list[Proc]:
    """The processes of the job whose session is ``sid`` (None: unknown), started at
    ``since`` (clock ticks after boot) or later, marked with ``mark``."""
    me = os.getpid()
    table = [proc for proc in processes() if proc.start_time >= since and proc.pid != me]
    found: dict[int, Proc] = {}
    for proc in table:
        if (sid is not None and proc.sid == sid) or (proc.alive and environ_has(proc.pid, mark)):
            found[proc.pid] = proc
    children: dict[int, list[Proc]] = {}
    for proc in table:
        children.setdefault(proc.ppid, []).append(proc)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child.pid not in found:
                found[child.pid] = child
                stack.append(child.pid)
    return list(found.values())


def kill(sid: int | None, since: int, mark: bytes, job_id: str) -> set[int]:
    """SIGKILL the job's processes until none is left alive; the pids killed."""
    killed: set[int] = set()
    refused: set[int] = set()
    deadline = time.monotonic() + KILL_DEADLINE_SECONDS
    while True:
        live = [proc.pid for proc in members(sid, since, mark) if proc.alive]
        if not set(live) - refused:
            break
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                if pid not in refused:
                    logger.warning("job %s: not allowed to kill process %d", job_id, pid)
                refused.add(pid)
        if time.monotonic() > deadline:
            logger.warning("job %s: processes %s still alive after SIGKILL", job_id, live)
            break
        time.sleep(_POLL_SECONDS)  # the kernel ends them; nothing tells us when
    CHILDREN.reap_orphans()
    return killed


def describe(pids: Iterable[int]) -> str:
    ordered = sorted(pids)
    return f"{len(ordered)} process{'es' if len(ordered) != 1 else ''}" + (
        f" ({', '.join(map(str, ordered))})" if ordered else ""
    )
