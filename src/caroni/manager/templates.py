"""Workflow templates: the supported subset of CWL, parsed into a plain structure.

A template is a CWL ``Workflow`` whose steps each run a ``CommandLineTool`` that names,
through the hint ``caroni:CaroniRequirement``, the job type an agent must offer. The
manager never runs the tool's command line: it sends each step's inputs to the job by
name and receives the outputs by name. So a template reduces to a small graph of named
steps, which is what :class:`Template` holds.

cwl-utils does the CWL parsing and validation; this module adds the rules of the
subset and reports *every* problem in one :class:`~caroni.errors.TemplateError`, so a
user can fix a template in one go.
"""

from __future__ import annotations

import heapq
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from cwl_utils.parser import LoadingOptions, load_document_by_yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from schema_salad.exceptions import SchemaSaladException, ValidationException
from schema_salad.fetcher import DefaultFetcher
from schema_salad.utils import yaml_no_ts

from caroni.errors import TemplateError

__all__ = [
    "CARONI_NAMESPACE",
    "Source",
    "StepSpec",
    "Template",
    "load_template_file",
    "parse_template",
]

CARONI_NAMESPACE = "https://caroni.example/cwl#"
_REQUIREMENT = "CaroniRequirement"
_JOB_NAME = "CaroniJobName"
_JOB_KVS = "CaroniJobKVs"
_SUPPORTED_VERSIONS = ("v1.2", "v1.1", "v1.0")
# Every value travels on the wire as a string, so only types with an obvious text form.
_SCALAR_TYPES = ("string", "int", "long", "float", "double", "boolean")
_SCALAR_TEXT = "string, int, long, float, double and boolean"
# Templates come from users (web forms); bound the work one upload can cause.
MAX_TEMPLATE_CHARS = 1_000_000
_VIRTUAL_DIR = "file:///caroni-templates/"
_JSON_FORMAT = "caroni-template/1"
_MISSING_JOB_NAME = (
    "no CaroniJobName (add hints: caroni:CaroniRequirement: CaroniJobName: <job type>)"
)


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value comes from: a workflow input, or an output of a step."""

    step: str | None  # None: a workflow input
    name: str  # the workflow input's name, or the output name of `step`

    def __str__(self) -> str:
        return self.name if self.step is None else f"{self.step}/{self.name}"


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: the job type to request and how its inputs and outputs connect."""

    name: str
    job_type: str  # CaroniJobName
    inputs: dict[str, Source]  # step input name -> source, in document order
    outputs: tuple[str, ...]  # the step's `out` names
    job_kvs: dict[str, str]  # static CaroniJobKVs, {} when absent


