"""What a validated template is: a small graph of named steps, as plain data."""

from __future__ import annotations

from dataclasses import dataclass


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
        from caroni.manager.templates.codec import dump  # the codec imports this module

        return dump(self)

    @classmethod
    def from_json(cls, data: str) -> Template:
        """Rebuild a template stored by :meth:`to_json` (no CWL parsing needed)."""
        from caroni.manager.templates.codec import load

        return load(data)
