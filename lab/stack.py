"""The whole lab: the OpenStack control plane and one IPMI BMC per compute host, and with
``cluster=True`` the Pacemaker cluster whose pacemaker_remote nodes are those hosts.

A BMC's power-off really stops that host's nova-compute (SIGKILL, as a power cut
does) and its power-on starts it again, so fencing through the BMC has the effect
it has on real hardware. With the cluster, each compute host is a node of
lab/pacemaker.py (its own network, mount, UTS and pid namespaces) running both
pacemaker-remoted and its nova-compute, which reaches the control plane (bound to
10.251.0.1) over the node's link; a BMC's power-off kills everything in the node and
its power-on boots remoted and nova-compute again. State lives under ``$OPENSTACK_HA_LAB`` (default
``/tmp/openstack-ha-lab``): ``openstack/`` and ``bmc/`` for the two parts,
``clouds.yaml`` (cloud ``lab``) and ``hosts.json`` (each compute host's BMC
address, port, user and password, its ``power_driver``, with ``--redfish`` its BMC's ``redfish``
face, and with the cluster its ``storage_address``) at the top,
and with ``--ceph`` ``ceph/`` (lab/ceph.py).

With ``--redfish`` every BMC also serves Redfish over HTTPS (lab/redfish_bmc.py), on the same
power state and faults as its IPMI face; ``--redfish-hosts`` names the hosts whose
``power_driver`` in hosts.json is ``redfish`` (the others stay ``ipmi``).

With the cluster and Ceph, compute nodes are real RBD clients: each node's nova-compute runs
the lab's virt driver (lab/nova_guest_driver.py), which starts a process per guest in the node
(lab/rbd_guest.py) that holds the guest's disk ``vms/<uuid>_disk`` through librbd, over the
node's storage link, and writes a numbered record every half second (``guest_dir``).

    python -m lab up [--computes N] [--cluster [--controllers N]] [--ceph]
                     [--redfish | --redfish-hosts HOST,...]
    python -m lab down     python -m lab status
    python -m lab kill-compute HOST     python -m lab start-compute HOST
    python -m lab bmc-fault HOST MODE [SECONDS]
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lab.bmc import BmcLab, PowerHooks
from lab.ceph import CephLab
from lab.commands import LabError
from lab.consul import ConsulLab
from lab.files import write_atomic
from lab.netns import (
    CONTROL_ADDRESS,
    STORAGE_CONTROL_ADDRESS,
    ensure_control_address,
    ensure_storage_control_address,
    ensure_storage_network,
    storage_address,
)
from lab.openstack import OpenStackLab
from lab.pacemaker import PacemakerLab
from lab.procs import comm

REPO = Path(__file__).resolve().parent.parent


def default_state_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB") or "/tmp/openstack-ha-lab")


class Lab:
    def __init__(self, state_dir: Path | None = None, *, cluster: bool | None = None,
                 controllers: int = 1) -> None:
        """``controllers``: cluster nodes ctl1..ctlN (with ``cluster``); up() may override."""
        self.state_dir = Path(state_dir or default_state_dir())
        self.controllers = controllers
        marker = self.state_dir / "cluster"
        # A CLI or a BMC hook on a running lab finds out which kind it is from the state dir.
        self.cluster = marker.exists() if cluster is None else cluster
        self.openstack = OpenStackLab(self.state_dir / "openstack",
                                      bind_host=CONTROL_ADDRESS if self.cluster else "127.0.0.1")
        self.bmc = BmcLab(self.state_dir / "bmc")
        self.pacemaker = PacemakerLab(self.state_dir / "pacemaker") if self.cluster else None
        # Optional (``up(ceph=True)``): only the sessions that fence storage pay its 7 s.
        # With the cluster, on the storage network: the nodes reach it over their storage link.
        self.ceph = CephLab(self.state_dir / "ceph",
                            STORAGE_CONTROL_ADDRESS if self.cluster else "127.0.0.1")
        # Optional (``up(consul=True)``, with the cluster): a serf pool per network and
        # Consul's API in front of the controller's agents (lab/consul.py).
        self.consul = ConsulLab(self.state_dir / "consul")

    # The cloud's name in clouds_yaml
    cloud = "lab"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def connection(self, **kw: Any) -> Any:
        """An openstacksdk connection to the lab's cloud (as tests/target.py's Target)."""
        return self.openstack.connection(**kw)

    def crash(self, host: str) -> None:
        """HOST stops serving at once: a power cut with the cluster, else its nova-compute
        killed (as tests/target.py's Target runs a hosts file's ``crash`` command)."""
        self.power_off(host)

    def restore(self, host: str) -> None:
        """HOST serves again, whatever brought it down: its BMC healthy and on (through the
        BMC, whose power-on hook boots the node), the node's processes running."""
        self.bmc.set_fault(host, "none")
        if not self.bmc.power_state(host):
            done = self.ipmitool(host, "chassis", "power", "on")
            if done.returncode != 0:
                raise RuntimeError(f"cannot power {host} on: {done.stderr.strip()}")
        else:
            self.power_on(host)  # the node died without its BMC knowing: it boots again

    @property
    def hosts_json(self) -> Path:
        return self.state_dir / "hosts.json"

    def _cli(self, *args: str) -> list[str]:
        """This lab's own CLI (``python -m lab``), by the same interpreter."""
        return ["/usr/bin/env", f"PYTHONPATH={REPO}", sys.executable, "-m", "lab",
                "--state-dir", str(self.state_dir), *args]

    def _hook(self, command: str, host: str) -> list[str]:
        """What a BMC runs on power change: this lab's own CLI, by the same interpreter."""
        if self.cluster:
            return self._cli(command, host)
        return [
            "/usr/bin/env", f"PYTHONPATH={REPO}", sys.executable, "-m", "lab.openstack",
            command, host, "--state-dir", str(self.openstack.state_dir),
        ]

    def power_off(self, host: str) -> None:
        """A power cut of HOST (what its BMC does): with the cluster, every process of the
        node dies at once, pacemaker-remoted and nova-compute alike."""
        if self.pacemaker is not None:
            self.pacemaker.power_off(host)
        else:
            self.openstack.kill_compute(host)

    def power_on(self, host: str) -> None:
        """HOST boots: pacemaker-remoted (with the cluster) and nova-compute start."""
        if self.pacemaker is not None:
            self.pacemaker.power_on(host)
            self._start_consul_agents(host)
        self.openstack.start_compute(host)

    def _start_consul_agents(self, host: str) -> None:
        """The node's serf agents, when the lab runs Consul: they boot with the node."""
        if self.pacemaker is None or not self.consul.running():
            return
        init = self.pacemaker.init_pid(host)
        if init is None:
            raise LabError(f"{host} is powered off: no serf agents to start")
        if any(comm(pid) == "serf" for pid in self.pacemaker.node_pids(host)):
            return  # the node runs (only its remoted or nova-compute was started again)
        others = [i for h, i in self.pacemaker._nodes().items() if h != host]
        self.consul.start_node(host, self.pacemaker._index(host), init, others)

    def up(self, computes: int = 3, *, token_expiration: int = 3600, owned: bool = True,
           controllers: int | None = None, ceph: bool = False, redfish: bool = False,
           redfish_hosts: Iterable[str] = (), consul: bool = False) -> None:
        """``owned``: the cluster belongs to this process (see PacemakerLab.up); a CLI passes
        False so that its lab outlives it. ``controllers``: cluster nodes ctl1..ctlN (default:
        the constructor's), ctl2..N each in namespaces of its own (see PacemakerLab).
        ``ceph``: also a Ceph cluster (lab/ceph.py) with a key per compute host.
        ``redfish``: every BMC also serves Redfish (lab/redfish_bmc.py); ``redfish_hosts``
        (implies it): the hosts whose ``power_driver`` in hosts.json is ``redfish``.
        ``consul``: with the cluster, serf pools and Consul's API (lab/consul.py)."""
        if controllers is not None:
            self.controllers = controllers
        hosts = [f"compute{i}" for i in range(1, computes + 1)]
        redfish_hosts = set(redfish_hosts)
        if unknown := sorted(redfish_hosts - set(hosts)):
            raise ValueError(f"redfish_hosts {unknown} are not among the compute hosts {hosts}")
        redfish = redfish or bool(redfish_hosts)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.pacemaker is not None:
            (self.state_dir / "cluster").touch()
            ensure_control_address()
            # A node sees none of the lab's state (secrets, clouds.yaml, the other services'
            # configuration), as a real compute host does not: only the configuration of its
            # nova-compute, and a directory of its own for that service's state.
            lay = self.openstack.layout
            self.pacemaker.up(
                hosts, owned=owned, hidden=[self.state_dir], controllers=self.controllers,
                shared=[lay.etc / "nova", lay.state_dir / "home"],
                local=[lay.compute_dir("{node}") / sub
                       for sub in ("instances", "lock", "ceph", "guests")])
            ensure_storage_control_address()
            for index, host in enumerate(hosts, 1):
                ensure_storage_network(host, index)
            if consul:
                self.consul.up()
                for host in hosts:
                    self._start_consul_agents(host)
                self.consul.wait_for_nodes(hosts)
        elif consul:
            raise ValueError("consul needs the lab with its cluster (its nodes' networks)")
        self.openstack.up(hosts, token_expiration=token_expiration,
                          computes_in_nodes=self.pacemaker is not None)
        if ceph:
            self.ceph.up(hosts)
            self._give_nodes_their_keys(hosts)
        endpoints = self.bmc.up({
            host: PowerHooks(on=self._hook("power-on" if self.cluster else "start-compute", host),
                             off=self._hook("power-off" if self.cluster else "kill-compute", host))
            for host in hosts
        }, redfish=redfish)
        # Passwords, both: 0600 from the start.
        write_atomic(self.clouds_yaml, self.openstack.clouds_yaml.read_bytes(), 0o600)
        hosts_info = {h: dataclasses.asdict(e) for h, e in endpoints.items()}
        for host, face in self.bmc.redfish_endpoints().items():
            hosts_info[host]["redfish"] = {"url": face.url, "system": face.system,
                                           "username": face.username, "password": face.password,
                                           "ca_file": face.ca_file}
        for host in hosts_info:
            hosts_info[host]["power_driver"] = "redfish" if host in redfish_hosts else "ipmi"
            # How the suites, pointed at this lab as at any other target (tests/target.py),
            # make the host fail and bring it back
            hosts_info[host]["crash"] = self._cli("crash", host)
            hosts_info[host]["restore"] = self._cli("restore", host)
        if self.pacemaker is not None:
            for index, host in enumerate(hosts, 1):
                hosts_info[host]["storage_address"] = storage_address(index)
        write_atomic(self.hosts_json, json.dumps(hosts_info, indent=2), 0o600)

    def guest_dir(self, host: str, what: str = "guests") -> Path:
        """HOST's own directory WHAT (``guests``: its guests' write logs; ``ceph``: its Ceph
        conf and key), as seen from the lab's side; only that node sees it."""
        path = self.openstack.layout.compute_dir(host) / what
        return self.pacemaker.node_local_dir(host, path) if self.pacemaker else path

    def crash_guest(self, host: str, server_id: str) -> None:
        """The guest of SERVER_ID on HOST crashes behind Nova's back: HOST's virt driver
        (lab/nova_guest_driver.py) reports it SHUTDOWN from its next read on, and kills its
        disk writer, and Nova's power-state sync stops the server by itself within the
        computes' sync_power_state_interval. For a server running on HOST only."""
        directory = self.guest_dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{server_id}.{host}.crash").touch()

    def _give_nodes_their_keys(self, hosts: list[str]) -> None:
        """Each compute node gets the Ceph conf and its own key (client.HOST, profile rbd on
        vms), in a directory only it sees: its nova-compute's guests open their disks with them."""
        if self.pacemaker is None:
            return  # nova-compute runs on the host, beside the cluster's keys: no guests
        conf = self.ceph.conf.read_text()
        for host in hosts:
            own = self.guest_dir(host, "ceph")
            own.mkdir(parents=True, exist_ok=True)
            write_atomic(own / "ceph.conf", conf, 0o644)
            write_atomic(own / "keyring", self.ceph.keyring(host).read_text(), 0o600)

    def down(self) -> None:
        try:
            self.bmc.down()
        finally:  # a BMC problem must not leave the whole control plane running
            try:
                self.openstack.down()
            finally:
                try:
                    self.ceph.down()
                    self.consul.down()
                finally:
                    if self.pacemaker is not None:
                        self.pacemaker.down()
                for path in (self.clouds_yaml, self.hosts_json, self.state_dir / "cluster"):
                    path.unlink(missing_ok=True)

    def hosts(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.hosts_json.read_text())

    def ipmitool(self, host: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """ipmitool against HOST's BMC, the password in the environment, not argv."""
        e = self.bmc.endpoints()[host]
        return subprocess.run(
            ["ipmitool", "-I", "lanplus", "-C", "3", "-H", e.address, "-p", str(e.port),
             "-U", e.username, "-E", *args],
            env={**os.environ, "IPMI_PASSWORD": e.password},
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def reset(self) -> None:
        """Per-test clean state: BMCs healthy and on, no servers, every compute up and enabled."""
        for host in self.bmc.endpoints():
            self.restore(host)
        self.openstack.reset()
