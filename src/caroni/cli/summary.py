"""`caroni status --db`: a node's summary read from its database."""

from __future__ import annotations

import datetime

from rich.markup import escape

from caroni.console import console
from caroni.store import node_db


def print_summary(db: str) -> None:
    """Work by state, unpublished messages, and the dead letters with their reasons."""
    from caroni.store.summary import summarize

    with node_db(db) as engine, engine.connect() as conn:
        summary = summarize(conn)
    for role, node_uuid in summary.roles.items():
        console.print(f"{role} {node_uuid}")
    if summary.workflows:
        console.print("workflows: " + ", ".join(f"{n} {s}" for s, n in summary.workflows.items()))
    if summary.jobs:
        console.print("jobs: " + ", ".join(f"{n} {s}" for s, n in summary.jobs.items()))
    console.print(f"outbox: {summary.outbox_backlog} message(s) not yet published")
    console.print(f"dead letters: {summary.dead_letters}")
    for at, type_name, sender, reason in summary.recent_dead_letters:
        when = datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")
        console.print(
            f"  {when} {escape(type_name or '?')} from {escape(sender or '?')}: {escape(reason)}"
        )
