"""Job types an agent can run: name, input and output names, a bash body.

The file format is the one existing Caroni agents use (see the shared fixture
``job_types.json``): a JSON list of objects ``{"name", "body", "inputs": [...],
"outputs": [...]}``, plus our optional ``"timeout"`` in seconds. Everything is
validated on load so the runner never sees a name it cannot put in an
environment variable.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from caroni.errors import JobTypeError

__all__ = [
    "JobTypeSpec",
    "job_type_from_dict",
    "load_job_types",
    "load_job_types_text",
]

logger = logging.getLogger("caroni.agent.jobtypes")

# Job type names travel in protocol messages and show up in logs and file names.
_JOB_TYPE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Parameter names become part of ``CARONI_ENV_<name>``, so they must be valid
# shell variable names or a body could not refer to them.
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_KNOWN_KEYS = frozenset({"name", "body", "inputs", "outputs", "timeout"})
_REQUIRED_KEYS = ("name", "body", "inputs", "outputs")


@dataclass(frozen=True, slots=True)
class JobTypeSpec:
    """One job type: what it consumes, what it produces and the bash that does it."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    body: str
    timeout: float | None = None  # seconds; None = no limit

    def __post_init__(self) -> None:
        # Validate here too, so a spec built in code is as safe as one loaded from JSON.
        if not isinstance(self.name, str) or not _JOB_TYPE_NAME.fullmatch(self.name):
            raise JobTypeError(
                f"field 'name': {self.name!r} is not a job type name "
                "(non-empty, letters, digits, '_', '.', '-')"
            )
        label = f"job type {self.name!r}"
        object.__setattr__(self, "inputs", _check_params(self.inputs, "inputs", label))
        object.__setattr__(self, "outputs", _check_params(self.outputs, "outputs", label))
        if not isinstance(self.body, str) or not self.body.strip():
            raise JobTypeError(f"{label}: field 'body' must be a non-empty string")
        if self.timeout is not None:
            t = self.timeout
            if isinstance(t, bool) or not isinstance(t, int | float):
                raise JobTypeError(f"{label}: field 'timeout' must be a number of seconds")
            if not math.isfinite(t) or t <= 0:
                raise JobTypeError(f"{label}: field 'timeout' must be positive and finite, not {t}")
            object.__setattr__(self, "timeout", float(t))

    def to_dict(self) -> dict[str, object]:
        """The JSON file form; ``job_type_from_dict`` reads it back unchanged."""
        data: dict[str, object] = {
            "name": self.name,
            "body": self.body,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }
        if self.timeout is not None:
            data["timeout"] = self.timeout
        return data


def _check_params(value: object, field: str, label: str) -> tuple[str, ...]:
    # A bare string is a Sequence too; "abc" must not turn into ("a", "b", "c").
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise JobTypeError(f"{label}: field {field!r} must be a list of names")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _PARAM_NAME.fullmatch(item):
            raise JobTypeError(
                f"{label}: field {field!r}: {item!r} is not a valid name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if item in names:
            raise JobTypeError(f"{label}: field {field!r}: name {item!r} appears twice")
        names.append(item)
    return tuple(names)


def job_type_from_dict(data: Mapping[str, object]) -> JobTypeSpec:
    """Build a validated spec from one object of the JSON file format."""
    if not isinstance(data, Mapping):
        raise JobTypeError(f"a job type must be a JSON object, not {type(data).__name__}")
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise JobTypeError(f"field {key!r} is missing")
    unknown = sorted(str(k) for k in data if k not in _KNOWN_KEYS)
    if unknown:
        logger.warning("job type %r: ignoring unknown field(s) %s", data.get("name"), unknown)
    return JobTypeSpec(
        name=data["name"],  # type: ignore[arg-type]  # checked in __post_init__
        inputs=data["inputs"],  # type: ignore[arg-type]
        outputs=data["outputs"],  # type: ignore[arg-type]
        body=data["body"],  # type: ignore[arg-type]
        timeout=data.get("timeout"),  # type: ignore[arg-type]
    )


def load_job_types_text(text: str, origin: str = "<text>") -> list[JobTypeSpec]:
    """Parse a JSON list of job types; errors name ``origin``, the entry and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobTypeError(f"{origin}: not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        kind = type(data).__name__
        raise JobTypeError(f"{origin}: expected a JSON list of job types, got {kind}")
    specs: list[JobTypeSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        try:
            spec = job_type_from_dict(entry)
        except JobTypeError as exc:
            raise JobTypeError(f"{origin}: entry {index}: {exc}") from exc
        if spec.name in seen:
            raise JobTypeError(
                f"{origin}: entry {index}: field 'name': job type {spec.name!r} is defined twice"
            )
        seen.add(spec.name)
        specs.append(spec)
    return specs


def load_job_types(path: Path) -> list[JobTypeSpec]:
    """Read a job types file (a JSON list, as in the shared fixture)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobTypeError(f"{path}: cannot read job types: {exc}") from exc
    return load_job_types_text(text, origin=str(path))
