"""Consul for the lab with its cluster, as far as it can be had here: real serf agents, one per
node per network, and Consul's HTTP API in front of the controller's (lab/consul_face.py).

Consul itself cannot be installed on these machines (it is in neither Debian's nor PyPI's
packages); serf, the gossip failure detector Consul is built on, is Debian's. Each network is
a gossip pool of its own, as one Consul datacenter per network is in masakari-monitors'
design:

- management: the controller's agent on ``CONTROL_ADDRESS`` (10.251.0.1), each compute node's
  on its management address (10.251.I.2), over the node's management link;
- storage: the controller's on ``STORAGE_CONTROL_ADDRESS`` (10.252.0.1), each node's on its
  storage address (10.252.I.2), over its storage link.

So cutting a node's management link makes it ``failed`` in the management pool only; a power
cut or a hang (every process of the node SIGSTOPped, its agents too) in both. The controller
reads each pool through its face, ``http://127.0.0.1:8500`` (management) and ``:8501``
(storage), as fence_nova reads two Consul agents (``NETWORKS``). A node's agents run inside the
node (its namespaces, started when it boots), so they die with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import serf
from lab.commands import LabError, daemon_env, run
from lab.files import write_atomic
from lab.netns import (
    CONTROL_ADDRESS,
    STORAGE_CONTROL_ADDRESS,
    enable_forwarding,
    netns_name,
    node_address,
    storage_address,
)
from lab.procs import pid_alive

REPO = Path(__file__).resolve().parent.parent
CONTROLLER = "ctl1"


@dataclass(frozen=True)
class Network:
    name: str
    controller_address: str
    rpc_port: int  # each agent's RPC, on its own loopback (the host's, or the node's)
    face_port: int  # the controller's Consul API for this pool

    def node_address(self, index: int) -> str:
        return node_address(index) if self.name == "management" else storage_address(index)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.face_port}"


MANAGEMENT = Network("management", CONTROL_ADDRESS, 7373, 8500)
STORAGE = Network("storage", STORAGE_CONTROL_ADDRESS, 7374, 8501)
POOLS = (MANAGEMENT, STORAGE)
# What fence_nova's consul_config names: the controller's face of each pool.
NETWORKS = ",".join(f"{network.name}={network.url}" for network in POOLS)


class ConsulLab:
    """The serf pools and the controller's faces; ``state_dir`` keeps their pids and logs."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    @property
    def _pids_file(self) -> Path:
        return self.state_dir / "pids.json"

    def running(self) -> bool:
        return self._pids_file.exists()

    def _pids(self) -> dict[str, int]:
        try:
            return json.loads(self._pids_file.read_text())
        except (OSError, ValueError):
            return {}

    def up(self) -> None:
        """The controller's agent and face of each pool; the nodes' agents start as they
        boot (`start_node`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pids: dict[str, int] = {}
        try:
            for network in POOLS:
                agent = serf.SerfAgent(CONTROLLER, network.controller_address,
                                       f"127.0.0.1:{network.rpc_port}")
                process = serf.start_agent(agent, self.state_dir / f"serf-{network.name}.log")
                pids[f"serf-{network.name}"] = process.pid
                serf.wait_for_members(agent.rpc_addr, [CONTROLLER], timeout=10)
                pids[f"face-{network.name}"] = self._start_face(network)
        finally:
            write_atomic(self._pids_file, json.dumps(pids), 0o600)
        for network in POOLS:
            self._wait_for_face(network)

    def _start_face(self, network: Network) -> int:
        argv = [sys.executable, "-m", "lab.consul_face",
                "--listen", f"127.0.0.1:{network.face_port}",
                "--serf-rpc", f"127.0.0.1:{network.rpc_port}", "--node", CONTROLLER]
        with open(self.state_dir / f"face-{network.name}.log", "ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       cwd=REPO, env={**daemon_env(), "PYTHONPATH": str(REPO)},
                                       start_new_session=True)
        return process.pid

    def _wait_for_face(self, network: Network, timeout: float = 15) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", network.face_port, timeout=2)
                connection.request("GET", "/v1/agent/members")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LabError(f"the Consul face of {network.name} does not answer on"
                               f" {network.url} (see {self.state_dir}/face-{network.name}.log)")
            time.sleep(0.1)

    def start_node(self, name: str, index: int, init_pid: int, others: list[int]) -> None:
        """The node's agents, inside the node (``init_pid``: its init, whose namespaces they
        enter), detached, each joining the controller's agent of its pool (retried every
        second: the controller's may be on its way up, the link down).

        Gossip is a mesh: every member probes every other, and a member that cannot be
        reached directly is asked about through others. So each node reaches the other nodes
        (``others``: their indexes) on each network through the host, as the hosts of one
        network reach each other; otherwise a node's link cut would be confirmed by nobody
        and serf would take its longest suspicion time to declare it failed."""
        enable_forwarding()
        for network in POOLS:
            via = network.node_address(index).rsplit(".", 1)[0] + ".1"
            for other in others:
                run(["ip", "-n", netns_name(name), "route", "replace",
                     f"{network.node_address(other)}/32", "via", via])
        for network in POOLS:
            agent = serf.SerfAgent(name, network.node_address(index),
                                   f"127.0.0.1:{network.rpc_port}")
            argv = serf.agent_argv(agent, retry_join=[
                serf.host_port(network.controller_address, serf.DEFAULT_BIND_PORT)])
            with open(self.state_dir / f"serf-{network.name}-{name}.log", "ab") as log:
                subprocess.run(["setsid", "--fork", "nsenter", "-t", str(init_pid), "-n", "-m",
                                "-u", "-p", "--", *argv], stdin=subprocess.DEVNULL, stdout=log,
                               stderr=log, env=daemon_env(), cwd="/", check=True, timeout=10)

    def wait_for_nodes(self, names: list[str], status: str = "alive",
                       timeout: float = 30) -> None:
        """Until every pool's controller agent lists ``names`` with ``status``."""
        for network in POOLS:
            serf.wait_for_members(f"127.0.0.1:{network.rpc_port}", names, status,
                                  timeout=timeout)

    def stop_face(self, network: Network) -> None:
        """The pool's Consul API stops answering (its serf agents go on)."""
        self._kill(self._pids().get(f"face-{network.name}"))

    def start_face(self, network: Network) -> None:
        pids = self._pids()
        self._kill(pids.get(f"face-{network.name}"))
        pids[f"face-{network.name}"] = self._start_face(network)
        write_atomic(self._pids_file, json.dumps(pids), 0o600)
        self._wait_for_face(network)

    def ensure_faces(self) -> None:
        """Every pool's face answers (a test that stopped one, over)."""
        for network in POOLS:
            if not pid_alive(self._pids().get(f"face-{network.name}")):
                self.start_face(network)

    @staticmethod
    def _kill(pid: int | None) -> None:
        if pid is None or not pid_alive(pid):
            return
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)

    def down(self) -> None:
        """The controller's agents and faces (the nodes' die with the nodes)."""
        for pid in self._pids().values():
            self._kill(pid)
        self._pids_file.unlink(missing_ok=True)
