"""The manager's rows when several replicas of one manager share a database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select, text, update

from caroni.demo import demo_template_paths
from caroni.manager import store as store_module
from caroni.manager.handlers import create_workflow
from caroni.manager.model import WorkflowState
from caroni.manager.store import Loaded, WorkflowStore
from caroni.manager.templates import Template, load_template_file
from caroni.store import create_db_engine, migrate
from caroni.store.tables import templates, workflows
from tests.waiting import eventually

NOW = 1_800_000_000.0


def demo_template(stem: str, name: str = "t") -> Template:
    return load_template_file(demo_template_paths()[stem], name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = (
        str(tmp_path / "manager.sqlite3")
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    engine = create_db_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    yield engine
    engine.dispose()


def waiting_for_locks(engine: Engine) -> int:
    """How many sessions of this database wait for a lock another one holds."""
    query = text(
        "select count(*) from pg_stat_activity "
        "where datname = current_database() and wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_a_template_changed_by_another_replica_is_read_afresh(engine: Engine) -> None:
    mine, theirs = WorkflowStore(), WorkflowStore()  # each replica has its own cache
    with engine.begin() as conn:
        mine.put_template(conn, demo_template("test_simple"), NOW)
    with engine.begin() as conn:
        assert mine.get_template(conn, "t") == demo_template("test_simple")
        theirs.put_template(conn, demo_template("fan_out_fan_in"), NOW)  # same updated_at
    with engine.connect() as conn:
        assert mine.get_template(conn, "t") == demo_template("fan_out_fan_in")
        assert conn.execute(select(templates.c.version)).scalar_one() == 2
        assert mine.get_template(conn, "missing") is None


@pytest.mark.postgres
async def test_replicas_adding_one_template_at_once_both_succeed(pg_engine: Engine) -> None:
    """Every replica adds the demo templates as it starts; two may do so at once."""
    first = pg_engine.connect()
    try:
        with first.begin():
            WorkflowStore().put_template(first, demo_template("test_simple"), NOW)

            def second_replica() -> None:
                with pg_engine.begin() as conn:
                    WorkflowStore().put_template(conn, demo_template("test_simple"), NOW + 1)

            # It waits for the first one's row, then must replace it rather than fail.
            second = asyncio.create_task(asyncio.to_thread(second_replica))
            await eventually(lambda: second.done() or waiting_for_locks(pg_engine), "a lock wait")
        await second
    finally:
        first.close()
    with pg_engine.connect() as conn:
        row = conn.execute(select(templates.c.version, templates.c.updated_at)).one()
    assert tuple(row) == (2, NOW + 1)


def add_due_workflow(conn: Connection, workflow_id: str, wake_at: float) -> None:
    conn.execute(
        workflows.insert().values(
            id=workflow_id,
            template_name="t",
            state="running",
            created_at=NOW,
            updated_at=NOW,
            wake_at=wake_at,
            version=1,
            doc="{}",
        )
    )


@pytest.mark.postgres
def test_a_tick_skips_the_workflows_another_replica_holds(pg_engine: Engine) -> None:
    store = WorkflowStore()
    with pg_engine.begin() as conn:
        add_due_workflow(conn, "a" * 32, NOW - 2)
        add_due_workflow(conn, "b" * 32, NOW - 1)
    with pg_engine.connect() as other, pg_engine.connect() as ticking:
        # Another replica holds workflow a (its batch or its tick) ...
        other.execute(select(workflows.c.id).where(workflows.c.id == "a" * 32).with_for_update())
        with ticking.begin():
            # ... so this tick takes only b, and at once (a regression fails fast), and
            # its next wake-up is b's: a's would be now, over and over, while a is held.
            ticking.execute(text("set local lock_timeout = '5s'"))
            assert store.due(ticking, NOW) == ["b" * 32]
            assert store.next_wake(ticking) == NOW - 1
            # The other replica fires a's timer and commits meanwhile ...
            other.execute(
                update(workflows).where(workflows.c.id == "a" * 32).values(wake_at=NOW + 60)
            )
            other.commit()
            # ... so a is no longer due when looked at again; b stays this tick's.
            assert store.due(ticking, NOW) == ["b" * 32]
        with ticking.begin():
            assert store.due(ticking, NOW + 60) == ["b" * 32, "a" * 32]


def stored_workflow(engine: Engine, store: WorkflowStore, workflow_id: str = "c" * 32) -> Loaded:
    """A running test_simple workflow, inserted and committed by ``store``."""
    workflow, _ = create_workflow(
        demo_template("test_simple"),
        workflow_id=workflow_id,
        template_name="t",
        name="",
        inputs={"start_message": "hi"},
        submitter="",
        max_attempts=0,
        now=NOW,
    )
    loaded = Loaded(workflow)
    with engine.begin() as conn:
        store.save(conn, [loaded])
    store.remember([loaded])
    return loaded


def test_a_committed_workflow_is_read_again_without_parsing(engine: Engine) -> None:
    store = WorkflowStore()
    stored = stored_workflow(engine, store)
    with engine.begin() as conn:
        (again,) = store.load_by_keys(conn, stored.keys)
        assert again.workflow is stored.workflow
        # Taken out while this transaction holds it: a second read parses its own copy.
        other = store.load(conn, stored.workflow.id)
        assert other is not None and other.workflow is not stored.workflow
        assert other.workflow == stored.workflow
        again.workflow.name = "changed"
        store.save(conn, [again])
    store.remember([again])
    with engine.begin() as conn:
        latest = store.load(conn, stored.workflow.id)
        assert latest is not None and latest.workflow is again.workflow
        assert latest.version == 2


def test_a_rolled_back_change_is_not_read_back(engine: Engine) -> None:
    store = WorkflowStore()
    stored = stored_workflow(engine, store)
    with engine.connect() as conn, conn.begin() as transaction:
        changed = store.load(conn, stored.workflow.id)
        assert changed is not None and changed.workflow is stored.workflow
        changed.workflow.name = "rolled back"
        store.save(conn, [changed])
        transaction.rollback()  # so the change is never remembered
    with engine.begin() as conn:
        again = store.load(conn, stored.workflow.id)
        assert again is not None and again.workflow.name == "" and again.version == 1


def test_a_workflow_another_replica_changed_is_parsed_afresh(engine: Engine) -> None:
    mine, theirs = WorkflowStore(), WorkflowStore()
    stored = stored_workflow(engine, mine)
    with engine.begin() as conn:
        their_copy = theirs.load(conn, stored.workflow.id)
        assert their_copy is not None
        their_copy.workflow.name = "theirs"
        theirs.save(conn, [their_copy])
    with engine.begin() as conn:
        again = mine.load(conn, stored.workflow.id)
        assert again is not None and again.workflow is not stored.workflow
        assert again.workflow.name == "theirs" and again.version == 2


def test_only_unfinished_workflows_are_kept_and_only_so_many(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PARSED_CACHE_SIZE", 2)
    store = WorkflowStore()
    workflows_kept = [stored_workflow(engine, store, str(n) * 32) for n in range(3)]
    with engine.begin() as conn:
        finished = store.load(conn, workflows_kept[2].workflow.id)
        assert finished is not None
        finished.workflow.state = WorkflowState.COMPLETED
        store.save(conn, [finished])
    store.remember([finished])
    with engine.begin() as conn:
        keys = set().union(*(item.keys for item in workflows_kept))
        read = {item.workflow.id: item for item in store.load_by_keys(conn, keys)}
    # The first was pushed out by the third, which is finished and no longer kept.
    assert [read[item.workflow.id].workflow is item.workflow for item in workflows_kept] == [
        False,
        True,
        False,
    ]
