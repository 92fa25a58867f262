"""Run one job: a job type's bash body in a fresh directory, inputs in the environment.

As existing Caroni agents do it, every input reaches the body as the environment
variable ``CARONI_ENV_<input name>`` -- inputs are never spliced into the script
text, so a hostile value stays data -- and the body's standard output must be one
JSON object whose keys are the output names.

The child runs in a containment of its own (a cgroup, or a session; see
``caroni.agent.containment``) so that a time limit, an oversized output, a
cancelled task or the body's end kills everything the body started, not just bash,
even a process that called ``setsid``.
Memory stays bounded: standard output is kept up to ``max_output_bytes``, standard
error only as a tail.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from caroni.agent.containment import Containments, JobContainment, mark_env
from caroni.agent.jobtypes import JobTypeSpec
from caroni.agent.model import JobResult
from caroni.agent.output import JobOutput, preview, stringify, tail_text, with_stderr
from caroni.agent.spare import SpareShells, SpawnKind, encode_job
from caroni.agent.workdir import make_workdir, remove_workdir
from caroni.protocol.job_env import env_name, env_problem

__all__ = ["JobResult", "run_job"]

logger = logging.getLogger("caroni.agent.runner")

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# How long to wait for the pipes to reach EOF once bash has exited and its
# containment is killed; only a process that escaped it can hold them longer.
PIPE_GRACE_SECONDS = 5.0
# After a kill on cancellation, how long to wait for bash to be reaped.
EXIT_GRACE_SECONDS = 5.0


@functools.cache
def _find_bash() -> str | None:
    # Resolve once against the clean PATH, so extra_env cannot change which bash runs.
    return shutil.which("bash", path=BASE_PATH) or shutil.which("bash")


def _check_inputs(spec: JobTypeSpec, inputs: Mapping[str, str]) -> str | None:
    """Why these inputs cannot be passed to the job, or None when they can."""
    missing = [name for name in spec.inputs if name not in inputs]
    if missing:
        names = ", ".join(repr(n) for n in missing)
        return f"input{'s' if len(missing) > 1 else ''} {names} missing; the job was not started"
    # Said plainly here rather than as the E2BIG of a failed exec.
    problem = env_problem({name: inputs[name] for name in spec.inputs})
    return f"{problem}; the job was not started" if problem else None


def _check_extra_env(extra_env: Mapping[str, str]) -> None:
    for key, value in extra_env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"extra_env entry {key!r} cannot be put in an environment")


@functools.cache
def _containments(workdir_root: Path) -> Containments:
    return Containments(workdir_root)


def _kill_spawned(
    spawn: asyncio.Future[tuple[asyncio.SubprocessTransport, JobOutput]],
    containment: JobContainment,
    job_id: str,
) -> None:
    """Kill a job whose start finished after its run was cancelled."""
    if spawn.cancelled() or spawn.exception() is not None:
        containment.spawn_failed()
        containment.close()
        return  # never started (and the exception is now retrieved)
    transport, _ = spawn.result()
    containment.started(transport.get_pid())
    containment.close()
    transport.close()
    logger.warning("job %s: cancelled while starting; killed its containment", job_id)


async def run_job(
    spec: JobTypeSpec,
    inputs: Mapping[str, str],
    *,
    workdir_root: Path,
    job_id: str,
    timeout: float | None = None,  # overrides spec.timeout
    max_output_bytes: int = 4 * 1024 * 1024,
    extra_env: Mapping[str, str] | None = None,
    run_as: str | None = None,
    containments: Containments | None = None,
    spares: SpareShells | None = None,
) -> JobResult:
    """Run ``spec``'s body with ``inputs`` and return its outputs or why it failed.

    ``timeout`` overrides ``spec.timeout`` when given. ``run_as`` names another
    user to run the body as (the agent must be allowed to switch to it, i.e. run
    as root); its working directory is handed to that user. Cancelling the
    awaiting task kills the job's whole containment, removes its directory and
    re-raises. ``containments`` keeps the job's processes (by default one for
    ``workdir_root``); ``spares`` gives it a head start (see ``caroni.agent.spare``).
    """
    limit = spec.timeout if timeout is None else timeout
    if limit is not None and not limit > 0:
        raise ValueError(f"timeout must be positive, not {limit}")
    if max_output_bytes <= 0:
        raise ValueError(f"max_output_bytes must be positive, not {max_output_bytes}")
    env_extra = dict(extra_env or {})
    _check_extra_env(env_extra)
    account = None
    if run_as is not None:
        try:
            account = pwd.getpwnam(run_as)
        except KeyError:
            raise ValueError(f"no user {run_as!r} on this machine") from None
    root = Path(workdir_root)
    run = _JobRun(spec, job_id, limit, max_output_bytes, account)
    return await run.run(inputs, root, env_extra, containments or _containments(root), spares)


class _JobRun:
    """The state of one run_job call: its warnings, its clock, its child."""

    def __init__(
        self,
        spec: JobTypeSpec,
        job_id: str,
        limit: float | None,
        max_output_bytes: int,
        account: pwd.struct_passwd | None = None,
    ) -> None:
        self.account = account
        self.spec = spec
        self.job_id = job_id
        self.limit = limit
        self.max_output_bytes = max_output_bytes
        self.started = time.monotonic()
        self.warnings: list[str] = []
        # Who the body runs as and what its pipes keep: a spare must match it.
        self.spawn_kind = SpawnKind(
            account.pw_uid if account else None,
            account.pw_gid if account else None,
            max_output_bytes,
        )

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning("job %s: %s", self.job_id, message)

    def result(
        self,
        reason: str = "",
        *,
        outputs: dict[str, str] | None = None,
        exit_code: int | None = None,
        proto: JobOutput | None = None,
    ) -> JobResult:
        """Build the result (ok when there is no reason) and log the outcome."""
        stdout_tail = tail_text(proto.stdout) if proto else ""
        stderr_tail = tail_text(proto.stderr) if proto else ""
        ok = not reason
        reason = "" if ok else with_stderr(reason, stderr_tail)
        duration = time.monotonic() - self.started
        name, job_id = self.spec.name, self.job_id
        if ok:
            logger.info("job %s: %s completed in %.3f s", job_id, name, duration)
        else:
            logger.warning("job %s: %s failed after %.3f s: %s", job_id, name, duration, reason)
        return JobResult(
            ok=ok,
            outputs=outputs if ok and outputs is not None else {},
            reason=reason,
            exit_code=exit_code,
            stdout_tail=stdout_tail,
            stderr_tail=stderr_tail,
            warnings=tuple(self.warnings),
            duration=duration,
        )

    async def run(
        self,
        inputs: Mapping[str, str],
        workdir_root: Path,
        extra_env: dict[str, str],
        containments: Containments,
        spares: SpareShells | None,
    ) -> JobResult:
        spec, job_id = self.spec, self.job_id
        for name in sorted(set(inputs) - set(spec.inputs)):
            self.warn(f"undeclared input {name!r} ignored")
        problem = _check_inputs(spec, inputs)
        if problem:
            return self.result(problem)
        bash = _find_bash()
        if bash is None:
            return self.result("bash not found; the job was not started")
        try:
            workdir = make_workdir(workdir_root, job_id)
            if self.account is not None:
                os.chown(workdir, self.account.pw_uid, self.account.pw_gid)
        except OSError as exc:
            return self.result(f"could not create a work directory under {workdir_root}: {exc}")
        env = {"PATH": BASE_PATH, "HOME": str(workdir), "LANG": "C.UTF-8", "TMPDIR": str(workdir)}
        env.update({env_name(name): inputs[name] for name in spec.inputs})
        env.update(extra_env)
        try:
            logger.info("job %s: starting %s in %s", job_id, spec.name, workdir)
            env.update(mark_env(job_id))
            # spec.name is $0, so bash's own error messages name the job type.
            argv = [bash, "-c", spec.body, spec.name]
            job = encode_job(workdir, env, argv)
            spare = spares.take(self.spawn_kind, job) if spares is not None else None
            try:
                containment = containments.open(job_id, workdir, spare.cgroup if spare else None)
            except OSError as exc:
                if spare is not None and spares is not None:
                    spares.discard(spare)  # its cgroup is in no record
                return self.result(f"could not set up the job's containment: {exc}")
            if spare is not None:
                containment.started(spare.pid)
                spare.start(job)
                transport, proto = spare.transport, spare.proto
            else:
                spawned = await self._spawn(containment, argv, env, workdir)
                if isinstance(spawned, JobResult):
                    return spawned
                transport, proto = spawned
            try:
                return await self._supervise(transport, proto, containment)
            finally:
                containment.close()  # whatever is left of the job, and its record
                transport.close()
        finally:
            await remove_workdir(workdir, job_id)

    async def _spawn(
        self, containment: JobContainment, argv: list[str], env: dict[str, str], workdir: Path
    ) -> tuple[asyncio.SubprocessTransport, JobOutput] | JobResult:
        """Start ``argv`` in ``containment``: its transport and output, or why it failed."""
        loop = asyncio.get_running_loop()
        # Shielded: if we are cancelled while asyncio is still connecting the pipes,
        # its own cleanup would kill bash alone and then wait for pipes that bash's
        # children still hold. We let the spawn finish and kill the whole job.
        program, *args = containment.command(argv)
        spawn = asyncio.ensure_future(
            loop.subprocess_exec(
                lambda: JobOutput(loop, self.max_output_bytes),
                program,
                *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                **containment.popen_kwargs(),  # its own session
                **self.spawn_kind.popen_user(),
            )
        )
        try:
            transport, proto = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            spawn.add_done_callback(
                functools.partial(_kill_spawned, containment=containment, job_id=self.job_id)
            )
            # Normally only milliseconds: wait, so the workdir goes after the job is dead.
            await asyncio.wait({spawn}, timeout=EXIT_GRACE_SECONDS)
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            containment.spawn_failed()
            containment.close()
            # The inputs were checked: what is left is a huge body or agent environment.
            big = getattr(exc, "errno", None) == errno.E2BIG
            hint = " (the body and environment together are too large)" if big else ""
            return self.result(f"could not start bash: {exc}{hint}")
        containment.started(transport.get_pid())
        return transport, proto

    async def _supervise(
        self,
        transport: asyncio.SubprocessTransport,
        proto: JobOutput,
        containment: JobContainment,
    ) -> JobResult:
        """Wait for the job to end (or kill it) and turn what it wrote into a result."""
        job_id, limit, max_bytes = self.job_id, self.limit, self.max_output_bytes
        killed_for = ""
        try:
            ends: set[asyncio.Future[Any]] = {proto.exited, proto.overflow}
            await asyncio.wait(ends, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if proto.overflow.done():
                killed_for = f"output larger than {max_bytes} bytes"
            elif not proto.exited.done():
                killed_for = f"killed after {float(limit or 0)} s (time limit)"
            if killed_for:
                containment.kill()
            returncode = await proto.exited
            # Children left behind would hold the pipes open forever.
            containment.kill()
            await asyncio.wait({proto.pipes_closed}, timeout=PIPE_GRACE_SECONDS)
            if not proto.pipes_closed.done():
                self.warn(
                    f"output pipes still open {PIPE_GRACE_SECONDS} s after bash exited "
                    "(a process escaped the job's containment); output may be incomplete"
                )
        except asyncio.CancelledError:
            killed = containment.kill()
            logger.warning("job %s: cancelled; killed %d processes", job_id, len(killed))
            # Let bash be reaped while the loop still runs; bounded in case we are
            # cancelled again or the kernel is slow.
            await asyncio.wait({proto.exited}, timeout=EXIT_GRACE_SECONDS)
            raise

        if killed_for:
            return self.result(killed_for, proto=proto)
        if proto.stdout_total > max_bytes:
            # The job ended before we could kill it, but its output was still cut.
            reason = f"output larger than {max_bytes} bytes"
            return self.result(reason, exit_code=returncode, proto=proto)
        if returncode is None or returncode < 0:
            return self.result(f"killed by signal {_signal_name(returncode)}", proto=proto)
        if returncode != 0:
            return self.result(f"exit code {returncode}", exit_code=returncode, proto=proto)
        outputs, reason = self._parse(bytes(proto.stdout))
        return self.result(reason, outputs=outputs, exit_code=returncode, proto=proto)

    def _parse(self, raw: bytes) -> tuple[dict[str, str], str]:
        """The declared outputs from standard output, or why there are none."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = preview(raw.decode("utf-8", errors="replace"))
            return {}, f"standard output is not a JSON object (not valid UTF-8): {shown}"
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            return {}, f"standard output is not a JSON object: {preview(text)}"
        missing = [name for name in self.spec.outputs if name not in document]
        if len(missing) == 1:
            return {}, f"declared output {missing[0]!r} missing from the JSON object"
        if missing:
            names = ", ".join(repr(n) for n in missing)
            return {}, f"declared outputs {names} missing from the JSON object"
        for key in document:
            if key not in self.spec.outputs:
                self.warn(f"undeclared output {key!r} ignored")
        return {name: stringify(document[name]) for name in self.spec.outputs}, ""


def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "(unknown)"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return str(-returncode)
