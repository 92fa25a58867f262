"""Spare shells: a job's first process, started and moved into a cgroup of its own
before the job is known.

Moving a process into a cgroup waits for the kernel's RCU grace period whenever no
other move happened just before it: 10 to 30 ms on an idle machine, measured, in
the path of every job's start (under load the moves come close together and cost
little). So while the agent waits, one spare shell per kind of spawn makes that
move ahead of time and then waits on its standard input. A job that starts takes
the spare and writes it, NUL-separated, where to run, the job's whole environment
and the command; the shell execs the command there, with nothing else of its own
environment (``env -i``). What the spare inherited (session, pipes, user) is what a
job's process gets when spawned directly.

bash reads a pipe one byte per system call, so only a small job (``MAX_JOB_BYTES``,
which the usual inputs are far below) goes through a spare; a larger one is spawned
as before. A spare whose agent died reads end-of-file and exits; its empty cgroup
is removed when the agent starts again (``Containments.remove_stale_spares``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caroni.agent.containment import Containments, _cgroup
from caroni.agent.containment._proc import read_proc
from caroni.agent.output import JobOutput

logger = logging.getLogger("caroni.agent.spare")

MAX_JOB_BYTES = 8 * 1024
"""The largest job (directory, environment and command, encoded) a spare is given:
about 3 ms of bash reading it, against the 10-30 ms the spare saves."""

# $1 is the cgroup's cgroup.procs, opened by the agent and passed down; $2 is env.
_SPARE = f"""
echo 0 >&"$1" || exit {_cgroup.ENTER_FAILED}
eval "exec $1>&-"
IFS= read -r -d '' dir || exit {_cgroup.ENTER_FAILED}
IFS= read -r -d '' count || exit {_cgroup.ENTER_FAILED}
vars=()
for ((i = 0; i < count; i++)); do
  IFS= read -r -d '' var || exit {_cgroup.ENTER_FAILED}
  vars+=("$var")
done
argv=()
while IFS= read -r -d '' arg; do argv+=("$arg"); done
exec 0</dev/null
cd -- "$dir" || exit {_cgroup.ENTER_FAILED}
exec "$2" -i -- "${{vars[@]}}" "${{argv[@]}}"
"""


@dataclass(frozen=True, slots=True)
class SpawnKind:
    """What a spare must share with the job that takes it: who it runs as, and how
    much output its pipes keep."""

    user: int | None
    group: int | None
    max_output_bytes: int

    def popen_user(self) -> dict[str, Any]:
        """Popen's arguments that run the process as ``user`` (none: as the agent)."""
        if self.user is None:
            return {}
        return {"user": self.user, "group": self.group, "extra_groups": []}


def encode_job(workdir: Path, env: Mapping[str, str], argv: list[str]) -> bytes:
    """What a spare reads: the directory, the number of variables, the variables,
    then the command, each ended by a NUL."""
    fields = [str(workdir), str(len(env)), *(f"{k}={v}" for k, v in env.items()), *argv]
    return b"".join(field.encode("utf-8", "surrogateescape") + b"\0" for field in fields)


@dataclass(slots=True)
class Spare:
    cgroup: Path
    transport: asyncio.SubprocessTransport
    proto: JobOutput

    @property
    def pid(self) -> int:
        return self.transport.get_pid()

    def start(self, job: bytes) -> None:
        """Give the waiting shell its job (from ``encode_job``); it execs at once."""
        stdin = self.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        stdin.write(job)
        stdin.close()  # after the buffer is flushed; the shell reads to end-of-file


class SpareShells:
    """At most one spare shell per kind of spawn, made in the background after each
    use. Only for cgroup containment: without the move there is nothing to save."""

    def __init__(self, containments: Containments) -> None:
        self._containments = containments
        self._bash = shutil.which("bash", path="/usr/bin:/bin") or "/bin/bash"
        self._env = shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"
        self._ready: dict[SpawnKind, Spare] = {}
        self._making: dict[SpawnKind, asyncio.Task[None]] = {}
        self._cgroups: set[Path] = set()  # spares' cgroups not handed to a job yet
        self._broken = False
        self.taken = 0  # jobs that started in a spare

    async def prepare(self, kind: SpawnKind) -> bool:
        """Make a spare of ``kind`` now (if none is ready or on its way) and wait for it;
        whether one is ready."""
        self._make_next(kind)
        making = self._making.get(kind)
        if making is not None:
            await asyncio.shield(making)
        return kind in self._ready

    def take(self, kind: SpawnKind, job: bytes) -> Spare | None:
        """A ready spare for ``job`` (its cgroup is then the job's), or None; either
        way the next spare of this kind is on its way."""
        if self._broken or len(job) > MAX_JOB_BYTES:
            return None
        spare = self._ready.pop(kind, None)
        self._make_next(kind)
        if spare is None:
            return None
        self._cgroups.discard(spare.cgroup)  # the job's now, or discarded
        proc = read_proc(spare.pid)  # asyncio may not know yet that it died
        if spare.proto.exited.done() or proc is None or not proc.alive:  # killed meanwhile
            self.discard(spare)
            return None
        self.taken += 1
        return spare

    def _make_next(self, kind: SpawnKind) -> None:
        if kind not in self._ready and kind not in self._making:
            self._making[kind] = asyncio.create_task(self._make(kind))

    async def _make(self, kind: SpawnKind) -> None:
        loop = asyncio.get_running_loop()
        try:
            cgroup = self._containments.spare_cgroup()
            self._cgroups.add(cgroup)
            procs = _cgroup.open_procs(cgroup)
            try:
                transport, proto = await loop.subprocess_exec(
                    lambda: JobOutput(loop, kind.max_output_bytes),
                    self._bash,
                    "-c",
                    _SPARE,
                    "caroni-spare",
                    str(procs),
                    self._env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=self._containments.work_root,
                    env={"PATH": "/usr/bin:/bin"},
                    start_new_session=True,
                    pass_fds=(procs,),
                    **kind.popen_user(),
                )
            finally:
                os.close(procs)
            self._ready[kind] = Spare(cgroup, transport, proto)
        except (OSError, subprocess.SubprocessError) as exc:
            # Jobs are still spawned directly; only the head start is lost.
            logger.warning("could not start a spare shell for jobs (%s); not trying again", exc)
            self._broken = True
        finally:
            self._making.pop(kind, None)

    def discard(self, spare: Spare) -> None:
        """Kill a spare and remove its cgroup."""
        self._cgroups.discard(spare.cgroup)
        # First the shell itself, which may not have entered its cgroup yet. Through
        # its transport, which kills it and leaves the reaping to asyncio (a kill of
        # our own would let the transport reap it under asyncio's feet).
        spare.transport.close()
        self._containments.remove_spare_cgroup(spare.cgroup)

    async def close(self) -> None:
        """Kill every spare (on the agent's stop)."""
        # Let spawns under way end (milliseconds): a cancelled one would leave its
        # shell to whoever reaps children next, and maybe outside its cgroup.
        await asyncio.gather(*self._making.values(), return_exceptions=True)
        ready, self._ready = self._ready, {}
        for spare in ready.values():
            self.discard(spare)
        for cgroup in list(self._cgroups):  # spawns that failed
            with contextlib.suppress(OSError):
                self._containments.remove_spare_cgroup(cgroup)
        self._cgroups.clear()
