"""Three controllers in the Pacemaker lab: ctl1 (the host) plus ctl2 and ctl3, each in network,
mount and UTS namespaces of its own on the host bridge ohalab-ctl.

Checked against the real cluster: all three form a quorate cluster and any of them reaches the
compute node; a crashed controller is fenced by the majority through fence_labpower and its
resources move; a partitioned controller loses quorum and stops its resources while the
majority carries on; both come back.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import sh

from lab.pacemaker import FENCE_AGENT_PATH, REGISTRY, PacemakerLab

pytestmark = pytest.mark.cluster

NODE = "compute1"
CONTROLLERS = ["ctl1", "ctl2", "ctl3"]


@pytest.fixture(scope="module")
def ctl_lab(require_lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacemakerLab]:
    """A lab of its own: 3 controllers and compute1. There is one cluster per machine, so the
    session's one-controller lab (if this session started it) is taken down for this module
    and brought back up after it."""
    require_lab("pacemakerd", "corosync", "pcs")
    session_lab = None
    try:
        registered = json.loads(REGISTRY.read_text())
    except (FileNotFoundError, ValueError):
        registered = {}
    if registered.get("owner") == os.getpid() and registered.get("state_dir"):
        session_lab = PacemakerLab(Path(registered["state_dir"]))
        session_lab.down()
    had_agent = FENCE_AGENT_PATH.exists()
    lab = PacemakerLab(tmp_path_factory.mktemp("controllers-lab"))
    try:
        lab.up((NODE,), controllers=3)
        lab.install_fence_labpower()
        yield lab
    finally:
        lab.down()
        if not had_agent:
            lab.remove_fence_labpower()
        if session_lab is not None:
            session_lab.up((NODE,))


def mon_of(lab: PacemakerLab, controller: str) -> ET.Element:
    done = lab.run_in_controller(controller, ["crm_mon", "-1", "--output-as=xml"], timeout=30)
    assert done.returncode == 0, done.stderr
    return ET.fromstring(done.stdout)


def running_on(mon: ET.Element, resource: str) -> list[str]:
    res = mon.find(f".//resources/resource[@id='{resource}']")
    if res is None or res.get("role") != "Started":
        return []
    return [node.get("name", "") for node in res.iterfind("node")]


def quorate(mon: ET.Element) -> bool:
    dc = mon.find("./summary/current_dc")
    return dc is not None and dc.get("with_quorum") == "true"


def test_three_controllers_online_quorate_and_reach_the_compute_node(
    ctl_lab: PacemakerLab,
) -> None:
    lab = ctl_lab
    assert lab.controllers() == CONTROLLERS
    for viewer in CONTROLLERS:  # every controller sees the same cluster
        mon = mon_of(lab, viewer)
        assert quorate(mon), viewer
        for name in CONTROLLERS:
            node = mon.find(f"./nodes/node[@name='{name}']")
            assert node is not None and node.get("online") == "true", (viewer, name)
            assert node.get("type") == "member"
    assert lab.remote_ready(NODE)
    votes = sh("corosync-quorumtool", "-s").stdout
    assert "Quorate:          Yes" in votes and "Total votes:      3" in votes
    # ctl2 is in namespaces of its own.
    assert lab.run_in_controller("ctl2", ["uname", "-n"], check=True).stdout.strip() == "ctl2"
    addresses = lab.run_in_controller("ctl2", ["ip", "-o", "-4", "addr", "show"]).stdout
    assert "10.251.250.2/24" in addresses
    # The compute node's connection works from the other controllers too (routed by the host).
    sh("crm_resource", "--ban", "-r", NODE, "-N", "ctl1")
    try:
        lab.wait_until(lambda: lab.remote_ready(NODE)
                       and running_on(lab.crm_mon_xml(), NODE) in (["ctl2"], ["ctl3"]),
                       60, f"{NODE}'s connection on ctl2 or ctl3")
    finally:
        sh("crm_resource", "--clear", "-r", NODE, check=False)


def test_a_crashed_controller_is_fenced_and_its_resources_move(ctl_lab: PacemakerLab) -> None:
    lab = ctl_lab
    log = lab.state_dir / "fence_labpower.log"
    lab.pcs("stonith", "create", "fence-ctl2", "fence_labpower", f"state_dir={lab.state_dir}",
            "pcmk_host_list=ctl2")
    lab.pcs("resource", "create", "dummy2", "ocf:pacemaker:Dummy", "op", "monitor",
            "interval=5s")
    # --force: pcs looks for the nodes in /etc/corosync, not in the lab. Not on the compute
    # node: the cluster is symmetric, dummy2 would go there.
    lab.pcs("constraint", "location", "dummy2", "prefers", "ctl2=100", "--force")
    lab.pcs("constraint", "location", "dummy2", "avoids", NODE, "--force")
    try:
        lab.wait_until(lambda: running_on(lab.crm_mon_xml(), "dummy2") == ["ctl2"], 30,
                       "dummy2 on ctl2")
        assert (lab.controller_run_dir("ctl2") / "Dummy-dummy2.state").exists()
        # stonith-action=off: with reboot, ctl2 would boot and take dummy2 back at once.
        lab.pcs("property", "set", "stonith-enabled=true", "stonith-action=off")
        lab.wait_until(
            lambda: "fence-ctl2" in sh("stonith_admin", "--list-registered").stdout,
            15, "fence-ctl2 registered with ctl1's fencer")
        lab.settle()
        before = log.read_text() if log.exists() else ""

        started = time.monotonic()
        lab.power_off_controller("ctl2")
        assert not lab.controller_powered("ctl2")

        def moved() -> bool:
            history = sh("stonith_admin", "--history", "ctl2", check=False).stdout
            return ("successful" in history
                    and running_on(lab.crm_mon_xml(), "dummy2") in (["ctl1"], ["ctl3"]))

        lab.wait_until(moved, 60, "ctl2 fenced and dummy2 on ctl1 or ctl3", 0.5)
        took = time.monotonic() - started
        assert "action=off plug=ctl2 rc=0" in log.read_text()[len(before):]
        assert not lab.controller_online("ctl2")
        assert quorate(lab.crm_mon_xml())
        print(f"ctl2 crash -> fenced, dummy2 moved in {took:.1f}s")

        lab.power_on_controller("ctl2")
        assert lab.controller_online("ctl2")
        lab.wait_until(lambda: running_on(lab.crm_mon_xml(), "dummy2") == ["ctl2"], 60,
                       "dummy2 back on ctl2")
    finally:
        lab.pcs("property", "set", "stonith-enabled=false", check=False)
        lab.pcs("property", "unset", "stonith-action", check=False)
        lab.pcs("resource", "delete", "dummy2", check=False)
        lab.pcs("stonith", "delete", "fence-ctl2", check=False)
        if not lab.controller_powered("ctl2"):
            lab.power_on_controller("ctl2")
    lab.wait_until(lambda: lab.remote_ready(NODE), 60, f"{NODE} online")


def test_a_partitioned_controller_loses_quorum_and_stops_its_resources(
    ctl_lab: PacemakerLab,
) -> None:
    lab = ctl_lab
    state = lab.controller_run_dir("ctl3") / "Dummy-dummy3.state"
    lab.pcs("resource", "create", "dummy3", "ocf:pacemaker:Dummy", "op", "monitor",
            "interval=5s")
    lab.pcs("constraint", "location", "dummy3", "prefers", "ctl3=100", "--force")
    lab.pcs("constraint", "location", "dummy3", "avoids", NODE, "--force")
    try:
        lab.wait_until(lambda: running_on(lab.crm_mon_xml(), "dummy3") == ["ctl3"], 30,
                       "dummy3 on ctl3")
        assert state.exists()
        lab.partition_controller("ctl3")
        # The minority: ctl3 alone, without quorum (no-quorum-policy=stop), stops dummy3.
        lab.wait_until(lambda: not quorate(mon_of(lab, "ctl3")), 30,
                       "ctl3 in a partition without quorum", 0.5)
        text = lab.run_in_controller("ctl3", ["crm_mon", "-1"]).stdout
        assert "partition WITHOUT quorum" in text
        lab.wait_until(lambda: not state.exists(), 30, "dummy3 stopped on ctl3", 0.5)
        # The majority keeps quorum and runs dummy3 itself.
        lab.wait_until(lambda: running_on(lab.crm_mon_xml(), "dummy3") in (["ctl1"], ["ctl2"]),
                       30, "dummy3 on ctl1 or ctl2", 0.5)
        mon = lab.crm_mon_xml()
        assert quorate(mon)
        assert mon.find("./nodes/node[@name='ctl3']").get("online") == "false"
    finally:
        lab.heal_partition("ctl3")
        if not lab.controller_powered("ctl3"):
            lab.power_on_controller("ctl3")
    try:
        lab.wait_until(lambda: all(lab.controller_online(n) for n in CONTROLLERS), 60,
                       "ctl3 back online")
        lab.wait_until(lambda: quorate(mon_of(lab, "ctl3")), 30, "ctl3 quorate again")
        lab.wait_until(lambda: running_on(lab.crm_mon_xml(), "dummy3") == ["ctl3"], 60,
                       "dummy3 back on ctl3")
    finally:
        lab.pcs("resource", "delete", "dummy3", check=False)
