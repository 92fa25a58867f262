"""Job type definitions: the users' fixture file, our demo file, and validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import caroni
from caroni.agent.jobtypes import (
    JobTypeSpec,
    job_type_from_dict,
    load_job_types,
    load_job_types_text,
)
from caroni.errors import JobTypeError

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
DEMO_JOB_TYPES = Path(caroni.__file__).parent / "demo" / "job_types.json"


def _valid() -> dict[str, object]:
    return {"name": "t", "body": "echo '{}'", "inputs": ["a"], "outputs": ["b"]}


def test_fixture_file_loads_as_is() -> None:
    path = FIXTURES / "job_types.json"
    if not path.exists():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    specs = load_job_types(path)
    assert [(s.name, s.inputs, s.outputs, s.timeout) for s in specs] == [
        ("foojob0", ("message",), ("jobout",), None),
        ("foojob1", ("text",), ("outSB",), None),
        ("foojob2", ("final_text",), ("out",), None),
    ]
    assert all("/usr/bin/jq" in s.body for s in specs)


def test_demo_file_loads() -> None:
    specs = {s.name: s for s in load_job_types(DEMO_JOB_TYPES)}
    assert {name: (s.inputs, s.outputs) for name, s in specs.items()} == {
        "foojob0": (("message",), ("jobout",)),
        "foojob1": (("text",), ("outSB",)),
        "foojob2": (("final_text",), ("out",)),
        "split_text": (("text",), ("left", "right")),
        "shout": (("text",), ("shouted",)),
        "reverse": (("text",), ("reversed",)),
        "join_pair": (("first", "second"), ("joined",)),
        "frame": (("text",), ("framed",)),
    }
    # No demo body may depend on jq, and none may splice an input into its text.
    assert not any("jq" in s.body for s in specs.values())
    assert not any("$CARONI_ENV" in s.body for s in specs.values())


def test_to_dict_round_trips() -> None:
    spec = JobTypeSpec("x.y-z_1", ("a", "b"), ("c",), "true", timeout=2)
    assert spec.timeout == 2.0
    data = spec.to_dict()
    assert data == {
        "name": "x.y-z_1",
        "body": "true",
        "inputs": ["a", "b"],
        "outputs": ["c"],
        "timeout": 2.0,
    }
    assert job_type_from_dict(json.loads(json.dumps(data))) == spec
    assert "timeout" not in JobTypeSpec("n", (), (), "true").to_dict()


def test_lists_become_tuples_and_empty_parameter_lists_are_allowed() -> None:
    spec = job_type_from_dict({"name": "n", "body": "true", "inputs": [], "outputs": ["o"]})
    assert spec.inputs == () and spec.outputs == ("o",)
    direct = JobTypeSpec("n", ["a"], ["b"], "true")  # type: ignore[arg-type]
    assert direct.inputs == ("a",) and direct.outputs == ("b",)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("name", None, "name"),
        ("name", "", "name"),
        ("name", "has space", "name"),
        ("name", "semi;colon", "name"),
        ("name", 7, "name"),
        ("body", "", "body"),
        ("body", "   \n", "body"),
        ("body", ["echo"], "body"),
        ("inputs", "a", "inputs"),
        ("inputs", {"a": 1}, "inputs"),
        ("inputs", [1], "inputs"),
        ("inputs", ["1a"], "inputs"),
        ("inputs", ["a-b"], "inputs"),
        ("inputs", ["a b"], "inputs"),
        ("inputs", ["a=b"], "inputs"),
        ("inputs", [""], "inputs"),
        ("inputs", ["a", "a"], "inputs"),
        ("outputs", ["ok", "x.y"], "outputs"),
        ("outputs", ["b", "b"], "outputs"),
        ("outputs", None, "outputs"),
        ("timeout", 0, "timeout"),
        ("timeout", -1.5, "timeout"),
        ("timeout", "5", "timeout"),
        ("timeout", True, "timeout"),
        ("timeout", float("nan"), "timeout"),
        ("timeout", float("inf"), "timeout"),
    ],
)
def test_invalid_field_is_named(key: str, value: object, field: str) -> None:
    data = _valid()
    data[key] = value
    with pytest.raises(JobTypeError, match=f"'{field}'"):
        job_type_from_dict(data)


@pytest.mark.parametrize("key", ["name", "body", "inputs", "outputs"])
def test_missing_field_is_named(key: str) -> None:
    data = _valid()
    del data[key]
    with pytest.raises(JobTypeError, match=f"'{key}' is missing"):
        job_type_from_dict(data)


def test_timeout_null_means_no_limit() -> None:
    assert job_type_from_dict({**_valid(), "timeout": None}).timeout is None
    assert job_type_from_dict({**_valid(), "timeout": 1}).timeout == 1.0


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(JobTypeError, match="'inputs'"):
        JobTypeSpec("n", ("PATH=/tmp",), (), "true")
    with pytest.raises(JobTypeError, match="'body'"):
        JobTypeSpec("n", (), (), "")


def test_unknown_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="caroni.agent.jobtypes"):
        spec = job_type_from_dict({**_valid(), "colour": "blue"})
    assert spec.name == "t"
    assert any("colour" in r.getMessage() for r in caplog.records)


def test_file_level_errors_name_origin_and_entry(tmp_path: Path) -> None:
    with pytest.raises(JobTypeError, match="my-origin: not valid JSON"):
        load_job_types_text("[{", origin="my-origin")
    with pytest.raises(JobTypeError, match="expected a JSON list"):
        load_job_types_text(json.dumps(_valid()))
    with pytest.raises(JobTypeError, match="entry 1: a job type must be a JSON object"):
        load_job_types_text(json.dumps([_valid(), "nope"]))
    with pytest.raises(JobTypeError, match="entry 1: .*'name'.*defined twice"):
        load_job_types_text(json.dumps([_valid(), _valid()]))
    bad = {**_valid(), "outputs": ["x", "x"]}
    with pytest.raises(JobTypeError, match=r"entry 0: job type 't': field 'outputs'"):
        load_job_types_text(json.dumps([bad]))
    missing = tmp_path / "absent.json"
    with pytest.raises(JobTypeError, match="absent.json"):
        load_job_types(missing)
    path = tmp_path / "types.json"
    path.write_text(json.dumps([_valid()]), encoding="utf-8")
    assert [s.name for s in load_job_types(path)] == ["t"]
    assert load_job_types_text("[]") == []
