"""The leniency rewrite of a template's YAML before cwl-utils reads it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from caroni.manager.templates.requirement import is_requirement_key


def move_caroni_requirements(doc: CommentedMap, *, expect: str) -> None:
    """Apply the rewrite to a Workflow's steps and inline tools, or to one tool."""
    if expect == "Workflow":
        for step in _yaml_steps(doc):
            _move_in(step)
            run = step.get("run")
            if isinstance(run, CommentedMap):
                _move_in(run)
    else:
        _move_in(doc)


def _yaml_steps(doc: CommentedMap) -> Iterator[CommentedMap]:
    steps = doc.get("steps")
    if isinstance(steps, dict):
        values: Any = steps.values()
    elif isinstance(steps, list):
        values = steps
    else:
        return
    for step in values:
        if isinstance(step, CommentedMap):
            yield step


def _move_in(process: CommentedMap) -> None:
    """Leniency: read a CaroniRequirement under ``requirements`` as a hint.

    cwl-utils rejects every non-CWL class under ``requirements``, yet existing
    templates put CaroniRequirement there. Hints are kept as written, so moving
    the entry lets the document load and the job name be read the same way.
    """
    reqs = process.get("requirements")
    moved: list[Any] = []
    if isinstance(reqs, CommentedMap):
        for key in [k for k in reqs if is_requirement_key(k)]:
            body = reqs[key]
            if not isinstance(body, dict):
                continue
            entry = CommentedMap(body)
            entry["class"] = key
            moved.append(entry)
            del reqs[key]
    elif isinstance(reqs, CommentedSeq):
        keep = CommentedSeq()
        for item in reqs:
            if isinstance(item, dict) and is_requirement_key(item.get("class")):
                moved.append(item)
            else:
                keep.append(item)
        if moved:
            process["requirements"] = keep
    if not moved:
        return
    if not process["requirements"]:
        del process["requirements"]
    hints = process.get("hints")
    as_list = CommentedSeq()
    if isinstance(hints, CommentedMap):
        for key, body in hints.items():
            entry = CommentedMap(body) if isinstance(body, dict) else CommentedMap()
            entry["class"] = key
            as_list.append(entry)
    elif isinstance(hints, list):
        as_list.extend(hints)
    as_list.extend(moved)
    process["hints"] = as_list
