"""The JSON form a template is stored in, so it is read back without CWL parsing."""

from __future__ import annotations

import json
from typing import Any

from caroni.errors import TemplateError
from caroni.manager.templates.model import Source, StepSpec, Template

_JSON_FORMAT = "caroni-template/1"


def dump(template: Template) -> str:
    """Serialize losslessly for storage (lists keep every order explicit)."""
    data = {
        "format": _JSON_FORMAT,
        "name": template.name,
        "inputs": list(template.inputs),
        "outputs": [
            {"name": name, "source": _source_to_json(src)} for name, src in template.outputs.items()
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
            for step in template.steps.values()
        ],
        "text": template.text,
    }
    return json.dumps(data, ensure_ascii=False)


def load(data: str) -> Template:
    """Rebuild a template stored by :func:`dump`; TemplateError if malformed."""
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
                job_kvs={_json_str(k): _json_str(v) for k, v in _json_dict(raw["job_kvs"]).items()},
            )
            steps[step.name] = step
        return Template(
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
