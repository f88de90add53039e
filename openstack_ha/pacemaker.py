"""Pacemaker's command-line tools, behind one small adapter.

Agents read and write transient node attributes through ``attrd_updater`` (it
works on pacemaker_remote nodes too, proxied by pacemaker-remoted) and learn
their node name from ``crm_node -n`` when Pacemaker did not pass it.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from typing import Any

# What attrd_updater -Q says of an attribute never set: pacemaker 2.1.5 exits 78
# with this message, later versions CRM_EX_NOSUCH (105).
_EXIT_NO_SUCH = 105
_NOT_SET_MESSAGE = "attribute does not exist"
_QUERY_LINE = re.compile(r'name="(?P<name>[^"]*)"\s+host="(?P<host>[^"]*)"\s+value="(?P<value>[^"]*)"')


class PacemakerError(Exception):
    """A Pacemaker tool failed; the message is one line for the operator."""


class ToolMissing(PacemakerError):
    """A Pacemaker command-line tool is not installed here."""


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
        raise ToolMissing(f"{argv[0]} not found: is pacemaker-cli-utils installed?") from None
    except subprocess.TimeoutExpired:
        raise PacemakerError(f"{argv[0]} gave no answer within {timeout:.0f}s") from None


_NO_CLUSTER = ("not connected", "connection refused", "could not connect")


def _failure(done: subprocess.CompletedProcess[str]) -> PacemakerError:
    text = (done.stderr or done.stdout).strip().splitlines()
    message = f"{done.args[0]} exited {done.returncode}: {text[-1] if text else ''}"
    if any(t in f"{done.stdout}\n{done.stderr}".lower() for t in _NO_CLUSTER):
        return NoCluster(message)
    return PacemakerError(message)


def _xml(argv: Sequence[str], timeout: float) -> Any:
    """What a Pacemaker tool prints as XML, parsed (an ElementTree element)."""
    import xml.etree.ElementTree as ET  # the monitor path never needs it

    done = _exec(argv, timeout)
    if done.returncode != 0:
        raise _failure(done)
    try:
        return ET.fromstring(done.stdout)
    except ET.ParseError as exc:
        raise PacemakerError(f"{argv[0]} gave unreadable XML: {exc}") from None


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


def unfence(node: str, timeout: float = 60) -> None:
    """Ask Pacemaker's fencer to unfence ``node`` (``stonith_admin --unfence``): it runs
    the node's unfencing devices' ``on`` through its topology and waits for the result."""
    seconds = max(int(timeout), 1)
    done = _exec(["stonith_admin", "--unfence", node, "--timeout", str(seconds)], seconds + 5)
    if done.returncode != 0:
        raise _failure(done)


def fail_connection(node: str, timeout: float = 10) -> None:
    """Report the pacemaker_remote ``node``'s connection resource (named as the node) failed
    where it runs (``crm_resource --fail``): what a timed-out monitor of it does, so
    Pacemaker recovers the node as after one, fencing it first."""
    located = _exec(["crm_resource", "--locate", "--resource", node, "--quiet"], timeout)
    if located.returncode != 0:
        raise _failure(located)
    hosts = located.stdout.split()
    if len(hosts) != 1:
        raise PacemakerError(f"the connection resource {node} runs on {hosts or 'no node'},"
                             " not on one")
    done = _exec(["crm_resource", "--fail", "--resource", node, "--node", hosts[0]], timeout)
    if done.returncode != 0:
        raise _failure(done)


# Meta attribute marking a remote node's connection resource as held by this suite (the
# value is when), so that only a hold of ours is released.
HOLD_META = "openstack-ha-hold"
# Set when a hold is released (the host powered on after its evacuation; the value is
# when) and removed once the node is back online: until then its absence is this suite's
# doing, not a failure, and the mass-failure brake does not count it (see
# handled_connections).
RETURNING_META = "openstack-ha-returning"
# How long a returning node stays handled: a server's power-on self-test, boot and
# pacemaker_remoted take minutes; one not back after this counts as down again.
RETURN_GRACE_SECONDS = 1200
_NOT_FOUND = ("not found", "does not exist", "no such")


def _meta(node: str, *args: str) -> list[str]:
    return ["crm_resource", "--resource", node, "--meta", *args]


def hold_connection(node: str, since: int, timeout: float = 10) -> bool:
    """Keep Pacemaker from connecting to the pacemaker_remote ``node`` while it is off.

    A connection start to a host that is off lasts its whole timeout, and no new transition
    begins while an action runs: the cluster would answer nothing else (a second failure, a
    dead NovaEvacuate worker) for a minute at a time. The connection resource (named as the
    node) gets ``target-role=Stopped`` and the hold's mark. False when the node has no
    connection resource of that name (a node not in the cluster).
    """
    done = _exec(_meta(node, "--set-parameter", HOLD_META, "--parameter-value", str(since)),
                 timeout)
    if done.returncode != 0:
        if any(text in (done.stderr + done.stdout).lower() for text in _NOT_FOUND):
            return False
        raise _failure(done)
    done = _exec(_meta(node, "--set-parameter", "target-role", "--parameter-value", "Stopped"),
                 timeout)
    if done.returncode != 0:
        raise _failure(done)
    return True


def drop_hold(node: str, timeout: float = 10) -> None:
    """Undo :func:`hold_connection` alone: no returning mark, no cleanup, the connection
    left as it was before the hold. Of a fence that then failed (Pacemaker fences the node
    again, and that fence holds it anew), and the last step but one of
    :func:`release_connection`."""
    for name in ("target-role", HOLD_META):  # the mark last: never stopped and unmarked
        done = _exec(_meta(node, "--delete-parameter", name), timeout)
        if done.returncode not in (0, _EXIT_NO_SUCH):
            raise _failure(done)


def handled_connections(now: float, timeout: float = 10) -> set[str]:
    """The nodes whose absence this suite explains: held off while evacuated
    (:func:`hold_connection`), or returning (released at ``now - RETURN_GRACE_SECONDS`` or
    later, :func:`release_connection`, and not back yet)."""
    root = _xml(["cibadmin", "--query", "--scope", "resources"], timeout)
    handled = set()
    for primitive in root.iter("primitive"):
        meta = {nv.get("name"): nv.get("value", "") for m in primitive.iterfind(
            "meta_attributes") for nv in m.iterfind("nvpair")}
        returning = meta.get(RETURNING_META, "")
        if HOLD_META in meta or (returning.isdigit()
                                 and now - int(returning) <= RETURN_GRACE_SECONDS):
            handled.add(primitive.get("id", ""))
    return handled


def release_connection(node: str, timeout: float = 10) -> bool:
    """Undo :func:`hold_connection`: Pacemaker connects to ``node`` again, at once. Only a
    hold of ours is released (an operator's own ``target-role`` stays); False when there was
    none.

    The connection's failure (the one that had the node fenced) is cleared too. Left alone,
    Pacemaker starts the connection only once that failure is older than the resource's
    ``reconnect_interval``, and only when a timer or another change makes it look again:
    a node powered on a few seconds after its fence waits for nothing.

    The hold becomes the returning mark (set first: the node is never unmarked between
    the two), which :func:`end_return` removes once the node is back."""
    done = _exec(_meta(node, "--get-parameter", HOLD_META), timeout)
    if done.returncode != 0 or not done.stdout.strip():
        return False
    done = _exec(_meta(node, "--set-parameter", RETURNING_META, "--parameter-value",
                       str(int(time.time()))), timeout)
    if done.returncode != 0:
        raise _failure(done)
    drop_hold(node, timeout)
    done = _exec(["crm_resource", "--cleanup", "--resource", node], timeout)
    if done.returncode != 0:
        raise _failure(done)
    return True


def end_return(node: str, timeout: float = 10) -> bool:
    """Remove ``node``'s returning mark (:func:`release_connection`) if it is back online;
    True when a mark was removed. A node still away keeps it (until its grace ends)."""
    done = _exec(_meta(node, "--get-parameter", RETURNING_META), timeout)
    if done.returncode != 0 or not done.stdout.strip():
        return False
    if not rejoined(node, timeout):
        return False
    done = _exec(_meta(node, "--delete-parameter", RETURNING_META), timeout)
    if done.returncode not in (0, _EXIT_NO_SUCH):
        raise _failure(done)
    return True


class NoCluster(PacemakerError):
    """Pacemaker does not run here: there is no cluster view to consult."""


def _cluster_nodes(timeout: float) -> list[dict[str, str]]:
    """The cluster's nodes as ``crm_mon`` shows them (name, type, online, unclean, ...).
    :class:`NoCluster` when Pacemaker does not run here."""
    root = _xml(["crm_mon", "--one-shot", "--output-as=xml"], timeout)
    return [dict(n.attrib) for n in root.iterfind("nodes/node")]


def remote_nodes_down(timeout: float = 10) -> dict[str, bool]:
    """Every pacemaker_remote node and whether the cluster sees it down (offline or
    unclean). :class:`NoCluster` when Pacemaker does not run here."""
    return {n.get("name", ""): n.get("online") != "true" or n.get("unclean") == "true"
            for n in _cluster_nodes(timeout) if n.get("type") == "remote"}


def cluster_node_gone(node: str, timeout: float = 10) -> bool:
    """Whether the cluster node ``node`` (a controller) left the cluster cleanly: offline and
    not unclean, that is fenced or stopped. A node awaiting fencing is not gone: it may
    still run what it ran."""
    return any(n.get("name") == node and n.get("type") == "member"
               and n.get("online") != "true" and n.get("unclean") != "true"
               for n in _cluster_nodes(timeout))


def rejoined(node: str, timeout: float = 10) -> bool:
    """Whether ``node`` is back in the cluster: a pacemaker_remote node online and clean.
    (Pacemaker's fencing history does not list unfencing, so the node's state is the sign.)"""
    return remote_nodes_down(timeout).get(node) is False
