"""Job containment: every process a job starts stays where the agent can kill it,
also after the agent itself died.

Where the machine allows it, each job runs in a cgroup (v2) of its own, a child of
the agent's cgroup; a process cannot leave it, and the kernel kills it whole.
Elsewhere the fallback is the job's session and mark (see ``_session``), with the
agent a child subreaper so that orphans stay its children.

Before a body starts, a small record names what holds the job (its cgroup, or its
mark) in a directory of the agent's under the work root; right after, the record
gets the body's pid and start time. A restarted agent reads the records of the
jobs its predecessor was running and kills what they left. The record is a file
beside the work directories, not a row in the agent's database: it is written
synchronously, in the moment the body starts, at the cost of a rename and no
transaction; it lives on the machine where the processes run (the database may
be elsewhere); and the body, whose home is its own work directory, cannot reach
it when it runs as another user. It needs to survive the agent's process, not the
machine: when the machine goes down, so do the processes (the boot id says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import stat
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from caroni.agent.containment import _cgroup, _session
from caroni.agent.containment._proc import become_subreaper, boot_id, read_proc
from caroni.errors import ConfigError

__all__ = [
    "MARK_VARIABLE",
    "RECORD_DIR",
    "Containments",
    "JobContainment",
    "Mechanism",
    "mark_env",
]

logger = logging.getLogger("caroni.agent.containment")

MARK_VARIABLE = "CARONI_JOB_ID"  # in every body's environment: the job it belongs to
RECORD_DIR = ".caroni-containment"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def mark_env(job_id: str) -> dict[str, str]:
    """What a job's body has in its environment to say which job it belongs to."""
    return {MARK_VARIABLE: job_id}


class Mechanism(StrEnum):
    CGROUP = "cgroup"
    SESSION = "session"


@dataclass(slots=True)
class _Record:
    job_id: str
    mechanism: str
    boot_id: str
    workdir: str
    cgroup: str = ""  # the job's cgroup, when the mechanism is "cgroup"
    pid: int = 0  # the body's pid (and session id), once it started
    start_time: int = 0  # the body's start time, in clock ticks after boot


class Containments:
    """The containments of one agent's jobs, and the records that outlive the agent.

    ``mechanism`` forces one (a cgroup is used only where it works); None picks a
    cgroup where this process may make one, else sessions.
    """

    def __init__(self, work_root: Path, mechanism: Mechanism | None = None) -> None:
        self.work_root = Path(work_root)
        self.records = self.work_root / RECORD_DIR
        self.records.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._check_records_dir()
        parent = None if mechanism == Mechanism.SESSION else _cgroup.usable_parent()
        if mechanism == Mechanism.CGROUP and parent is None:
            raise ConfigError(
                "containment 'cgroup' asked for, but this process may not make a cgroup (v2) "
                "in its own cgroup here"
            )
        self.cgroup_parent = parent
        # Agents of one machine (tests, several sites) share the parent cgroup: the
        # work root tells their jobs' cgroups apart, whatever their job ids.
        resolved = str(self.work_root.resolve()).encode()
        self._root_tag = hashlib.sha256(resolved).hexdigest()[:12]
        self._spare_prefix = f"caroni-spare-{self._root_tag}-"
        self._spares_made = 0
        self.mechanism = Mechanism.CGROUP if parent is not None else Mechanism.SESSION

    def adopt_orphans(self) -> bool:
        """With sessions: make this process a child subreaper, so a process whose
        parent in the job ended stays in our process tree (and is reaped by us)."""
        if self.mechanism != Mechanism.SESSION:
            return False
        _session.CHILDREN.subreaper = _session.CHILDREN.subreaper or become_subreaper()
        return _session.CHILDREN.subreaper

    def open(self, job_id: str, workdir: Path, cgroup_path: Path | None = None) -> JobContainment:
        """A containment for a body about to start; its record is written already.
        ``cgroup_path`` is a spare's cgroup (``spare_cgroup``) the body is in already."""
        cgroup = ""
        if cgroup_path is not None:
            cgroup = str(cgroup_path)
        elif self.cgroup_parent is not None:
            path = self.cgroup_parent / f"caroni-job-{self._root_tag}-{self._name(job_id)}"
            path.mkdir(exist_ok=True)
            cgroup = str(path)
        record = _Record(job_id, str(self.mechanism), boot_id(), str(workdir), cgroup)
        containment = JobContainment(self, record)
        self._write(record)
        return containment

    def spare_cgroup(self) -> Path:
        """A new cgroup for a spare shell (``caroni.agent.spare``), named for this agent."""
        assert self.cgroup_parent is not None, "spare shells need cgroup containment"
        self._spares_made += 1
        name = f"{self._spare_prefix}{os.getpid()}-{self._spares_made}"
        path = self.cgroup_parent / name
        path.mkdir()
        return path

    def remove_stale_spares(self) -> int:
        """Kill and remove the spare shells' cgroups a previous agent process of this
        work root left (its spares exit on their own; their cgroups stay); how many."""
        if self.cgroup_parent is None:
            return 0
        stale = list(self.cgroup_parent.glob(f"{self._spare_prefix}*"))
        for path in stale:
            self.remove_spare_cgroup(path)
        return len(stale)

    @staticmethod
    def remove_spare_cgroup(path: Path) -> None:
        """Kill what is in a spare shell's cgroup and remove it."""
        _cgroup.kill(path, "spare")
        _cgroup.remove(path)

    def kill_leftovers(self, job_id: str) -> tuple[set[int], str]:
        """Kill what a previous agent process left running for ``job_id`` and remove its
        work directory; the pids killed, and what was done in words (for a log line)."""
        try:
            record = _Record(**json.loads(self._path(job_id).read_text()))
        except FileNotFoundError:
            # No record: the body never started, or started without one; its mark
            # still finds whatever it left.
            record = _Record(job_id, str(Mechanism.SESSION), boot_id(), "")
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("job %s: unreadable containment record (%s)", job_id, exc)
            record = _Record(job_id, str(Mechanism.SESSION), boot_id(), "")
        killed: set[int] = set()
        if record.boot_id != boot_id():
            what = "nothing to kill (the machine restarted since)"
        else:
            killed = JobContainment(self, record).kill()
            held = f"cgroup {record.cgroup}" if record.cgroup else "its session and mark"
            what = f"killed {_session.describe(killed)} in {held}"
        if record.cgroup:
            _cgroup.remove(Path(record.cgroup))
        if record.workdir and Path(record.workdir).resolve().parent == self.work_root.resolve():
            shutil.rmtree(record.workdir, ignore_errors=True)
        self._path(job_id).unlink(missing_ok=True)
        return killed, what

    # --- records ----------------------------------------------------------------------

    def _check_records_dir(self) -> None:
        # A record makes the agent kill processes and remove a directory: only ours
        # may be trusted (a work root in /tmp could hold one someone else made).
        info = os.lstat(self.records)
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise ConfigError(
                f"{self.records} must be a directory of this user's that no one else "
                "may write to; it holds the records of running jobs"
            )

    def _name(self, job_id: str) -> str:
        return _UNSAFE.sub("_", job_id)[:200] or "job"

    def _path(self, job_id: str) -> Path:
        return self.records / f"{self._name(job_id)}.json"

    def _write(self, record: _Record) -> None:
        path = self._path(record.job_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record)))
        os.replace(temporary, path)  # a reader sees the old record or the new, whole

    def _forget(self, job_id: str) -> None:
        self._path(job_id).unlink(missing_ok=True)


