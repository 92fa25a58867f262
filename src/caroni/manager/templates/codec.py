"""The JSON form a template is stored in, so it is read back without CWL parsing.

Lists of named entries, not objects, keep every order explicit. The models are
strict: a value of the wrong type is refused, never coerced (unknown keys are ignored).
"""

from __future__ import annotations

import json
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from caroni.errors import TemplateError
from caroni.manager.templates.model import Source, StepSpec, Template

_JSON_FORMAT: Final = "caroni-template/1"


class _Stored(BaseModel):
    model_config = ConfigDict(strict=True)


class _SourceData(_Stored):
    step: str | None
    name: str


class _Link(_Stored):
    name: str
    source: _SourceData


class _StepData(_Stored):
    name: str
    job_type: str
    inputs: list[_Link]
    outputs: list[str]
    job_kvs: dict[str, str]


class _TemplateData(_Stored):
    format: Literal["caroni-template/1"]
    name: str
    inputs: list[str]
    outputs: list[_Link]
    steps: list[_StepData]
    text: str


def dump(template: Template) -> str:
    """Serialize losslessly for storage."""
    data = _TemplateData(
        format=_JSON_FORMAT,
        name=template.name,
        inputs=list(template.inputs),
        outputs=_links(template.outputs),
        steps=[
            _StepData(
                name=step.name,
                job_type=step.job_type,
                inputs=_links(step.inputs),
                outputs=list(step.outputs),
                job_kvs=dict(step.job_kvs),
            )
            for step in template.steps.values()
        ],
        text=template.text,
    )
    # json.dumps, not model_dump_json: it keeps the spacing of rows stored before.
    return json.dumps(data.model_dump(), ensure_ascii=False)


def load(data: str) -> Template:
    """Rebuild a template stored by :func:`dump`; TemplateError if malformed."""
    try:
        stored = _TemplateData.model_validate_json(data)
    except ValidationError as exc:
        problem = f"stored template data is malformed: {_describe(exc)}"
        raise TemplateError(problem, [problem]) from exc
    return Template(
        name=stored.name,
        inputs=tuple(stored.inputs),
        outputs=_sources(stored.outputs),
        steps={
            step.name: StepSpec(
                name=step.name,
                job_type=step.job_type,
                inputs=_sources(step.inputs),
                outputs=tuple(step.outputs),
                job_kvs=step.job_kvs,
            )
            for step in stored.steps
        },
        text=stored.text,
    )


def _links(sources: dict[str, Source]) -> list[_Link]:
    return [
        _Link(name=name, source=_SourceData(step=src.step, name=src.name))
        for name, src in sources.items()
    ]


def _sources(links: list[_Link]) -> dict[str, Source]:
    return {link.name: Source(step=link.source.step, name=link.source.name) for link in links}


def _describe(exc: ValidationError) -> str:
    """The first errors as 'where: what', without pydantic's links and input dumps."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for error in errors[:3]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more
