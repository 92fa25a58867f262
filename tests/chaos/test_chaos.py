"""The chaos harness, CI-sized: 20 workflows, every node process SIGKILLed once and
started again, RabbitMQ restarted once; every workflow must complete correctly.

The same function as ``python -m tests.chaos.chaos`` (see ``chaos.py``). Set
``CARONI_CHAOS_SEED`` to replay a run; the seed of every run is printed.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.chaos.chaos import AGENTS, BROKER, ChaosOptions, run_chaos, services_missing

pytestmark = [pytest.mark.amqp, pytest.mark.postgres, pytest.mark.slow]

WORKFLOWS = 20
TIMEOUT = 180.0  # for the workflows; a healthy run needs about a third of it


def _require_services() -> None:
    missing = services_missing()
    if not missing:
        return
    if os.environ.get("CARONI_REQUIRE_SERVICES", "") not in ("", "0", "false", "no"):
        pytest.fail(f"{missing} not available (CARONI_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(f"{missing} not available")


@pytest.mark.timeout(TIMEOUT + 150)
def test_every_workflow_completes_correctly_through_kills_and_a_broker_restart() -> None:
    _require_services()
    seed_text = os.environ.get("CARONI_CHAOS_SEED", "")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(10**9)
    report = run_chaos(ChaosOptions(workflows=WORKFLOWS, seed=seed, timeout=TIMEOUT), out=print)
    summary = report.summary()
    print(summary)

    assert report.passed, summary
    # The chaos really happened, while the workflows ran, and everything came back.
    assert sorted(event.target for event in report.events) == sorted(["manager", *AGENTS, BROKER])
    for event in report.events:
        assert event.struck_at is not None, f"{event.target} was never hit:\n{summary}"
        assert event.finished_at_strike is not None
        assert event.finished_at_strike < WORKFLOWS, f"{event.target} hit after the run"
        assert event.back_at is not None, f"{event.target} did not come back:\n{summary}"
    assert report.jobs >= 5 * WORKFLOWS
    assert report.assigned_jobs > 0, "the nodes spoke claims through the kills"
    assert not report.errors, summary
