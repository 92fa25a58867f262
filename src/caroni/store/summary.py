"""A node's health at a glance, read from its database (for `caroni status`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from caroni.store.tables import jobs, node_identity, outbox, workflows
from caroni.store.traffic import count_dead_letters, recent_dead_letters


@dataclass
class NodeSummary:
    roles: dict[str, str] = field(default_factory=dict)  # role -> node uuid
    workflows: dict[str, int] = field(default_factory=dict)  # state -> count
    jobs: dict[str, int] = field(default_factory=dict)  # status -> count
    outbox_backlog: int = 0
    dead_letters: int = 0
    recent_dead_letters: list[tuple[float, str, str, str]] = field(default_factory=list)


def summarize(conn: Connection, recent: int = 10) -> NodeSummary:
    """Counts by state, the unpublished outbox and the latest dead letters with reasons."""

    def counts(column) -> dict[str, int]:  # type: ignore[no-untyped-def]
        rows = conn.execute(select(column, func.count()).group_by(column)).all()
        return {str(key): int(count) for key, count in rows}

    return NodeSummary(
        roles={r.role: r.node_uuid for r in conn.execute(select(node_identity)).all()},
        workflows=counts(workflows.c.state),
        jobs=counts(jobs.c.status),
        outbox_backlog=conn.execute(select(func.count()).select_from(outbox)).scalar_one(),
        dead_letters=count_dead_letters(conn),
        recent_dead_letters=recent_dead_letters(conn, recent),
    )
