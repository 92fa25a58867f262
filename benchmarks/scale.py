"""How the conversation grows with the number of agents: many nodes in one process.

Managers and agents run embedded (memory transport, SQLite), each agent serving
one of the three job types of the demo workflow (every agent serves all three when
there are fewer than three). For each number of agents the same workflows run
three times: with every extension (claims too), with the extensions but claims,
and with every node speaking only the shared protocol. Each manager first runs
one workflow that is not counted (with claims, that is when agents grant them),
then the counted ones. Printed per step: messages published (by every node, as
confirmed), deliveries taken by the nodes (a broadcast is delivered to every
queue bound to it), CPU time of the whole process (all nodes), and CPU time of
the managers' database threads, where their transactions run (their share of the
event loop is not told apart).

    python -m benchmarks.scale --agents 1,10,50 --managers 2 --workflows 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from caroni.agent.jobtypes import load_job_types
from caroni.agent.model import Policy
from caroni.app import AgentNode, ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.demo.main import DEMO_JOB_TYPES
from caroni.manager.templates import load_template_file
from caroni.protocol.extensions import CLAIMS, SPOKEN
from caroni.transport.memory import MemoryBroker, MemoryTransport

JOB_TYPES = ("foojob0", "foojob1", "foojob2")
STEPS = len(JOB_TYPES)  # test_simple has one step of each

MODES: dict[str, frozenset[str]] = {
    "claims": SPOKEN,
    "typed requests": SPOKEN - {CLAIMS},  # every extension but claims
    "shared protocol": frozenset(),
}
"""What the nodes speak in each run, by the name the table gives it."""


@dataclass(frozen=True)
class Result:
    agents: int
    mode: str
    steps: int
    messages: int
    deliveries: int
    cpu_seconds: float
    manager_db_seconds: float

    @property
    def messages_per_step(self) -> float:
        return self.messages / self.steps

    @property
    def deliveries_per_step(self) -> float:
        return self.deliveries / self.steps

    @property
    def cpu_ms_per_step(self) -> float:
        return 1000 * self.cpu_seconds / self.steps

    @property
    def manager_db_ms_per_step(self) -> float:
        return 1000 * self.manager_db_seconds / self.steps


async def run_once(agents: int, managers: int, workflows: int, mode: str) -> Result:
    speaks = MODES[mode]
    specs = {spec.name: spec for spec in load_job_types(DEMO_JOB_TYPES)}
    template = load_template_file(demo_template_paths()["test_simple"])
    with tempfile.TemporaryDirectory(prefix="caroni-scale-") as work:
        root = Path(work)
        broker = MemoryBroker()
        manager_nodes = [
            ManagerNode(MemoryTransport(broker), str(root / f"m{n}.sqlite3"), speaks=speaks)
            for n in range(managers)
        ]
        agent_nodes = [
            AgentNode(
                MemoryTransport(broker),
                str(root / f"a{n}.sqlite3"),
                policy=Policy(site_identifier=f"agent-{n}"),
                workdir=root / f"jobs-{n}",
                speaks=speaks,
            )
            for n in range(agents)
        ]
        nodes: list[ManagerNode | AgentNode] = [*manager_nodes, *agent_nodes]
        started = time.monotonic()
        for count, node in enumerate(nodes, 1):
            await node.transport.connect()
            await node.start()
            if count % 100 == 0:
                _progress(f"{count}/{len(nodes)} nodes started", started)
        for manager in manager_nodes:
            await manager.add_template(template)
        for n, agent in enumerate(agent_nodes):
            served = JOB_TYPES if agents < len(JOB_TYPES) else (JOB_TYPES[n % len(JOB_TYPES)],)
            for name in served:
                await agent.add_job_type(specs[name])
        client_transport = MemoryTransport(broker)
        await client_transport.connect()
        try:
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(Client(client_transport, manager.key))
                    for manager in manager_nodes
                ]
                published, received, cpu, manager_db = await _measure(nodes, clients, workflows)
        finally:
            await client_transport.close()
            for node in reversed(nodes):
                await node.stop()
                await node.transport.close()
    steps = managers * workflows * STEPS
    return Result(agents, mode, steps, published, received, cpu, manager_db)


async def _measure(
    nodes: list[ManagerNode | AgentNode], clients: list[Client], workflows: int
) -> tuple[int, int, float, float]:
    """Run one uncounted workflow per manager, then ``workflows`` each: messages
    published, deliveries taken, CPU seconds of the process and of the managers'
    database threads, for the counted ones."""

    async def run_all(client: Client, count: int) -> None:
        ids = [await client.submit("test_simple", {"start_message": f"s{n}"}) for n in range(count)]
        for workflow_id in ids:
            status = await client.wait(workflow_id, poll_interval=None, timeout=600)
            if status.state != "completed":
                raise SystemExit(f"a workflow ended {status.state}: {status.reason}")

    started = time.monotonic()
    await asyncio.gather(*(run_all(client, 1) for client in clients))  # warm-up
    _progress("warm-up done: the agents have granted their claims", started)
    published_before = sum(node.node.counters["published"] for node in nodes)
    received_before = sum(_received(node) for node in nodes)
    managers = [node for node in nodes if isinstance(node, ManagerNode)]
    cpu_before, manager_db_before = time.process_time(), await _transactions_cpu(managers)
    await asyncio.gather(*(run_all(client, workflows) for client in clients))
    cpu = time.process_time() - cpu_before
    manager_db = await _transactions_cpu(managers) - manager_db_before
    published = sum(node.node.counters["published"] for node in nodes) - published_before
    received = sum(_received(node) for node in nodes) - received_before
    return published, received, cpu, manager_db


async def _transactions_cpu(managers: list[ManagerNode]) -> float:
    """CPU seconds the managers' database threads (one each, where their
    transactions run) have used so far: each thread reads its own clock."""
    return sum([await manager.node.db(time.thread_time) for manager in managers])


def _progress(what: str, since: float) -> None:
    print(f"  {what} ({time.monotonic() - since:.0f} s)", flush=True)


def _received(node: ManagerNode | AgentNode) -> int:
    """Deliveries a node has taken from its queue (whatever became of them)."""
    counters = node.node.counters
    return counters["handled"] + counters["duplicates"] + counters["dead_lettered"]


def table(results: list[Result]) -> str:
    lines = [
        "| agents | nodes speak | steps | published/step | delivered/step | CPU ms/step "
        "| manager transactions CPU ms/step |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.agents} | {r.mode} | {r.steps} "
            f"| {r.messages_per_step:.1f} | {r.deliveries_per_step:.1f} | {r.cpu_ms_per_step:.1f} "
            f"| {r.manager_db_ms_per_step:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,10,50", help="agent counts, comma separated")
    parser.add_argument("--managers", type=int, default=2)
    parser.add_argument("--workflows", type=int, default=10, help="per manager")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"what the nodes speak, comma separated, of: {', '.join(MODES)}",
    )
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",")]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    results = []
    for agents in (int(n) for n in args.agents.split(",")):
        for mode in modes:
            result = asyncio.run(run_once(agents, args.managers, args.workflows, mode))
            print(
                f"{agents} agents, {mode}: "
                f"{result.messages_per_step:.1f} published/step, "
                f"{result.deliveries_per_step:.1f} delivered/step, "
                f"{result.cpu_ms_per_step:.1f} CPU ms/step, "
                f"{result.manager_db_ms_per_step:.1f} in the managers' transactions",
                flush=True,
            )
            results.append(result)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
