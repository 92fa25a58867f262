"""`caroni demo`: a manager and agents in one process, one workflow run end to end."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.markup import escape

from caroni.agent.jobtypes import load_job_types
from caroni.cluster import LocalCluster
from caroni.console import ProgressPrinter, console, errors, print_error, print_outputs
from caroni.demo import DEMO_DIR, demo_template_paths
from caroni.manager.templates import load_template_file
from caroni.protocol import pb

DEMO_JOB_TYPES = DEMO_DIR / "job_types.json"

# With two agents the job types are split so that every demo workflow needs both.
SECOND_AGENT_JOB_TYPES = {"foojob1", "shout", "join_pair"}

# The demo's web sites have one user; real nodes have none until `caroni user add`.
DEMO_USER = "admin"
DEMO_PASSWORD = "password"


async def load_demo_content(cluster: LocalCluster) -> None:
    """Demo templates into the manager; demo job types into the agents (split over two)."""
    for name, path in demo_template_paths().items():
        await cluster.manager.add_template_file(path, name)
    specs = load_job_types(DEMO_JOB_TYPES)
    for number, agent in enumerate(cluster.agents, start=1):
        for spec in specs:
            wanted_here = len(cluster.agents) == 1 or (
                (spec.name in SECOND_AGENT_JOB_TYPES) == (number == 2)
            )
            if wanted_here:
                await agent.add_job_type(spec)


async def run_demo(
    message: str,
    *,
    template: str = "test_simple",
    agents: int = 1,
    data_dir: Path | None = None,
    timeout: float = 120.0,
    http: str | None = None,
) -> pb.WorkFlowStatus:
    """Run one demo workflow on the in-process broker; returns its final status.

    With ``http`` the nodes serve their web sites (the manager on that address,
    the agents on the next ports) and keep serving after the workflow ends,
    until SIGINT or SIGTERM.
    """
    with _data_dir(data_dir) as directory:
        async with LocalCluster(directory, agents=agents, http=http) as cluster:
            await load_demo_content(cluster)
            if http is not None:
                await cluster.add_user(DEMO_USER, DEMO_PASSWORD)
                _print_sites(cluster)
            input_name = load_template_file(demo_template_paths()[template]).inputs[0]
            started = time.monotonic()
            async with cluster.client() as client:
                workflow_id = await client.submit(template, {input_name: message}, name="demo")
                given = escape(f"{input_name}={message!r}")
                console.print(
                    f"manager {cluster.manager.key} with {agents} agent(s); workflow "
                    f"{workflow_id.hex} from template {template!r}, {given}"
                )
                status = await client.wait(
                    workflow_id,
                    on_progress=ProgressPrinter(workflow_id.hex[:8]),
                    poll_interval=0.1,
                    timeout=timeout,
                )
            if status.state == "completed":
                console.print(f"[green]completed[/] in {time.monotonic() - started:.2f}s")
                print_outputs(status)
            else:
                errors.print(f"[red]workflow {escape(status.state)}:[/] {escape(status.reason)}")
            if http is not None:
                console.print(
                    f"serving the sites until Ctrl-C (user {DEMO_USER}, password "
                    f"{DEMO_PASSWORD!r}); workflow page: {cluster.manager.site_url}"
                    f"workflows/{workflow_id.hex}"
                )
                await _until_interrupted()
            return status


def _print_sites(cluster: LocalCluster) -> None:
    console.print(
        f"web sites (log in as user [bold]{DEMO_USER}[/], password [bold]{DEMO_PASSWORD!r}[/]):"
    )
    labels = ["manager"] + [agent.role.policy.site_identifier for agent in cluster.agents]
    for label, node in zip(labels, cluster.nodes, strict=True):
        if node.site_url:
            console.print(f"  {label:<8} {node.site_url}")
        else:
            reason = node.site.error if node.site is not None else "not started"
            errors.print(f"  {label:<8} [yellow]not served:[/] {escape(reason)}")


async def _until_interrupted() -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _data_dir(given: Path | None) -> Iterator[Path]:
    """The given folder, or a temporary one removed afterwards."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="caroni-demo-") as tmp:
        yield Path(tmp)


def main(
    message: str, template: str, agents: int, data_dir: Path | None, http: str | None = None
) -> int:
    templates = demo_template_paths()
    if template not in templates:
        print_error(f"no demo template {template!r}; choose from {sorted(templates)}")
        return 2
    status = asyncio.run(
        run_demo(message, template=template, agents=agents, data_dir=data_dir, http=http)
    )
    return 0 if status.state == "completed" else 1
