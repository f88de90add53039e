"""A real Ceph cluster for the lab: one monitor, one manager and one OSD, on one address.

What it starts, all from Debian 12's Ceph 16.2 (Pacific) packages and none through systemd::

    ceph-mon  mon.a   [v2:ADDRESS:3300,v1:ADDRESS:6789]  (msgr2 and v1: Pacific clients use both)
    ceph-mgr  mgr.x   ADDRESS:6800-6899                  (PG stats, so that `ceph health` is OK)
    ceph-osd  osd.0   ADDRESS:6800-6899                  one OSD is enough for pools of size 1

then a replicated pool ``vms`` of size 1 (8 PGs, the ``rbd`` application), and keys:

    client.admin         the lab's own key; bootstraps everything else
    client.openstack-ha  mon 'allow r, allow command "osd blocklist"': the fence agent reads the
                         cluster (``ceph status``, ``osd blocklist ls``) and adds or removes
                         blocklist entries. No osd caps, so it cannot read or write any pool;
                         no ``x``, so no ``auth`` command; no ``w``, so no pool or map change.
    client.openstack-ha-evacuate  mon 'profile rbd' osd 'profile rbd-read-only pool=vms': the
                         engine reads each disk's watchers before a rebuild, and writes nothing.
    client.<compute>     mon 'profile rbd' osd 'profile rbd pool=vms': what Nova's libvirt gives
                         a hypervisor. ``profile rbd`` on the mon lets librbd blocklist a dead
                         exclusive-lock holder, as in any real deployment.

Everything lives under the state dir: ``ceph.conf`` (with the monitor's address, so a client
needs only ``--conf``, ``--id`` and the keyring next to it, which the conf names), the keyrings
``ceph.client.<name>.keyring`` (0600), the daemons' data (``mon/``, ``mgr/``, ``osd/``), their
pid files and admin sockets (``run/``), crash dumps (``crash/``) and logs (``log/``). The daemons
bind ADDRESS only (for the lab the control-plane address; 127.0.0.1 in tests) and run cephx.

The daemons daemonize themselves (no ``-f``), each in a new session: they outlive whoever
started them (a killed test runner leaves a cluster that a later ``down`` stops through the pid
files, never an orphan holding the ports) and our process never has to reap them. ``down`` kills
them with SIGKILL (their data is thrown away anyway, and memstore would otherwise spend its stop
writing the whole store to disk), each found by its pid file and confirmed by its command line,
which names this state dir's ceph.conf; it waits until they are gone, then removes everything
but the logs.

memstore or BlueStore: measured on the lab machine (2 vCPUs, ext4; Ceph 16.2.15; three runs,
PSS from /proc/PID/smaps_rollup)::

                             up()    mon    mgr     osd idle  osd, 3 disks x 1 MiB  osd, +32 MiB random 4K
    memstore                 6.9 s   27 MiB 134 MiB 28 MiB    41 MiB                252 MiB
    BlueStore (sparse file)  9.5 s   27 MiB 134 MiB 39 MiB    56 MiB                140 MiB

memstore is the default: 2.6 s faster to start (no block file to make and mount), less memory for
what the lab writes (a few small disks with a record every half second), and the exclusive lock,
watchers and blocklisting behave the same (both were tried with ``rbd bench``). Its cost is that
the data lives in the OSD's memory, so a lab that writes a lot should use BlueStore
(``--objectstore bluestore``: a 4 GiB sparse file in osd/). ``down`` takes 0.05 s either way.
The manager dominates memory whatever the store: without ``mgr disabled modules`` it takes 300 MiB.

Command line (the state dir defaults to $OPENSTACK_HA_LAB/ceph)::

    python -m lab.ceph [--state-dir DIR] [--address A] [--objectstore memstore|bluestore]
                       [--mon-ports 3300,6789] up [--compute-nodes compute1,compute2]
    python -m lab.ceph [--state-dir DIR] status|down
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.commands import LabError, daemon_env, run
from lab.files import write_atomic
from lab.procs import all_pids, cmdline, kill_until_gone, pid_alive, pss

CLUSTER = "ceph"
POOL = "vms"
POOL_PGS = 8
FENCE_CLIENT = "openstack-ha"
# The least the fence agent needs: read the maps (status, health, `osd blocklist ls`) and run the
# one command `osd blocklist add|rm`. Without osd caps it can touch no object.
FENCE_CAPS = ("mon", 'allow r, allow command "osd blocklist"')
COMPUTE_CAPS = ("mon", "profile rbd", "osd", f"profile rbd pool={POOL}")
# The evacuation engine reads each disk's watchers and the blocklist before a rebuild
# (nova_evacuate/disks.py): read-only on the pool, nothing it could write.
EVACUATE_CLIENT = "openstack-ha-evacuate"
EVACUATE_CAPS = ("mon", "profile rbd", "osd", f"profile rbd-read-only pool={POOL}")
MGR_CAPS = ("mon", "allow profile mgr", "osd", "allow *", "mds", "allow *")
ADMIN_CAPS = {"mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}
MON_PORTS = (3300, 6789)  # msgr2, v1: the well-known ports, so nothing else needs configuring
DAEMON_PORTS = (6800, 6899)  # the mgr and the OSD take theirs from here
OBJECTSTORES = ("memstore", "bluestore")
MGR_MODULE_PATH = Path("/usr/share/ceph/mgr")
# Pacific's manager loads every module it finds, enabled or not, each in its own Python
# interpreter. Those it cannot run without (a missing one is HEALTH_ERR) are these; skipping
# the others (restful, prometheus, nfs, snap_schedule...) halves its memory (300 -> 134 MiB PSS).
MGR_ALWAYS_ON_MODULES = frozenset({"balancer", "crash", "devicehealth", "orchestrator", "pg_autoscaler",
                                   "progress", "rbd_support", "status", "telemetry", "volumes"})
BLUESTORE_BLOCK_BYTES = 4 << 30  # sparse: only what is written takes disk space
START_TIMEOUT = 90.0
CONNECT_TIMEOUT = 10  # seconds a `ceph` command waits for the monitor before it gives up
_CLIENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RESERVED_CLIENTS = {"admin", FENCE_CLIENT, EVACUATE_CLIENT}
_LOG_PREFIX_RE = re.compile(r"^\S+ [0-9a-f]+ +-?\d+ +")


@dataclass(frozen=True)
class Daemon:
    """One Ceph daemon of the lab: ``kind`` is its executable's suffix (ceph-mon...), ``ident``
    its id; its name is ``kind.ident``."""

    kind: str
    ident: str

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.ident}"

    @property
    def executable(self) -> str:
        return f"ceph-{self.kind}"


MON = Daemon("mon", "a")
MGR = Daemon("mgr", "x")
OSD = Daemon("osd", "0")
DAEMONS = (MON, MGR, OSD)


def default_state_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB", "/tmp/openstack-ha-lab")) / "ceph"


def keyring_text(entity: str, key: str, caps: dict[str, str] | None = None) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {service} = "{cap}"' for service, cap in (caps or {}).items()]
    return "\n".join(lines) + "\n"


class CephLab:
    """The lab's Ceph cluster, kept in STATE_DIR and listening on ADDRESS only."""

    def __init__(self, state_dir: Path, address: str = "127.0.0.1", *,
                 objectstore: str = "memstore", mon_ports: tuple[int, int] = MON_PORTS,
                 daemon_ports: tuple[int, int] = DAEMON_PORTS) -> None:
        try:
            ipaddress.IPv4Address(address)  # the lab is IPv4; v6 would need [brackets] in mon host
        except ValueError as exc:
            raise LabError(f"Ceph lab address {address!r}: not an IPv4 address") from exc
        if objectstore not in OBJECTSTORES:
            raise LabError(f"objectstore {objectstore!r}: use one of {', '.join(OBJECTSTORES)}")
        self.state_dir = state_dir.absolute()
        self.address = address
        self.objectstore = objectstore
        self.mon_ports = mon_ports
        self.daemon_ports = daemon_ports
        self.conf = self.state_dir / "ceph.conf"
        # Written last by up(): the cluster is complete (pool, keys, health).
        self.cluster_file = self.state_dir / "ceph-lab.json"
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "log"
        self.crash_dir = self.state_dir / "crash"
        self._started: list[Daemon] = []  # by this up(): each must stay alive while it waits

    # ----------------------------------------------------------------------------------------
    # Paths

    def keyring(self, client: str) -> Path:
        """The keyring of ``client.CLIENT``, where ceph.conf's ``keyring`` option finds it."""
        return self.state_dir / f"{CLUSTER}.client.{client}.keyring"

    def data_dir(self, daemon: Daemon) -> Path:
        return self.state_dir / daemon.kind / f"{CLUSTER}-{daemon.ident}"

    def pid_file(self, daemon: Daemon) -> Path:
        return self.run_dir / f"{CLUSTER}-{daemon.name}.pid"

    def log_file(self, daemon: Daemon) -> Path:
        return self.log_dir / f"{CLUSTER}-{daemon.name}.log"

    def _owned_paths(self) -> Iterator[Path]:
        """What up() creates, logs aside: down() removes exactly this, never the state dir itself
        (it may be the whole lab's)."""
        yield self.cluster_file
        yield self.conf
        yield from self.state_dir.glob(f"{CLUSTER}.client.*.keyring")
        yield from self.state_dir.glob(".bootstrap*")
        for sub in ("mon", "mgr", "osd", "run", "crash"):
            yield self.state_dir / sub

    # ----------------------------------------------------------------------------------------
    # Processes

    def _is_ours(self, pid: int, daemon: Daemon) -> bool:
        """PID runs DAEMON of this state dir (a pid file may be stale and its pid reused)."""
        argv = cmdline(pid)
        return (pid_alive(pid) and bool(argv) and os.path.basename(argv[0]) == daemon.executable.encode()
                and str(self.conf).encode() in argv)

    def daemon_pid(self, daemon: Daemon) -> int | None:
        """The pid of DAEMON from its pid file, if that process runs and is ours."""
        try:
            pid = int(self.pid_file(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self._is_ours(pid, daemon) else None

    def _our_daemons(self) -> list[int]:
        """Every running daemon of this state dir: by pid file, and also by command line, for a
        daemon killed with us between its fork and its pid file."""
        found = {pid for daemon in DAEMONS if (pid := self.daemon_pid(daemon))}
        found.update(pid for pid in all_pids() for daemon in DAEMONS if self._is_ours(pid, daemon))
        return sorted(found)

    def _start(self, daemon: Daemon, *extra: str) -> None:
        """Run DAEMON's executable, which forks the daemon and returns once it is initialised
        (with ``--mkfs``: makes its store and exits). Its early output (before its log is open)
        goes to log/<name>.out."""
        out = self.log_dir / f"{daemon.name}.out"
        argv = [daemon.executable, "--conf", str(self.conf), "--id", daemon.ident, *extra]
        what = " ".join([daemon.executable, *extra])
        with open(out, "ab") as fh:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                      env=daemon_env(), start_new_session=True, timeout=START_TIMEOUT,
                                      check=False)
            except subprocess.TimeoutExpired as exc:
                raise LabError(f"{what}: no answer after {START_TIMEOUT}s "
                               f"(see {self.log_file(daemon)})") from exc
        if not extra:
            self._started.append(daemon)
        if proc.returncode != 0:
            raise LabError(f"{what} failed (rc={proc.returncode}): "
                           f"{_last_line(out)} (see {self.log_file(daemon)})")

    # ----------------------------------------------------------------------------------------
    # Commands

    def ceph(self, *args: str, client: str = "admin", check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """The ``ceph`` CLI as ``client.CLIENT``, with this cluster's conf and keyring."""
        return run(["ceph", "--conf", str(self.conf), "--id", client,
                    "--connect-timeout", str(CONNECT_TIMEOUT), *args],
                   check=check, timeout=timeout, env=daemon_env(), what=f"ceph {' '.join(args)}")

    def ceph_json(self, *args: str) -> Any:
        return json.loads(self.ceph(*args, "--format", "json").stdout)

    def health(self) -> str:
        """HEALTH_OK, HEALTH_WARN..., or "unreachable"."""
        try:
            proc = self.ceph("health", check=False, timeout=CONNECT_TIMEOUT + 5)
        except LabError:  # no answer at all
            return "unreachable"
        return proc.stdout.split()[0] if proc.returncode == 0 and proc.stdout.strip() else "unreachable"

    def _pgs_active(self) -> bool:
        summary = self.ceph_json("pg", "stat")["pg_summary"]
        active = sum(state["num"] for state in summary["num_pg_by_state"]
                     if "active" in state["name"].split("+"))
        return summary["num_pgs"] >= POOL_PGS and active == summary["num_pgs"]

    # ----------------------------------------------------------------------------------------
    # Life cycle

    def running(self) -> bool:
        """A cluster that up() finished (for this address) runs: all its daemons are alive.
        (Which says nothing about its health now.)"""
        try:
            cluster = json.loads(self.cluster_file.read_text())
        except (OSError, ValueError):
            return False  # never finished: an up() killed half-way leaves no cluster file
        return cluster.get("address") == self.address and all(self.daemon_pid(d) for d in DAEMONS)

    def up(self, compute_nodes: Iterable[str] = ()) -> None:
        """Start the cluster (a running one is kept) and make sure every key exists: the fence
        agent's and one per compute node named. Raises LabError, with everything stopped
        again (the logs stay), if the cluster does not come up healthy."""
        nodes = list(compute_nodes)
        for node in nodes:
            if not _CLIENT_NAME_RE.match(node) or node in _RESERVED_CLIENTS:
                raise LabError(f"compute node name {node!r} cannot be a Ceph client name")
        if self.running():
            for node in nodes:
                self._client_key(node, COMPUTE_CAPS)
            return
        self.down()  # a half-started or crashed cluster: start afresh
        self._started = []
        started = time.monotonic()
        try:
            fsid = self._bootstrap()
            self._client_key(FENCE_CLIENT, FENCE_CAPS)
            self._client_key(EVACUATE_CLIENT, EVACUATE_CAPS)
            for node in nodes:
                self._client_key(node, COMPUTE_CAPS)
            # Health is OK already while the new pool's PGs are still being created: wait for
            # them first, or the first client write would stall until they are.
            self._wait("every PG active", self._pgs_active)
            self._wait("HEALTH_OK", lambda: self.health() == "HEALTH_OK")
            cluster = {"fsid": fsid, "address": self.address, "objectstore": self.objectstore,
                       "conf": str(self.conf), "up_seconds": round(time.monotonic() - started, 1)}
            write_atomic(self.cluster_file, json.dumps(cluster, indent=2) + "\n")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Kill every daemon of this state dir, wait until they are gone, and remove their data,
        sockets, conf and keys (the logs stay). Nothing running: nothing to do but the removal."""
        left = kill_until_gone(self._our_daemons, timeout=20)  # returns once all are gone
        if left:
            raise LabError(f"Ceph daemons {left} of {self.state_dir} survive SIGKILL")
        for path in self._owned_paths():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """The cluster as up() recorded it (None if it never finished), its daemons' pids and
        memory (PSS), and its health ("down" without a monitor)."""
        daemons = {daemon.name: self.daemon_pid(daemon) for daemon in DAEMONS}
        try:
            cluster = json.loads(self.cluster_file.read_text())
        except (OSError, ValueError):
            cluster = None
        return {
            "state_dir": str(self.state_dir),
            "cluster": cluster,
            "daemons": daemons,
            "pss_bytes": {name: pss(pid) for name, pid in daemons.items() if pid},
            "health": self.health() if daemons[MON.name] and self.conf.exists() else "down",
        }

    # ----------------------------------------------------------------------------------------
    # Bootstrap

    def _bootstrap(self) -> str:
        """Conf, monitor, manager, OSD and pool; returns the new cluster's fsid."""
        for port in self.mon_ports:  # or ceph-mon retries its bind for 10 s before it says why
            if not _port_free(self.address, port):
                raise LabError(f"Ceph: {self.address}:{port} is in use (another Ceph lab?)")
        shutil.rmtree(self.log_dir, ignore_errors=True)  # logs of this cluster only
        for path in (self.log_dir, self.run_dir, self.crash_dir):
            path.mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        write_atomic(self.conf, self._conf_text(fsid), mode=0o644)
        self._make_monitor(fsid)
        self._start(MON)
        self._wait("the monitor", lambda: self.ceph("mon", "stat", check=False).returncode == 0)
        self._make_manager()
        self._start(MGR)
        self._make_osd()  # while the manager loads its Python modules
        self._start(OSD)
        self._wait("the manager", lambda: self.ceph_json("mgr", "stat").get("available") is True)
        self._wait("osd.0 up", lambda: self.ceph_json("osd", "stat").get("num_up_osds") == 1)
        self.ceph("osd", "pool", "create", POOL, str(POOL_PGS), str(POOL_PGS), "replicated")
        self.ceph("osd", "pool", "application", "enable", POOL, "rbd")
        return fsid

    def _make_monitor(self, fsid: str) -> None:
        """A monitor store holding a one-monitor map and the mon. and client.admin keys."""
        admin_key, mon_key = _new_key(), _new_key()
        write_atomic(self.keyring("admin"), keyring_text("client.admin", admin_key, ADMIN_CAPS), mode=0o600)
        seed = self.state_dir / ".bootstrap-mon.keyring"
        monmap = self.state_dir / ".bootstrap-monmap"
        write_atomic(seed, keyring_text("mon.", mon_key, {"mon": "allow *"})
                     + keyring_text("client.admin", admin_key, ADMIN_CAPS), mode=0o600)
        try:
            run(["monmaptool", "--create", "--clobber", "--fsid", fsid,
                 "--addv", MON.ident, self._mon_addrs(), str(monmap)], env=daemon_env())
            self.data_dir(MON).mkdir(parents=True)
            run([MON.executable, "--conf", str(self.conf), "--id", MON.ident, "--mkfs",
                 "--monmap", str(monmap), "--keyring", str(seed)], env=daemon_env(),
                what="ceph-mon --mkfs")
        finally:
            seed.unlink(missing_ok=True)
            monmap.unlink(missing_ok=True)

    def _make_manager(self) -> None:
        keyring = self.data_dir(MGR) / "keyring"
        keyring.parent.mkdir(parents=True)
        key = self.ceph("auth", "get-or-create", f"mgr.{MGR.ident}", *MGR_CAPS).stdout
        write_atomic(keyring, key, mode=0o600)

    def _make_osd(self) -> None:
        """Register osd.0 with its key (``osd new`` gives it the osd profile) and make its store."""
        osd_uuid, key = str(uuid.uuid4()), _new_key()
        data = self.data_dir(OSD)
        data.mkdir(parents=True)
        write_atomic(data / "keyring", keyring_text(f"osd.{OSD.ident}", key), mode=0o600)
        secret = self.state_dir / ".bootstrap-osd.json"
        write_atomic(secret, json.dumps({"cephx_secret": key}), mode=0o600)
        try:
            osd_id = self.ceph("osd", "new", osd_uuid, OSD.ident, "-i", str(secret)).stdout.strip()
        finally:
            secret.unlink(missing_ok=True)
        if osd_id != OSD.ident:
            raise LabError(f"ceph osd new gave id {osd_id!r}, not {OSD.ident}")
        self._start(OSD, "--mkfs", "--osd-uuid", osd_uuid)

    def _client_key(self, client: str, caps: Sequence[str]) -> Path:
        """``client.CLIENT`` with CAPS (get-or-create: an existing key is kept), in its keyring."""
        key = self.ceph("auth", "get-or-create", f"client.{client}", *caps).stdout
        path = self.keyring(client)
        write_atomic(path, key, mode=0o600)
        return path

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Poll READY until it holds; a daemon that died meanwhile fails at once, naming its log."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(LabError, ValueError):
                if ready():
                    return
            for daemon in self._started:
                if not self.daemon_pid(daemon):
                    raise LabError(f"{daemon.name} died (see {self.log_file(daemon)})")
            if time.monotonic() > deadline:
                raise LabError(f"Ceph: {what} not reached after {timeout:.0f}s (see {self.log_dir})")
            time.sleep(0.3)

    # ----------------------------------------------------------------------------------------
    # Configuration

    def _mon_addrs(self) -> str:
        v2, v1 = self.mon_ports
        return f"[v2:{self.address}:{v2},v1:{self.address}:{v1}]"

    def _conf_text(self, fsid: str) -> str:
        s = self.state_dir
        low, high = self.daemon_ports
        common = {
            "fsid": fsid,
            "mon host": self._mon_addrs(),
            "auth cluster required": "cephx",
            "auth service required": "cephx",
            "auth client required": "cephx",
            # The secure reclaim behaviour; allowing the insecure one is a permanent HEALTH_WARN.
            "auth allow insecure global id reclaim": "false",
            # Clients find their key beside the conf: ceph.client.<name>.keyring.
            "keyring": f"{s}/{CLUSTER}.$name.keyring",
            # A one-OSD lab: pools of size 1, which Pacific refuses and warns about by default.
            "osd pool default size": "1",
            "osd pool default min size": "1",
            "osd pool default pg num": str(POOL_PGS),
            "osd pool default pgp num": str(POOL_PGS),
            "osd pool default pg autoscale mode": "off",
            "osd crush chooseleaf type": "0",
            "mon allow pool size one": "true",
            "mon warn on pool no redundancy": "false",
            # The lab's disk is shared with everything else; warn only when really short.
            "mon data avail warn": "10",
            # PG states reach the manager every second, not every 5: health turns OK sooner.
            "mgr stats period": "1",
        }
        daemon_common = {
            "public addr": self.address,
            "cluster addr": self.address,
            "ms bind ipv6": "false",
            "ms bind port min": str(low),
            "ms bind port max": str(high),
            "run dir": str(self.run_dir),
            "pid file": f"{self.run_dir}/$cluster-$name.pid",
            "admin socket": f"{self.run_dir}/$cluster-$name.asok",
            "log file": f"{self.log_dir}/$cluster-$name.log",
            "crash dir": str(self.crash_dir),
        }
        sections: dict[str, dict[str, str]] = {
            "global": common,
            "mon": {
                **daemon_common,
                "mon data": f"{s}/mon/$cluster-$id",
                "keyring": "$mon_data/keyring",
                "mon cluster log file": f"{self.log_dir}/$cluster.$channel.log",
                # Only the modules Pacific cannot switch off (no restful, iostat, nfs).
                "mgr initial modules": "",
            },
            "mgr": {**daemon_common, "mgr data": f"{s}/mgr/$cluster-$id", "keyring": "$mgr_data/keyring",
                    "mgr disabled modules": ",".join(_optional_mgr_modules())},
            "osd": {**daemon_common, "osd data": f"{s}/osd/$cluster-$id", "keyring": "$osd_data/keyring",
                    **self._objectstore_options()},
        }
        lines = ["# Written by lab/ceph.py; removed by its down()."]
        for section, options in sections.items():
            lines.append(f"\n[{section}]")
            lines += [f"{key} = {value}" for key, value in options.items()]
        return "\n".join(lines) + "\n"

    def _objectstore_options(self) -> dict[str, str]:
        if self.objectstore == "memstore":
            return {"osd objectstore": "memstore", "memstore device bytes": str(1 << 30)}
        return {
            "osd objectstore": "bluestore",
            "bluestore block create": "true",  # a file in osd data, not a disk
            "bluestore block size": str(BLUESTORE_BLOCK_BYTES),
            "bluestore fsck on mkfs": "false",
        }


def clusters_left_running(matches: Callable[[Path], bool]) -> set[Path]:
    """State dirs of clusters whose daemons still run though their owner is gone (a killed
    test run): the dir of each Ceph daemon's ``--conf`` for which MATCHES says yes. Pytest
    may since have removed the dir, pid files included, so they are found from /proc."""
    found = set()
    executables = {daemon.executable.encode() for daemon in DAEMONS}
    for pid in all_pids():
        argv = cmdline(pid)
        if argv and argv[0] in executables and b"--conf" in argv[:-1]:
            state = Path(argv[argv.index(b"--conf") + 1].decode()).parent
            if matches(state):
                found.add(state)
    return found


def _optional_mgr_modules() -> list[str]:
    """The manager modules installed that the lab does not need."""
    installed = [p.name for p in MGR_MODULE_PATH.iterdir() if (p / "module.py").exists()]
    return sorted(set(installed) - MGR_ALWAYS_ON_MODULES)


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ceph binds
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def _new_key() -> str:
    return run(["ceph-authtool", "--gen-print-key"], env=daemon_env()).stdout.strip()


def _last_line(path: Path) -> str:
    """The last line of a daemon's early output, without Ceph's "<time> <thread> <level>" prefix."""
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        if lines:
            return _LOG_PREFIX_RE.sub("", lines[-1])
    return "no output"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.ceph", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    parser.add_argument("--address", default="127.0.0.1", help="the one address Ceph listens on")
    parser.add_argument("--objectstore", choices=OBJECTSTORES, default="memstore")
    parser.add_argument("--mon-ports", default=",".join(map(str, MON_PORTS)),
                        help="the monitor's msgr2,v1 ports (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (a running one is kept)")
    up.add_argument("--compute-nodes", default="", help="comma-separated: one client key each")
    sub.add_parser("down", help="stop the cluster and remove its data; safe to run twice")
    sub.add_parser("status", help="daemons, their memory, health, as JSON")
    args = parser.parse_args(argv)

    try:
        v2, v1 = (int(port) for port in args.mon_ports.split(","))
    except ValueError:
        parser.error(f"--mon-ports {args.mon_ports!r}: two ports, msgr2 then v1")
    try:
        lab = CephLab(args.state_dir, args.address, objectstore=args.objectstore, mon_ports=(v2, v1))
        if args.command == "up":
            started = time.monotonic()
            lab.up([n for n in args.compute_nodes.split(",") if n])
            print(f"ceph up in {time.monotonic() - started:.1f}s: {lab.conf}")
        elif args.command == "down":
            lab.down()
        else:
            print(json.dumps(lab.status(), indent=2))
    except LabError as exc:  # a lab CLI: one line, not a traceback
        print(f"lab.ceph {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
