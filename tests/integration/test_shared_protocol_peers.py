"""Our manager with an agent of another implementation (a stand-in that speaks only
the shared protocol and answers no status request while a job runs): its jobs are
polled but never given up for that silence, and the workflow completes, each job
run once."""

from __future__ import annotations

from pathlib import Path

from caroni.app import ManagerNode
from caroni.client import Client
from caroni.demo import demo_template_paths
from caroni.manager.handlers import Timings
from caroni.manager.templates import load_template_file
from caroni.transport.memory import MemoryBroker, MemoryTransport
from tests.peers import SharedProtocolAgent

# A lease far shorter than a job's run time: before, the manager gave every job
# of such a peer up and requested it again, forever.
TIMINGS = Timings(status_interval=0.2, job_lease=1.0)
RUN_FOR = 2.5


async def test_a_peer_silent_while_its_job_runs_keeps_its_job(tmp_path: Path) -> None:
    broker = MemoryBroker()
    manager = ManagerNode(
        MemoryTransport(broker), str(tmp_path / "manager.sqlite3"), timings=TIMINGS
    )
    peer = SharedProtocolAgent(MemoryTransport(broker), run_for=RUN_FOR)
    client_transport = MemoryTransport(broker)
    for transport in (manager.transport, peer.transport, client_transport):
        await transport.connect()
    await manager.start()
    await peer.start()
    try:
        await manager.add_template(load_template_file(demo_template_paths()["test_simple"]))
        async with Client(client_transport, manager.key) as client:
            workflow_id = await client.submit("test_simple", {"start_message": "peer"})
            status = await client.wait(workflow_id, timeout=60)
        assert status.state == "completed", status.reason
        assert [output.value for output in status.outputs] == ["prependPEER append"]
        assert peer.received["JobStatusRequest"] > 0, "its silent jobs were polled"
        assert peer.received["JobKill"] == 0, "and none was given up"
        assert dict(peer.runs) == {"foojob0": 1, "foojob1": 1, "foojob2": 1}
    finally:
        await peer.stop()
        await manager.stop()
        for transport in (client_transport, peer.transport, manager.transport):
            await transport.close()
