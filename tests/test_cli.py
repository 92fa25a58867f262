"""The `caroni` command itself."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner

from caroni.agent.model import Policy
from caroni.cli import app
from caroni.errors import CaroniError


def test_version_is_the_installed_distributions() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"caroni {importlib.metadata.version('caroni')}"


def test_agent_takes_the_cap_on_open_offers_per_manager(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policies: list[Policy] = []

    def no_node(*args: object, policy: Policy, **kwargs: object) -> NoReturn:
        policies.append(policy)
        raise CaroniError("stop here: only the policy is wanted")

    monkeypatch.setattr("caroni.app.AgentNode", no_node)
    db = str(tmp_path / "agent.sqlite3")
    CliRunner().invoke(app, ["agent", "--db", db, "--http", "none"])
    CliRunner().invoke(
        app, ["agent", "--db", db, "--http", "none", "--max-offers-per-manager", "7"]
    )
    assert [p.max_offers_per_manager for p in policies] == [Policy().max_offers_per_manager, 7]
    refused = CliRunner().invoke(app, ["agent", "--max-offers-per-manager", "0"])
    assert refused.exit_code == 2 and len(policies) == 2
