"""Templates: the supported CWL subset, the users' fixtures, the demo content."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from caroni.demo import DEMO_DIR, demo_template_paths
from caroni.errors import CaroniError, TemplateError
from caroni.manager.templates import (
    Source,
    StepSpec,
    Template,
    load_template_file,
    parse_template,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}"
)

MISSING_JOB = "no CaroniJobName (add hints: caroni:CaroniRequirement: CaroniJobName: <job type>)"

HEAD = """\
cwlVersion: v1.2
class: Workflow
$namespaces:
  caroni: https://caroni.example/cwl#
"""


def tool(
    job: str | None = "j", ins: tuple[str, ...] = ("x",), outs: tuple[str, ...] = ("o",)
) -> str:
    """An inline CommandLineTool (indented for a step's `run`)."""
    hint = (
        f"\n      hints:\n        caroni:CaroniRequirement:\n          CaroniJobName: {job}"
        if job
        else ""
    )
    inputs = "".join(f"\n        {name}: string" for name in ins) or " {}"
    outputs = "".join(f"\n        {name}: string" for name in outs) or " {}"
    return f"""
    run:
      class: CommandLineTool{hint}
      inputs:{inputs}
      outputs:{outputs}"""


def workflow(
    steps: str,
    inputs: str = "  a: string\n",
    outputs: str = "  r: {type: string, outputSource: s1/o}\n",
) -> str:
    return f"{HEAD}inputs:\n{inputs}outputs:\n{outputs}steps:\n{steps}"


ONE_STEP = f"  s1:{tool()}\n    in: {{x: a}}\n    out: [o]\n"


def problems_of(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(TemplateError) as info:
        parse_template("x", text, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def chain(template: Template) -> dict[str, tuple[str, dict[str, str], tuple[str, ...]]]:
    """A compact, order-aware view of the steps for exact comparisons."""
    return {
        name: (step.job_type, {k: str(v) for k, v in step.inputs.items()}, step.outputs)
        for name, step in template.steps.items()
    }


# ----------------------------------------------------------------------------- the model


def test_source_str() -> None:
    assert str(Source(None, "start_message")) == "start_message"
    assert str(Source("step1", "jobout")) == "step1/jobout"


def test_template_error_is_a_caroni_error_with_every_problem_listed() -> None:
    text = workflow(f"  s1:{tool(job=None)}\n    in: {{x: nosuch}}\n    out: [o]\n    scatter: x\n")
    with pytest.raises(CaroniError) as info:
        parse_template("multi", text)
    error = info.value
    assert isinstance(error, TemplateError)
    assert error.problems == [
        "step 's1': scatter is not supported",
        f"step 's1': {MISSING_JOB}",
        "step 's1': input 'x' comes from 'nosuch', which is not a workflow input or a step output",
    ]
    assert str(error) == "template 'multi' is not supported:\n" + "\n".join(
        f"- {p}" for p in error.problems
    )


# ----------------------------------------------------------------------------- fixtures


@needs_fixtures
def test_fixture_test_simple_loads_although_stored_with_crlf() -> None:
    path = FIXTURES / "test_simple.cwl"
    assert b"\r\n" in path.read_bytes()
    template = load_template_file(path)
    assert template.name == "test_simple"
    assert template.inputs == ("start_message",)
    assert template.outputs == {"result": Source("step3", "out")}
    assert template.steps == {
        "step1": StepSpec(
            "step1", "foojob0", {"message": Source(None, "start_message")}, ("jobout",), {}
        ),
        "step2": StepSpec("step2", "foojob1", {"text": Source("step1", "jobout")}, ("outSB",), {}),
        "step3": StepSpec(
            "step3", "foojob2", {"final_text": Source("step2", "outSB")}, ("out",), {}
        ),
    }
    assert list(template.steps) == ["step1", "step2", "step3"]
    assert "\r" not in template.text
    assert template.text == path.read_text().replace("\r\n", "\n")


@needs_fixtures
def test_fixture_job_types_match_test_simple() -> None:
    """The demo agent's job types offer exactly what test_simple requests."""
    template = load_template_file(FIXTURES / "test_simple.cwl")
    job_types = {jt["name"]: jt for jt in json.loads((FIXTURES / "job_types.json").read_text())}
    for step in template.steps.values():
        assert list(step.inputs) == job_types[step.job_type]["inputs"]
        assert list(step.outputs) == job_types[step.job_type]["outputs"]


@needs_fixtures
def test_fixture_onefile_works_noschema_loads() -> None:
    template = load_template_file(FIXTURES / "onefile-works-noschema.cwl")
    assert chain(template) == {
        "step1": ("foojob0", {"message": "start_message"}, ("out",)),
        "step2": ("foojob1", {"text": "step1/out"}, ("out",)),
        "step3": ("foojob2", {"final_text": "step2/out"}, ("out",)),
    }
    assert template.outputs == {"result": Source("step3", "out")}


@needs_fixtures
@pytest.mark.parametrize("fixture", ["test_template.cwl", "complex.cwl"])
def test_fixture_refused_naming_each_step_without_a_job_name(fixture: str) -> None:
    with pytest.raises(TemplateError) as info:
        load_template_file(FIXTURES / fixture)
    assert info.value.problems == [
        f"step '{step}': {MISSING_JOB}" for step in ("stepA", "stepB", "join", "finalize")
    ]
    assert str(info.value).startswith(f"template '{Path(fixture).stem}' is not supported:\n- ")


@needs_fixtures
def test_fixture_complex_bare_requirement_is_read_leniently() -> None:
    """complex.cwl's own split step (bare CaroniRequirement under requirements) is fine."""
    text = (FIXTURES / "complex.cwl").read_text()
    only_split = text.split("\n  stepA:")[0].replace("finalize/out", "split/outA")
    template = parse_template("complex_split", only_split)
    assert template.steps == {
        "split": StepSpec(
            "split",
            "foojob",
            {"text": Source(None, "start_text")},
            ("outA", "outB"),
            {"foo": "bar", "bar": "baz"},
        )
    }


# ----------------------------------------------------------------------------- demo content


def test_demo_template_paths() -> None:
    paths = demo_template_paths()
    assert paths == {
        "fan_out_fan_in": DEMO_DIR / "fan_out_fan_in.cwl",
        "test_simple": DEMO_DIR / "test_simple.cwl",
    }
    for path in paths.values():
        assert b"\r" not in path.read_bytes()


def test_demo_test_simple_structure() -> None:
    template = load_template_file(demo_template_paths()["test_simple"])
    assert template.name == "test_simple"
    assert template.inputs == ("start_message",)
    assert template.outputs == {"result": Source("step3", "out")}
    assert chain(template) == {
        "step1": ("foojob0", {"message": "start_message"}, ("jobout",)),
        "step2": ("foojob1", {"text": "step1/jobout"}, ("outSB",)),
        "step3": ("foojob2", {"final_text": "step2/outSB"}, ("out",)),
    }
    assert all(step.job_kvs == {} for step in template.steps.values())


@needs_fixtures
def test_demo_test_simple_has_the_fixture_shape() -> None:
    ours = load_template_file(demo_template_paths()["test_simple"])
    theirs = load_template_file(FIXTURES / "test_simple.cwl")
    assert (ours.inputs, ours.outputs, ours.steps) == (theirs.inputs, theirs.outputs, theirs.steps)


def test_demo_fan_out_fan_in_structure() -> None:
    template = load_template_file(demo_template_paths()["fan_out_fan_in"])
    assert template.name == "fan_out_fan_in"
    assert template.inputs == ("start_text",)
    assert template.outputs == {"result": Source("finalize", "framed")}
    assert chain(template) == {
        "split": ("split_text", {"text": "start_text"}, ("left", "right")),
        "process_left": ("shout", {"text": "split/left"}, ("shouted",)),
        "process_right": ("reverse", {"text": "split/right"}, ("reversed",)),
        "join": (
            "join_pair",
            {"first": "process_left/shouted", "second": "process_right/reversed"},
            ("joined",),
        ),
        "finalize": ("frame", {"text": "join/joined"}, ("framed",)),
    }
    assert list(template.steps["join"].inputs) == ["first", "second"]


# ----------------------------------------------------------------------------- order


def test_steps_come_in_topological_order_with_ties_in_document_order() -> None:
    steps = (
        f"  c:{tool()}\n    in: {{x: b/o}}\n    out: [o]\n"
        f"  b:{tool()}\n    in: {{x: a/o}}\n    out: [o]\n"
        f"  a:{tool()}\n    in: {{x: a}}\n    out: [o]\n"
        f"  d:{tool()}\n    in: {{x: a}}\n    out: [o]\n"
    )
    template = parse_template(
        "order", workflow(steps, outputs="  r: {type: string, outputSource: c/o}\n")
    )
    assert list(template.steps) == ["a", "b", "c", "d"]


def test_topological_order_holds_for_every_template() -> None:
    for path in demo_template_paths().values():
        template = load_template_file(path)
        seen: set[str] = set()
        for step in template.steps.values():
            assert {s.step for s in step.inputs.values() if s.step} <= seen
            seen.add(step.name)


# ----------------------------------------------------------------------------- refusals


def test_refuses_scatter_and_when() -> None:
    text = workflow(
        f"  s1:{tool()}\n    in: {{x: a}}\n    out: [o]\n    scatter: x\n    when: $(true)\n"
    )
    assert problems_of(text) == [
        "step 's1': scatter is not supported",
        "step 's1': when is not supported",
    ]


def test_refuses_a_subworkflow() -> None:
    text = workflow(
        "  s1:\n    run:\n      class: Workflow\n      inputs: {x: string}\n"
        "      outputs: {o: {type: string, outputSource: x}}\n      steps: []\n"
        "    in: {x: a}\n    out: [o]\n"
    )
    assert problems_of(text) == ["step 's1': run is a Workflow; subworkflows are not supported"]


def test_refuses_an_expression_tool() -> None:
    text = workflow(
        "  s1:\n    run:\n      class: ExpressionTool\n      inputs: {x: string}\n"
        "      outputs: {o: string}\n      expression: \"$({'o': inputs.x})\"\n"
        "    in: {x: a}\n    out: [o]\n"
    )
    assert problems_of(text) == [
        "step 's1': run is an ExpressionTool, which is not supported "
        "(use a CommandLineTool naming a job type)"
    ]


def test_refuses_value_from_defaults_link_merge_and_missing_sources() -> None:
    text = workflow(
        f"  s1:{tool(ins=('x', 'y', 'z', 'w', 'v'))}\n"
        "    in:\n"
        '      x: {source: a, valueFrom: "$(self)"}\n'
        "      y: {default: hi}\n"
        "      z: {source: [a, b], linkMerge: merge_flattened}\n"
        "      w: {source: [a]}\n"
        "      v: {}\n"
        "    out: [o]\n",
        inputs="  a: string\n  b: string\n",
    )
    assert problems_of(text) == [
        "step 's1': input 'x' uses valueFrom, which is not supported",
        "step 's1': input 'y' has a default, which is not supported "
        "(connect it to a workflow input)",
        "step 's1': input 'z' uses linkMerge, which is not supported",
        "step 's1': input 'z' has several sources ('a', 'b'); "
        "only one source per input is supported",
        "step 's1': input 'w' gives its source as a list, which CWL turns into an array; "
        "name a single source",
        "step 's1': input 'v' has no source",
    ]


def test_refuses_a_cycle_naming_its_steps() -> None:
    steps = (
        f"  s1:{tool(ins=('x', 'y'))}\n    in: {{x: a, y: s2/o}}\n    out: [o]\n"
        f"  s2:{tool()}\n    in: {{x: s1/o}}\n    out: [o]\n"
        f"  s3:{tool()}\n    in: {{x: s3/o}}\n    out: [o]\n"
    )
    assert problems_of(workflow(steps)) == [
        "steps form a cycle: 's1' -> 's2' -> 's1'",
        "steps form a cycle: 's3' -> 's3'",
    ]


def test_refuses_a_source_that_names_nothing() -> None:
    steps = f"  join:{tool(ins=('first',))}\n    in: {{first: nosuch/out}}\n    out: [o]\n"
    text = workflow(steps, outputs="  r: {type: string, outputSource: join/o}\n")
    assert problems_of(text) == [
        "step 'join': input 'first' comes from 'nosuch/out', "
        "which is not a workflow input or a step output"
    ]


def test_refuses_output_sources_that_name_nothing_or_are_missing() -> None:
    outputs = (
        "  r: {type: string, outputSource: nosuch/out}\n"
        "  r2: {type: string, outputSource: s1/p}\n"
        "  r3: {type: string}\n"
    )
    text = workflow(
        f"  s1:{tool(outs=('o', 'p'))}\n    in: {{x: a}}\n    out: [o]\n", outputs=outputs
    )
    assert problems_of(text) == [
        "output 'r' comes from 'nosuch/out', which is not a workflow input or a step output",
        "output 'r2' comes from 's1/p', which step 's1' does not list in its out (add 'p' to out)",
        "output 'r3' has no outputSource",
    ]


def test_refuses_out_names_the_tool_does_not_declare() -> None:
    text = workflow(f"  s1:{tool()}\n    in: {{x: a}}\n    out: [o, q]\n")
    assert problems_of(text) == [
        "step 's1': out 'q' is not an output of the tool (the tool has 'o')"
    ]


def test_refuses_inputs_that_do_not_match_the_tool() -> None:
    text = workflow(f"  s1:{tool(ins=('x', 'y'))}\n    in: {{x: a, z: a}}\n    out: [o]\n")
    assert problems_of(text) == [
        "step 's1': input 'z' is not an input of the tool (the tool has 'x', 'y')",
        "step 's1': tool input 'y' is not connected (add it under in)",
    ]


def test_refuses_a_missing_job_name() -> None:
    steps = f"  process_a:{tool(job=None)}\n    in: {{x: a}}\n    out: [o]\n"
    text = workflow(steps, outputs="  r: {type: string, outputSource: process_a/o}\n")
    assert problems_of(text) == [
        "step 'process_a': no CaroniJobName (add hints: caroni:CaroniRequirement: "
        "CaroniJobName: <job type>)"
    ]


@pytest.mark.parametrize(
    ("declared", "shown"),
    [
        ("File", "File"),
        ("Directory", "Directory"),
        ("string[]", "array"),
        ("Any", "Any"),
        ("strin", "strin"),
    ],
)
def test_refuses_workflow_inputs_of_non_text_types(declared: str, shown: str) -> None:
    text = workflow(ONE_STEP, inputs=f"  a: string\n  b: {declared}\n")
    assert problems_of(text) == [
        f"workflow input 'b' has type {shown}; only string, int, long, float, double and "
        "boolean are supported (values travel as text)"
    ]


def test_refuses_non_text_types_on_outputs_and_tools() -> None:
    text = workflow(
        "  s1:\n    run:\n      class: CommandLineTool\n"
        "      hints: {caroni:CaroniRequirement: {CaroniJobName: j}}\n"
        "      inputs: {x: File}\n      outputs: {o: stdout}\n"
        "    in: {x: a}\n    out: [o]\n",
        outputs="  r: {type: 'File[]', outputSource: s1/o}\n",
    )
    assert problems_of(text) == [
        "step 's1': tool input 'x' has type File; only string, int, long, float, double and "
        "boolean are supported (values travel as text)",
        "step 's1': tool output 'o' has type stdout; only string, int, long, float, double and "
        "boolean are supported (values travel as text)",
        "output 'r' has type array; only string, int, long, float, double and boolean are "
        "supported (values travel as text)",
    ]


def test_refuses_workflow_input_defaults() -> None:
    text = workflow(ONE_STEP, inputs="  a: {type: string, default: hello}\n")
    assert problems_of(text) == [
        "workflow input 'a' has a default, which is not supported "
        "(send every input when creating the workflow)"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "cwlVersion: v1.3\nclass: Workflow\n",
            "cwlVersion 'v1.3' is not supported (use v1.2; v1.1 and v1.0 also load)",
        ),
        ("class: Workflow\n", "cwlVersion is missing (use cwlVersion: v1.2)"),
        (
            "cwlVersion: v1.2\nclass: CommandLineTool\ninputs: []\noutputs: []\n",
            "class is 'CommandLineTool'; a template must be a Workflow",
        ),
        (
            "cwlVersion: v1.2\nclass: Workflow\n$graph: []\n",
            "packed documents ($graph) are not supported",
        ),
        ("hello", "not a CWL document (expected a YAML mapping at the top)"),
        ("", "not a CWL document (expected a YAML mapping at the top)"),
        (
            "cwlVersion: v1.2\nclass: [Workflow\n",
            "not valid YAML (line 3, column 1): expected ',' or ']', but got '<stream end>', "
            "while parsing a flow sequence at line 2",
        ),
        (
            "cwlVersion: v1.2\nclass: Workflow\ninputs:\n  a: &t {type: string}\n  b: *t\n"
            "outputs: []\nsteps: []\n",
            "YAML anchors and aliases (&name, *name) are not supported",
        ),
        (HEAD + "inputs: {a: string}\noutputs: []\nsteps: []\n", "the workflow has no steps"),
    ],
)
def test_refuses_documents_outside_the_subset(text: str, problem: str) -> None:
    assert problem in problems_of(text)


def test_invalid_cwl_reports_salad_messages_with_lines_not_paths() -> None:
    text = workflow(ONE_STEP, outputs="  r: {type: string, outputSourc: s1/o}\n")
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith(
        "not valid CWL: line 8: invalid field `outputSourc`, expected one of:"
    )
    assert "caroni-templates" not in problems[0] and "file://" not in problems[0]


def test_refuses_contradicting_or_malformed_requirements() -> None:
    steps = (
        f"  s1:{tool(job='j')}\n    in: {{x: a}}\n    out: [o]\n"
        "    hints: {caroni:CaroniRequirement: {CaroniJobName: k}}\n"
        "  s2:\n    run:\n      class: CommandLineTool\n"
        "      hints:\n        caroni:CaroniRequirement:\n          CaroniJobName: j\n"
        "          CaroniJobKVs: {l: [1]}\n          CaroniJobNmae: typo\n"
        "      inputs: {x: string}\n      outputs: {o: string}\n"
        "    in: {x: a}\n    out: [o]\n"
    )
    assert problems_of(workflow(steps)) == [
        "step 's1': CaroniRequirement is given more than once, differently ('k' and 'j'); keep one",
        "step 's2': CaroniRequirement has unknown field(s) 'CaroniJobNmae' "
        "(known: CaroniJobName, CaroniJobKVs)",
        "step 's2': CaroniJobKVs entry 'l' must map a name to a string, number or boolean",
    ]


def test_refuses_the_caroni_prefix_bound_to_another_namespace() -> None:
    text = workflow(ONE_STEP).replace("https://caroni.example/cwl#", "https://other.example/#")
    assert problems_of(text) == [
        "step 's1': caroni:CaroniRequirement uses the prefix 'caroni', which $namespaces declares "
        "as 'https://other.example/#', not 'https://caroni.example/cwl#'",
        f"step 's1': {MISSING_JOB}",
    ]


def test_refuses_run_files_without_a_folder_or_outside_it(tmp_path: Path) -> None:
    steps = "  s1:\n    run: tool.cwl\n    in: {x: a}\n    out: [o]\n"
    assert problems_of(workflow(steps)) == [
        "step 's1': run 'tool.cwl' names a file, "
        "which needs the template to be loaded from its folder"
    ]
    folder = tmp_path / "templates"
    folder.mkdir()
    (tmp_path / "secret.cwl").write_text("cwlVersion: v1.2\nclass: CommandLineTool\n")
    outside = workflow(steps.replace("tool.cwl", "../secret.cwl"))
    assert problems_of(outside, base_dir=folder) == [
        "step 's1': run '../secret.cwl' is outside the template's folder"
    ]
    assert problems_of(workflow(steps), base_dir=folder) == [
        "step 's1': run 'tool.cwl' cannot be read: No such file or directory"
    ]


def test_refuses_to_read_files_through_import() -> None:
    text = workflow(ONE_STEP, inputs="  a: {$import: /etc/hostname}\n")
    problems = problems_of(text)
    assert problems == [
        "not valid CWL: line 5: refusing to read file:///etc/hostname: "
        "a template may only refer to files in its own folder"
    ]


def test_refuses_an_empty_name() -> None:
    with pytest.raises(TemplateError, match="name"):
        parse_template("", workflow(ONE_STEP))


# ----------------------------------------------------------------------------- accepted forms


def test_accepts_scalar_types_optional_inputs_and_outputs_from_inputs() -> None:
    steps = (
        f"  s1:{tool(ins=('x', 'y', 'z', 'w'))}\n    in: {{x: a, y: b, z: c, w: d}}\n    out: [o]\n"
    )
    template = parse_template(
        "types",
        workflow(
            steps,
            inputs="  a: string?\n  b: int\n  c: float\n  d: boolean\n",
            outputs=(
                "  r: {type: string, outputSource: s1/o}\n"
                "  echo: {type: string?, outputSource: a}\n"
            ),
        ),
    )
    assert template.inputs == ("a", "b", "c", "d")
    assert template.outputs == {"r": Source("s1", "o"), "echo": Source(None, "a")}


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_accepts_older_cwl_versions(version: str) -> None:
    template = parse_template("old", workflow(ONE_STEP).replace("v1.2", version))
    assert chain(template) == {"s1": ("j", {"x": "a"}, ("o",))}


KVS = "CaroniJobKVs: {k: 1, b: true}"


@pytest.mark.parametrize(
    "requirement",
    [
        f"      hints:\n        caroni:CaroniRequirement: {{CaroniJobName: j, {KVS}}}\n",
        f"      requirements:\n        caroni:CaroniRequirement: {{CaroniJobName: j, {KVS}}}\n",
        f"      requirements:\n        CaroniRequirement: {{CaroniJobName: j, {KVS}}}\n",
        "      requirements:\n        - class: CaroniRequirement\n          CaroniJobName: j\n"
        f"          {KVS}\n        - class: InlineJavascriptRequirement\n",
        "      hints:\n        - class: https://caroni.example/cwl#CaroniRequirement\n"
        "          CaroniJobName: j\n          CaroniJobKVs: {k: '1', b: 'true'}\n",
    ],
    ids=["hint", "namespaced-requirement", "bare-requirement", "bare-requirement-list", "full-uri"],
)
def test_accepts_every_spelling_of_the_job_requirement(requirement: str) -> None:
    text = (
        HEAD + "inputs: {a: string}\noutputs: []\nsteps:\n  s1:\n    run:\n"
        "      class: CommandLineTool\n"
        + requirement
        + "      inputs: {x: string}\n      outputs: {o: string}\n"
        "    in: {x: a}\n    out: [o]\n"
    )
    step = parse_template("spell", text).steps["s1"]
    assert (step.job_type, step.job_kvs) == ("j", {"k": "1", "b": "true"})


def test_accepts_a_custom_prefix_an_undeclared_caroni_prefix_and_step_hints() -> None:
    custom = workflow(ONE_STEP).replace("caroni:", "cr:")  # the prefix and its use
    assert parse_template("custom", custom).steps["s1"].job_type == "j"
    undeclared = workflow(ONE_STEP).replace(
        "$namespaces:\n  caroni: https://caroni.example/cwl#\n", ""
    )
    assert parse_template("undeclared", undeclared).steps["s1"].job_type == "j"
    on_step = workflow(
        f"  s1:{tool(job=None)}\n    in: {{x: a}}\n    out: [o]\n"
        "    hints: {caroni:CaroniRequirement: {CaroniJobName: stepjob}}\n"
    )
    assert parse_template("on_step", on_step).steps["s1"].job_type == "stepjob"


def test_accepts_a_workflow_id() -> None:
    text = workflow(ONE_STEP).replace("class: Workflow\n", "class: Workflow\nid: main\n")
    assert chain(parse_template("with_id", text)) == {"s1": ("j", {"x": "a"}, ("o",))}


def test_run_may_name_a_tool_file_beside_the_template(tmp_path: Path) -> None:
    (tmp_path / "tool.cwl").write_bytes(
        b"cwlVersion: v1.2\r\nclass: CommandLineTool\r\nrequirements:\r\n"
        b"  CaroniRequirement:\r\n    CaroniJobName: filejob\r\n"
        b"inputs:\r\n  x: string\r\noutputs:\r\n  o: string\r\n"
    )
    (tmp_path / "sub.cwl").write_text(
        "cwlVersion: v1.2\nclass: Workflow\ninputs: {}\noutputs: []\nsteps: []\n"
    )
    main = tmp_path / "main.cwl"
    main.write_text(workflow("  s1:\n    run: tool.cwl\n    in: {x: a}\n    out: [o]\n"))
    template = load_template_file(main)
    assert template.name == "main"
    assert chain(template) == {"s1": ("filejob", {"x": "a"}, ("o",))}

    main.write_text(workflow("  s1:\n    run: sub.cwl\n    in: {x: a}\n    out: [o]\n"))
    with pytest.raises(TemplateError) as info:
        load_template_file(main, name="other")
    assert info.value.problems == [
        "step 's1': run 'sub.cwl': class is 'Workflow'; subworkflows are not supported"
    ]
    assert str(info.value).startswith("template 'other' is not supported:")


def test_load_template_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read"):
        load_template_file(tmp_path / "absent.cwl")


def test_parsing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The namespace URI is only a name; nothing is fetched to check it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during template parsing")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    parse_template("offline", workflow(ONE_STEP))


# ----------------------------------------------------------------------------- line ends


def test_crlf_cr_and_bom_are_normalized() -> None:
    lf = workflow(ONE_STEP)
    expected = parse_template("ends", lf)
    for variant in (lf.replace("\n", "\r\n"), lf.replace("\n", "\r"), "\ufeff" + lf):
        template = parse_template("ends", variant)
        assert template == expected
        assert template.text == lf


def test_crlf_inside_block_scalars_is_normalized() -> None:
    text = workflow(ONE_STEP).replace(
        "class: Workflow\n", "class: Workflow\ndoc: |\n  two\n  lines\n"
    )
    template = parse_template("block", text.replace("\n", "\r\n"))
    assert template.text == text


# ----------------------------------------------------------------------------- storage


def round_trip_templates() -> list[Template]:
    templates = [load_template_file(p) for p in demo_template_paths().values()]
    templates.append(
        parse_template(
            "kvs",
            workflow(
                ONE_STEP.replace(
                    "CaroniJobName: j", "CaroniJobName: j\n          CaroniJobKVs: {k: v, n: 2}"
                )
            ),
        )
    )
    return templates


@pytest.mark.parametrize("template", round_trip_templates(), ids=lambda t: t.name)
def test_json_round_trip_is_lossless(template: Template) -> None:
    data = template.to_json()
    back = Template.from_json(data)
    assert back == template
    assert list(back.steps) == list(template.steps)
    assert list(back.outputs) == list(template.outputs)
    for name, step in template.steps.items():
        assert list(back.steps[name].inputs) == list(step.inputs)
    assert back.to_json() == data
    json.loads(data)


def test_json_round_trip_keeps_job_kvs() -> None:
    kvs = round_trip_templates()[-1]
    assert kvs.steps["s1"].job_kvs == {"k": "v", "n": "2"}
    assert Template.from_json(kvs.to_json()).steps["s1"].job_kvs == {"k": "v", "n": "2"}


@pytest.mark.parametrize(
    "data", ["", "[]", '{"format": "other"}', '{"format": "caroni-template/1", "name": "x"}']
)
def test_from_json_refuses_malformed_data(data: str) -> None:
    with pytest.raises(TemplateError, match="stored template data is malformed"):
        Template.from_json(data)
