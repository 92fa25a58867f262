"""A job's work directory: made fresh under the agent's work root, and removed
whatever the body left in it."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger("caroni.agent.runner")

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def make_workdir(root: Path, job_id: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    prefix = _UNSAFE_PATH_CHARS.sub("_", job_id)[:64] or "job"
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))


def _remove_tree(path: Path, job_id: str) -> None:
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return  # the body removed its own directory (HOME is the workdir: `rm -rf ~`)
    except OSError:
        pass
    # A body may have left read-only directories behind; make them writable and retry.
    try:
        os.chmod(path, 0o700)
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                child = os.path.join(dirpath, name)
                if not os.path.islink(child):
                    os.chmod(child, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.warning("job %s: could not remove work directory %s", job_id, path)


async def remove_workdir(path: Path, job_id: str) -> None:
    # In a thread: a big tree would otherwise stall every other job on the loop.
    # Shielded: even if we are cancelled meanwhile, the removal runs to its end.
    await asyncio.shield(asyncio.to_thread(_remove_tree, path, job_id))
