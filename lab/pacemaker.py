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

Command line::

    python -m lab.pacemaker up --computes compute1,compute2 [--state-dir DIR]
    python -m lab.pacemaker status [--state-dir DIR]
    python -m lab.pacemaker down [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import grp
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

CONTROLLER = "ctl1"
NETNS_PREFIX = "ohalab-"
REMOTE_PORT = 3121
FENCE_AGENT_PATH = Path("/usr/sbin/fence_labpower")
# The control plane's address when compute nodes run their own nova-compute (lab/stack.py
# with the cluster): on the host's loopback device, reached from every node namespace
# over its veth link, so cutting a node's link cuts its nova-compute off too.
CONTROL_ADDRESS = "10.251.0.1"
CONTROL_LABEL = "lo:ohalab"
NODE_INIT = Path(__file__).resolve().parent / "node_init.py"

# With more than one controller, ctl2..ctlN each live in network namespace ohalab-ctlN (plus mount
# and UTS namespaces of their own), linked by veth ohalab-cN (host side) to the host bridge
# ohalab-ctl. ctl1 is the host itself, at the bridge's address.
CTL_BRIDGE = "ohalab-ctl"
CTL_SUBNET = "10.251.250"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# The host's ip_forward before the first multi-controller lab turned it on, restored by down()
# (kept outside the state dir so that a lab whose state dir is gone still restores it).
IP_FORWARD_SAVED = Path("/run/openstack-ha-lab/pacemaker-ip_forward")

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
# One empty file per node namespace the lab created, so down() can sweep the namespaces of a lab
# whose state dir is gone without touching anybody else's ohalab-* namespace.
NETNS_MARKS = Path("/run/openstack-ha-lab/pacemaker-netns")

# pacemaker-remote conflicts with the pacemaker package, so it is unpacked, never installed.
DEFAULT_CACHE_DIR = Path(os.environ.get("OPENSTACK_HA_LAB_CACHE", "/var/cache/openstack-ha-lab"))

# Daemons get a clean, predictable environment (as an init system would give them), not the
# caller's: pytest or a developer shell must not leak into the cluster.
_DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_REPO_ROOT = Path(__file__).resolve().parent.parent


class LabError(RuntimeError):
    """The lab could not do what was asked; the message is one line and names the log to read."""


def default_state_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB", "/tmp/openstack-ha-lab")) / "pacemaker"


# --------------------------------------------------------------------------------------------
# Processes, read straight from /proc (cheaper than forking ps/ip once per poll)


def _proc_state(pid: int) -> str | None:
    """One-letter state from /proc/PID/stat, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) is in parentheses and may itself contain spaces or parentheses.
    return data[data.rindex(")") + 2]


def pid_alive(pid: int | None) -> bool:
    """True if PID runs. A zombie counts as dead (pitfall P1): PID 1 here is not an init system
    and reaps orphans only every few seconds, so ``kill -0`` would keep answering yes."""
    if not pid or pid <= 0:
        return False
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pids_named(comm: str) -> list[int]:
    """Live processes whose kernel name (15 characters at most) is exactly ``comm``."""
    return [pid for pid in _all_pids() if _comm(pid) == comm[:15] and pid_alive(pid)]


def _descendants(root: int) -> list[int]:
    """Every live process below ``root``, read before signalling: once the parent is gone its
    children are reparented and can no longer be told apart from anybody else's."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        try:
            data = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(data[data.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [pid for pid in found if pid_alive(pid)]


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_dead(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _netns_pids(netns: str) -> list[int]:
    """Pids whose network namespace is /run/netns/NETNS: what ``ip netns pids`` prints, without
    forking ``ip`` on every poll. Zombies have left their namespaces and are not listed."""
    try:
        target = os.stat(f"/run/netns/{netns}")
    except FileNotFoundError:
        return []
    found = []
    for pid in _all_pids():
        try:
            ns = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            found.append(pid)
    return found


def _listening(pid: int, port: int) -> bool:
    """True if a TCP socket listens on PORT in PID's network namespace. /proc/PID/net/* shows
    that namespace's sockets, so no process has to enter it and nothing connects to remoted
    (a bare TCP probe would make it log a failed TLS handshake)."""
    for table in ("tcp6", "tcp"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


# --------------------------------------------------------------------------------------------
# Entering a node's namespaces before exec'ing remoted. Python 3.11 has no os.setns/os.unshare,
# so libc is called through ctypes. Doing this in the child (preexec_fn) replaces a chain of
# `ip netns exec ... unshare ... sh -c "hostname; mount ...; exec ..."`, and keeps quoting and
# a shell out of the way.

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_SLAVE = 1 << 19

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p,
]


def _libc_check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


_Mount = tuple[Path, Path, int]  # source, target, extra mount flags


def _node_preexec(
    netns: str, hostname: str, mounts: Sequence[_Mount], propagation: int = _MS_PRIVATE
) -> Callable[[], None]:
    netns_path = f"/run/netns/{netns}".encode()
    mount_args = [(bytes(src), bytes(dst), flags) for src, dst, flags in mounts]

    def enter() -> None:
        fd = os.open(netns_path, os.O_RDONLY)
        _libc_check(_libc.setns(fd, _CLONE_NEWNET), "setns")
        os.close(fd)
        _libc_check(_libc.unshare(_CLONE_NEWNS | _CLONE_NEWUTS), "unshare")
        # Private propagation first, or the bind mounts below would leak into the host's view.
        _libc_check(_libc.mount(b"none", b"/", None, _MS_REC | propagation, None), "mount /")
        for src, dst, flags in mount_args:
            _libc_check(_libc.mount(src, dst, None, _MS_BIND | flags, None),
                        f"bind mount {dst.decode()}")
        socket.sethostname(hostname)

    return enter


def _join_preexec(pid: int) -> Callable[[], None]:
    """Enter the network, mount and UTS namespaces of PID (a controller's corosync), so that
    its pacemakerd sees exactly what its corosync sees."""
    kinds = (("net", _CLONE_NEWNET), ("mnt", _CLONE_NEWNS), ("uts", _CLONE_NEWUTS))

    def enter() -> None:
        fds = [(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY), flag) for ns, flag in kinds]
        for fd, flag in fds:
            _libc_check(_libc.setns(fd, flag), "setns")
            os.close(fd)

    return enter


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """PATHS without those inside another of them, sorted."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(o != p and p.is_relative_to(o) for o in unique)]


# --------------------------------------------------------------------------------------------


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer after {timeout}s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LabError(
            f"{what or ' '.join(argv)} failed (rc={proc.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
    return proc


def _write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Readers (the fence agent, run by Pacemaker at any moment) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _ids(user: str = "hacluster", group: str = "haclient") -> tuple[int, int]:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise LabError(
            f"user {user} or group {group} is missing: install the pacemaker package"
        ) from exc


def ensure_remoted(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Path of a pacemaker-remoted binary, unpacked from the distribution's package on first use.

    The package conflicts with ``pacemaker``, so it is downloaded and unpacked, never installed;
    all the libraries it needs come with pacemaker already.
    """
    root = cache_dir / "pacemaker-remote"
    binary = root / "usr/sbin/pacemaker-remoted"
    if os.access(binary, os.X_OK):
        return binary
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get download writes into the current directory only.
    proc = subprocess.run(
        ["apt-get", "download", "pacemaker-remote"],
        cwd=debs, capture_output=True, text=True, timeout=300, check=False,
    )
    found = sorted(debs.glob("pacemaker-remote_*.deb"))
    if proc.returncode != 0 or not found:
        raise LabError(f"apt-get download pacemaker-remote failed: {proc.stderr.strip()[-200:]}")
    unpack = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".unpack-"))
    _run(["dpkg", "-x", str(found[-1]), str(unpack)])
    if root.exists():
        shutil.rmtree(root)
    unpack.rename(root)  # atomic: a half-unpacked tree is never taken for a good one
    if not os.access(binary, os.X_OK):
        raise LabError(f"{found[-1]} holds no usr/sbin/pacemaker-remoted")
    return binary


def _read_registry() -> dict[str, Any]:
    try:
        data = json.loads(REGISTRY.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _daemon_env(**extra: str) -> dict[str, str]:
    env = {"PATH": _DAEMON_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
    if os.environ.get("OPENSTACK_HA_LAB_DEBUG") == "1":  # debug logs from every daemon
        env["PCMK_debug"] = "yes"
    env.update(extra)
    return env


def _world_executable(path: Path) -> bool:
    """True if any user may run PATH: every directory above it searchable, the file executable
    by others."""
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def _agent_interpreter() -> str:
    """The interpreter for the installed fence agent: this one (sys.executable), unless user
    hacluster cannot run it. pacemaker-controld runs every fence agent's ``metadata`` as
    hacluster, and an interpreter under /root (pyenv) fails there with "Permission denied": then
    the system python3 is used. The agent needs nothing beyond the standard library and ``lab``.
    """
    if _world_executable(Path(sys.executable)):
        return sys.executable
    system = shutil.which("python3", path=_DAEMON_PATH)
    if system is None or not _world_executable(Path(system)):
        raise LabError(f"no python3 that user hacluster may run ({sys.executable} is not)")
    return system


def _control_address_present() -> bool:
    done = _run(["ip", "-o", "addr", "show", "dev", "lo"], check=False)
    return f" {CONTROL_ADDRESS}/32 " in done.stdout


def ensure_control_address() -> str:
    """The host's address for the nodes (:data:`CONTROL_ADDRESS`, on the loopback device,
    labelled ``lo:ohalab``); idempotent. Packets from a node to it arrive over the node's
    link and are delivered locally: nothing leaves the machine."""
    if not _control_address_present():
        _run(["ip", "addr", "add", f"{CONTROL_ADDRESS}/32", "dev", "lo", "label", CONTROL_LABEL])
    return CONTROL_ADDRESS


def remove_control_address() -> None:
    if _control_address_present():
        _run(["ip", "addr", "del", f"{CONTROL_ADDRESS}/32", "dev", "lo"], check=False)


def node_init_pid(name: str) -> int | None:
    """The init of node NAME (lab/node_init.py, PID 1 of the node's pid namespace), or None
    when the node is off."""
    for pid in _netns_pids(f"{NETNS_PREFIX}{name}"):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines()
                      if line.startswith("NSpid:")), [])
        if len(nspid) >= 2 and nspid[-1] == "1" and pid_alive(pid):
            return pid
    return None


def exec_in_node(name: str, argv: Sequence[str]) -> None:
    """Replace this process with ARGV inside node NAME (net, mount, UTS and pid namespaces
    of its pacemaker-remoted): how the lab runs a node's nova-compute. No state dir needed,
    the node's namespace name says where it is."""
    pid = node_init_pid(name)
    if pid is None:
        raise LabError(f"{name} is powered off: cannot run {argv[0]} there")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    nsenter = ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", *argv]
    os.execvpe("nsenter", nsenter, env)  # noqa: S606 - argv as given, no shell


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
        _write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

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
        return f"{NETNS_PREFIX}{name}"

    @staticmethod
    def node_address(index: int) -> str:
        return f"10.251.{index}.2"

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
        return _run(["pcs", *args], check=check, timeout=120, what=f"pcs {' '.join(args)}")

    def crm_mon_xml(self) -> ET.Element:
        proc = _run(["crm_mon", "-1", "--output-as=xml"], check=False, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"crm_mon failed (rc={proc.returncode}): is the cluster up? "
                           f"(see {self.pacemaker_log})")
        # Our own cluster's status, produced by Pacemaker's crm_mon: not untrusted input.
        return ET.fromstring(proc.stdout)

    def settle(self, timeout: float = 60) -> None:
        """Wait until Pacemaker has no action pending or in flight (``crm_resource --wait``)."""
        secs = max(1, int(timeout))
        _run(["crm_resource", "--wait", f"--timeout={secs}s"], timeout=secs + 15,
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
        _run(["crm_resource", "--cleanup", "-r", name], timeout=timeout)
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
        return _netns_pids(self.netns(name))

    def remoted_pid(self, name: str) -> int | None:
        # The kernel truncates comm to 15 characters: "pacemaker-remot".
        pids = [p for p in self.node_pids(name) if _comm(p) == "pacemaker-remoted"[:15]]
        pids = [p for p in pids if pid_alive(p)]
        return min(pids) if pids else None

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
        """Namespace plus veth pair; once created it is only ever reused, so the host side is
        touched here and nowhere else (pitfall P4: a node cannot get back to the host netns)."""
        ns = self.netns(name)
        if Path(f"/run/netns/{ns}").exists():
            return
        host, peer = f"{NETNS_PREFIX}h{index}", f"{NETNS_PREFIX}n{index}"
        if Path(f"/sys/class/net/{host}").exists():  # left over from a crashed run
            _run(["ip", "link", "del", host], check=False)
        NETNS_MARKS.mkdir(parents=True, exist_ok=True)
        (NETNS_MARKS / ns).touch()
        for argv in (
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns],
            ["ip", "addr", "add", f"10.251.{index}.1/24", "dev", host],
            ["ip", "link", "set", host, "up"],
            ["ip", "-n", ns, "addr", "add", f"{self.node_address(index)}/24", "dev", peer],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "link", "set", peer, "up"],
            ["ip", "-n", ns, "route", "add", f"{CONTROL_ADDRESS}/32", "via", f"10.251.{index}.1"],
        ):
            _run(argv)
        if len(self.controllers()) > 1:  # ctl2..N reach remoted through the host
            _run(["ip", "-n", ns, "route", "add", f"{CTL_SUBNET}.0/24", "via",
                  f"10.251.{index}.1"])

    def _destroy_node_network(self, name: str) -> None:
        """Kill what runs in the namespace, then delete it. Deleting a veth end from inside
        removes both ends at once; left to the namespace's own teardown that happens later, in
        a kernel work queue, and the next up() could find the host-side name still taken."""
        ns = self.netns(name)
        if not Path(f"/run/netns/{ns}").exists():
            (NETNS_MARKS / ns).unlink(missing_ok=True)
            return
        self._kill_netns(name)
        links = _run(["ip", "-n", ns, "-o", "link", "show", "type", "veth"], check=False)
        for line in links.stdout.splitlines():
            # "2: ohalab-n1@if3: <...>": the name ends at '@'.
            dev = line.split(":", 2)[1].strip().split("@", 1)[0]
            _run(["ip", "-n", ns, "link", "del", dev], check=False)
        _run(["ip", "netns", "del", ns], check=False)
        (NETNS_MARKS / ns).unlink(missing_ok=True)

    def _kill_netns(self, name: str) -> None:
        # Loop: a process may fork between listing and killing (remoted starting an agent).
        deadline = time.monotonic() + 10
        while pids := self.node_pids(name):
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise LabError(f"processes {pids} in netns {self.netns(name)} survive SIGKILL")
            time.sleep(0.02)

    def power_off(self, name: str) -> None:
        """Hard power cut: every process of the node dies at once, nothing is stopped cleanly,
        and the node's /run (resource agents' state) is lost, as with real power."""
        self._index(name)
        with self._node_lock(name):
            self._kill_netns(name)
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

    def _node_view(self, name: str) -> list[_Mount]:
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
        mounts: list[_Mount] = []
        covers: list[_Mount] = []
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
            covers.append((own, path, _MS_REC))
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
        env = _daemon_env(PCMK_logfile=str(log), PCMK_logfacility="none",
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
                preexec = _node_preexec(self.netns(name), name, mounts)
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
            if pid is not None and _listening(pid, REMOTE_PORT):
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
        return _run(
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
        _write_atomic(REGISTRY, json.dumps({"state_dir": str(self.state_dir),
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
            if shutil.which(tool, path=_DAEMON_PATH) is None:
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
        for comm in ("corosync", "pacemakerd", "pacemaker-based"):
            if pids := _pids_named(comm):
                raise LabError(f"{comm} (pid {pids[0]}) is running and is not this lab's: "
                               "stop it first (only one cluster fits on a machine)")
        for name in computes:  # namespaces left by a lab whose state dir is gone
            self._destroy_node_network(name)
        for i in range(2, controllers + 1):
            self._destroy_node_network(f"ctl{i}")
        self._remove_bridge()

    def _prepare_host(self) -> None:
        """What the pacemaker package normally leaves in place (research 1.2), re-created
        idempotently in case something removed it."""
        uid, gid = _ids()
        for sub in ("cib", "pengine", "blackbox", "cores"):
            path = PCMK_VAR_LIB / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, uid, gid)
            path.chmod(0o750)
        PCMK_LOG_DIR.mkdir(parents=True, exist_ok=True)
        RA_TMP_DIR.mkdir(parents=True, exist_ok=True)
        ensure_control_address()
        if not PCMK_AUTHKEY.exists():
            # remoted and the cluster node authenticate each other with this one key.
            _write_atomic(PCMK_AUTHKEY, os.urandom(4096), 0o640)
            os.chown(PCMK_AUTHKEY, 0, gid)

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
            log.touch()
            os.chown(log, uid, gid)
            log.chmod(0o660)
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
        _write_atomic(key, os.urandom(256), 0o400)
        self.corosync_conf.write_text(self._corosync_text(key, self.corosync_log))
        pid = self._spawn(["corosync", "-f", "-c", str(self.corosync_conf)],
                          self.log_dir / "corosync.stdout", _daemon_env())
        self._save_state(corosync_pid=pid)

        def ready() -> bool:
            if not pid_alive(pid):
                raise LabError(f"corosync exited at start-up (see {self.corosync_log})")
            return _run(["corosync-quorumtool", "-s"], check=False).returncode == 0

        try:
            self.wait_until(ready, 20, "corosync", 0.1)
        except LabError as exc:
            raise LabError(f"corosync did not become quorate (see {self.corosync_log})") from exc

    def _start_pacemaker(self) -> None:
        self._seed_cib()
        env = _daemon_env(PCMK_logfile=str(self.pacemaker_log), PCMK_logfacility="none")
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
        seed.write_text(_run(["cibadmin", "--empty"]).stdout)
        seed_env = {**os.environ, "CIB_file": str(seed)}
        # Seeded before start: with the default dc-deadtime (20 s) the only node waits that long
        # for a DC that does not exist (P8). Fencing starts off; tests turn it on when they need.
        for name, value in (("dc-deadtime", "2s"), ("stonith-enabled", "false")):
            _run(["crm_attribute", "--type", "crm_config", "--name", name, "--update", value],
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
        return f"{CTL_SUBNET}.{index}"

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
            return _netns_pids(self.netns(name))
        state = self._state()
        roots = [p for p in (state.get("corosync_pid"), state.get("pacemakerd_pid")) if pid_alive(p)]
        return [pid for root in roots for pid in (root, *_descendants(root))]

    def controller_powered(self, name: str) -> bool:
        if name == CONTROLLER:
            return self.is_up()
        self._controller_index(name)
        return any(pid_alive(pid) for pid in _netns_pids(self.netns(name)))

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
        live = _netns_pids(self.netns(name))
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
            return _run(argv, check=check, timeout=timeout, env=full_env,
                        what=f"{' '.join(argv)} on {name}")
        pid = self._controller_pid(name)
        if pid is None:
            raise LabError(f"{name} is powered off: nothing to run {argv[0]} in")
        return _run(["nsenter", "-t", str(pid), "-n", "-m", "-u", "--", *argv],
                    check=check, timeout=timeout, env=full_env,
                    what=f"{' '.join(argv)} on {name}")

    def _ensure_bridge(self) -> None:
        if Path(f"/sys/class/net/{CTL_BRIDGE}").exists():
            return
        for argv in (
            ["ip", "link", "add", CTL_BRIDGE, "type", "bridge", "forward_delay", "0"],
            ["ip", "addr", "add", f"{self.controller_address(1)}/24", "dev", CTL_BRIDGE],
            ["ip", "link", "set", CTL_BRIDGE, "up"],
        ):
            _run(argv)

    @staticmethod
    def _remove_bridge() -> None:
        if Path(f"/sys/class/net/{CTL_BRIDGE}").exists():
            _run(["ip", "link", "del", CTL_BRIDGE], check=False)

    @staticmethod
    def _enable_forwarding() -> None:
        """ctl2..N reach the compute nodes and the BMCs through the host."""
        if not IP_FORWARD_SAVED.exists():
            _write_atomic(IP_FORWARD_SAVED, IP_FORWARD.read_text())
        IP_FORWARD.write_text("1\n")

    @staticmethod
    def _restore_forwarding() -> None:
        try:
            previous = IP_FORWARD_SAVED.read_text().strip()
        except FileNotFoundError:
            return
        if previous in ("0", "1"):
            IP_FORWARD.write_text(previous + "\n")
        IP_FORWARD_SAVED.unlink(missing_ok=True)

    @staticmethod
    def controller_link(index: int) -> str:
        """Host side of ctlN's veth, a port of the bridge."""
        return f"{NETNS_PREFIX}c{index}"

    def _ensure_controller_network(self, name: str, index: int) -> None:
        ns = self.netns(name)
        if Path(f"/run/netns/{ns}").exists():
            return
        host, peer = self.controller_link(index), f"{NETNS_PREFIX}p{index}"
        if Path(f"/sys/class/net/{host}").exists():  # left over from a crashed run
            _run(["ip", "link", "del", host], check=False)
        NETNS_MARKS.mkdir(parents=True, exist_ok=True)
        (NETNS_MARKS / ns).touch()
        for argv in (
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns],
            ["ip", "link", "set", host, "master", CTL_BRIDGE],
            ["ip", "link", "set", host, "up"],
            ["ip", "-n", ns, "addr", "add", f"{self.controller_address(index)}/24", "dev", peer],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "link", "set", peer, "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", self.controller_address(1)],
        ):
            _run(argv)

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
        for sub, (owner, group), mode in layout:
            path = base / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, owner, group)
            path.chmod(mode)
        for log in (self.controller_pacemaker_log(name),):
            log.touch()
            os.chown(log, uid, gid)
            log.chmod(0o660)

    def _controller_mounts(self, name: str) -> list[_Mount]:
        base = self.controller_dir(name)
        REGISTRY.parent.mkdir(parents=True, exist_ok=True)
        return [
            # The host's network namespaces and lab registry stay visible under the private
            # /run (a fence agent run by this controller powers nodes off and on): bound into
            # it first, while the host's are still reachable.
            (Path("/run/netns"), base / "run/netns", _MS_REC),
            (REGISTRY.parent, base / "run/openstack-ha-lab", _MS_REC),
            (base / "run", Path("/run"), _MS_REC),
            (base / "var-lib-pacemaker", PCMK_VAR_LIB, 0),
            (base / "var-lib-corosync", Path("/var/lib/corosync"), 0),
            (base / "log", PCMK_LOG_DIR, 0),
            (base / "shm", Path("/dev/shm"), 0),
        ]

    def _write_corosync_confs(self) -> None:
        key = self.etc_dir / "corosync-authkey"
        _write_atomic(key, os.urandom(256), 0o400)
        for name in self.controllers():
            self._corosync_conf_of(name).write_text(
                self._corosync_text(key, self.controller_corosync_log(name)))

    def _corosync_conf_of(self, name: str) -> Path:
        return self.corosync_conf if name == CONTROLLER else self.etc_dir / f"corosync-{name}.conf"

    def _spawn_controller_corosync(self, name: str) -> int:
        conf = str(self._corosync_conf_of(name))
        out = self.log_dir / f"corosync-{name}.stdout"
        if name == CONTROLLER:
            pid = self._spawn(["corosync", "-f", "-c", conf], out, _daemon_env())
            self._save_state(corosync_pid=pid)
            return pid
        # rslave: network namespaces the host adds later (compute nodes) appear in here too.
        preexec = _node_preexec(self.netns(name), name, self._controller_mounts(name), _MS_SLAVE)
        pid = self._spawn(["corosync", "-f", "-c", conf], out, _daemon_env(), preexec)
        self._save_controller_pids(name, corosync=pid, pacemakerd=None)
        return pid

    def _spawn_controller_pacemakerd(self, name: str) -> int:
        env = _daemon_env(PCMK_logfile=str(self.controller_pacemaker_log(name)),
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
        pid = self._spawn(["pacemakerd"], out, env, _join_preexec(corosync))
        self._save_controller_pids(name, pacemakerd=pid)
        return pid

    def _save_controller_pids(self, name: str, **pids: int | None) -> None:
        state = self._state().get("controller_pids", {})
        state.setdefault(name, {}).update(pids)
        self._save_state(controller_pids=state)

    def _quorum_votes(self) -> int:
        """Total votes in ctl1's quorate partition, 0 when not quorate."""
        out = _run(["corosync-quorumtool", "-s"], check=False).stdout
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
        self._ensure_bridge()
        self._enable_forwarding()
        for name in names[1:]:
            self._ensure_controller_network(name, self._controller_index(name))
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
            self._kill_netns(name)
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
                self._ensure_bridge()
                self._ensure_controller_network(name, index)
                self._prepare_controller_dirs(name, fresh=False)
                corosync = self._spawn_controller_corosync(name)

                def corosync_ready() -> bool:
                    if not pid_alive(corosync):
                        raise LabError(f"corosync of {name} exited at start-up "
                                       f"(see {self.controller_corosync_log(name)})")
                    done = _run(["nsenter", "-t", str(corosync), "-n", "-m", "-u", "--",
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
        _run(["ip", "link", "set", self.controller_link(index), "down"])

    def heal_partition(self, name: str) -> None:
        """Plug ctlN's link back in (see :meth:`partition_controller`)."""
        index = self._controller_index(name)
        if name == CONTROLLER:
            return
        _run(["ip", "link", "set", self.controller_link(index), "up"])

    def _reap(self) -> None:
        """Collect the exit status of daemons of ours that died (a crashed controller)."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    # ---------------------------------------------------------------- down

    def is_up(self) -> bool:
        state = self._state()
        return pid_alive(state.get("corosync_pid")) or pid_alive(state.get("pacemakerd_pid"))

    def _stop_daemon(self, pid: int | None, comm: str, timeout: float) -> None:
        self._stop_daemons([(pid, comm)], timeout)

    def _stop_daemons(self, daemons: Sequence[tuple[int | None, str]], timeout: float) -> None:
        # The pids come from a file: make sure each is still that daemon, not a reused pid.
        live = [(pid, comm) for pid, comm in daemons
                if pid is not None and pid_alive(pid) and _comm(pid) == comm]
        families = {pid: [pid, *_descendants(pid)] for pid, _ in live}
        for pid, _ in live:
            _signal(pid, signal.SIGTERM)
        everyone = [member for family in families.values() for member in family]
        if not _wait_dead(everyone, timeout):
            for pid, comm in live:
                if any(pid_alive(member) for member in families[pid]):
                    LOG.warning("%s (pid %d) ignored SIGTERM for %ss; killing it",
                                comm, pid, timeout)
            for member in everyone:
                _signal(member, signal.SIGKILL)
            _wait_dead(everyone, 5)
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
                self._kill_netns(name)
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
            with contextlib.suppress(FileNotFoundError):
                names |= {
                    ns[len(NETNS_PREFIX):] for ns in os.listdir(NETNS_MARKS)
                    if ns.startswith(NETNS_PREFIX)
                }
        for name in sorted(names):
            self._destroy_node_network(name)
        if not other_lab_running and not _pids_named("pacemaker-based"):
            for sub in ("cib", "pengine"):
                with contextlib.suppress(FileNotFoundError):
                    for entry in (PCMK_VAR_LIB / sub).iterdir():
                        entry.unlink()
        if not other_lab_running:
            remove_control_address()
            self._remove_bridge()
            self._restore_forwarding()
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
        _write_atomic(FENCE_AGENT_PATH, text, 0o755)

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
    run = sub.add_parser("exec", help="run a command inside a compute node: exec NODE -- ARGV")
    run.add_argument("node")
    run.add_argument("argv", nargs=argparse.REMAINDER)
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
