"""A node or command that cannot use its database says which and why in one line and
exits with 2: no traceback, no password, no broker connection left retrying. Run as
real OS processes, as a person would start them."""

from __future__ import annotations

import subprocess
import sys

import pytest

DEADLINE = 120.0  # seconds; only reached when the process hangs instead of exiting


def caroni(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caroni", *args], capture_output=True, text=True, timeout=DEADLINE
    )


@pytest.mark.amqp
@pytest.mark.parametrize("role", ["manager", "agent"])
def test_a_node_whose_database_refuses_it_says_why_and_exits(role: str, amqp_url: str) -> None:
    # The broker is there (a vhost of this test's own); the database is not.
    db = "postgresql://postgres:not-shown@127.0.0.1:5432/caroni_no_such_database"
    done = caroni(role, "--db", db, "--amqp", amqp_url, "--http", "none")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "not-shown" not in output
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(
        "error: cannot use the database "
        "postgresql://postgres:***@127.0.0.1:5432/caroni_no_such_database: "
    )


def test_a_database_folder_that_cannot_be_made_is_named() -> None:
    done = caroni("status", "--db", "/proc/caroni-no-such-folder/node.sqlite3")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: cannot make the folder /proc/caroni-no-such-folder for the database: "
        "No such file or directory"
    )
