"""A host dumping into its kdump kernel, against the lab: the real fence_kdump_send, run from
the compute node's network namespace, towards fence_nova's ``kdump_wait`` and towards
fence-agents' ``fence_kdump`` (the first topology level of scripts/configure-cluster.sh's
``KDUMP_<node>``).

compute1 lives in network namespace ``ohalab-compute1`` (lab/netns.py): its management address
is 10.251.I.2, and the host side of its link, 10.251.I.1, is this test runner's address the
node reaches, where fence_nova and fence_kdump listen (UDP 7410, every address). The node's
name does not resolve here, so both are given the node's address: fence_nova as
``kdump_address``, fence_kdump as ``nodename`` (which a stonith device may set, overriding
the node name Pacemaker passes).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fence_nova import (  # noqa: F401 - lab: the fixture kdump_lab asks for
    HOST,
    connection_held,
    fence,
    fenced_in_nova,
    lab,
    powered_off_and_fenced_in_nova,
)

from lab.netns import node_addresses

pytestmark = pytest.mark.lab

FENCE_KDUMP = "/usr/sbin/fence_kdump"
FENCE_KDUMP_SEND = "/usr/libexec/fence-agents/fence_kdump_send"


@pytest.fixture
def kdump_lab(require_lab, lab, pacemaker_lab, tmp_path: Path,  # noqa: F811 - the fixture
              monkeypatch: pytest.MonkeyPatch):
    """test_fence_nova's ``lab`` (the OpenStack lab; compute1 online in the cluster, put back
    after), compute1's namespace, and fence_nova's timeline in a file of this test's own.
    ``lab`` is an argument, not looked up on the way: the collection's order (tests of the
    session's OpenStack lab last, tests/conftest.py) reads it from the fixtures named."""
    require_lab(FENCE_KDUMP, FENCE_KDUMP_SEND)  # Debian: fence-agents
    monkeypatch.setenv("OPENSTACK_HA_TIMELINE", str(tmp_path / "timeline.jsonl"))
    return lab, pacemaker_lab.netns(HOST), tmp_path / "timeline.jsonl"


@contextlib.contextmanager
def kdump_sender(netns: str, to: str) -> Iterator[subprocess.Popen]:
    """What a crash kernel with fence_kdump_nodes runs: a message to ``to`` every second."""
    sender = subprocess.Popen(["ip", "netns", "exec", netns, FENCE_KDUMP_SEND, "-i", "1", "-c",
                               "0", to], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield sender
    finally:
        sender.terminate()
        sender.wait(5)


def events(timeline: Path) -> list[dict]:
    if not timeline.exists():
        return []
    return [json.loads(line) for line in timeline.read_text().splitlines()]


def test_off_with_kdump_wait_leaves_a_dumping_host_on_and_recovers_it(kdump_lab):
    openstack, netns, timeline = kdump_lab
    node, runner = node_addresses(netns)
    with kdump_sender(netns, runner):
        done, took = fence(openstack, "off", kdump_wait="8", kdump_address=node)
    assert done.returncode == 0, done.stderr
    assert took < 8 + 8  # the first message ends the wait (one a second), then Nova's steps
    assert openstack.bmc.power_state(HOST) is True  # its dump goes on
    fenced_in_nova(openstack)
    assert connection_held()
    (detected,) = [e for e in events(timeline) if e["event"] == "kdump_detected"]
    assert detected["source"] == node
    assert "power_off_confirmed" not in [e["event"] for e in events(timeline)]


def test_off_with_kdump_wait_powers_a_silent_host_off_after_the_wait(kdump_lab):
    openstack, netns, timeline = kdump_lab
    node, _ = node_addresses(netns)
    done, took = fence(openstack, "off", kdump_wait="2", kdump_address=node)
    assert done.returncode == 0, done.stderr
    assert took >= 2
    powered_off_and_fenced_in_nova(openstack)
    assert [e["event"] for e in events(timeline) if "kdump" in e["event"] or
            e["event"] == "power_off_confirmed"] == ["power_off_confirmed"]


def test_a_message_from_another_address_does_not_spare_the_power_off(kdump_lab):
    # The node sends, but fence_nova expects its crash kernel at another address: ignored.
    openstack, netns, _ = kdump_lab
    _, runner = node_addresses(netns)
    with kdump_sender(netns, runner):
        done, _ = fence(openstack, "off", kdump_wait="2", kdump_address="192.0.2.99")
    assert done.returncode == 0, done.stderr
    powered_off_and_fenced_in_nova(openstack)


def run_fence_kdump(node: str, timeout: int) -> tuple[subprocess.CompletedProcess[str], float]:
    """fence_kdump off as Pacemaker runs it: its options on stdin."""
    stdin = f"action=off\nnodename={node}\nfamily=ipv4\ntimeout={timeout}\n"
    started = time.monotonic()
    done = subprocess.run([FENCE_KDUMP], input=stdin, capture_output=True, text=True,
                          timeout=timeout + 20)
    return done, time.monotonic() - started


def test_fence_kdump_confirms_a_node_that_sends_from_its_namespace(kdump_lab):
    # The first topology level of KDUMP_<node> works with the lab's addressing.
    _, netns, _ = kdump_lab
    node, runner = node_addresses(netns)
    with kdump_sender(netns, runner):
        done, took = run_fence_kdump(node, timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < 10
    silent, took = run_fence_kdump(node, timeout=2)
    assert silent.returncode == 1 and took >= 2  # and it does not confirm a silent one
