"""The processes of the Pacemaker lab's compute nodes: the pacemaker-remoted binary, the node's
init, and running a command inside a node.

A node runs in network namespace ``ohalab-NAME`` (lab/netns.py) plus mount, UTS and pid
namespaces of its own: PID 1 of its pid namespace is lab/node_init.py, which starts
pacemaker-remoted and reaps the node's orphans for as long as the node is powered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lab.commands import LabError, run
from lab.netns import netns_name
from lab.procs import comm, netns_pids, nspids, pid_alive

# pacemaker-remote conflicts with the pacemaker package, so it is unpacked, never installed.
DEFAULT_CACHE_DIR = Path(os.environ.get("OPENSTACK_HA_LAB_CACHE", "/var/cache/openstack-ha-lab"))
NODE_INIT = Path(__file__).resolve().parent / "node_init.py"


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
    run(["dpkg", "-x", str(found[-1]), str(unpack)])
    if root.exists():
        shutil.rmtree(root)
    unpack.rename(root)  # atomic: a half-unpacked tree is never taken for a good one
    if not os.access(binary, os.X_OK):
        raise LabError(f"{found[-1]} holds no usr/sbin/pacemaker-remoted")
    return binary


def remoted_pid(name: str) -> int | None:
    """The pacemaker-remoted of node NAME, None when it does not run."""
    # The kernel truncates comm to 15 characters: "pacemaker-remot".
    pids = [p for p in netns_pids(netns_name(name)) if comm(p) == "pacemaker-remoted"[:15]]
    pids = [p for p in pids if pid_alive(p)]
    return min(pids) if pids else None


def node_init_pid(name: str) -> int | None:
    """The init of node NAME (lab/node_init.py, PID 1 of the node's pid namespace), or None
    when the node is off."""
    for pid in netns_pids(netns_name(name)):
        numbers = nspids(pid)
        if len(numbers) >= 2 and numbers[-1] == 1 and pid_alive(pid):
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
