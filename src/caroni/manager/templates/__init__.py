"""Workflow templates: the supported subset of CWL, parsed into a plain structure.

A template is a CWL ``Workflow`` whose steps each run a ``CommandLineTool`` that names,
through the hint ``caroni:CaroniRequirement``, the job type an agent must offer. The
manager never runs the tool's command line: it sends each step's inputs to the job by
name and receives the outputs by name. So a template reduces to a small graph of named
steps, which is what :class:`Template` holds.

cwl-utils does the CWL parsing and validation; this package adds the rules of the
subset and reports *every* problem in one :class:`~caroni.errors.TemplateError`, so a
user can fix a template in one go.

Modules, in the order a template passes through them: ``parse`` (entry points),
``fetch`` (files, only in the template's folder), ``load`` (YAML to cwl-utils, with
the ``rewrite`` leniency), ``workflow`` and ``steps`` (the subset's rules, sharing a
``scope``; the job type from ``requirement``), ``graph`` (step order, cycles),
``model`` (the result) and ``codec`` (its stored JSON form).
"""

from caroni.manager.templates.model import Source, StepSpec, Template
from caroni.manager.templates.parse import load_template_file, parse_template
from caroni.manager.templates.requirement import CARONI_NAMESPACE

__all__ = [
    "CARONI_NAMESPACE",
    "Source",
    "StepSpec",
    "Template",
    "load_template_file",
    "parse_template",
]
