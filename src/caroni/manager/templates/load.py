"""YAML text to a cwl-utils object, with every problem said in the user's terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cwl_utils.parser import LoadingOptions, load_document_by_yaml
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from schema_salad.exceptions import SchemaSaladException
from schema_salad.utils import yaml_no_ts

from caroni.manager.templates.fetch import FolderFetcher
from caroni.manager.templates.rewrite import move_caroni_requirements

_SUPPORTED_VERSIONS = ("v1.2", "v1.1", "v1.0")


def load_cwl(
    text: str,
    uri: str,
    base_dir: Path | None,
    problems: list[str],
    *,
    expect: str,
    where: str,
) -> Any | None:
    """YAML -> leniency rewrite -> cwl-utils object; None (with problems) on failure.

    The YAML is read once with the loader cwl-utils itself uses and handed to
    ``load_document_by_yaml`` (what ``load_document_by_string`` does), so the
    leniency rewrite can happen in between.
    """
    try:
        yaml_doc = yaml_no_ts().load(text)
    except MarkedYAMLError as exc:
        problems.append(where + _yaml_problem(exc))
        return None
    except YAMLError as exc:
        problems.append(f"{where}not valid YAML: {exc}")
        return None

    if not isinstance(yaml_doc, CommentedMap):
        problems.append(f"{where}not a CWL document (expected a YAML mapping at the top)")
        return None
    found = len(problems)
    if _has_shared_nodes(yaml_doc):
        problems.append(f"{where}YAML anchors and aliases (&name, *name) are not supported")
    if "$graph" in yaml_doc:
        problems.append(f"{where}packed documents ($graph) are not supported")
    version = yaml_doc.get("cwlVersion")
    if version is None:
        problems.append(f"{where}cwlVersion is missing (use cwlVersion: v1.2)")
    elif version not in _SUPPORTED_VERSIONS:
        problems.append(
            f"{where}cwlVersion {version!r} is not supported (use v1.2; v1.1 and v1.0 also load)"
        )
    cls = yaml_doc.get("class")
    if cls != expect:
        problems.append(_class_problem(where, cls, expect))
    if len(problems) > found:
        return None

    move_caroni_requirements(yaml_doc, expect=expect)

    options = LoadingOptions(fileuri=uri, fetcher=FolderFetcher(base_dir), no_link_check=True)
    try:
        return load_document_by_yaml(yaml_doc, uri, options)
    except SchemaSaladException as exc:
        problems.extend(where + p for p in _salad_problems(exc, uri))
    except RecursionError:
        problems.append(f"{where}the document is nested too deeply")
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        # cwl-utils has no error of its own for some malformed inputs; say what it hit.
        problems.append(
            f"{where}cwl-utils could not read the document ({type(exc).__name__}: {exc})"
        )
    return None


def _class_problem(where: str, cls: Any, expect: str) -> str:
    if cls is None:
        return f"{where}class is missing (use class: {expect})"
    if expect == "Workflow":
        return f"{where}class is {cls!r}; a template must be a Workflow"
    if cls == "Workflow":
        return f"{where}class is 'Workflow'; subworkflows are not supported"
    return f"{where}class is {cls!r}; only CommandLineTool is supported"


def _yaml_problem(exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = ""
    if exc.context:
        context_mark = exc.context_mark
        at = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        context = f", {exc.context}{at}"
    return f"not valid YAML{where}: {exc.problem}{context}"


def _has_shared_nodes(doc: Any) -> bool:
    """True if one YAML node is reachable twice: aliases can blow up the work exponentially."""
    seen: set[int] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                return True
            seen.add(id(node))
            stack.extend(node.values() if isinstance(node, dict) else node)
    return False


def _salad_problems(exc: SchemaSaladException, uri: str) -> list[str]:
    """One problem per failing spot, with a line number instead of the fake path."""
    problems: list[str] = []

    def walk(node: SchemaSaladException) -> None:
        if node.children:
            for child in node.children:
                walk(child)
            return
        message = node.detailed_message or node.message
        if not message:
            return
        message = message.replace(uri + "#", "").replace(uri, "the template")
        message = " ".join(message.split()).removesuffix(" because:")
        line = f"line {node.start[0]}: " if node.start else ""
        problem = f"not valid CWL: {line}{message}"
        if problem not in problems:
            problems.append(problem)

    walk(exc)
    if not problems:
        problems.append("not valid CWL: " + " ".join(str(exc).split()))
    return problems
