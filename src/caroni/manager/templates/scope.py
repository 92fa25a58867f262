"""What every check needs: the workflow's ids, its namespaces and the problem list.

Checks append to ``problems`` and carry on, so one pass reports every problem.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from caroni.manager.templates.model import Source

# Every value travels on the wire as a string, so only types with an obvious text form.
_SCALAR_TYPES = ("string", "int", "long", "float", "double", "boolean")
_SCALAR_TEXT = "string, int, long, float, double and boolean"


class Scope:
    """One workflow document being checked, and the problems found so far."""

    def __init__(self, doc: Any, uri: str, base_dir: Path | None, problems: list[str]) -> None:
        self.doc = doc
        self.uri = uri
        self.base_dir = base_dir
        self.problems = problems
        self.prefix = str(doc.id or uri)
        self.namespaces: dict[str, str] = dict(getattr(doc.loadingOptions, "namespaces", {}) or {})

    def local(self, id_: str) -> str:
        """An id relative to the workflow: 'step1', 'start_message', 'step1/jobout'."""
        for base in (self.prefix + "/", self.prefix + "#", self.uri + "#"):
            if id_.startswith(base):
                return id_[len(base) :]
        return fragment(id_)

    def parse_source(self, raw: str) -> Source:
        ref = self.local(raw)
        if "/" in ref:
            step, name = ref.split("/", 1)
            return Source(step=step, name=name)
        return Source(step=None, name=ref)

    def type_text(self, type_: Any) -> str:
        if isinstance(type_, str):
            # an unknown type name comes back as a URI in the document: show the name
            return fragment(type_) if type_.startswith("file:") else type_
        if isinstance(type_, list):
            names = [self.type_text(t) for t in type_]
            if len(names) == 2 and "null" in names:
                return names[1 - names.index("null")] + "?"
            return " | ".join(names)
        cls = class_name(type_).lower()
        for kind in ("array", "enum", "record"):
            if kind in cls:
                return kind
        return cls

    def check_type(self, what: str, type_: Any) -> None:
        options = [t for t in type_ if t != "null"] if isinstance(type_, list) else [type_]
        if len(options) == 1 and isinstance(options[0], str) and options[0] in _SCALAR_TYPES:
            return
        self.problems.append(
            f"{what} has type {self.type_text(type_)}; only {_SCALAR_TEXT} are supported "
            "(values travel as text)"
        )


def fragment(id_: str) -> str:
    return urllib.parse.urldefrag(id_)[1] if "#" in id_ else id_


def leaf(id_: str) -> str:
    """The last segment of an id: the name of a parameter inside its process."""
    return fragment(id_).rsplit("/", 1)[-1]


def class_name(obj: Any) -> str:
    return type(obj).__name__


def names_text(names: Any) -> str:
    listed = [repr(n) for n in names]
    return ", ".join(listed) if listed else "none"
