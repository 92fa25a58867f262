"""Reading a template: text or a file in; a Template, or one TemplateError naming every problem."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import NoReturn

from caroni.errors import TemplateError
from caroni.manager.templates.fetch import VIRTUAL_DIR, normalize_text
from caroni.manager.templates.load import load_cwl
from caroni.manager.templates.model import Template
from caroni.manager.templates.scope import Scope
from caroni.manager.templates.workflow import check_workflow

# Templates come from users (web forms); bound the work one upload can cause.
MAX_TEMPLATE_CHARS = 1_000_000


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
        uri = VIRTUAL_DIR + quoted

    doc = load_cwl(text, uri, base_dir, problems, expect="Workflow", where="")
    if doc is None:
        _raise(name, problems)
    template = check_workflow(Scope(doc, uri, base_dir, problems), name, text)
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


def _raise(name: str, problems: list[str]) -> NoReturn:
    lines = [f"template {name!r} is not supported:"]
    for problem in problems:
        lines.append("- " + problem.replace("\n", "\n  "))
    raise TemplateError("\n".join(lines), list(problems))
