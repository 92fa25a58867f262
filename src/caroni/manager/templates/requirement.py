"""The hint ``caroni:CaroniRequirement``: which job type a step asks agents for."""

from __future__ import annotations

from typing import Any

from caroni.manager.templates.scope import Scope, names_text

CARONI_NAMESPACE = "https://caroni.example/cwl#"
_REQUIREMENT = "CaroniRequirement"
_JOB_NAME = "CaroniJobName"
_JOB_KVS = "CaroniJobKVs"
MISSING_JOB_NAME = (
    "no CaroniJobName (add hints: caroni:CaroniRequirement: CaroniJobName: <job type>)"
)


def is_requirement_key(cls: Any) -> bool:
    """Any spelling of the Caroni class: prefixed, bare, or the full URI."""
    return isinstance(cls, str) and (
        cls in (_REQUIREMENT, CARONI_NAMESPACE + _REQUIREMENT) or cls.endswith(":" + _REQUIREMENT)
    )


def job_requirement(
    scope: Scope, where: str, step: Any, tool: Any | None, tool_namespaces: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    """Read CaroniJobName / CaroniJobKVs from the step's or the tool's hints."""
    if tool is None:
        return None, {}  # the run problem is reported; a job name would not help
    found: list[tuple[str, dict[str, str]]] = []
    seen = False
    sources = [(step.hints, scope.namespaces)]
    sources.append((tool.hints, tool_namespaces))
    for hints, namespaces in sources:
        for hint in hints or ():
            if not isinstance(hint, dict) or not _is_caroni(scope, where, hint, namespaces):
                continue
            seen = True
            parsed = _read_requirement(scope, where, hint)
            if parsed is not None:
                found.append(parsed)
    if not found:
        if not seen:  # a malformed requirement has been reported already
            scope.problems.append(where + MISSING_JOB_NAME)
        return None, {}
    job_type, job_kvs = found[0]
    for other_type, other_kvs in found[1:]:
        if (other_type, other_kvs) != (job_type, job_kvs):
            scope.problems.append(
                f"{where}CaroniRequirement is given more than once, differently "
                f"({job_type!r} and {other_type!r}); keep one"
            )
            return None, {}
    return job_type, job_kvs


def _is_caroni(scope: Scope, where: str, hint: dict[str, Any], namespaces: dict[str, str]) -> bool:
    cls = hint.get("class")
    if not isinstance(cls, str) or not is_requirement_key(cls):
        return False
    if cls in (_REQUIREMENT, CARONI_NAMESPACE + _REQUIREMENT):
        return True  # the bare name is a documented leniency
    prefix = cls[: -len(":" + _REQUIREMENT)]
    declared = namespaces.get(prefix)
    if declared == CARONI_NAMESPACE or (declared is None and prefix == "caroni"):
        return True
    if declared is not None:
        scope.problems.append(
            f"{where}{cls} uses the prefix {prefix!r}, which $namespaces declares as "
            f"{declared!r}, not {CARONI_NAMESPACE!r}"
        )
    return False


def _read_requirement(
    scope: Scope, where: str, hint: dict[str, Any]
) -> tuple[str, dict[str, str]] | None:
    problems = scope.problems
    ok = True
    unknown = [k for k in hint if k not in ("class", _JOB_NAME, _JOB_KVS)]
    if unknown:
        problems.append(
            f"{where}CaroniRequirement has unknown field(s) {names_text(unknown)} "
            f"(known: {_JOB_NAME}, {_JOB_KVS})"
        )
        ok = False
    job_type = hint.get(_JOB_NAME)
    if job_type is None:
        problems.append(where + MISSING_JOB_NAME)
        return None
    if not isinstance(job_type, str) or not job_type.strip():
        problems.append(f"{where}{_JOB_NAME} must be a non-empty string")
        ok = False
    kvs_raw = hint.get(_JOB_KVS, {})
    job_kvs: dict[str, str] = {}
    if kvs_raw is None:
        kvs_raw = {}
    if not isinstance(kvs_raw, dict):
        problems.append(f"{where}{_JOB_KVS} must be a mapping of names to values")
        ok = False
    else:
        for key, value in kvs_raw.items():
            text = _scalar_text(value)
            if not isinstance(key, str) or text is None:
                problems.append(
                    f"{where}{_JOB_KVS} entry {key!r} must map a name to a string, "
                    "number or boolean"
                )
                ok = False
            else:
                job_kvs[key] = text
    return (job_type, job_kvs) if ok and isinstance(job_type, str) else None


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None
