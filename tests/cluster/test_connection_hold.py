"""fence_nova's hold on a fenced node's cluster connection, against the real cluster.

While a fenced host is off its connection resource is held (``target-role=Stopped``); the
unfencing releases it. The release must bring the node back at once: Pacemaker on its own
retries a failed connection only once the failure is older than ``reconnect_interval`` and
something makes it look again.
"""

from __future__ import annotations

import os
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from cluster_helpers import sh

from lab.pacemaker import LabError, PacemakerLab
from openstack_ha import pacemaker

pytestmark = pytest.mark.cluster

NODE = "compute1"


def connection_failures() -> int:
    """The connection resource's fail count on the controller."""
    done = sh("crm_failcount", "--query", "--resource", NODE, "--node", "ctl1", check=False)
    for token in done.stdout.split():
        if token.startswith("value="):
            value = token.split("=", 1)[1]
            return 0 if value in ("", "(null)") else int(value)
    return 0


def connection_role() -> str | None:
    """The connection resource's role as crm_mon shows it."""
    done = sh("crm_mon", "--one-shot", "--output-as=xml", check=False)
    root = ET.fromstring(done.stdout) if done.returncode == 0 else None
    found = root.find(f".//resources/resource[@id='{NODE}']") if root is not None else None
    return found.get("role") if found is not None else None


@pytest.fixture
def lab(pacemaker_lab: PacemakerLab) -> Iterator[PacemakerLab]:
    assert pacemaker_lab.remote_ready(NODE), "a previous test left compute1 offline"
    # An action still in flight on compute1 (a previous test's teardown stopping its
    # resource there) would outlive the connection killed below: Pacemaker then waits for
    # that action's whole timeout before it stops the connection.
    pacemaker_lab.settle()
    yield pacemaker_lab
    pacemaker.release_connection(NODE)
    sh("crm_resource", "--resource", NODE, "--meta", "--delete-parameter",
       pacemaker.RETURNING_META, check=False)
    if not pacemaker_lab.remote_ready(NODE):
        try:
            pacemaker_lab.reconnect(NODE)
        except LabError:
            # the connection stuck as the xfail below describes: clean it up and wait
            sh("crm_resource", "--cleanup", "--resource", NODE, check=False)
            pacemaker_lab.wait_until(lambda: pacemaker_lab.remote_ready(NODE), 180,
                                     "compute1 back in the cluster after a cleanup")


def test_a_released_connection_starts_at_once_its_failure_cleared(lab: PacemakerLab) -> None:
    # The connection fails as a host's does when it dies (fencing is off in this lab, so
    # nobody powers it off), and is held, as fence_nova holds it once the host is off.
    pid = lab.remoted_pid(NODE)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    lab.wait_until(lambda: connection_failures() > 0, 30, "the connection's failure recorded")
    assert pacemaker.hold_connection(NODE, int(time.time()))
    assert pacemaker.handled_connections(time.time()) == {NODE}
    lab.wait_until(lambda: not lab.node_online(NODE) and connection_role() == "Stopped", 60,
                   "compute1's connection stopped while held")
    # Pacemaker has dealt with the loss: only now may the host boot (PacemakerLab.reconnect
    # says why: a remoted back sooner than that fails the next start's TLS handshakes)

    lab.power_on(NODE)  # the host is back (remoted runs again); nothing reconnects while held
    assert pacemaker.release_connection(NODE)
    # the failure that had the node fenced is gone with the hold: nothing waits it out
    assert connection_failures() == 0
    lab.wait_until(lambda: lab.remote_ready(NODE), 150, "compute1 back in the cluster")
    assert not pacemaker.release_connection(NODE)  # nothing of ours left to release


def test_a_released_node_is_handled_until_it_is_back_then_its_mark_goes(
        lab: PacemakerLab) -> None:
    """The mass-failure brake does not count a node fenced by this suite, while it is held
    off and then while it returns (powered on, not back yet): a second failure meanwhile is
    one failure, not a partition. Back online, the unfencing Pacemaker runs then removes the
    mark, and a later loss of the node counts again."""
    # (whether the held connection has stopped yet changes nothing here: the marks are what
    # the brake reads, and the e2e scenario has a node really away)
    assert pacemaker.hold_connection(NODE, int(time.time()))
    assert pacemaker.handled_connections(time.time()) == {NODE}
    assert not pacemaker.end_return(NODE)  # held, not returning: nothing to remove
    assert pacemaker.release_connection(NODE)
    # returning, from the release on: handled for RETURN_GRACE_SECONDS at most
    now = time.time()
    assert pacemaker.handled_connections(now) == {NODE}
    assert pacemaker.handled_connections(now + pacemaker.RETURN_GRACE_SECONDS + 60) == set()
    lab.wait_until(lambda: lab.remote_ready(NODE), 150, "compute1 back in the cluster")
    assert pacemaker.end_return(NODE)
    assert pacemaker.handled_connections(time.time()) == set()
    assert not pacemaker.end_return(NODE)


def meta(name: str) -> str | None:
    """The connection resource's meta attribute ``name``, None when it has none."""
    done = sh("crm_resource", "--resource", NODE, "--meta", "--get-parameter", name,
              check=False)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def test_a_hold_dropped_after_a_failed_fence_leaves_the_connection_as_it_was(
        lab: PacemakerLab) -> None:
    """fence_nova holds the connection beside Nova's part; when that part fails, the fence
    fails and the hold goes: no returning mark, the node not handled, nothing stopped."""
    assert meta("target-role") is None
    assert pacemaker.hold_connection(NODE, int(time.time()))
    assert meta("target-role") == "Stopped" and meta(pacemaker.HOLD_META) is not None
    pacemaker.drop_hold(NODE)
    assert meta("target-role") is None and meta(pacemaker.HOLD_META) is None
    assert meta(pacemaker.RETURNING_META) is None
    assert pacemaker.handled_connections(time.time()) == set()
    assert not pacemaker.release_connection(NODE)  # nothing of ours left to release
    lab.wait_until(lambda: lab.remote_ready(NODE), 150, "compute1 serving again")
