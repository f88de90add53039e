"""The deployment an operator builds, on the lab with its cluster (``Lab(cluster=True)``):
the reference configuration of scripts/configure-cluster.sh, plus what the end-to-end tests,
the demo and the MTTR benchmark do to it (break a node, watch, bring it back).

Secrets go to 0600 files under the lab's state dir; the settings file the script reads and
the engine's configuration file sit beside them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lab import workload
from lab.ceph import EVACUATE_CLIENT, FENCE_CLIENT, POOL
from lab.consul import NETWORKS as CONSUL_NETWORKS
from lab.files import write_atomic
from lab.netns import node_link, storage_link
from lab.procs import send_signal
from lab.stack import REPO, Lab
from openstack_ha import pacemaker

TIMELINE = Path("/var/log/openstack-ha/timeline.jsonl")
WORKER_LOG = Path("/var/log/openstack-ha/nova-evacuate.log")
# The NovaEvacuate worker's metrics endpoint (on loopback of the controller that runs it);
# not the default 9464, which something of the machine's own may serve.
METRICS_PORT = 19464
LIVENESS_CHECKS = ("process:nova-compute; "
                   "cmd:/usr/bin/test ! -e /run/resource-agents/ohalab-broken")


def _sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
    return done


class ClusterView:
    """A deployment of the reference configuration as the end-to-end scenarios see it through
    the cluster and the cloud alone: Pacemaker's status and tools on this machine (a
    controller), the cloud's API, the recovery timeline. :class:`Deployment` is the lab's;
    tests/target.py's ``TargetDeployment`` any other (``OPENSTACK_HA_TARGET``).

    A subclass gives ``hosts`` (the compute hosts), ``controllers``, ``connection`` and
    ``crash`` (how a host fails at once)."""

    hosts: list[str]
    controllers: list[str]
    pacemaker_log = Path("/var/log/pacemaker/pacemaker.log")

    def connection(self, **kw: Any) -> Any:
        """An openstacksdk connection to the deployment's cloud."""
        raise NotImplementedError

    def crash(self, host: str) -> None:
        """HOST stops serving at once, as a power cut or a kernel crash stops it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state

    def crm_mon(self) -> ET.Element:
        # The cluster's own status, produced by Pacemaker's crm_mon: not untrusted input.
        return ET.fromstring(_sh("crm_mon", "-1", "--output-as=xml", timeout=30).stdout)

    def started_on(self, resource: str) -> set[str]:
        """Nodes where ``resource`` (or its clone instances) runs."""
        mon = self.crm_mon()
        return {n.get("name", "") for r in mon.iter("resource")
                if r.get("id", "").split(":")[0] == resource and r.get("role") == "Started"
                for n in r.iter("node")}

    def serving(self) -> bool:
        try:
            live = self.started_on("liveness")
            engine = self.started_on("nova-evacuate")
        except Exception:
            return False
        return set(self.hosts) <= live and len(engine) == 1 and engine <= set(self.controllers)

    def wait_serving(self, timeout: float = 240) -> None:
        workload.wait_for(self.serving, timeout, "liveness on every compute, nova-evacuate up", 1)

    def service(self, host: str) -> Any:
        conn = self.connection()
        (svc,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == host]
        return svc

    def ledger(self, host: str) -> Any:
        from nova_evacuate.ledger import parse_marker

        return parse_marker(self.service(host).disabled_reason)

    def fenced(self, host: str, since: float) -> bool:
        """Pacemaker fenced ``host`` successfully after ``since`` (epoch seconds), as its
        fencing alert says (``stonith_admin --history`` keeps only a node's latest action,
        and unfencing follows fencing at once)."""
        return any(e["event"] == "fenced" for e in self.events(since, host))

    @staticmethod
    def events(since: float, host: str | None = None) -> list[dict[str, Any]]:
        """Timeline events from ``since`` (epoch seconds) on."""
        if not TIMELINE.exists():
            return []
        found = []
        for line in TIMELINE.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("ts", 0) >= since and (host is None or event.get("host") == host):
                found.append(event)
        return sorted(found, key=lambda e: e["ts"])

    def diagnostics(self, since: float) -> str:
        """What a failed scenario needs to be understood from a CI log alone: the timeline
        since ``since`` first (a CI log is often cut in the middle: the head survives), then
        the fencing history, the cluster's state with fail counts, the connection holds and
        the Pacemaker log's notable lines."""
        events = self.events(since - 60)
        shown = events[-60:]
        parts = [f"--- timeline from 60 s before the scenario ({len(events)} events"
                 + (f", the last {len(shown)}" if len(shown) < len(events) else "") + ")\n"
                 + "\n".join(
                     f"{e['ts'] - since:8.1f} {e.get('host')} {e['event']} "
                     + json.dumps({k: v for k, v in e.items()
                                   if k not in ("ts", "event", "host")})[:160]
                     for e in shown)]
        try:  # the worker's own account: its warnings and errors
            lines = [line for line in WORKER_LOG.read_text(errors="replace").splitlines()
                     [-5000:] if " WARNING " in line or " ERROR " in line]
            parts.append("--- nova-evacuate.log, warnings and errors (last 30)\n"
                         + "\n".join(line[:300] for line in lines[-30:]))
        except OSError as exc:
            parts.append(f"--- nova-evacuate.log: {exc}")
        for title, argv in (
                ("fencing history", ("stonith_admin", "--history", "*", "--verbose")),
                ("crm_mon", ("crm_mon", "-1", "-rfA", "--show-detail")),
                ("holds (connection resources' meta)", ("cibadmin", "--query", "--scope",
                                                        "resources", "--xpath",
                                                        "//primitive[@type='remote']"
                                                        "/meta_attributes"))):
            try:
                done = _sh(*argv, check=False, timeout=20)
                parts.append(f"--- {title}\n{(done.stdout + done.stderr).strip()}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                parts.append(f"--- {title}: {exc}")
        notable = ("notice: Actions:", "error:", "warning:", "will not be started",
                   "Clearing failure", "C_TIMER_POPPED", "Calculated transition")
        try:
            lines = [line for line in self.pacemaker_log.read_text(
                errors="replace").splitlines()[-20000:] if any(n in line for n in notable)]
            parts.append("--- pacemaker.log, notable lines (last 250)\n"
                         + "\n".join(line[:300] for line in lines[-250:]))
        except OSError as exc:
            parts.append(f"--- pacemaker.log: {exc}")
        return "\n".join(parts)

    @staticmethod
    def mark(event: str, host: str, **fields: Any) -> float:
        """Record a lab event (``failure_injected``) in the timeline; its time."""
        from openstack_ha import timeline

        now = round(time.time(), 3)  # as the timeline stores it: events(now) includes it
        timeline.record(event, host, at=now, by="lab", **fields)
        return now


class Deployment(ClusterView):
    def __init__(self, lab: Lab) -> None:
        if lab.pacemaker is None:
            raise ValueError("the deployment needs the lab with its cluster (Lab(cluster=True))")
        self.lab = lab
        self.pcmk = lab.pacemaker
        self.dir = lab.state_dir / "ha"
        self.hosts = sorted(lab.bmc.endpoints())
        self.controllers = self.pcmk.controllers()
        self.pacemaker_log = self.pcmk.pacemaker_log

    # ------------------------------------------------------------------ configuration

    def _secret(self, name: str, value: str) -> Path:
        path = self.dir / f"{name}.secret"
        write_atomic(path, value + "\n", 0o600)
        return path

    def auth(self) -> dict[str, str]:
        """Keystone credentials of cloud ``lab`` (clouds.yaml)."""
        return yaml.safe_load(self.lab.clouds_yaml.read_text())["clouds"]["lab"]["auth"]

    def write_settings(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        auth = self.auth()
        lines = [f'COMPUTES="{" ".join(self.hosts)}"',
                 f"AUTH_URL={auth['auth_url']}", f"OS_USERNAME={auth['username']}",
                 f"OS_PROJECT={auth['project_name']}",
                 f"OS_PASSWORD_FILE={self._secret('keystone', auth['password'])}",
                 f"ENGINE_CONFIG={self.engine_config()}",
                 f'LIVENESS_CHECKS="{LIVENESS_CHECKS}"']
        hosts = self.lab.hosts()
        for host, bmc in self.lab.bmc.endpoints().items():
            v = host.replace("-", "_")
            redfish = hosts[host].get("redfish") if hosts[host].get("power_driver") == "redfish" \
                else None
            if redfish is None:
                lines += [f"BMC_ADDRESS_{v}={bmc.address}", f"BMC_PORT_{v}={bmc.port}"]
            else:  # the same BMC, its Redfish face (lab/redfish_bmc.py): HTTPS, the lab's CA
                url = urlsplit(redfish["url"])
                lines += [f"BMC_DRIVER_{v}=redfish", f"BMC_ADDRESS_{v}={url.hostname}",
                          f"BMC_PORT_{v}={url.port or 443}", f"BMC_CA_FILE_{v}={redfish['ca_file']}"]
            lines += [f"BMC_USERNAME_{v}={bmc.username}",
                      f"BMC_PASSWORD_FILE_{v}={self._secret(f'bmc-{host}', bmc.password)}"]
        if self.lab.ceph.running():  # what scripts/configure-storage-fencing.sh reads
            ceph = self.lab.ceph
            lines += [f"CEPH_CONF={ceph.conf}", f"CEPH_USER={FENCE_CLIENT}",
                      f"CEPH_KEYRING_FILE={ceph.keyring(FENCE_CLIENT)}"]
            lines += [f"STORAGE_ADDRESS_{h.replace('-', '_')}={a}"
                      for h, a in self.storage_addresses().items()]
        path = self.dir / "settings.sh"
        path.write_text("\n".join(lines) + "\n")
        return path

    def engine_config(self, evacuation: str = "", *, disk_check: bool = False,
                      consul: bool = False) -> Path:
        """The engine's configuration; ``evacuation``: more ``[evacuation]`` lines;
        ``disk_check``: a ``[storage]`` section (the lab's Ceph), so that no server is rebuilt
        while the failed host still holds its disk; ``consul``: a ``[consul]`` section (the
        lab's serf pools), so that the worker watches them. The worker serves its metrics on
        127.0.0.1:``METRICS_PORT``."""
        path = self.dir / "openstack-ha.conf"
        path.write_text(
            f"[cloud]\ncloud = lab\nclouds_yaml = {self.lab.clouds_yaml}\n"
            f"[metrics]\nenabled = true\nlisten_address = 127.0.0.1\nport = {METRICS_PORT}\n"
            f"[evacuation]\npoll_interval = 1\n{evacuation}"
            + (self.storage_section() if disk_check else "")
            + (f"[consul]\nnetworks = {CONSUL_NETWORKS}\n" if consul else ""))
        return path

    def storage_section(self) -> str:
        """The engine's ``[storage]`` section for the lab's Ceph."""
        ceph = self.lab.ceph
        storage_map = ",".join(f"{h}={a}" for h, a in self.storage_addresses().items())
        return (f"[storage]\nrbd_pool = {POOL}\nceph_conf = {ceph.conf}\n"
                f"ceph_user = {EVACUATE_CLIENT}\n"
                f"ceph_keyring_file = {ceph.keyring(EVACUATE_CLIENT)}\n"
                f"storage_map = {storage_map}\n")

    def storage_addresses(self) -> dict[str, str]:
        """Each compute host's address on the storage network (hosts.json)."""
        return {h: info["storage_address"] for h, info in self.lab.hosts().items()}

    def reconfigure_engine(self, evacuation: str = "", *, disk_check: bool = False,
                           consul: bool = False) -> None:
        """Rewrite the engine's configuration and restart NovaEvacuate, whose worker reads
        it at start (a test that slows the evacuation down, and puts it back)."""
        self.engine_config(evacuation, disk_check=disk_check, consul=consul)
        _sh("crm_resource", "--restart", "--resource", "nova-evacuate", timeout=180)
        self.wait_serving()

    @staticmethod
    def worker_pid() -> int | None:
        """The NovaEvacuate worker's pid, if it runs."""
        done = _sh("pgrep", "-f", "nova_evacuate[.]worker", check=False)
        pids = [int(p) for p in done.stdout.split()]
        return pids[0] if pids else None

    def configure(self, timeout: float = 240) -> None:
        """Run the reference configuration script, then wait until every node serves.

        First the controllers' own fence devices, which every cluster has before instance HA
        is added: Pacemaker unfences each node that runs a fencing device that provides
        unfencing (fence_nova does), the controllers included, through their own devices.
        In the lab that is fence_labpower (for which ctl1, the host, is always on)."""
        self.pcmk.install_fence_labpower()
        for controller in self.controllers:
            self.pcmk.pcs("stonith", "create", f"fence-{controller}", "fence_labpower",
                          f"state_dir={self.pcmk.state_dir}", f"pcmk_host_list={controller}")
        settings = self.write_settings()
        _sh("bash", str(REPO / "scripts/configure-cluster.sh"), str(settings), timeout=300)
        self.wait_serving(timeout)

    def enable_storage_fencing(self) -> None:
        """Add storage fencing to the running configuration, as an operator does with
        scripts/configure-storage-fencing.sh: Ceph blocklisting after the power-off at level
        1, and on its own at level 2."""
        settings = self.write_settings()
        _sh("bash", str(REPO / "scripts/configure-storage-fencing.sh"), str(settings),
            timeout=300)

    def disable_storage_fencing(self) -> None:
        """Back to the reference configuration without storage fencing."""
        for host in self.hosts:
            _sh("pcs", "stonith", "level", "remove", "2", host, f"fence-storage-{host}",
                check=False)
            _sh("pcs", "stonith", "delete", f"fence-storage-{host}", check=False)
            _sh("pcs", "stonith", "update", f"fence-nova-{host}", "storage_fence=none",
                "ceph_conf=", "ceph_user=", "ceph_keyring_file=", "storage_map=")

    def enable_consul(self, hold: int) -> None:
        """fence_nova reads Consul (the lab's serf pools, lab/consul.py) before powering a
        node off, as configure-cluster.sh's CONSUL_CONFIG sets it up, with ``hold`` for
        partition_hold (and stonith-max-attempts to match)."""
        if not self.lab.consul.running():
            raise RuntimeError("the lab runs no Consul (Lab.up(consul=True))")
        _sh("pcs", "property", "set", f"stonith-max-attempts={hold // 5 + 10}")
        for host in self.hosts:
            _sh("pcs", "stonith", "update", f"fence-nova-{host}",
                f"consul_config=networks={CONSUL_NETWORKS}", f"partition_hold={hold}",
                "pcmk_off_timeout=80s")

    def disable_consul(self) -> None:
        """Back to the reference configuration without Consul."""
        for host in self.hosts:
            _sh("pcs", "stonith", "update", f"fence-nova-{host}", "consul_config=",
                "partition_hold=", "pcmk_off_timeout=60s")
        _sh("pcs", "property", "unset", "stonith-max-attempts", check=False)

    # ------------------------------------------------------------------ failures

    def connection(self, **kw: Any) -> Any:
        return self.lab.connection(**kw)

    def crm_mon(self) -> ET.Element:
        return self.pcmk.crm_mon_xml()  # its error names the lab's Pacemaker log

    def crash(self, host: str) -> None:
        """A power cut its BMC does not know of (lab/stack.py's Lab.crash)."""
        self.lab.crash(host)


    def _veth(self, host: str) -> str:
        return node_link(self.pcmk._index(host))

    def kill_remoted(self, host: str) -> None:
        pid = self.pcmk.remoted_pid(host)
        if pid is None:
            raise RuntimeError(f"{host}: pacemaker-remoted is not running")
        os.kill(pid, signal.SIGKILL)

    def cut_link(self, host: str) -> None:
        _sh("ip", "link", "set", self._veth(host), "down")

    def restore_link(self, host: str) -> None:
        _sh("ip", "link", "set", self._veth(host), "up", check=False)

    def cut_storage_link(self, host: str) -> None:
        _sh("ip", "link", "set", storage_link(self.pcmk._index(host)), "down")

    def restore_storage_link(self, host: str) -> None:
        _sh("ip", "link", "set", storage_link(self.pcmk._index(host)), "up", check=False)

    def hang(self, host: str) -> None:
        # Twice: a process the first pass missed (forked meanwhile) is stopped by the second;
        # one that exited in between is no error.
        for _ in range(2):
            for pid in self.pcmk.node_pids(host):
                send_signal(pid, signal.SIGSTOP)

    def unhang(self, host: str) -> None:
        for pid in self.pcmk.node_pids(host):
            send_signal(pid, signal.SIGCONT)

    def break_check(self, host: str) -> None:
        """Makes the node's second critical check (a cmd: check) fail."""
        (self.pcmk.node_ra_dir(host) / "ohalab-broken").write_text("broken by the lab\n")

    def repair_check(self, host: str) -> None:
        (self.pcmk.node_ra_dir(host) / "ohalab-broken").unlink(missing_ok=True)

    # ------------------------------------------------------------------ back to healthy

    def heal(self, timeout: float = 300, serving: Any = None) -> None:
        """Every node powered, linked, running and serving (``serving()``, by default the
        reference configuration's); no servers; Nova clean."""
        serving = serving or self.serving
        if self.lab.ceph.running():
            # A host still blocklisted (a test that ended before its unfencing) and now
            # powered on by hand would stay fenced: unfencing keeps the entries of a host
            # that is on. The lab knows its hosts' old guests are gone, as an operator would.
            self.lab.ceph.ceph("osd", "blocklist", "clear", check=False)
        if self.lab.consul.running():
            self.lab.consul.ensure_faces()
        for controller in self.controllers[1:]:  # ctl1 is the host: always on
            self.pcmk.heal_partition(controller)
            if not self.pcmk.controller_powered(controller):
                self.pcmk.power_on_controller(controller)
        for host in self.hosts:
            pacemaker.release_connection(host)  # a test that ended with the host off
            self.lab.bmc.set_fault(host, "none")
            self.restore_link(host)
            self.restore_storage_link(host)
            self.unhang(host)
            self.repair_check(host)
            if not self.lab.bmc.power_state(host):
                done = self.lab.ipmitool(host, "chassis", "power", "on")
                if done.returncode != 0:
                    raise RuntimeError(f"cannot power {host} on: {done.stderr.strip()}")
            else:
                self.lab.power_on(host)  # remoted or nova-compute killed: start them again
        deadline = time.monotonic() + timeout
        while True:
            _sh("crm_resource", "--cleanup", check=False)
            try:
                workload.wait_for(serving, 30, "the cluster serving", 1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
                # A node the cluster still wants fenced (fencing was refused): the lab
                # knows it is fine, as an operator would after checking the host.
                for host in self.hosts:
                    if not self.pcmk.remote_ready(host):
                        _sh("stonith_admin", "--confirm", host, check=False)
        for host in self.hosts:  # back: no returning mark may outlive the scenario
            pacemaker.end_return(host)
        self.lab.openstack.reset()
        for host in self.hosts:
            _sh("attrd_updater", "-n", "evacuate", "-D", "-N", host, check=False)
