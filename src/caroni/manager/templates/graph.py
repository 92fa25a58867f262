"""The step graph: the order steps run in, and the cycles that make an order impossible."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Mapping, Sequence
from graphlib import CycleError, TopologicalSorter


def step_order(
    names: Sequence[str], upstream: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    """Upstream before downstream, ties in document order; and every cycle found.

    The order holds every step exactly when there are no cycles.
    """
    sorter = TopologicalSorter({n: upstream[n] for n in names})
    with contextlib.suppress(CycleError):  # it names one cycle; the steps left out show all
        sorter.prepare()
    # Release one step at a time, the earliest ready one first, for document order.
    position = {n: i for i, n in enumerate(names)}
    ready = [position[n] for n in sorter.get_ready()]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        sorter.done(name)
        for down in sorter.get_ready():
            heapq.heappush(ready, position[down])
    if len(order) == len(names):
        return order, []
    downstream: dict[str, list[str]] = {n: [] for n in names}
    for name in names:
        for up in upstream[name]:
            downstream[up].append(name)
    placed = set(order)
    return order, _cycles([n for n in names if n not in placed], downstream)


def _cycles(nodes: list[str], downstream: dict[str, list[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected group, in document order."""
    members = set(nodes)

    def reach(start: str) -> dict[str, str | None]:
        # BFS parents; the start is re-entered only through a real edge.
        parents: dict[str, str | None] = {}
        queue = [start]
        while queue:
            current = queue.pop(0)
            for nxt in downstream[current]:
                if nxt in members and nxt not in parents:
                    parents[nxt] = current
                    queue.append(nxt)
        return parents

    reached = {n: reach(n) for n in nodes}
    done: set[str] = set()
    cycles: list[list[str]] = []
    for node in nodes:
        if node in done or node not in reached[node]:
            continue
        group = {m for m in reached[node] if node in reached[m]}
        done |= group
        path = [node]
        current = reached[node][node]
        while current is not None and current != node:
            path.append(current)
            current = reached[node][current]
        path = [path[0], *reversed(path[1:])]
        cycles.append(path)
    return cycles
