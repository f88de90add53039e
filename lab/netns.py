"""The Pacemaker lab's network on the host: a network namespace and a veth link per node, the
controllers' bridge, the control plane's address, ip_forward.

Compute node NAME, the I-th one (1-based), lives in network namespace ``ohalab-NAME``, linked by
veth ``ohalab-hI`` (host side, 10.251.I.1/24) to ``ohalab-nI`` (node side, 10.251.I.2/24), its
management network. Its storage network is a second veth, ``ohalab-sI`` (host side,
10.252.I.1/24) to ``ohalab-dI`` (node side, 10.252.I.2/24, the node's storage address), the
node's only way to Ceph (at 10.252.0.1), so the lab can cut management and storage apart. With
more than one controller, ctl2..ctlN each live in network namespace ohalab-ctlN, linked by veth
ohalab-cN (host side) to the host bridge ohalab-ctl; ctl1 is the host itself, at the bridge's
address. A namespace, once created, is only ever reused (pitfall P4 of research/pacemaker-lab.md:
a node cannot get back to the host's namespace), so the host side is set up in one place.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from lab.commands import LabError, run
from lab.files import write_atomic
from lab.procs import kill_until_gone, netns_pids

NETNS_PREFIX = "ohalab-"
# The control plane's address when compute nodes run their own nova-compute (lab/stack.py
# with the cluster): on the host's loopback device, reached from every node namespace
# over its veth link, so cutting a node's link cuts its nova-compute off too.
CONTROL_ADDRESS = "10.251.0.1"
CONTROL_LABEL = "lo:ohalab"

# Ceph's address (lab/ceph.py with the cluster): also on the host's loopback device, reached
# from a node only over its storage link.
STORAGE_CONTROL_ADDRESS = "10.252.0.1"
STORAGE_LABEL = "lo:ohalabst"

CTL_BRIDGE = "ohalab-ctl"
CTL_SUBNET = "10.251.250"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# The host's ip_forward before the first multi-controller lab turned it on, restored by
# restore_forwarding() (kept outside the state dir so that a lab whose state dir is gone still
# restores it).
IP_FORWARD_SAVED = Path("/run/openstack-ha-lab/pacemaker-ip_forward")
# One empty file per node namespace the lab created, so that the lab's down() can sweep the
# namespaces of a lab whose state dir is gone without touching anybody else's ohalab-* namespace.
NETNS_MARKS = Path("/run/openstack-ha-lab/pacemaker-netns")


def netns_name(name: str) -> str:
    """The network namespace of node (or controller) NAME."""
    return f"{NETNS_PREFIX}{name}"


def node_address(index: int) -> str:
    return f"10.251.{index}.2"


def node_addresses(netns: str) -> tuple[str, str]:
    """The compute node's management address, read in its namespace NETNS, and the host side
    of its link (where ctl1, the host itself, is reached from the node)."""
    shown = run(["ip", "-n", netns, "-4", "-o", "addr", "show"]).stdout
    for line in shown.splitlines():
        fields = line.split()
        interface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
        if str(interface.ip).startswith("10.251."):
            return str(interface.ip), str(interface.network.network_address + 1)
    raise LabError(f"no 10.251.x address in {netns}: {shown}")


def node_link(index: int) -> str:
    """Host side of the INDEX-th compute node's veth: cutting it cuts the node off."""
    return f"{NETNS_PREFIX}h{index}"


def storage_address(index: int) -> str:
    """The INDEX-th compute node's address on its storage network: what Ceph sees it as."""
    return f"10.252.{index}.2"


def storage_link(index: int) -> str:
    """Host side of the INDEX-th compute node's storage veth: cutting it cuts its storage."""
    return f"{NETNS_PREFIX}s{index}"


def controller_address(index: int) -> str:
    return f"{CTL_SUBNET}.{index}"


def controller_link(index: int) -> str:
    """Host side of ctlN's veth, a port of the bridge."""
    return f"{NETNS_PREFIX}c{index}"


def marked_nodes() -> set[str]:
    """Names of the nodes (and controllers) whose namespace a lab created and did not delete."""
    try:
        marks = os.listdir(NETNS_MARKS)
    except FileNotFoundError:
        return set()
    return {ns[len(NETNS_PREFIX):] for ns in marks if ns.startswith(NETNS_PREFIX)}


def _add_netns(ns: str, host_link: str) -> None:
    """Create namespace NS, marked as the lab's, after removing HOST_LINK if a crashed run left
    it behind."""
    if Path(f"/sys/class/net/{host_link}").exists():
        run(["ip", "link", "del", host_link], check=False)
    NETNS_MARKS.mkdir(parents=True, exist_ok=True)
    (NETNS_MARKS / ns).touch()
    run(["ip", "netns", "add", ns])


def ensure_node_network(name: str, index: int, *, via_controllers: bool = False) -> None:
    """Namespace plus veth pair of compute node NAME, the INDEX-th, unless it exists.
    ``via_controllers``: ctl2..N (in namespaces of their own) reach the node through the host."""
    ns = netns_name(name)
    if Path(f"/run/netns/{ns}").exists():
        return
    host, peer = node_link(index), f"{NETNS_PREFIX}n{index}"
    _add_netns(ns, host)
    for argv in (
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns],
        ["ip", "addr", "add", f"10.251.{index}.1/24", "dev", host],
        ["ip", "link", "set", host, "up"],
        ["ip", "-n", ns, "addr", "add", f"{node_address(index)}/24", "dev", peer],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "set", peer, "up"],
        ["ip", "-n", ns, "route", "add", f"{CONTROL_ADDRESS}/32", "via", f"10.251.{index}.1"],
    ):
        run(argv)
    if via_controllers:
        run(["ip", "-n", ns, "route", "add", f"{CTL_SUBNET}.0/24", "via", f"10.251.{index}.1"])