class JobContainment:
    """Where one job's processes are kept: give its spawn ``command``, ``env`` and
    ``popen_kwargs``, tell it ``started(pid)``, and ``close()`` it (which kills what is
    left) at the end."""

    def __init__(self, owner: Containments, record: _Record) -> None:
        self._owner = owner
        self._record = record
        self._mark = f"{MARK_VARIABLE}={record.job_id}".encode("utf-8", "surrogateescape")
        self._fd = -1  # the cgroup's cgroup.procs while the body is being spawned
        self._spawning = False

    @property
    def env(self) -> dict[str, str]:
        return mark_env(self._record.job_id)

    def command(self, argv: list[str]) -> list[str]:
        """The command that runs ``argv`` in this containment: with a cgroup, a shell
        moves itself into it, then becomes ``argv`` (same pid), so the body and all
        it starts are inside (see ``_cgroup.entering``)."""
        if not self._record.cgroup:
            return argv
        if self._fd < 0:
            self._fd = _cgroup.open_procs(Path(self._record.cgroup))
        return _cgroup.entering(self._fd, argv)

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments for Popen (or asyncio's subprocess_exec): a session of its own,
        and what ``command`` needs passed down. Call once, after ``command`` and just
        before the spawn; ``started`` or ``spawn_failed`` must follow."""
        kwargs: dict[str, Any] = {"start_new_session": True}
        if self._fd >= 0:
            kwargs["pass_fds"] = (self._fd,)
        _session.CHILDREN.spawn_begins()
        self._spawning = True
        return kwargs

    def _spawn_ends(self, pid: int | None) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._spawning:
            self._spawning = False
            _session.CHILDREN.spawn_ends(pid)

    def spawn_failed(self) -> None:
        self._spawn_ends(None)

    def started(self, pid: int) -> None:
        """The body runs as ``pid``: record it (and its start time) for a later agent."""
        self._spawn_ends(pid)
        proc = read_proc(pid)
        self._record.pid = pid
        self._record.start_time = proc.start_time if proc is not None else 0
        self._owner._write(self._record)

    def kill(self) -> set[int]:
        """SIGKILL every process of the job (the body too); the pids killed."""
        record = self._record
        if record.cgroup:
            # Its first process may not have entered the cgroup yet: end it (its
            # session) first, so that nothing enters after the cgroup is emptied.
            killed = self._kill_leader()
            return killed | _cgroup.kill(Path(record.cgroup), record.job_id)
        sid: int | None = record.pid or None
        if sid is not None:
            leader = read_proc(sid)
            if leader is not None and leader.start_time != record.start_time:
                sid = None  # the pid names another process now; only the mark is sure
        return _session.kill(sid, record.start_time, self._mark, record.job_id)

    def _kill_leader(self) -> set[int]:
        """SIGKILL the session the body's first process leads, if that process is
        still the one that started (a pid may be reused)."""
        pid = self._record.pid
        leader = read_proc(pid) if pid else None
        if leader is None or leader.start_time != self._record.start_time:
            return set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            return {pid}
        return set()

    def close(self) -> set[int]:
        """Kill what is left of the job, then forget it (its record, its cgroup)."""
        self._spawn_ends(None)
        killed = self.kill()
        if self._record.cgroup:
            _cgroup.remove(Path(self._record.cgroup))
        if self._record.pid:
            _session.CHILDREN.leader_gone(self._record.pid)
        self._owner._forget(self._record.job_id)
        return killed
