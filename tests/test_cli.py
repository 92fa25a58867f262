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


def test_names_and_errors_with_markup_print_as_written(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "node.sqlite3")
    key_file = tmp_path / "[red]k.key"
    made = runner.invoke(app, ["keys", "init", "--key", str(key_file)])
    assert made.exit_code == 0 and f"written to {key_file} " in made.output
    key_id = runner.invoke(app, ["keys", "show", "--key", str(key_file)]).output.strip()
    name = "[red]x[/red] [bold]y"
    added = runner.invoke(app, ["trust", "add", name, key_id, "--db", db, "--role", "agent"])
    assert added.output == f"trusting {name} as agent: {key_id}\n"
    listed = runner.invoke(app, ["trust", "list", "--db", db])
    assert listed.output.split() == [*name.split(), "agent", key_id, "-"]  # tabs expanded
    removed = runner.invoke(app, ["trust", "remove", name, "--db", db])
    assert removed.output == f"no longer trusting {name}\n"
    again = runner.invoke(app, ["trust", "remove", name, "--db", db])
    assert again.exit_code == 2
    assert again.output == f"error: no trusted key named {name!r}\n"
    not_an_id = runner.invoke(app, ["status", "[bold]nope"])
    assert not_an_id.exit_code == 2
    assert not_an_id.output == "error: '[bold]nope' is not a workflow id\n"


def test_a_database_that_cannot_be_used_ends_any_command_with_exit_2() -> None:
    """Reported by the command itself (not only by the entry point's last resort)."""
    db = "/proc/caroni-no-such-folder/node.sqlite3"
    for args in (
        ["status", "--db", db],
        ["trust", "list", "--db", db],
        ["trust", "remove", "x", "--db", db],
        ["user", "list", "--db", db],
    ):
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 2, args
        assert done.output.startswith("error: cannot make the folder"), args