@dataclass(frozen=True, slots=True)
class Template:
    """A validated template, reduced to what the manager needs to run it."""

    name: str
    inputs: tuple[str, ...]  # workflow input names
    outputs: dict[str, Source]  # workflow output name -> outputSource
    steps: dict[str, StepSpec]  # topological order: upstream before downstream
    text: str  # the CWL text as given (normalized to LF)

    def to_json(self) -> str:
        """Serialize losslessly for storage (lists keep every order explicit)."""
        data = {
            "format": _JSON_FORMAT,
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": [
                {"name": name, "source": _source_to_json(src)} for name, src in self.outputs.items()
            ],
            "steps": [
                {
                    "name": step.name,
                    "job_type": step.job_type,
                    "inputs": [
                        {"name": name, "source": _source_to_json(src)}
                        for name, src in step.inputs.items()
                    ],
                    "outputs": list(step.outputs),
                    "job_kvs": dict(step.job_kvs),
                }
                for step in self.steps.values()
            ],
            "text": self.text,
        }
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> Template:
        """Rebuild a template stored by :meth:`to_json` (no CWL parsing needed)."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("format") != _JSON_FORMAT:
                raise ValueError(f"expected format {_JSON_FORMAT!r}")
            steps: dict[str, StepSpec] = {}
            for raw in _json_list(obj["steps"]):
                step = StepSpec(
                    name=_json_str(raw["name"]),
                    job_type=_json_str(raw["job_type"]),
                    inputs={
                        _json_str(i["name"]): _source_from_json(i["source"])
                        for i in _json_list(raw["inputs"])
                    },
                    outputs=tuple(_json_str(o) for o in _json_list(raw["outputs"])),
                    job_kvs={
                        _json_str(k): _json_str(v) for k, v in _json_dict(raw["job_kvs"]).items()
                    },
                )
                steps[step.name] = step
            return cls(
                name=_json_str(obj["name"]),
                inputs=tuple(_json_str(i) for i in _json_list(obj["inputs"])),
                outputs={
                    _json_str(o["name"]): _source_from_json(o["source"])
                    for o in _json_list(obj["outputs"])
                },
                steps=steps,
                text=_json_str(obj["text"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"stored template data is malformed: {exc!s}"
            raise TemplateError(problem, [problem]) from exc


def _source_to_json(src: Source) -> dict[str, str | None]:
    return {"step": src.step, "name": src.name}


def _source_from_json(raw: Any) -> Source:
    obj = _json_dict(raw)
    step = obj["step"]
    return Source(step=None if step is None else _json_str(step), name=_json_str(obj["name"]))


def _json_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _json_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _json_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------- entry points


def parse_template(name: str, text: str, *, base_dir: Path | None = None) -> Template:
    """Parse and validate; raise TemplateError listing every problem found.

    ``base_dir`` is the folder the template lives in; only with it may a step's
    ``run`` name a tool file (``run: tool.cwl``), and only files inside that folder.
    """
    problems: list[str] = []
    if not name or name != name.strip():
        problems.append(f"the template name {name!r} must be non-empty without surrounding spaces")
        _raise(name, problems)
    text = normalize_text(text)
    if len(text) > MAX_TEMPLATE_CHARS:
        problems.append(f"the template is larger than {MAX_TEMPLATE_CHARS} characters")
        _raise(name, problems)

    quoted = urllib.parse.quote(name, safe="") + ".cwl"
    if base_dir is not None:
        base_dir = base_dir.resolve()
        uri = base_dir.as_uri() + "/" + quoted
    else:
        uri = _VIRTUAL_DIR + quoted

    doc = _load_cwl(text, uri, base_dir, problems, expect="Workflow", where="")
    if doc is None:
        _raise(name, problems)
    template = _Checker(doc, uri, base_dir, problems).build(name, text)
    if problems or template is None:
        _raise(name, problems)
    return template


def load_template_file(path: Path, name: str | None = None) -> Template:
    """Read a template file; its folder is the base_dir for ``run: other.cwl``."""
    name = name if name is not None else path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        _raise(name, [f"{path} is not UTF-8 text"])
    except OSError as exc:
        _raise(name, [f"cannot read {path}: {exc.strerror or exc}"])
    return parse_template(name, text, base_dir=path.parent)


def normalize_text(text: str) -> str:
    """LF line ends and no BOM: what web forms save varies, and cwl-utils wants LF."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _raise(name: str, problems: list[str]) -> NoReturn:
    lines = [f"template {name!r} is not supported:"]
    for problem in problems:
        lines.append("- " + problem.replace("\n", "\n  "))
    raise TemplateError("\n".join(lines), list(problems))


# ----------------------------------------------------------------------------- loading


class _FolderFetcher(DefaultFetcher):
    """Lets cwl-utils read files inside the template's folder, and nothing else.

    The default fetcher would read any local file and reach the network (even just
    to check that ``https://caroni.example/cwl#...`` exists); a template comes from
    a user, so neither is acceptable.
    """

    def __init__(self, base_dir: Path | None) -> None:
        super().__init__({}, None)
        self._base_dir = base_dir

    def _allowed(self, url: str) -> Path | None:
        return _path_in_folder(url, self._base_dir)

    def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
        path = self._allowed(url)
        if path is None:
            raise ValidationException(
                f"refusing to read {url}: a template may only refer to files in its own folder"
            )
        try:
            return normalize_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationException(f"cannot read {path.name}: {exc}") from exc

    def check_exists(self, url: str) -> bool:
        path = self._allowed(url)
        return path is not None and path.exists()


def _path_in_folder(url: str, base_dir: Path | None) -> Path | None:
    """The local path of a file: URL if it lies inside base_dir, else None."""
    split = urllib.parse.urlsplit(url)
    if base_dir is None or split.scheme != "file" or split.netloc not in ("", "localhost"):
        return None
    path = Path(urllib.request.url2pathname(split.path)).resolve()
    return path if path.is_relative_to(base_dir) else None