def ensure_storage_network(name: str, index: int) -> None:
    """The storage veth of compute node NAME, the INDEX-th (its namespace exists), unless it
    exists: a route to Ceph's address over it, and no other way there."""
    ns, host = netns_name(name), storage_link(index)
    if Path(f"/sys/class/net/{host}").exists():
        return
    peer = f"{NETNS_PREFIX}d{index}"
    for argv in (
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns],
        ["ip", "addr", "add", f"10.252.{index}.1/24", "dev", host],
        ["ip", "link", "set", host, "up"],
        ["ip", "-n", ns, "addr", "add", f"{storage_address(index)}/24", "dev", peer],
        ["ip", "-n", ns, "link", "set", peer, "up"],
        ["ip", "-n", ns, "route", "add", f"{STORAGE_CONTROL_ADDRESS}/32",
         "via", f"10.252.{index}.1"],
    ):
        run(argv)


def ensure_controller_network(name: str, index: int) -> None:
    """Namespace plus veth pair of controller NAME (ctlN, N = INDEX), its host side a port of
    the bridge, unless it exists."""
    ns = netns_name(name)
    if Path(f"/run/netns/{ns}").exists():
        return
    host, peer = controller_link(index), f"{NETNS_PREFIX}p{index}"
    _add_netns(ns, host)
    for argv in (
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns],
        ["ip", "link", "set", host, "master", CTL_BRIDGE],
        ["ip", "link", "set", host, "up"],
        ["ip", "-n", ns, "addr", "add", f"{controller_address(index)}/24", "dev", peer],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "set", peer, "up"],
        ["ip", "-n", ns, "route", "add", "default", "via", controller_address(1)],
    ):
        run(argv)


def kill_netns(name: str) -> None:
    """SIGKILL every process in NAME's network namespace at once, a power cut; again until none
    is left, since one may fork meanwhile (remoted starting an agent)."""
    ns = netns_name(name)
    if survivors := kill_until_gone(lambda: netns_pids(ns), 10):
        raise LabError(f"processes {survivors} in netns {ns} survive SIGKILL")


def destroy_netns(name: str) -> None:
    """Kill what runs in NAME's namespace, then delete it. Deleting a veth end from inside
    removes both ends at once; left to the namespace's own teardown that happens later, in
    a kernel work queue, and the next up() could find the host-side name still taken."""
    ns = netns_name(name)
    if not Path(f"/run/netns/{ns}").exists():
        (NETNS_MARKS / ns).unlink(missing_ok=True)
        return
    kill_netns(name)
    links = run(["ip", "-n", ns, "-o", "link", "show", "type", "veth"], check=False)
    for line in links.stdout.splitlines():
        # "2: ohalab-n1@if3: <...>": the name ends at '@'.
        dev = line.split(":", 2)[1].strip().split("@", 1)[0]
        run(["ip", "-n", ns, "link", "del", dev], check=False)
    run(["ip", "netns", "del", ns], check=False)
    (NETNS_MARKS / ns).unlink(missing_ok=True)


def ensure_bridge() -> None:
    if Path(f"/sys/class/net/{CTL_BRIDGE}").exists():
        return
    for argv in (
        ["ip", "link", "add", CTL_BRIDGE, "type", "bridge", "forward_delay", "0"],
        ["ip", "addr", "add", f"{controller_address(1)}/24", "dev", CTL_BRIDGE],
        ["ip", "link", "set", CTL_BRIDGE, "up"],
    ):
        run(argv)


def remove_bridge() -> None:
    if Path(f"/sys/class/net/{CTL_BRIDGE}").exists():
        run(["ip", "link", "del", CTL_BRIDGE], check=False)


def enable_forwarding() -> None:
    """ctl2..N reach the compute nodes and the BMCs through the host."""
    if not IP_FORWARD_SAVED.exists():
        write_atomic(IP_FORWARD_SAVED, IP_FORWARD.read_text())
    IP_FORWARD.write_text("1\n")


def restore_forwarding() -> None:
    try:
        previous = IP_FORWARD_SAVED.read_text().strip()
    except FileNotFoundError:
        return
    if previous in ("0", "1"):
        IP_FORWARD.write_text(previous + "\n")
    IP_FORWARD_SAVED.unlink(missing_ok=True)


def _address_present(address: str) -> bool:
    done = run(["ip", "-o", "addr", "show", "dev", "lo"], check=False)
    return f" {address}/32 " in done.stdout


def ensure_control_address() -> str:
    """The host's address for the nodes (:data:`CONTROL_ADDRESS`, on the loopback device,
    labelled ``lo:ohalab``); idempotent. Packets from a node to it arrive over the node's
    link and are delivered locally: nothing leaves the machine."""
    if not _address_present(CONTROL_ADDRESS):
        run(["ip", "addr", "add", f"{CONTROL_ADDRESS}/32", "dev", "lo", "label", CONTROL_LABEL])
    return CONTROL_ADDRESS


def ensure_storage_control_address() -> str:
    """Ceph's address for the nodes (:data:`STORAGE_CONTROL_ADDRESS`), as the control plane's."""
    if not _address_present(STORAGE_CONTROL_ADDRESS):
        run(["ip", "addr", "add", f"{STORAGE_CONTROL_ADDRESS}/32", "dev", "lo",
             "label", STORAGE_LABEL])
    return STORAGE_CONTROL_ADDRESS


def remove_control_address() -> None:
    """Both of the host's lab addresses, the control plane's and Ceph's."""
    for address in (CONTROL_ADDRESS, STORAGE_CONTROL_ADDRESS):
        if _address_present(address):
            run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)
