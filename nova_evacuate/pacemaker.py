"""Pacemaker's command-line tools, behind one small adapter.

Agents read and write transient node attributes through ``attrd_updater`` (it
works on pacemaker_remote nodes too, proxied by pacemaker-remoted) and learn
their node name from ``crm_node -n`` when Pacemaker did not pass it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

# What attrd_updater -Q says of an attribute never set: pacemaker 2.1.5 exits 78
# with this message, later versions CRM_EX_NOSUCH (105).
_EXIT_NO_SUCH = 105
_NOT_SET_MESSAGE = "attribute does not exist"
_QUERY_LINE = re.compile(r'name="(?P<name>[^"]*)"\s+host="(?P<host>[^"]*)"\s+value="(?P<value>[^"]*)"')


class PacemakerError(Exception):
    """A Pacemaker tool failed; the message is one line for the operator."""


def _exec(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(timeout, 0.5),
            check=False,
        )
    except FileNotFoundError:
        raise PacemakerError(f"{argv[0]} not found: is pacemaker-cli-utils installed?") from None
    except subprocess.TimeoutExpired:
        raise PacemakerError(f"{argv[0]} gave no answer within {timeout:.0f}s") from None


def _failure(done: subprocess.CompletedProcess[str]) -> PacemakerError:
    text = (done.stderr or done.stdout).strip().splitlines()
    return PacemakerError(f"{done.args[0]} exited {done.returncode}: {text[-1] if text else ''}")


def local_node_name(timeout: float = 10) -> str:
    """This node's name as the cluster knows it (``crm_node -n``)."""
    done = _exec(["crm_node", "-n"], timeout)
    name = done.stdout.strip()
    if done.returncode != 0 or not name:
        raise _failure(done)
    return name


def set_node_attribute(name: str, value: str, node: str, timeout: float = 10) -> None:
    done = _exec(["attrd_updater", "-n", name, "-U", value, "-N", node], timeout)
    if done.returncode != 0:
        raise _failure(done)


def delete_node_attribute(name: str, node: str, timeout: float = 10) -> None:
    done = _exec(["attrd_updater", "-n", name, "-D", "-N", node], timeout)
    if done.returncode not in (0, _EXIT_NO_SUCH):
        raise _failure(done)


def query_node_attribute(name: str, node: str, timeout: float = 10) -> str | None:
    """The attribute's value on ``node``; None when it is not set at all.

    Any other failure raises: a caller deciding on safety must not read
    "attrd did not answer" as "not set".
    """
    done = _exec(["attrd_updater", "-Q", "-n", name, "-N", node], timeout)
    if done.returncode == _EXIT_NO_SUCH or (
        done.returncode != 0 and _NOT_SET_MESSAGE in done.stderr
    ):
        return None
    if done.returncode != 0:
        raise _failure(done)
    for line in done.stdout.splitlines():
        match = _QUERY_LINE.search(line)
        if match and match["host"] == node:
            return match["value"] or None
    return None


def node_attribute_values(name: str, timeout: float = 10) -> dict[str, str]:
    """The attribute's value on every node that has it (``attrd_updater -Q -A``).

    Raises on any failure other than "not set anywhere", like :func:`query_node_attribute`.
    """
    done = _exec(["attrd_updater", "-Q", "-A", "-n", name], timeout)
    if done.returncode == _EXIT_NO_SUCH or (
        done.returncode != 0 and _NOT_SET_MESSAGE in done.stderr
    ):
        return {}
    if done.returncode != 0:
        raise _failure(done)
    return {m["host"]: m["value"] for m in map(_QUERY_LINE.search, done.stdout.splitlines())
            if m and m["value"]}


class NoCluster(PacemakerError):
    """Pacemaker does not run here: there is no cluster view to consult."""


def remote_nodes_down(timeout: float = 10) -> dict[str, bool]:
    """Every pacemaker_remote node and whether the cluster sees it down (offline or
    unclean), from ``crm_mon``. :class:`NoCluster` when Pacemaker does not run here."""
    import xml.etree.ElementTree as ET

    done = _exec(["crm_mon", "--one-shot", "--output-as=xml"], timeout)
    if done.returncode != 0:
        text = f"{done.stdout}\n{done.stderr}".lower()
        if "not connected" in text or "connection refused" in text or "could not connect" in text:
            raise NoCluster("Pacemaker is not running on this node")
        raise _failure(done)
    try:
        root = ET.fromstring(done.stdout)
    except ET.ParseError as exc:
        raise PacemakerError(f"crm_mon gave unreadable XML: {exc}") from None
    return {n.get("name", ""): n.get("online") != "true" or n.get("unclean") == "true"
            for n in root.iter("node") if n.get("type") == "remote"}



def rejoined(node: str, timeout: float = 10) -> bool:
    """Whether ``node`` is back in the cluster: a pacemaker_remote node online and clean.
    (Pacemaker's fencing history does not list unfencing, so the node's state is the sign.)"""
    return remote_nodes_down(timeout).get(node) is False
