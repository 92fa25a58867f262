"""Whether a job's inputs fit in the environment its body is started with.

Inputs reach a job body only as environment variables ``CARONI_ENV_<name>`` (the
shared protocol says so). Linux refuses to start a program (E2BIG) when one
``NAME=value`` string, with its terminating NUL, is longer than MAX_ARG_STRLEN
(32 pages: 128 KiB), or when the environment and the arguments together pass
ARG_MAX (a quarter of the stack limit, usually 2 MiB). The total allowed here is
half of that, leaving room for the body's text and the rest of the environment.

One home for the rule: the manager refuses a workflow whose inputs cannot fit and
fails a step whose upstream outputs cannot; the agent fails such a job before
starting it. Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ENV_PREFIX", "MAX_ENTRY_BYTES", "MAX_TOTAL_BYTES", "env_name", "env_problem"]

ENV_PREFIX = "CARONI_ENV_"
MAX_ENTRY_BYTES = 32 * 4096  # MAX_ARG_STRLEN: one "NAME=value\0"
MAX_TOTAL_BYTES = 1024 * 1024  # every input's "NAME=value\0" together


def env_name(input_name: str) -> str:
    """The environment variable that carries ``input_name``."""
    return ENV_PREFIX + input_name


def env_problem(inputs: Mapping[str, str]) -> str:
    """Why these inputs cannot all be in one job's environment, or "" when they can."""
    total = 0
    for name, value in inputs.items():
        if not isinstance(value, str):
            return f"input {name!r} is not a string"
        if "\0" in value:
            return f"input {name!r} contains a NUL character; an environment cannot hold it"
        try:
            # As the kernel counts it: the encoded "NAME=value" and its NUL.
            size = len(f"{env_name(name)}={value}".encode("utf-8", "surrogateescape")) + 1
        except UnicodeEncodeError:
            return f"input {name!r} cannot be encoded for the environment"
        if size > MAX_ENTRY_BYTES:
            return (
                f"input {name!r} is too large for the environment "
                f"({size} bytes as {env_name(name)}; Linux allows {MAX_ENTRY_BYTES} per variable)"
            )
        total += size
    if total > MAX_TOTAL_BYTES:
        return (
            f"inputs {', '.join(repr(n) for n in inputs)} are too large for the environment "
            f"together ({total} bytes; at most {MAX_TOTAL_BYTES})"
        )
    return ""
