"""Long values on pages: clipped, with a link to the whole value as plain text.

A job may output megabytes; shown whole, one value made a page of many
megabytes (and it is on a page that reloads its live part every second). Pages
show the first :data:`CLIP_CHARS` characters of a value and a link to a route
that answers with the whole value as ``text/plain``; the HTTP API gives values
whole, as before.

The link names a value by a *field path* within its workflow or job, such as
``outputs/result`` or ``steps/step1/attempts/2``; :func:`workflow_value` and
:func:`job_value` read a value back by its path.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from caroni.agent.model import AgentJob
from caroni.manager.model import Workflow

CLIP_CHARS = 2000


def clip(value: object, href: str = "") -> Markup:
    """The value escaped for HTML, cut at CLIP_CHARS with a marker saying how long it
    is and, given ``href``, a link to the whole of it (the ``clip`` template filter)."""
    text = "" if value is None else str(value)
    if len(text) <= CLIP_CHARS:
        return escape(text)
    size = f"{len(text):,} characters"
    if href:
        return Markup('{}<a class="clipped" href="{}">… {}, show all</a>').format(
            text[:CLIP_CHARS], href, size
        )
    return Markup('{}<span class="clipped">… {}</span>').format(text[:CLIP_CHARS], size)


def clip_plain(text: str, limit: int = CLIP_CHARS) -> str:
    """The same cut for plain text, where no link can go (a picture's tooltip)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… {len(text):,} characters"


def workflow_value(workflow: Workflow, field: str) -> str | None:
    """The whole value a workflow's page clips at ``field``, or None if there is none.

    Paths: ``reason``, ``inputs/NAME``, ``outputs/NAME``, ``dataflows/INDEX``,
    ``steps/STEP/reason``, ``steps/STEP/attempts/NUMBER`` (the attempt's note).
    """
    match field.split("/"):
        case ["reason"]:
            return workflow.reason
        case ["inputs", name]:
            return workflow.inputs.get(name)
        case ["outputs", name]:
            return workflow.outputs.get(name)
        case ["dataflows", index] if index.isdigit() and int(index) < len(workflow.dataflows):
            return workflow.dataflows[int(index)].value
        case ["steps", name, "reason"] if name in workflow.steps:
            return workflow.steps[name].reason
        case ["steps", name, "attempts", number] if name in workflow.steps:
            for attempt in workflow.steps[name].attempts:
                if str(attempt.number) == number:
                    return attempt.reason or attempt.status_info
    return None


def job_value(job: AgentJob, field: str) -> str | None:
    """The whole value a job's page clips at ``field``, or None if there is none.

    Paths: ``reason``, ``inputs/NAME``, ``outputs/NAME``, ``history/INDEX`` (the
    change's info), ``warnings/INDEX``.
    """
    match field.split("/"):
        case ["reason"]:
            return job.reason
        case ["inputs", name]:
            return job.inputs.get(name)
        case ["outputs", name]:
            return job.outputs.get(name)
        case ["history", index] if index.isdigit() and int(index) < len(job.history):
            return job.history[int(index)].info
        case ["warnings", index] if index.isdigit() and int(index) < len(job.warnings):
            return job.warnings[int(index)]
    return None