def _load_cwl(
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

    if expect == "Workflow":
        for step in _yaml_steps(yaml_doc):
            _move_caroni_requirements(step)
            run = step.get("run")
            if isinstance(run, CommentedMap):
                _move_caroni_requirements(run)
    else:
        _move_caroni_requirements(yaml_doc)

    options = LoadingOptions(fileuri=uri, fetcher=_FolderFetcher(base_dir), no_link_check=True)
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


def _is_requirement_key(cls: Any) -> bool:
    """Any spelling of the Caroni class: prefixed, bare, or the full URI."""
    return isinstance(cls, str) and (
        cls in (_REQUIREMENT, CARONI_NAMESPACE + _REQUIREMENT) or cls.endswith(":" + _REQUIREMENT)
    )


def _move_caroni_requirements(process: CommentedMap) -> None:
    """Leniency: read a CaroniRequirement under ``requirements`` as a hint.

    cwl-utils rejects every non-CWL class under ``requirements``, yet existing
    templates put CaroniRequirement there. Hints are kept as written, so moving
    the entry lets the document load and the job name be read the same way.
    """
    reqs = process.get("requirements")
    moved: list[Any] = []
    if isinstance(reqs, CommentedMap):
        for key in [k for k in reqs if _is_requirement_key(k)]:
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
            if isinstance(item, dict) and _is_requirement_key(item.get("class")):
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


# ----------------------------------------------------------------------------- checking


def _fragment(id_: str) -> str:
    return urllib.parse.urldefrag(id_)[1] if "#" in id_ else id_


def _leaf(id_: str) -> str:
    """The last segment of an id: the name of a parameter inside its process."""
    return _fragment(id_).rsplit("/", 1)[-1]


def _class_name(obj: Any) -> str:
    return type(obj).__name__


@dataclass(slots=True)
class _StepInfo:
    """What a step declares, kept even when the step has problems.

    Sources and cycles are checked against every step, so one faulty step does not
    make its consumers look wrong too.
    """

    name: str
    inputs: dict[str, Source]
    outputs: tuple[str, ...]  # the `out` list
    tool_outputs: tuple[str, ...]  # what the tool declares
    spec: StepSpec | None  # None when the step has problems


class _Checker:
    """Applies the subset's rules to a parsed Workflow and collects every problem."""

    def __init__(self, doc: Any, uri: str, base_dir: Path | None, problems: list[str]) -> None:
        self.doc = doc
        self.uri = uri
        self.base_dir = base_dir
        self.problems = problems
        self.prefix = str(doc.id or uri)
        self.namespaces: dict[str, str] = dict(getattr(doc.loadingOptions, "namespaces", {}) or {})

    # -- names

    def local(self, id_: str) -> str:
        """An id relative to the workflow: 'step1', 'start_message', 'step1/jobout'."""
        for base in (self.prefix + "/", self.prefix + "#", self.uri + "#"):
            if id_.startswith(base):
                return id_[len(base) :]
        return _fragment(id_)

    def type_text(self, type_: Any) -> str:
        if isinstance(type_, str):
            # an unknown type name comes back as a URI in the document: show the name
            return _fragment(type_) if type_.startswith("file:") else type_
        if isinstance(type_, list):
            names = [self.type_text(t) for t in type_]
            if len(names) == 2 and "null" in names:
                return names[1 - names.index("null")] + "?"
            return " | ".join(names)
        cls = _class_name(type_).lower()
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

    # -- whole workflow

    def build(self, name: str, text: str) -> Template | None:
        doc = self.doc
        inputs: list[str] = []
        for param in doc.inputs:
            input_name = self.local(param.id)
            what = f"workflow input {input_name!r}"
            if input_name in inputs:
                self.problems.append(f"{what} is declared twice")
                continue
            inputs.append(input_name)
            self.check_type(what, param.type_)
            if param.default is not None:
                self.problems.append(
                    f"{what} has a default, which is not supported (send every input "
                    "when creating the workflow)"
                )

        infos: dict[str, _StepInfo] = {}
        for step in doc.steps:
            info = self.check_step(step)
            if info.name in infos:
                self.problems.append(f"step {info.name!r} is declared twice")
                continue
            infos[info.name] = info
        if not doc.steps:
            self.problems.append("the workflow has no steps")

        # Sources can only be checked once every step is known.
        upstream: dict[str, list[str]] = {s: [] for s in infos}
        for info in infos.values():
            for input_name, src in info.inputs.items():
                what = f"step {info.name!r}: input {input_name!r} comes from {str(src)!r}"
                known = self.check_source(what, src, inputs, infos)
                if known and src.step is not None and src.step not in upstream[info.name]:
                    upstream[info.name].append(src.step)

        outputs: dict[str, Source] = {}
        for param in doc.outputs:
            out_name = self.local(param.id)
            out_src = self.check_output(out_name, param)
            if out_src is None:
                continue
            what = f"output {out_name!r} comes from {str(out_src)!r}"
            if self.check_source(what, out_src, inputs, infos):
                outputs[out_name] = out_src

        order = self.topological_order(list(infos), upstream)
        if self.problems or order is None:
            return None
        # No problems means every step was built.
        steps = {n: spec for n in order if (spec := infos[n].spec) is not None}
        return Template(
            name=name,
            inputs=tuple(inputs),
            outputs=outputs,
            steps=steps,
            text=text,
        )

    def check_source(
        self,
        what: str,
        src: Source,
        inputs: list[str],
        infos: Mapping[str, _StepInfo],
    ) -> bool:
        if src.step is None and src.name in inputs:
            return True
        if src.step is not None and src.step in infos:
            if src.name in infos[src.step].outputs:
                return True
            if src.name in infos[src.step].tool_outputs:
                self.problems.append(
                    f"{what}, which step {src.step!r} does not list in its out "
                    f"(add {src.name!r} to out)"
                )
                return False
        self.problems.append(f"{what}, which is not a workflow input or a step output")
        return False

    def parse_source(self, raw: str) -> Source:
        ref = self.local(raw)
        if "/" in ref:
            step, name = ref.split("/", 1)
            return Source(step=step, name=name)
        return Source(step=None, name=ref)

    def check_output(self, out_name: str, param: Any) -> Source | None:
        what = f"output {out_name!r}"
        self.check_type(what, param.type_)
        for field in ("linkMerge", "pickValue"):
            if getattr(param, field, None) is not None:
                self.problems.append(f"{what} uses {field}, which is not supported")
        source = param.outputSource
        if source is None:
            self.problems.append(f"{what} has no outputSource")
            return None
        if isinstance(source, list):
            if len(source) != 1:
                self.problems.append(
                    f"{what} has several outputSources; only one source is supported"
                )
                return None
            self.problems.append(
                f"{what} gives its outputSource as a list, which CWL turns into an array; "
                "name a single source"
            )
            return None
        return self.parse_source(source)

    # -- one step

    def check_step(self, step: Any) -> _StepInfo:
        step_name = self.local(step.id)
        where = f"step {step_name!r}: "
        before = len(self.problems)

        if step.scatter is not None:
            self.problems.append(where + "scatter is not supported")
        if getattr(step, "when", None) is not None:
            self.problems.append(where + "when is not supported")

        tool, tool_namespaces = self.resolve_run(step.run, where)
        tool_inputs: list[str] = []
        tool_outputs: tuple[str, ...] = ()
        if tool is not None:
            for param in tool.inputs:
                tool_inputs.append(_leaf(param.id))
                self.check_type(f"{where}tool input {_leaf(param.id)!r}", param.type_)
            tool_outputs = tuple(_leaf(param.id) for param in tool.outputs)
            for param in tool.outputs:
                self.check_type(f"{where}tool output {_leaf(param.id)!r}", param.type_)

        inputs: dict[str, Source] = {}
        for step_input in step.in_:
            input_name = _leaf(step_input.id)
            src = self.check_step_input(where, input_name, step_input)
            if src is not None:
                inputs[input_name] = src
            if tool is not None and input_name not in tool_inputs:
                self.problems.append(
                    f"{where}input {input_name!r} is not an input of the tool "
                    f"(the tool has {_names(tool_inputs)})"
                )
        if tool is not None:
            connected = {_leaf(i.id) for i in step.in_}
            for tool_input in tool_inputs:
                if tool_input not in connected:
                    self.problems.append(
                        f"{where}tool input {tool_input!r} is not connected (add it under in)"
                    )

        outputs: list[str] = []
        for out in step.out:
            out_name = _leaf(out if isinstance(out, str) else out.id)
            outputs.append(out_name)
            if tool is not None and out_name not in tool_outputs:
                self.problems.append(
                    f"{where}out {out_name!r} is not an output of the tool "
                    f"(the tool has {_names(tool_outputs)})"
                )

        job_type, job_kvs = self.job_requirement(where, step, tool, tool_namespaces)
        spec = None
        if tool is not None and job_type is not None and len(self.problems) == before:
            spec = StepSpec(
                name=step_name,
                job_type=job_type,
                inputs=inputs,
                outputs=tuple(outputs),
                job_kvs=job_kvs,
            )
        return _StepInfo(step_name, inputs, tuple(outputs), tool_outputs, spec)

    def check_step_input(self, where: str, input_name: str, step_input: Any) -> Source | None:
        what = f"{where}input {input_name!r}"
        ok = True
        if step_input.valueFrom is not None:
            self.problems.append(f"{what} uses valueFrom, which is not supported")
            ok = False
        if step_input.default is not None:
            self.problems.append(
                f"{what} has a default, which is not supported (connect it to a workflow input)"
            )
            ok = False
        for field in ("linkMerge", "pickValue"):
            if getattr(step_input, field, None) is not None:
                self.problems.append(f"{what} uses {field}, which is not supported")
                ok = False
        source = step_input.source
        if source is None:
            if ok:
                self.problems.append(f"{what} has no source")
            return None
        if isinstance(source, list):
            if len(source) != 1:
                names = ", ".join(repr(self.local(s)) for s in source)
                self.problems.append(
                    f"{what} has several sources ({names}); only one source per input is supported"
                )
            else:
                self.problems.append(
                    f"{what} gives its source as a list, which CWL turns into an array; "
                    "name a single source"
                )
            return None
        return self.parse_source(source) if ok else None

    def resolve_run(self, run: Any, where: str) -> tuple[Any | None, dict[str, str]]:
        """The step's CommandLineTool (inline, or a file beside the template)."""
        if isinstance(run, str):
            if run.startswith(self.uri):
                shown = "#" + _fragment(run)
            else:
                shown = _relative(run, self.base_dir)
            if urllib.parse.urldefrag(run)[0] == self.uri or "#" in run:
                self.problems.append(
                    f"{where}run {shown!r} points into a document; name a tool file instead"
                )
                return None, {}
            if self.base_dir is None:
                self.problems.append(
                    f"{where}run {shown!r} names a file, which needs the template to be "
                    "loaded from its folder"
                )
                return None, {}
            path = _path_in_folder(run, self.base_dir)
            if path is None:
                self.problems.append(f"{where}run {shown!r} is outside the template's folder")
                return None, {}
            try:
                text = normalize_text(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.problems.append(f"{where}run {shown!r} cannot be read: {reason}")
                return None, {}
            tool = _load_cwl(
                text,
                path.as_uri(),
                self.base_dir,
                self.problems,
                expect="CommandLineTool",
                where=f"{where}run {shown!r}: ",
            )
            if tool is None:
                return None, {}
            namespaces = dict(getattr(tool.loadingOptions, "namespaces", {}) or {})
            return tool, namespaces
        kind = _class_name(run)
        if kind == "CommandLineTool":
            return run, self.namespaces
        if kind == "Workflow":
            self.problems.append(f"{where}run is a Workflow; subworkflows are not supported")
        elif kind == "ExpressionTool":
            self.problems.append(
                f"{where}run is an ExpressionTool, which is not supported "
                "(use a CommandLineTool naming a job type)"
            )
        else:
            self.problems.append(f"{where}run is a {kind}; only CommandLineTool is supported")
        return None, {}

    def job_requirement(
        self, where: str, step: Any, tool: Any | None, tool_namespaces: dict[str, str]
    ) -> tuple[str | None, dict[str, str]]:
        """Read CaroniJobName / CaroniJobKVs from the step's or the tool's hints."""
        if tool is None:
            return None, {}  # the run problem is reported; a job name would not help
        found: list[tuple[str, dict[str, str]]] = []
        seen = False
        sources = [(step.hints, self.namespaces)]
        sources.append((tool.hints, tool_namespaces))
        for hints, namespaces in sources:
            for hint in hints or ():
                if not isinstance(hint, dict) or not self.is_caroni(where, hint, namespaces):
                    continue
                seen = True
                parsed = self.read_requirement(where, hint)
                if parsed is not None:
                    found.append(parsed)
        if not found:
            if not seen:  # a malformed requirement has been reported already
                self.problems.append(where + _MISSING_JOB_NAME)
            return None, {}
        job_type, job_kvs = found[0]
        for other_type, other_kvs in found[1:]:
            if (other_type, other_kvs) != (job_type, job_kvs):
                self.problems.append(
                    f"{where}CaroniRequirement is given more than once, differently "
                    f"({job_type!r} and {other_type!r}); keep one"
                )
                return None, {}
        return job_type, job_kvs

    def is_caroni(self, where: str, hint: dict[str, Any], namespaces: dict[str, str]) -> bool:
        cls = hint.get("class")
        if not isinstance(cls, str) or not _is_requirement_key(cls):
            return False
        if cls in (_REQUIREMENT, CARONI_NAMESPACE + _REQUIREMENT):
            return True  # the bare name is a documented leniency
        prefix = cls[: -len(":" + _REQUIREMENT)]
        declared = namespaces.get(prefix)
        if declared == CARONI_NAMESPACE or (declared is None and prefix == "caroni"):
            return True
        if declared is not None:
            self.problems.append(
                f"{where}{cls} uses the prefix {prefix!r}, which $namespaces declares as "
                f"{declared!r}, not {CARONI_NAMESPACE!r}"
            )
        return False

    def read_requirement(
        self, where: str, hint: dict[str, Any]
    ) -> tuple[str, dict[str, str]] | None:
        ok = True
        unknown = [k for k in hint if k not in ("class", _JOB_NAME, _JOB_KVS)]
        if unknown:
            self.problems.append(
                f"{where}CaroniRequirement has unknown field(s) {_names(unknown)} "
                f"(known: {_JOB_NAME}, {_JOB_KVS})"
            )
            ok = False
        job_type = hint.get(_JOB_NAME)
        if job_type is None:
            self.problems.append(where + _MISSING_JOB_NAME)
            return None
        if not isinstance(job_type, str) or not job_type.strip():
            self.problems.append(f"{where}{_JOB_NAME} must be a non-empty string")
            ok = False
        kvs_raw = hint.get(_JOB_KVS, {})
        job_kvs: dict[str, str] = {}
        if kvs_raw is None:
            kvs_raw = {}
        if not isinstance(kvs_raw, dict):
            self.problems.append(f"{where}{_JOB_KVS} must be a mapping of names to values")
            ok = False
        else:
            for key, value in kvs_raw.items():
                text = _scalar_text(value)
                if not isinstance(key, str) or text is None:
                    self.problems.append(
                        f"{where}{_JOB_KVS} entry {key!r} must map a name to a string, "
                        "number or boolean"
                    )
                    ok = False
                else:
                    job_kvs[key] = text
        return (job_type, job_kvs) if ok and isinstance(job_type, str) else None

    # -- ordering

    def topological_order(
        self, names: list[str], upstream: dict[str, list[str]]
    ) -> list[str] | None:
        """Upstream before downstream; ties keep document order. None on a cycle."""
        position = {n: i for i, n in enumerate(names)}
        downstream: dict[str, list[str]] = {n: [] for n in names}
        waiting = {n: len(upstream[n]) for n in names}
        for name in names:
            for up in upstream[name]:
                downstream[up].append(name)
        ready = [position[n] for n in names if waiting[n] == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            name = names[heapq.heappop(ready)]
            order.append(name)
            for down in downstream[name]:
                waiting[down] -= 1
                if waiting[down] == 0:
                    heapq.heappush(ready, position[down])
        if len(order) == len(names):
            return order
        stuck = [n for n in names if n not in set(order)]
        for cycle in _cycles(stuck, downstream):
            path = " -> ".join(repr(n) for n in [*cycle, cycle[0]])
            self.problems.append(f"steps form a cycle: {path}")
        return None


def _cycles(nodes: list[str], downstream: dict[str, list[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected group, in document order."""
    members = set(nodes)

    def reach(start: str) -> dict[str, str | None]:
        # BFS parents; the start is re-entered only through a real edge.
        parents: dict[str, str | None] = {}
        queue = [start]
        while queue:
            current = queue.pop(0)
            for nxt in downstream[current]:
                if nxt in members and nxt not in parents:
                    parents[nxt] = current
                    queue.append(nxt)
        return parents

    reached = {n: reach(n) for n in nodes}
    done: set[str] = set()
    cycles: list[list[str]] = []
    for node in nodes:
        if node in done or node not in reached[node]:
            continue
        group = {m for m in reached[node] if node in reached[m]}
        done |= group
        path = [node]
        current = reached[node][node]
        while current is not None and current != node:
            path.append(current)
            current = reached[node][current]
        path = [path[0], *reversed(path[1:])]
        cycles.append(path)
    return cycles


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _names(names: Any) -> str:
    listed = [repr(n) for n in names]
    return ", ".join(listed) if listed else "none"


def _relative(url: str, base_dir: Path | None) -> str:
    split = urllib.parse.urlsplit(url)
    if split.scheme == "file":
        path = Path(urllib.request.url2pathname(split.path))
        if base_dir is not None:
            return Path(os.path.relpath(path, base_dir)).as_posix()
        if url.startswith(_VIRTUAL_DIR):
            return urllib.parse.unquote(url[len(_VIRTUAL_DIR) :])
        return path.as_posix()
    return url
