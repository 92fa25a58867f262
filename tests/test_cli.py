"""The `caroni` command itself."""

from __future__ import annotations

import importlib.metadata

from typer.testing import CliRunner

from caroni.cli import app


def test_version_is_the_installed_distributions() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"caroni {importlib.metadata.version('caroni')}"
