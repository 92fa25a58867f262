"""The checks of one workflow step: its tool, its inputs and outs, its job type."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from caroni.manager.templates.fetch import normalize_text, path_in_folder, shown_path
from caroni.manager.templates.load import load_cwl
from caroni.manager.templates.model import Source, StepSpec
from caroni.manager.templates.requirement import job_requirement
from caroni.manager.templates.scope import Scope, class_name, fragment, leaf, names_text


@dataclass(slots=True)
class StepInfo:
    """What a step declares, kept even when the step has problems.

    Sources and cycles are checked against every step, so one faulty step does not
    make its consumers look wrong too.
    """

    name: str
    inputs: dict[str, Source]
    outputs: tuple[str, ...]  # the `out` list
    tool_outputs: tuple[str, ...]  # what the tool declares
    spec: StepSpec | None  # None when the step has problems


def check_step(scope: Scope, step: Any) -> StepInfo:
    problems = scope.problems
    step_name = scope.local(step.id)
    where = f"step {step_name!r}: "
    before = len(problems)

    if step.scatter is not None:
        problems.append(where + "scatter is not supported")
    if getattr(step, "when", None) is not None:
        problems.append(where + "when is not supported")

    tool, tool_namespaces = _resolve_run(scope, step.run, where)
    tool_inputs: list[str] = []
    tool_outputs: tuple[str, ...] = ()
    if tool is not None:
        for param in tool.inputs:
            tool_inputs.append(leaf(param.id))
            scope.check_type(f"{where}tool input {leaf(param.id)!r}", param.type_)
        tool_outputs = tuple(leaf(param.id) for param in tool.outputs)
        for param in tool.outputs:
            scope.check_type(f"{where}tool output {leaf(param.id)!r}", param.type_)

    inputs: dict[str, Source] = {}
    for step_input in step.in_:
        input_name = leaf(step_input.id)
        src = _check_step_input(scope, where, input_name, step_input)
        if src is not None:
            inputs[input_name] = src
        if tool is not None and input_name not in tool_inputs:
            problems.append(
                f"{where}input {input_name!r} is not an input of the tool "
                f"(the tool has {names_text(tool_inputs)})"
            )
    if tool is not None:
        connected = {leaf(i.id) for i in step.in_}
        for tool_input in tool_inputs:
            if tool_input not in connected:
                problems.append(
                    f"{where}tool input {tool_input!r} is not connected (add it under in)"
                )

    outputs: list[str] = []
    for out in step.out:
        out_name = leaf(out if isinstance(out, str) else out.id)
        outputs.append(out_name)
        if tool is not None and out_name not in tool_outputs:
            problems.append(
                f"{where}out {out_name!r} is not an output of the tool "
                f"(the tool has {names_text(tool_outputs)})"
            )

    job_type, job_kvs = job_requirement(scope, where, step, tool, tool_namespaces)
    spec = None
    if tool is not None and job_type is not None and len(problems) == before:
        spec = StepSpec(
            name=step_name,
            job_type=job_type,
            inputs=inputs,
            outputs=tuple(outputs),
            job_kvs=job_kvs,
        )
    return StepInfo(step_name, inputs, tuple(outputs), tool_outputs, spec)


def _check_step_input(scope: Scope, where: str, input_name: str, step_input: Any) -> Source | None:
    problems = scope.problems
    what = f"{where}input {input_name!r}"
    ok = True
    if step_input.valueFrom is not None:
        problems.append(f"{what} uses valueFrom, which is not supported")
        ok = False
    if step_input.default is not None:
        problems.append(
            f"{what} has a default, which is not supported (connect it to a workflow input)"
        )
        ok = False
    for field in ("linkMerge", "pickValue"):
        if getattr(step_input, field, None) is not None:
            problems.append(f"{what} uses {field}, which is not supported")
            ok = False
    source = step_input.source
    if source is None:
        if ok:
            problems.append(f"{what} has no source")
        return None
    if isinstance(source, list):
        if len(source) != 1:
            names = ", ".join(repr(scope.local(s)) for s in source)
            problems.append(
                f"{what} has several sources ({names}); only one source per input is supported"
            )
        else:
            problems.append(
                f"{what} gives its source as a list, which CWL turns into an array; "
                "name a single source"
            )
        return None
    return scope.parse_source(source) if ok else None


def _resolve_run(scope: Scope, run: Any, where: str) -> tuple[Any | None, dict[str, str]]:
    """The step's CommandLineTool (inline, or a file beside the template)."""
    problems = scope.problems
    if isinstance(run, str):
        if run.startswith(scope.uri):
            shown = "#" + fragment(run)
        else:
            shown = shown_path(run, scope.base_dir)
        if urllib.parse.urldefrag(run)[0] == scope.uri or "#" in run:
            problems.append(
                f"{where}run {shown!r} points into a document; name a tool file instead"
            )
            return None, {}
        if scope.base_dir is None:
            problems.append(
                f"{where}run {shown!r} names a file, which needs the template to be "
                "loaded from its folder"
            )
            return None, {}
        path = path_in_folder(run, scope.base_dir)
        if path is None:
            problems.append(f"{where}run {shown!r} is outside the template's folder")
            return None, {}
        try:
            text = normalize_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"{where}run {shown!r} cannot be read: {reason}")
            return None, {}
        tool = load_cwl(
            text,
            path.as_uri(),
            scope.base_dir,
            problems,
            expect="CommandLineTool",
            where=f"{where}run {shown!r}: ",
        )
        if tool is None:
            return None, {}
        namespaces = dict(getattr(tool.loadingOptions, "namespaces", {}) or {})
        return tool, namespaces
    kind = class_name(run)
    if kind == "CommandLineTool":
        return run, scope.namespaces
    if kind == "Workflow":
        problems.append(f"{where}run is a Workflow; subworkflows are not supported")
    elif kind == "ExpressionTool":
        problems.append(
            f"{where}run is an ExpressionTool, which is not supported "
            "(use a CommandLineTool naming a job type)"
        )
    else:
        problems.append(f"{where}run is a {kind}; only CommandLineTool is supported")
    return None, {}
