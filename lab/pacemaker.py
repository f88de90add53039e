"""A real Pacemaker cluster on one machine: one controller and pacemaker_remote compute nodes.

The controller ``ctl1`` is corosync (knet on 127.0.0.1) plus pacemakerd, run in the host's
namespaces. Each compute node is a ``pacemaker-remoted`` in its own network namespace
(``ohalab-<name>``, reached over a veth pair), its own mount namespace (private
``/var/lib/pacemaker``, ``/run/resource-agents`` and ``/var/log/pacemaker``) and its own UTS
namespace (hostname = node name). Like a real compute host, a node does not see the controllers'
configuration and secrets: /etc/openstack-ha, /etc/openstack and the lab's state dirs are covered
by empty directories of its own, with only what the node needs shown again (see
:meth:`PacemakerLab.up`). A compute node "crashes" the way a real one does: every process
in its network namespace is SIGKILLed at once (:meth:`PacemakerLab.power_off`), and "boots" by
starting remoted there again (:meth:`PacemakerLab.power_on`).

This is the recipe of ``research/pacemaker-lab.md`` (pitfalls P1-P13 there), as code. Only one such
lab can run per machine: the CIB location is hard-coded by Pacemaker and corosync runs once.

This module is the lab itself (:class:`PacemakerLab`) and its command line; what it is built
from has a module each: lab/netns.py (namespaces, links and addresses on the host),
lab/nodes.py (the pacemaker-remoted binary, a node's init, running a command in a node),
lab/namespaces.py (entering namespaces before exec), lab/procs.py (processes, from /proc),
lab/files.py (atomic writes, owners and modes) and lab/commands.py (running tools, LabError).

Command line::

    python -m lab.pacemaker up --computes compute1,compute2 [--state-dir DIR]
    python -m lab.pacemaker status [--state-dir DIR]
    python -m lab.pacemaker down [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab import netns as network
from lab.commands import DAEMON_PATH, LabError, daemon_env, run
from lab.files import make_dir, make_file, user_ids, world_executable, write_atomic
from lab.namespaces import MS_REC, MS_SLAVE, Mount, join_preexec, node_preexec
from lab.netns import (
    CONTROL_ADDRESS,
    CONTROL_LABEL,
    CTL_BRIDGE,
    CTL_SUBNET,
    IP_FORWARD,
    IP_FORWARD_SAVED,
    NETNS_MARKS,
    NETNS_PREFIX,
    destroy_netns,
    enable_forwarding,
    ensure_bridge,
    ensure_control_address,
    ensure_controller_network,
    ensure_node_network,
    kill_netns,
    marked_nodes,
    remove_bridge,
    remove_control_address,
    restore_forwarding,
)
from lab.nodes import (
    DEFAULT_CACHE_DIR,
    NODE_INIT,
    ensure_remoted,
    exec_in_node,
    node_init_pid,
    remoted_pid,
)
from lab.procs import (
    comm,
    descendants,
    listening,
    netns_pids,
    pid_alive,
    pids_named,
    send_signal,
    wait_dead,
)

# What other modules import from here; most of it lives in the modules above.
__all__ = [
    "CONTROLLER", "CONTROL_ADDRESS", "CONTROL_LABEL", "CTL_BRIDGE", "CTL_SUBNET",
    "DEFAULT_CACHE_DIR", "FENCE_AGENT_PATH", "IP_FORWARD", "IP_FORWARD_SAVED", "NETNS_MARKS",
    "NETNS_PREFIX", "NODE_HIDDEN_ETC", "NODE_INIT", "PCMK_AUTHKEY", "PCMK_LOG_DIR",
    "PCMK_VAR_LIB", "RA_TMP_DIR", "REGISTRY", "REMOTE_PORT", "LabError", "PacemakerLab",
    "default_state_dir", "ensure_control_address", "ensure_remoted", "exec_in_node", "main",
    "node_init_pid", "pid_alive", "remove_control_address",
]

LOG = logging.getLogger(__name__)

CONTROLLER = "ctl1"
REMOTE_PORT = 3121
FENCE_AGENT_PATH = Path("/usr/sbin/fence_labpower")

# Pacemaker hard-codes these; the lab shares the host's copies with the controller.
PCMK_VAR_LIB = Path("/var/lib/pacemaker")
PCMK_LOG_DIR = Path("/var/log/pacemaker")
RA_TMP_DIR = Path("/run/resource-agents")
PCMK_AUTHKEY = Path("/etc/pacemaker/authkey")

# What a real compute node does not have: the controllers' configuration and secrets (the
# engine's openstack-ha.conf, clouds.yaml). In a node an empty directory of its own covers each;
# the agents' launchers (/usr/lib/ocf/resource.d, /usr/sbin) and their venv (/opt) stay visible.
NODE_HIDDEN_ETC = (Path("/etc/openstack-ha"), Path("/etc/openstack"))

# A machine-wide pointer to the running lab, so that a second lab (another state dir) is refused
# with a clear message instead of fighting over corosync and the CIB.
REGISTRY = Path("/run/openstack-ha-lab/pacemaker.json")

_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_state_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB", "/tmp/openstack-ha-lab")) / "pacemaker"


def _ids(user: str = "hacluster", group: str = "haclient") -> tuple[int, int]:
    """The uid and gid Pacemaker's daemons run as."""
    try:
        return user_ids(user, group)
    except KeyError as exc:
        raise LabError(
            f"user {user} or group {group} is missing: install the pacemaker package"
        ) from exc


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """PATHS without those inside another of them, sorted."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(o != p and p.is_relative_to(o) for o in unique)]


def _read_registry() -> dict[str, Any]:
    try:
        data = json.loads(REGISTRY.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _agent_interpreter() -> str:
    """The interpreter for the installed fence agent: this one (sys.executable), unless user
    hacluster cannot run it. pacemaker-controld runs every fence agent's ``metadata`` as
    hacluster, and an interpreter under /root (pyenv) fails there with "Permission denied": then
    the system python3 is used. The agent needs nothing beyond the standard library and ``lab``.
    """
    if world_executable(Path(sys.executable)):
        return sys.executable
    system = shutil.which("python3", path=DAEMON_PATH)
    if system is None or not world_executable(Path(system)):
        raise LabError(f"no python3 that user hacluster may run ({sys.executable} is not)")
    return system


class PacemakerLab:
    """One Pacemaker cluster: controller ``ctl1`` plus remote compute nodes, all state under
    ``state_dir`` (besides the paths Pacemaker hard-codes, which :meth:`down` wipes).

    Several instances may point at the same state dir (the test process, the fence agent that
    Pacemaker runs, a ``python -m lab.pacemaker down`` from a shell): everything they share is
    in ``state.json`` and in the kernel (pids, namespaces), never only in memory.
    """

    def __init__(self, state_dir: Path, *, cache_dir: Path = DEFAULT_CACHE_DIR) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.cache_dir = Path(cache_dir)
        self.etc_dir = self.state_dir / "etc"
        self.log_dir = self.state_dir / "log"
        self.run_dir = self.state_dir / "run"
        self.nodes_dir = self.state_dir / "nodes"
        self.state_file = self.state_dir / "state.json"
        self.fence_log = self.state_dir / "fence_labpower.log"
        self.corosync_conf = self.etc_dir / "corosync.conf"
        self.pacemaker_log = self.log_dir / "pacemaker.log"
        self.corosync_log = self.log_dir / "corosync.log"
        # Popen objects of the daemons this instance started, so they are reaped (not left as
        # zombies of a long-lived test process) once down() has stopped them.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- state shared on disk

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, **changes: Any) -> None:
        state = self._state()
        state.update(changes)
        write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def _nodes(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._state().get("nodes", {}).items()}

    def computes(self) -> list[str]:
        """Names of the lab's compute nodes, in the order up() was given them."""
        return sorted(self._nodes(), key=self._nodes().__getitem__)

    def _index(self, name: str) -> int:
        try:
            return self._nodes()[name]
        except KeyError:
            raise LabError(f"{name} is not a node of the lab in {self.state_dir}") from None

    @staticmethod
    def netns(name: str) -> str:
        return network.netns_name(name)

    @staticmethod
    def node_address(index: int) -> str:
        return network.node_address(index)

    def remoted_log(self, name: str) -> Path:
        return self.log_dir / f"remoted-{name}.log"

    def node_ra_dir(self, name: str) -> Path:
        """The node's private /run/resource-agents, as seen from the host."""
        return self.nodes_dir / name / "run-ra"

    # ---------------------------------------------------------------- helpers for callers

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise LabError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def pcs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["pcs", *args], check=check, timeout=120, what=f"pcs {' '.join(args)}")

    def crm_mon_xml(self) -> ET.Element:
        proc = run(["crm_mon", "-1", "--output-as=xml"], check=False, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"crm_mon failed (rc={proc.returncode}): is the cluster up? "
                           f"(see {self.pacemaker_log})")
        # Our own cluster's status, produced by Pacemaker's crm_mon: not untrusted input.
        return ET.fromstring(proc.stdout)

    def settle(self, timeout: float = 60) -> None:
        """Wait until Pacemaker has no action pending or in flight (``crm_resource --wait``)."""
        secs = max(1, int(timeout))
        run(["crm_resource", "--wait", f"--timeout={secs}s"], timeout=secs + 15,
             what="crm_resource --wait (cluster did not settle)")

    def reconnect(self, name: str, timeout: float = 60) -> None:
        """Bring a powered-off or fenced node back into the cluster at once: let Pacemaker finish
        handling its loss, boot it, clean up its connection resource (so Pacemaker reconnects
        now, not at the next reconnect_interval) and wait until it is online and Started.

        Booting before Pacemaker has processed the fencing breaks the next connection attempt:
        if remoted is back before the controller handles the fence notification, every TLS
        connection of the following start operation fails ("TLS receive failed: The request is
        invalid") until that operation times out (60 s). A real machine never boots that fast.
        """
        self.settle(timeout)
        self.power_on(name)
        run(["crm_resource", "--cleanup", "-r", name], timeout=timeout)
        try:
            self.wait_until(lambda: self.remote_ready(name), timeout, f"{name} back online")
        except LabError as exc:
            raise LabError(f"{exc} (see {self.pacemaker_log})") from exc

    def node_online(self, name: str) -> bool:
        node = self.crm_mon_xml().find(f"./nodes/node[@name='{name}']")
        return node is not None and node.get("online") == "true"

    def remote_ready(self, name: str) -> bool:
        """Remote node online AND its connection resource Started: crm_mon already calls a remote
        node online while the connection is still starting (pitfall P6). False, not an error,
        while the cluster does not answer."""
        try:
            mon = self.crm_mon_xml()
        except LabError:
            return False
        node = mon.find(f"./nodes/node[@name='{name}']")
        res = mon.find(f".//resources/resource[@id='{name}']")
        return (
            node is not None
            and node.get("online") == "true"
            and res is not None
            and res.get("role") == "Started"
            and res.get("failed") == "false"
        )

    def _controller_ready(self) -> bool:
        try:
            mon = self.crm_mon_xml()
        except LabError:
            return False
        dc = mon.find("./summary/current_dc")
        if dc is None or dc.get("present") != "true":
            return False
        for name in self.controllers():
            node = mon.find(f"./nodes/node[@name='{name}']")
            if node is None or node.get("online") != "true":
                return False
        return True

    # ---------------------------------------------------------------- compute nodes

    def node_pids(self, name: str) -> list[int]:
        return netns_pids(self.netns(name))

    def remoted_pid(self, name: str) -> int | None:
        return remoted_pid(name)

    def init_pid(self, name: str) -> int | None:
        """The node's init (lab/node_init.py, PID 1 of its pid namespace), None when off."""
        return node_init_pid(name)

    def is_powered(self, name: str) -> bool:
        return self.init_pid(name) is not None or self.remoted_pid(name) is not None

    @contextlib.contextmanager
    def _node_lock(self, name: str) -> Iterator[None]:
        """Serialises power actions on one node across processes: a topology level with two
        devices sends 'on' twice (pitfall P5). Python opens the file close-on-exec, so remoted
        never inherits the lock (the shell recipe had to close fd 9 by hand)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"{name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _ensure_node_network(self, name: str, index: int) -> None:
        ensure_node_network(name, index, via_controllers=len(self.controllers()) > 1)

    def power_off(self, name: str) -> None:
        """Hard power cut: every process of the node dies at once, nothing is stopped cleanly,
        and the node's /run (resource agents' state) is lost, as with real power."""
        self._index(name)
        with self._node_lock(name):
            kill_netns(name)
            ra_dir = self.node_ra_dir(name)
            if ra_dir.is_dir():
                for entry in ra_dir.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

    def power_on(self, name: str) -> None:
        """Boot the node: start pacemaker-remoted in its namespaces. Idempotent, and safe when two
        callers race (pitfall P5)."""
        index = self._index(name)
        with self._node_lock(name):
            if self.remoted_pid(name) is not None:
                return
            init = self.init_pid(name)
            if init is not None:
                # Powered, but remoted was killed: start it again inside the running node,
                # as its init system would.
                self._start_remoted(name, inside=init)
                return
            self._ensure_node_network(name, index)
            self._start_remoted(name)

    def node_view_dir(self, name: str) -> Path:
        """Where the node's own directories that cover the hidden ones live, as seen from the
        host: its disk, kept across its power cycles and the lab's next up()."""
        return self.nodes_dir / name / "view"

    def node_local_dir(self, name: str, path: Path) -> Path:
        """Where node NAME's own directory at PATH (one of up()'s ``local`` paths, under a
        hidden directory) lives, as seen from the host: what the lab writes there, only that
        node sees (its Ceph key), and what the node writes there the lab reads."""
        view = self._state().get("node_view", {})
        for hidden in _outermost([*NODE_HIDDEN_ETC, self.state_dir,
                                  *(Path(p) for p in view.get("hidden", ()))]):
            if path.is_relative_to(hidden):
                own = self.node_view_dir(name) / str(hidden).strip("/").replace("/", "%")
                return own / path.relative_to(hidden)
        raise LabError(f"{path} is not hidden from the nodes: it is no node's own directory")

    def _node_view(self, name: str) -> list[Mount]:
        """The mounts that give node NAME its own view of the host's files, in order, with
        the directories they need created (on the host: mount points must exist).

        Each hidden directory is covered by an empty directory of the node's own; a shared
        path inside it is bound back from the host into that directory first, so it comes
        along when the directory is bound, recursively, over the hidden one. A missing
        /etc/openstack-ha or /etc/openstack is created empty on the host (a mount point must
        exist, and a file created there later must not appear in the nodes); down() removes
        it again if it is still empty.
        """
        view = self._state().get("node_view", {})
        hidden = _outermost([*NODE_HIDDEN_ETC, self.state_dir,
                             *(Path(p) for p in view.get("hidden", ()))])
        shared = sorted({self.log_dir, *(Path(p) for p in view.get("shared", ()))},
                        key=lambda p: len(p.parts))
        local = [Path(p.replace("{node}", name)) for p in view.get("local", ())]
        created = set(self._state().get("created_etc", []))
        for etc in NODE_HIDDEN_ETC:
            if not etc.exists():
                etc.mkdir(mode=0o755, parents=True)
                created.add(str(etc))
        if created != set(self._state().get("created_etc", [])):
            self._save_state(created_etc=sorted(created))
        mounts: list[Mount] = []
        covers: list[Mount] = []
        for path in hidden:
            path.mkdir(parents=True, exist_ok=True)
            # named after the path it covers, so that it is the same one at every boot
            own = self.node_view_dir(name) / str(path).strip("/").replace("/", "%")
            own.mkdir(parents=True, exist_ok=True)
            own.chmod(stat.S_IMODE(path.stat().st_mode))
            for inner in local:
                if inner.is_relative_to(path):
                    (own / inner.relative_to(path)).mkdir(parents=True, exist_ok=True)
            for inner in shared:
                if inner.is_relative_to(path) and inner != path:
                    inner.mkdir(parents=True, exist_ok=True)
                    (own / inner.relative_to(path)).mkdir(parents=True, exist_ok=True)
                    mounts.append((inner, own / inner.relative_to(path), 0))
            covers.append((own, path, MS_REC))
        # A directory that holds the node's own directories is covered last: the others'
        # sources must still be reachable when they are bound.
        covers.sort(key=lambda m: self.node_view_dir(name).is_relative_to(m[1]))
        return [*mounts, *covers]

    def _remove_created_etc(self) -> None:
        for path in self._state().get("created_etc", []):
            with contextlib.suppress(OSError):  # not empty any more: somebody's, now
                Path(path).rmdir()

    def _start_remoted(self, name: str, inside: int | None = None) -> None:
        remoted = self._state().get("remoted") or str(ensure_remoted(self.cache_dir))
        node_dir = self.nodes_dir / name
        binds = [
            (node_dir / "var-lib-pacemaker", PCMK_VAR_LIB),
            (self.node_ra_dir(name), RA_TMP_DIR),
            (node_dir / "log", PCMK_LOG_DIR),
        ]
        for src, dst in binds:
            if not src.is_dir() or not dst.is_dir():
                raise LabError(f"cannot boot {name}: {src} or {dst} is not a directory")
        # Pacemaker's own directories first: their sources are in the state dir, which the
        # node's view then hides.
        mounts = [(src, dst, 0) for src, dst in binds]
        if inside is None:
            mounts += self._node_view(name)
        log = self.remoted_log(name)
        stdout = log.with_suffix(".stdout")
        env = daemon_env(PCMK_logfile=str(log), PCMK_logfacility="none",
                         PCMK_remote_port=str(REMOTE_PORT))
        with open(stdout, "ab") as out:
            # `setsid --fork` detaches remoted from us: it is adopted by PID 1 and never becomes a
            # zombie of the test process or of the fence agent that booted it.
            if inside is not None:  # the node runs: remoted again, in its namespaces
                argv = ["nsenter", "-t", str(inside), "-n", "-m", "-u", "-p", "--",
                        "setsid", "--fork", remoted]
                preexec = None
            else:
                # Its own pid namespace with a fresh /proc: remoted runs under a small init
                # (lab/node_init.py) that reaps the node's orphans and outlives remoted.
                argv = ["setsid", "--fork", "unshare", "--pid", "--fork", "--mount-proc",
                        "/usr/bin/python3", "-I", "-S", str(NODE_INIT), remoted]
                preexec = node_preexec(self.netns(name), name, mounts)
            try:
                proc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd="/", env=env, preexec_fn=preexec, timeout=10, check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                # A failing preexec_fn only says "Exception occurred in preexec_fn".
                raise LabError(f"could not enter the namespaces of {name} to start "
                               f"pacemaker-remoted: {exc}") from exc
        if proc.returncode != 0:
            raise LabError(f"could not start pacemaker-remoted for {name} (see {stdout})")

        started = time.monotonic()
        while True:
            pid = self.remoted_pid(name)
            if pid is not None and listening({REMOTE_PORT}, pid):
                return
            elapsed = time.monotonic() - started
            if pid is None and elapsed > 1:
                # `setsid --fork` has long exec'd it by now: remoted died on its own.
                raise LabError(f"pacemaker-remoted of {name} exited at start-up "
                               f"(see {log} and {stdout})")
            if elapsed > 10:
                raise LabError(f"pacemaker-remoted of {name} is not listening on port "
                               f"{REMOTE_PORT} (see {log} and {stdout})")
            time.sleep(0.05)

    def run_in_node(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV inside the node (its net, mount, UTS and pid namespaces). ENV is added to this
        process's environment. A powered-off node has no namespaces to enter: LabError."""
        pid = self.init_pid(name) or self.remoted_pid(name)
        if pid is None:
            raise LabError(f"{name} is powered off: nothing to run {argv[0]} in")
        full_env = None if env is None else {**os.environ, **env}
        return run(
            ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", *argv],
            check=check, timeout=timeout, env=full_env, what=f"{' '.join(argv)} on {name}",
        )

    # ---------------------------------------------------------------- up

    def up(
        self,
        computes: Sequence[str] = ("compute1",),
        *,
        owned: bool = True,
        hidden: Sequence[Path] = (),
        shared: Sequence[Path] = (),
        local: Sequence[str | Path] = (),
        controllers: int = 1,
    ) -> None:
        """Start the cluster and its compute nodes, and return once every node is online.

        ``controllers``: how many cluster nodes. ctl1 is always the host itself (corosync on
        127.0.0.1 when alone); with more, ctl1 listens on the host bridge ohalab-ctl
        (10.251.250.1) and ctl2..ctlN run in namespaces of their own (10.251.250.N), see
        :meth:`power_off_controller`, :meth:`partition_controller`, :meth:`run_in_controller`.

        ``owned``: the lab belongs to this process; once the process is gone, a later up() in
        another state dir may tear it down as an orphan. The CLI passes False: its lab is
        meant to outlive it, and must be taken down explicitly.

        What a node sees of the host's files, as a real compute host would: ``hidden``
        directories (besides /etc/openstack-ha, /etc/openstack and this lab's state dir, always
        hidden) are covered in each node by an empty directory of its own; ``shared`` paths
        inside them are the host's again (this lab's log dir always is); ``local`` paths inside
        them are directories of the node's own, kept across its power cycles (``{node}`` in a
        path is the node's name). Everything else (/usr, /opt, /etc/pacemaker...) is the
        host's.
        """
        computes = list(computes)
        if len(set(computes)) != len(computes) or len(computes) >= 250:
            raise LabError(f"bad list of compute nodes: {computes}")
        if not 1 <= controllers <= 16:
            raise LabError(f"bad number of controllers: {controllers}")
        ctl_names = {f"ctl{i}" for i in range(1, controllers + 1)}
        for name in computes:
            if (name == CONTROLLER or name in ctl_names or not name.replace("-", "").isalnum()
                    or len(name) > 40):
                raise LabError(f"bad compute node name: {name!r}")
        self._check_tools()
        self._clear_the_way(computes, controllers)
        remoted = ensure_remoted(self.cache_dir)
        t0 = time.monotonic()
        self._prepare_host()
        self._prepare_state_dir(computes)
        self._save_state(
            nodes={name: i for i, name in enumerate(computes, start=1)},
            remoted=str(remoted),
            owner=os.getpid() if owned else None,
            **({"controllers": controllers} if controllers > 1 else {}),
            node_view={"hidden": [str(Path(p).absolute()) for p in hidden],
                       "shared": [str(Path(p).absolute()) for p in shared],
                       "local": [str(Path(p).absolute()) for p in local]},
        )
        REGISTRY.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(REGISTRY, json.dumps({"state_dir": str(self.state_dir),
                                           "owner": os.getpid() if owned else None}))
        try:
            if controllers == 1:
                self._start_corosync()
                LOG.info("corosync quorate after %.1fs", time.monotonic() - t0)
                self._start_pacemaker()
                LOG.info("%s online after %.1fs", CONTROLLER, time.monotonic() - t0)
            else:
                self._start_controllers(t0)
            for i, name in enumerate(computes, start=1):
                self._ensure_node_network(name, i)
                self.power_on(name)
            LOG.info("pacemaker-remoted listening on every node after %.1fs",
                     time.monotonic() - t0)
            for i, name in enumerate(computes, start=1):
                self.pcs(
                    "resource", "create", name, "ocf:pacemaker:remote",
                    f"server={self.node_address(i)}", "reconnect_interval=10s",
                    "op", "monitor", "interval=5s", "timeout=5s",
                    "--force",  # pcs wants `cluster node add-remote`, which needs pcsd (P7)
                )
            for name in computes:
                try:
                    self.wait_until(lambda n=name: self.remote_ready(n), 60,
                                    f"remote node {name}")
                except LabError as exc:
                    raise LabError(
                        f"remote node {name} did not come online (see {self.remoted_log(name)} "
                        f"and {self.pacemaker_log})"
                    ) from exc
        except BaseException:
            # Half a lab is worse than none: it blocks the next up(). The logs stay.
            with contextlib.suppress(Exception):
                self.down()
            raise
        LOG.info("pacemaker lab up in %.1fs: %s + %s", time.monotonic() - t0,
                 ", ".join(self.controllers()), ", ".join(computes))

    def _check_tools(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the Pacemaker lab needs root (namespaces, corosync, the CIB)")
        for tool in ("corosync", "pacemakerd", "pcs", "crm_mon", "cibadmin", "crm_attribute",
                     "corosync-quorumtool", "ip", "nsenter", "setsid", "apt-get", "dpkg"):
            if shutil.which(tool, path=DAEMON_PATH) is None:
                raise LabError(f"{tool} not found: apt-get install pacemaker pacemaker-cli-utils "
                               "corosync pcs iproute2 util-linux")

    def _clear_the_way(self, computes: Sequence[str], controllers: int = 1) -> None:
        """Tear down a previous lab of this state dir, or an orphaned one elsewhere; refuse to
        fight a cluster that is somebody else's."""
        if self._state():
            self.down()
        reg = _read_registry()
        other_dir = reg.get("state_dir")
        if other_dir and Path(other_dir) != self.state_dir:
            other = PacemakerLab(Path(other_dir), cache_dir=self.cache_dir)
            owner = reg.get("owner")
            if not other.is_up():
                other.down()
            elif owner and not pid_alive(owner):
                LOG.warning("tearing down the orphaned lab in %s (its owner %s is gone)",
                            other_dir, owner)
                other.down()
            else:
                raise LabError(
                    f"another Pacemaker lab is up in {other_dir}; stop it first with: "
                    f"python -m lab.pacemaker down --state-dir {other_dir}"
                )
        for daemon in ("corosync", "pacemakerd", "pacemaker-based"):
            if pids := pids_named(daemon):
                raise LabError(f"{daemon} (pid {pids[0]}) is running and is not this lab's: "
                               "stop it first (only one cluster fits on a machine)")
        for name in computes:  # namespaces left by a lab whose state dir is gone
            destroy_netns(name)
        for i in range(2, controllers + 1):
            destroy_netns(f"ctl{i}")
        remove_bridge()

    def _prepare_host(self) -> None:
        """What the pacemaker package normally leaves in place (research 1.2), re-created
        idempotently in case something removed it."""
        uid, gid = _ids()
        for sub in ("cib", "pengine", "blackbox", "cores"):
            make_dir(PCMK_VAR_LIB / sub, 0o750, (uid, gid))
        PCMK_LOG_DIR.mkdir(parents=True, exist_ok=True)
        RA_TMP_DIR.mkdir(parents=True, exist_ok=True)
        ensure_control_address()
        if not PCMK_AUTHKEY.exists():
            # remoted and the cluster node authenticate each other with this one key.
            write_atomic(PCMK_AUTHKEY, os.urandom(4096), 0o640, owner=(0, gid))

    def _prepare_state_dir(self, computes: Sequence[str]) -> None:
        uid, gid = _ids()
        if self.log_dir.exists():  # keep the previous run's logs, one generation
            prev = self.state_dir / "log.prev"
            shutil.rmtree(prev, ignore_errors=True)
            self.log_dir.rename(prev)
        # A node's Pacemaker state starts afresh; its own directories (node_view_dir: its
        # disk) are kept, as a real host keeps its disk: nova-compute refuses to start on a
        # host whose node identity (state_path/compute_id) was lost while Nova remembers it.
        if self.nodes_dir.is_dir():
            for node in self.nodes_dir.iterdir():
                for entry in node.iterdir() if node.is_dir() else ():
                    if entry.name != "view":
                        shutil.rmtree(entry, ignore_errors=True)
        for path in (self.etc_dir, self.log_dir, self.run_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.log_dir.chmod(0o755)
        # pacemaker-based, -controld, -attrd and -schedulerd run as hacluster and open
        # PCMK_logfile themselves: every directory above it must be searchable by others.
        # pytest's tmp dirs are 0700; adding only the search bit lists nothing.
        for parent in [self.log_dir, *self.log_dir.parents]:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        for log in (self.pacemaker_log, *(self.remoted_log(n) for n in computes)):
            make_file(log, 0o660, (uid, gid))
        for name in computes:
            node_dir = self.nodes_dir / name
            for sub in ("var-lib-pacemaker/cores", "var-lib-pacemaker/cib", "run-ra", "log"):
                (node_dir / sub).mkdir(parents=True, exist_ok=True)
            for path in (node_dir / "var-lib-pacemaker", node_dir / "var-lib-pacemaker/cores",
                         node_dir / "var-lib-pacemaker/cib", node_dir / "log"):
                os.chown(path, uid, gid)

    def _spawn(self, argv: Sequence[str], out: Path, env: Mapping[str, str],
               preexec: Callable[[], None] | None = None) -> int:
        with open(out, "ab") as fh:
            # A session of its own: a Ctrl-C in the test's terminal must not reach the cluster,
            # which is stopped in order by down().
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                cwd="/", env=dict(env), start_new_session=True, preexec_fn=preexec,
            )
        self._children[proc.pid] = proc
        return proc.pid

    def _corosync_text(self, key: Path, logfile: Path) -> str:
        names = self.controllers()
        if len(names) == 1:
            token = "    # One node on loopback: a short token only shortens membership changes."
            nodes = f"""    node {{
        name: {CONTROLLER}
        nodeid: 1
        ring0_addr: 127.0.0.1
    }}"""
        else:
            token = "    # Controllers on one host bridge: a short token only shortens membership changes."
            nodes = "\n".join(f"""    node {{
        name: {name}
        nodeid: {i}
        ring0_addr: {self.controller_address(i)}
    }}""" for i, name in enumerate(names, start=1))
        return f"""# written by lab/pacemaker.py; /etc/corosync is left alone
totem {{
    version: 2
    cluster_name: ohalab
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    keyfile: {key}
{token}
    token: 1000
}}
nodelist {{
{nodes}
}}
quorum {{
    provider: corosync_votequorum
}}
logging {{
    to_stderr: no
    to_logfile: yes
    logfile: {logfile}
    to_syslog: no
    timestamp: on
}}
"""

    def _start_corosync(self) -> None:
        key = self.etc_dir / "corosync-authkey"
        write_atomic(key, os.urandom(256), 0o400)
        self.corosync_conf.write_text(self._corosync_text(key, self.corosync_log))
        pid = self._spawn(["corosync", "-f", "-c", str(self.corosync_conf)],
                          self.log_dir / "corosync.stdout", daemon_env())
        self._save_state(corosync_pid=pid)

        def ready() -> bool:
            if not pid_alive(pid):
                raise LabError(f"corosync exited at start-up (see {self.corosync_log})")
            return run(["corosync-quorumtool", "-s"], check=False).returncode == 0

        try:
            self.wait_until(ready, 20, "corosync", 0.1)
        except LabError as exc:
            raise LabError(f"corosync did not become quorate (see {self.corosync_log})") from exc

    def _start_pacemaker(self) -> None:
        self._seed_cib()
        env = daemon_env(PCMK_logfile=str(self.pacemaker_log), PCMK_logfacility="none")
        pid = self._spawn(["pacemakerd"], self.log_dir / "pacemakerd.stdout", env)
        self._save_state(pacemakerd_pid=pid)

        def ready() -> bool:
            if not pid_alive(pid):
                raise LabError(f"pacemakerd exited at start-up (see {self.pacemaker_log})")
            return self._controller_ready()

        try:
            self.wait_until(ready, 60, "pacemaker", 0.1)
        except LabError as exc:
            raise LabError(f"{CONTROLLER} did not come online (see {self.pacemaker_log})") from exc

    def _seed_cib(self) -> None:
        uid, gid = _ids()
        seed = self.etc_dir / "seed-cib.xml"
        seed.write_text(run(["cibadmin", "--empty"]).stdout)
        seed_env = {**os.environ, "CIB_file": str(seed)}
        # Seeded before start: with the default dc-deadtime (20 s) the only node waits that long
        # for a DC that does not exist (P8). Fencing starts off; tests turn it on when they need.
        for name, value in (("dc-deadtime", "2s"), ("stonith-enabled", "false")):
            run(["crm_attribute", "--type", "crm_config", "--name", name, "--update", value],
                env=seed_env)
        for sub in ("cib", "pengine"):
            for entry in (PCMK_VAR_LIB / sub).iterdir():
                entry.unlink()
        cib = PCMK_VAR_LIB / "cib" / "cib.xml"
        shutil.copyfile(seed, cib)  # no cib.xml.sig: pacemaker only logs a warning
        os.chown(cib, uid, gid)
        cib.chmod(0o600)

    # ---------------------------------------------------------------- controllers

    def controllers(self) -> list[str]:
        """Names of the cluster nodes: ``ctl1`` (the host) and, with ``up(controllers=N)``,
        ctl2..ctlN, each in namespaces of its own."""
        count = int(self._state().get("controllers", 1))
        return [f"ctl{i}" for i in range(1, count + 1)]

    def _controller_index(self, name: str) -> int:
        if name not in self.controllers():
            raise LabError(f"{name} is not a controller of the lab in {self.state_dir}")
        return int(name[3:])

    @staticmethod
    def controller_address(index: int) -> str:
        return network.controller_address(index)

    def controller_dir(self, name: str) -> Path:
        """ctlN's own /var/lib/pacemaker, /var/lib/corosync, /var/log/pacemaker, /run and
        /dev/shm, as seen from the host (ctl1 uses the host's)."""
        return self.state_dir / "controllers" / name

    def controller_pacemaker_log(self, name: str) -> Path:
        return self.pacemaker_log if name == CONTROLLER else self.log_dir / f"pacemaker-{name}.log"

    def controller_corosync_log(self, name: str) -> Path:
        return self.corosync_log if name == CONTROLLER else self.log_dir / f"corosync-{name}.log"

    def controller_run_dir(self, name: str) -> Path:
        """The controller's /run (where ocf:pacemaker:Dummy keeps its state file), as seen from
        the host; lost when ctlN crashes."""
        return Path("/run") if name == CONTROLLER else self.controller_dir(name) / "run"

    def controller_ra_dir(self, name: str) -> Path:
        """The controller's /run/resource-agents, as seen from the host."""
        return RA_TMP_DIR if name == CONTROLLER else self.controller_dir(name) / "run/resource-agents"

    def controller_pids(self, name: str) -> list[int]:
        """Every process of controller NAME (for ctl1: its corosync, pacemakerd and their
        children)."""
        self._controller_index(name)
        if name != CONTROLLER:
            return netns_pids(self.netns(name))
        state = self._state()
        roots = [p for p in (state.get("corosync_pid"), state.get("pacemakerd_pid")) if pid_alive(p)]
        return [pid for root in roots for pid in (root, *descendants(root))]

    def controller_powered(self, name: str) -> bool:
        if name == CONTROLLER:
            return self.is_up()
        self._controller_index(name)
        return any(pid_alive(pid) for pid in netns_pids(self.netns(name)))

    def controller_online(self, name: str) -> bool:
        """NAME is online in the cluster as ctl1 (the host's crm_mon) sees it."""
        try:
            return self.node_online(name)
        except LabError:
            return False

    def _controller_pid(self, name: str) -> int | None:
        """A process of ctlN whose namespaces are the controller's (its corosync, or any)."""
        pids = self._state().get("controller_pids", {}).get(name, {})
        candidates = [p for p in (pids.get("corosync"), pids.get("pacemakerd")) if p]
        live = netns_pids(self.netns(name))
        for pid in candidates:
            if pid in live and pid_alive(pid):
                return pid
        live = [p for p in live if pid_alive(p)]
        return min(live) if live else None

    def run_in_controller(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV on controller NAME: for ctl1 on the host, for ctl2..N inside its network,
        mount and UTS namespaces (e.g. ``crm_mon -1`` as that controller sees the cluster). ENV
        is added to this process's environment. A powered-off controller: LabError."""
        self._controller_index(name)
        full_env = None if env is None else {**os.environ, **env}
        if name == CONTROLLER:
            return run(argv, check=check, timeout=timeout, env=full_env,
                       what=f"{' '.join(argv)} on {name}")
        pid = self._controller_pid(name)
        if pid is None:
            raise LabError(f"{name} is powered off: nothing to run {argv[0]} in")
        return run(["nsenter", "-t", str(pid), "-n", "-m", "-u", "--", *argv],
                   check=check, timeout=timeout, env=full_env,
                   what=f"{' '.join(argv)} on {name}")

    @staticmethod
    def controller_link(index: int) -> str:
        """Host side of ctlN's veth, a port of the bridge."""
        return network.controller_link(index)

    def _prepare_controller_dirs(self, name: str, *, fresh: bool) -> None:
        """ctlN's own directories; its /run and /dev/shm start empty at every boot (volatile),
        the rest only at up()."""
        uid, gid = _ids()
        base = self.controller_dir(name)
        if fresh:
            shutil.rmtree(base, ignore_errors=True)
        for volatile in ("run", "shm"):
            shutil.rmtree(base / volatile, ignore_errors=True)
        layout = (  # directory, owner, mode
            ("var-lib-pacemaker", (uid, gid), 0o755),
            *((f"var-lib-pacemaker/{sub}", (uid, gid), 0o750)
              for sub in ("cib", "pengine", "blackbox", "cores")),
            ("var-lib-corosync", (0, 0), 0o755),
            ("log", (uid, gid), 0o770),
            ("run", (0, 0), 0o755),
            ("run/resource-agents", (0, 0), 0o755),
            ("run/crm", (uid, gid), 0o750),
            ("run/lock", (0, 0), 0o1777),
            ("run/netns", (0, 0), 0o755),
            ("run/openstack-ha-lab", (0, 0), 0o755),
            ("shm", (0, 0), 0o1777),
        )
        for sub, owner, mode in layout:
            make_dir(base / sub, mode, owner)
        make_file(self.controller_pacemaker_log(name), 0o660, (uid, gid))

    def _controller_mounts(self, name: str) -> list[Mount]:
        base = self.controller_dir(name)
        REGISTRY.parent.mkdir(parents=True, exist_ok=True)
        return [
            # The host's network namespaces and lab registry stay visible under the private
            # /run (a fence agent run by this controller powers nodes off and on): bound into
            # it first, while the host's are still reachable.
            (Path("/run/netns"), base / "run/netns", MS_REC),
            (REGISTRY.parent, base / "run/openstack-ha-lab", MS_REC),
            (base / "run", Path("/run"), MS_REC),
            (base / "var-lib-pacemaker", PCMK_VAR_LIB, 0),
            (base / "var-lib-corosync", Path("/var/lib/corosync"), 0),
            (base / "log", PCMK_LOG_DIR, 0),
            (base / "shm", Path("/dev/shm"), 0),
        ]

    def _write_corosync_confs(self) -> None:
        key = self.etc_dir / "corosync-authkey"
        write_atomic(key, os.urandom(256), 0o400)
        for name in self.controllers():
            self._corosync_conf_of(name).write_text(
                self._corosync_text(key, self.controller_corosync_log(name)))

    def _corosync_conf_of(self, name: str) -> Path:
        return self.corosync_conf if name == CONTROLLER else self.etc_dir / f"corosync-{name}.conf"

    def _spawn_controller_corosync(self, name: str) -> int:
        conf = str(self._corosync_conf_of(name))
        out = self.log_dir / f"corosync-{name}.stdout"
        if name == CONTROLLER:
            pid = self._spawn(["corosync", "-f", "-c", conf], out, daemon_env())
            self._save_state(corosync_pid=pid)
            return pid
        # rslave: network namespaces the host adds later (compute nodes) appear in here too.
        preexec = node_preexec(self.netns(name), name, self._controller_mounts(name), MS_SLAVE)
        pid = self._spawn(["corosync", "-f", "-c", conf], out, daemon_env(), preexec)
        self._save_controller_pids(name, corosync=pid, pacemakerd=None)
        return pid

    def _spawn_controller_pacemakerd(self, name: str) -> int:
        env = daemon_env(PCMK_logfile=str(self.controller_pacemaker_log(name)),
                         PCMK_logfacility="none")
        out = self.log_dir / ("pacemakerd.stdout" if name == CONTROLLER
                              else f"pacemakerd-{name}.stdout")
        if name == CONTROLLER:
            pid = self._spawn(["pacemakerd"], out, env)
            self._save_state(pacemakerd_pid=pid)
            return pid
        corosync = self._state().get("controller_pids", {}).get(name, {}).get("corosync")
        if not pid_alive(corosync):
            raise LabError(f"corosync of {name} is not running "
                           f"(see {self.controller_corosync_log(name)})")
        pid = self._spawn(["pacemakerd"], out, env, join_preexec(corosync))
        self._save_controller_pids(name, pacemakerd=pid)
        return pid

    def _save_controller_pids(self, name: str, **pids: int | None) -> None:
        state = self._state().get("controller_pids", {})
        state.setdefault(name, {}).update(pids)
        self._save_state(controller_pids=state)

    def _quorum_votes(self) -> int:
        """Total votes in ctl1's quorate partition, 0 when not quorate."""
        out = run(["corosync-quorumtool", "-s"], check=False).stdout
        if "Quorate:          Yes" not in out and not any(
                line.split() == ["Quorate:", "Yes"] for line in out.splitlines()):
            return 0
        for line in out.splitlines():
            if line.startswith("Total votes:"):
                return int(line.split(":", 1)[1])
        return 0

    def _start_controllers(self, t0: float) -> None:
        """Every corosync, quorum of all, every pacemakerd, every controller online."""
        names = self.controllers()
        ensure_bridge()
        enable_forwarding()
        for name in names[1:]:
            ensure_controller_network(name, self._controller_index(name))
            self._prepare_controller_dirs(name, fresh=True)
        self._write_corosync_confs()
        pids = {name: self._spawn_controller_corosync(name) for name in names}

        def quorate() -> bool:
            for name, pid in pids.items():
                if not pid_alive(pid):
                    raise LabError(f"corosync of {name} exited at start-up "
                                   f"(see {self.controller_corosync_log(name)})")
            return self._quorum_votes() == len(names)

        try:
            self.wait_until(quorate, 30, "corosync", 0.1)
        except LabError as exc:
            raise LabError(f"corosync of {len(names)} controllers did not become quorate "
                           f"(see {self.corosync_log})") from exc
        LOG.info("corosync quorate with %d controllers after %.1fs", len(names),
                 time.monotonic() - t0)
        # Only ctl1 gets a seeded CIB (dc-deadtime): the others join with an empty one and
        # take the DC's.
        self._seed_cib()
        for name in names[1:]:
            for sub in ("cib", "pengine"):
                for entry in (self.controller_dir(name) / "var-lib-pacemaker" / sub).iterdir():
                    entry.unlink()
        pcmk = {name: self._spawn_controller_pacemakerd(name) for name in names}

        def ready() -> bool:
            for name, pid in pcmk.items():
                if not pid_alive(pid):
                    raise LabError(f"pacemakerd of {name} exited at start-up "
                                   f"(see {self.controller_pacemaker_log(name)})")
            return self._controller_ready()

        try:
            self.wait_until(ready, 90, "pacemaker", 0.2)
        except LabError as exc:
            raise LabError(f"not every controller came online (see {self.pacemaker_log})") from exc
        LOG.info("%s online after %.1fs", ", ".join(names), time.monotonic() - t0)

    def power_off_controller(self, name: str) -> None:
        """Crash of ctlN: every process in its namespaces is SIGKILLed at once. Its /run and
        /dev/shm are lost at the next boot. ctl1 (the host) cannot be powered off."""
        self._controller_index(name)
        if name == CONTROLLER:
            raise LabError(f"the lab cannot cut {CONTROLLER}'s power (it is the host)")
        with self._node_lock(name):
            kill_netns(name)
        self._reap()

    def power_on_controller(self, name: str, *, wait: bool = True, timeout: float = 90) -> None:
        """Boot ctlN: its corosync, then its pacemakerd, in its namespaces. Idempotent (a
        controller whose processes run is left alone). ``wait``: return once ctl1's crm_mon
        shows it online (the fence agent passes False: a fencing 'on' must not wait for the
        node to join)."""
        index = self._controller_index(name)
        if name == CONTROLLER:
            if not self.is_up():
                raise LabError(f"{CONTROLLER} is down: bring the lab up again")
            return
        with self._node_lock(name):
            if not self.controller_powered(name):
                ensure_bridge()
                ensure_controller_network(name, index)
                self._prepare_controller_dirs(name, fresh=False)
                corosync = self._spawn_controller_corosync(name)

                def corosync_ready() -> bool:
                    if not pid_alive(corosync):
                        raise LabError(f"corosync of {name} exited at start-up "
                                       f"(see {self.controller_corosync_log(name)})")
                    done = run(["nsenter", "-t", str(corosync), "-n", "-m", "-u", "--",
                                "corosync-quorumtool", "-s"], check=False)
                    return "Quorum provider" in done.stdout

                self.wait_until(corosync_ready, 20, f"corosync of {name}", 0.1)
                self._spawn_controller_pacemakerd(name)
        if wait:
            try:
                self.wait_until(lambda: self.controller_online(name), timeout,
                                f"{name} online")
            except LabError as exc:
                raise LabError(f"{exc} (see {self.controller_pacemaker_log(name)})") from exc

    def partition_controller(self, name: str) -> None:
        """Cut ctlN's only link (host side of its veth down): it loses the other controllers,
        the compute nodes, the BMCs and the control plane at once; its processes run on."""
        index = self._controller_index(name)
        if name == CONTROLLER:
            raise LabError(f"{CONTROLLER} is the host: it cannot be partitioned")
        run(["ip", "link", "set", self.controller_link(index), "down"])

    def heal_partition(self, name: str) -> None:
        """Plug ctlN's link back in (see :meth:`partition_controller`)."""
        index = self._controller_index(name)
        if name == CONTROLLER:
            return
        run(["ip", "link", "set", self.controller_link(index), "up"])

    def _reap(self) -> None:
        """Collect the exit status of daemons of ours that died (a crashed controller)."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    # ---------------------------------------------------------------- down

    def is_up(self) -> bool:
        state = self._state()
        return pid_alive(state.get("corosync_pid")) or pid_alive(state.get("pacemakerd_pid"))

    def _stop_daemon(self, pid: int | None, name: str, timeout: float) -> None:
        self._stop_daemons([(pid, name)], timeout)

    def _stop_daemons(self, daemons: Sequence[tuple[int | None, str]], timeout: float) -> None:
        # The pids come from a file: make sure each is still that daemon, not a reused pid.
        live = [(pid, name) for pid, name in daemons
                if pid is not None and pid_alive(pid) and comm(pid) == name]
        families = {pid: [pid, *descendants(pid)] for pid, _ in live}
        for pid, _ in live:
            send_signal(pid, signal.SIGTERM)
        everyone = [member for family in families.values() for member in family]
        if not wait_dead(everyone, timeout):
            for pid, name in live:
                if any(pid_alive(member) for member in families[pid]):
                    LOG.warning("%s (pid %d) ignored SIGTERM for %ss; killing it",
                                name, pid, timeout)
            for member in everyone:
                send_signal(member, signal.SIGKILL)
            wait_dead(everyone, 5)
        for pid, _ in live:
            child = self._children.pop(pid, None)
            if child is not None:
                child.wait()

    def down(self) -> None:
        """Stop everything this lab started and forget its cluster configuration. Safe to call
        twice and when nothing is up."""
        state = self._state()
        # pacemakerd first: it stops every resource, remote connections included, in order;
        # then corosync, which pacemaker needs until its last breath. Every controller's at
        # once: one by one, each would first move the resources to the next.
        # With several controllers, ctl2..N are powered off first: stopped together with ctl1,
        # a controller that is still joining (just booted) can leave ctl1's shutdown hanging.
        # ctl1, alone and without quorum, then stops what is left.
        ctl_pids = state.get("controller_pids", {})
        for name in ctl_pids:
            if Path(f"/run/netns/{self.netns(name)}").exists():
                kill_netns(name)
        self._stop_daemon(state.get("pacemakerd_pid"), "pacemakerd", 60)
        self._stop_daemon(state.get("corosync_pid"), "corosync", 30)
        names = set(state.get("nodes", {})) | set(ctl_pids)
        reg = _read_registry()
        other_lab_running = (
            reg.get("state_dir") not in (None, str(self.state_dir))
            and PacemakerLab(Path(reg["state_dir"])).is_up()
        )
        if not other_lab_running:
            # Nobody else's: also sweep namespaces of labs whose state was lost.
            names |= marked_nodes()
        for name in sorted(names):
            destroy_netns(name)
        if not other_lab_running and not pids_named("pacemaker-based"):
            for sub in ("cib", "pengine"):
                with contextlib.suppress(FileNotFoundError):
                    for entry in (PCMK_VAR_LIB / sub).iterdir():
                        entry.unlink()
        if not other_lab_running:
            remove_control_address()
            remove_bridge()
            restore_forwarding()
        self._reap()
        self._remove_created_etc()
        if reg.get("state_dir") == str(self.state_dir):
            REGISTRY.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        state = self._state()
        nodes = {}
        for name in self._nodes():
            nodes[name] = {"powered": self.is_powered(name), "remoted_pid": self.remoted_pid(name)}
        result: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "up": self.is_up(),
            "corosync_pid": state.get("corosync_pid"),
            "pacemakerd_pid": state.get("pacemakerd_pid"),
            "nodes": nodes,
        }
        names = self.controllers()
        if len(names) > 1:
            result["controllers"] = {name: {"powered": self.controller_powered(name)}
                                     for name in names}
        if result["up"]:
            with contextlib.suppress(LabError):
                mon = self.crm_mon_xml()
                for node in mon.iterfind("./nodes/node"):
                    online = node.get("online") == "true"
                    if node.get("name") == CONTROLLER:
                        result["controller"] = {"name": CONTROLLER, "online": online}
                    if node.get("name") in result.get("controllers", {}):
                        result["controllers"][node.get("name")]["online"] = online
                    elif node.get("name") in nodes:
                        nodes[node.get("name", "")]["online"] = online
        return result

    # ---------------------------------------------------------------- fence agent

    def install_fence_labpower(self) -> None:
        """Install lab/fence_labpower where Pacemaker looks for fence agents. The copy runs
        with this interpreter and finds the ``lab`` package in this checkout."""
        src = (Path(__file__).with_name("fence_labpower")).read_text()
        lines = src.splitlines(keepends=True)
        lines[0] = f"#!{_agent_interpreter()}\n"
        text = "".join(lines).replace(
            "_INSTALLED_REPO_ROOT = None\n", f"_INSTALLED_REPO_ROOT = {str(_REPO_ROOT)!r}\n", 1
        )
        if FENCE_AGENT_PATH.exists() and FENCE_AGENT_PATH.read_text() == text:
            return
        write_atomic(FENCE_AGENT_PATH, text, 0o755)

    def remove_fence_labpower(self) -> None:
        FENCE_AGENT_PATH.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.pacemaker", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start the cluster and its compute nodes"),
                       ("down", "stop everything; without --state-dir, also whatever lab "
                                "is registered as running"),
                       ("status", "print the lab's processes and nodes as JSON")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--state-dir", type=Path, default=None,
                         help=f"default: {default_state_dir()} ($OPENSTACK_HA_LAB/pacemaker)")
        if name == "up":
            cmd.add_argument("--computes", default="compute1",
                             help="comma-separated node names (default: compute1)")
            cmd.add_argument("--controllers", type=int, default=1,
                             help="cluster nodes ctl1..ctlN (default: 1)")
    exec_cmd = sub.add_parser("exec", help="run a command inside a compute node: exec NODE -- ARGV")
    exec_cmd.add_argument("node")
    exec_cmd.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "exec":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        try:
            exec_in_node(args.node, command)
        except (LabError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    lab = PacemakerLab(args.state_dir or default_state_dir())
    t0 = time.monotonic()
    try:
        if args.command == "up":
            lab.up([c.strip() for c in args.computes.split(",") if c.strip()], owned=False,
                   controllers=args.controllers)
            print(f"up in {time.monotonic() - t0:.1f}s; state in {lab.state_dir}")
        elif args.command == "down":
            lab.down()
            registered = _read_registry().get("state_dir")
            if args.state_dir is None and registered:
                PacemakerLab(Path(registered)).down()
            print(f"down in {time.monotonic() - t0:.1f}s")
        else:
            info = lab.status()
            print(json.dumps(info, indent=2))
            return 0 if info["up"] else 3
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
