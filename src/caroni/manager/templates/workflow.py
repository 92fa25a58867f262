"""The checks of a whole Workflow: inputs, steps, where every value comes from, order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caroni.manager.templates.graph import step_order
from caroni.manager.templates.model import Source, Template
from caroni.manager.templates.scope import Scope
from caroni.manager.templates.steps import StepInfo, check_step


def check_workflow(scope: Scope, name: str, text: str) -> Template | None:
    """The template, or None with the reasons in ``scope.problems``."""
    doc = scope.doc
    problems = scope.problems
    inputs: list[str] = []
    for param in doc.inputs:
        input_name = scope.local(param.id)
        what = f"workflow input {input_name!r}"
        if input_name in inputs:
            problems.append(f"{what} is declared twice")
            continue
        inputs.append(input_name)
        scope.check_type(what, param.type_)
        if param.default is not None:
            problems.append(
                f"{what} has a default, which is not supported (send every input "
                "when creating the workflow)"
            )

    infos: dict[str, StepInfo] = {}
    for step in doc.steps:
        info = check_step(scope, step)
        if info.name in infos:
            problems.append(f"step {info.name!r} is declared twice")
            continue
        infos[info.name] = info
    if not doc.steps:
        problems.append("the workflow has no steps")

    # Sources can only be checked once every step is known.
    upstream: dict[str, list[str]] = {s: [] for s in infos}
    for info in infos.values():
        for input_name, src in info.inputs.items():
            what = f"step {info.name!r}: input {input_name!r} comes from {str(src)!r}"
            known = _check_source(scope, what, src, inputs, infos)
            if known and src.step is not None and src.step not in upstream[info.name]:
                upstream[info.name].append(src.step)

    outputs: dict[str, Source] = {}
    for param in doc.outputs:
        out_name = scope.local(param.id)
        out_src = _check_output(scope, out_name, param)
        if out_src is None:
            continue
        what = f"output {out_name!r} comes from {str(out_src)!r}"
        if _check_source(scope, what, out_src, inputs, infos):
            outputs[out_name] = out_src

    order, cycles = step_order(list(infos), upstream)
    for cycle in cycles:
        path = " -> ".join(repr(n) for n in [*cycle, cycle[0]])
        problems.append(f"steps form a cycle: {path}")
    if problems:
        return None
    # No problems means every step was built.
    steps = {n: spec for n in order if (spec := infos[n].spec) is not None}
    return Template(name=name, inputs=tuple(inputs), outputs=outputs, steps=steps, text=text)


def _check_source(
    scope: Scope, what: str, src: Source, inputs: list[str], infos: Mapping[str, StepInfo]
) -> bool:
    if src.step is None and src.name in inputs:
        return True
    if src.step is not None and src.step in infos:
        if src.name in infos[src.step].outputs:
            return True
        if src.name in infos[src.step].tool_outputs:
            scope.problems.append(
                f"{what}, which step {src.step!r} does not list in its out "
                f"(add {src.name!r} to out)"
            )
            return False
    scope.problems.append(f"{what}, which is not a workflow input or a step output")
    return False


def _check_output(scope: Scope, out_name: str, param: Any) -> Source | None:
    problems = scope.problems
    what = f"output {out_name!r}"
    scope.check_type(what, param.type_)
    for field in ("linkMerge", "pickValue"):
        if getattr(param, field, None) is not None:
            problems.append(f"{what} uses {field}, which is not supported")
    source = param.outputSource
    if source is None:
        problems.append(f"{what} has no outputSource")
        return None
    if isinstance(source, list):
        if len(source) != 1:
            problems.append(f"{what} has several outputSources; only one source is supported")
            return None
        problems.append(
            f"{what} gives its outputSource as a list, which CWL turns into an array; "
            "name a single source"
        )
        return None
    return scope.parse_source(source)
