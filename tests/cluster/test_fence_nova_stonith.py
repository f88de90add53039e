"""fence_nova as Pacemaker runs it: a stonith device created with pcs, fencing a remote node.

compute1 is both the cluster lab's pacemaker_remote node and the OpenStack lab's
nova-compute host with a BMC, so the device really powers a host off through
its BMC and really forces its Nova service down.
"""

from __future__ import annotations

import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cluster_helpers import nova_service, sh

from lab.netns import node_addresses

pytestmark = [pytest.mark.cluster, pytest.mark.lab]

NODE = "compute1"


def fencing_history() -> list[dict[str, str]]:
    out = sh("stonith_admin", "--history", NODE, "--output-as=xml", check=False).stdout
    return [e.attrib for e in ET.fromstring(out).iter("fence_event")] if out.strip() else []


def test_pcs_describes_the_installed_fence_agent(pacemaker_lab):
    described = pacemaker_lab.pcs("stonith", "describe", "fence_nova").stdout
    assert "power off, mark down in Nova" in described
    for name in ("bmc_map", "power_driver", "auth_url", "record_only", "instance_filtering"):
        assert name in described


def wait_registered(*devices: str, timeout: float = 60) -> None:
    """The fencer registers a device a moment after pcs has written it to the CIB (it reads
    the agent's metadata first): a fence asked before then finds no device ("No data
    available")."""
    deadline = time.monotonic() + timeout
    while True:
        listed = sh("stonith_admin", "--list-registered", check=False).stdout.split()
        if set(devices) <= set(listed):
            return
        assert time.monotonic() < deadline, f"{devices} not registered: {listed}"
        time.sleep(0.5)


def test_stonith_admin_fences_a_remote_node_through_fence_nova(cluster):
    pcmk, lab, keystone, ipmi, _, files = cluster
    pcmk.pcs("stonith", "create", "fence-nova", "fence_nova", *keystone, *ipmi,
             f"pcmk_host_list={NODE}")
    pcmk.pcs("property", "set", "stonith-enabled=true")
    wait_registered("fence-nova")
    done = sh("stonith_admin", "--fence", NODE, "--timeout", "90", check=False, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert lab.bmc.power_state(NODE) is False
    assert not lab.openstack.compute_running(NODE)
    svc = nova_service(lab, NODE)
    assert svc.is_forced_down and svc.status == "disabled"
    assert svc.disabled_reason.startswith("openstack-ha:v1 evacuation=requested ")
    assert any(e.get("status") == "success" for e in fencing_history())
    # its connection is held while it is off (the evacuate attribute, only a wake-up signal,
    # goes with the node's other attributes when Pacemaker stops the connection)
    held = sh("crm_resource", "--resource", NODE, "--meta", "--get-parameter", "target-role")
    assert held.stdout.strip() == "Stopped"
    # The BMC password is random (the lab's Keystone password is "admin", which
    # any CIB contains): only the file's path is in the device's configuration.
    cib = sh("cibadmin", "-Q").stdout
    assert Path(files["bmc"]).read_text().strip() not in cib
    assert files["bmc"] in cib


def test_topology_of_fence_ipmilan_then_fence_nova_without_power(cluster):
    pcmk, lab, keystone, _, bmc, files = cluster
    pcmk.pcs("stonith", "create", "fence-ipmi", "fence_ipmilan", f"ip={bmc['address']}",
             f"ipport={bmc['port']}", f"username={bmc['username']}",
             f"password_script=/bin/cat {files['bmc']}", "lanplus=1", "cipher=3",
             f"pcmk_host_list={NODE}")
    pcmk.pcs("stonith", "create", "fence-nova", "fence_nova", *keystone, "power_driver=none",
             f"pcmk_host_list={NODE}")
    pcmk.pcs("stonith", "level", "add", "1", NODE, "fence-ipmi", "fence-nova", "--force")
    pcmk.pcs("property", "set", "stonith-enabled=true")
    wait_registered("fence-ipmi", "fence-nova")
    done = sh("stonith_admin", "--fence", NODE, "--timeout", "90", check=False, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    # fence_ipmilan cut the power through the BMC; fence_nova, trusting the level,
    # marked the host in Nova.
    assert lab.bmc.power_state(NODE) is False
    svc = nova_service(lab, NODE)
    assert svc.is_forced_down and svc.disabled_reason.startswith("openstack-ha:v1 evacuation=")


# ---------------------------------------------------------------------------- kdump (KDUMP_<node>)

FENCE_KDUMP_SEND = "/usr/libexec/fence-agents/fence_kdump_send"
KDUMP_TIMEOUT = 5  # fence_kdump's wait for the node's message: short, the lab's node is near


@pytest.fixture
def kdump_topology(cluster):
    """scripts/configure-cluster.sh's KDUMP_<node>=1 for NODE: level 1 fence_kdump, then
    fence_nova without power (Nova's part); level 2 the usual fence_nova device (power off,
    then Nova). fence_kdump's nodename is the node's address: its name does not resolve here."""
    pcmk, lab, keystone, ipmi, _, _ = cluster
    if not os.access(FENCE_KDUMP_SEND, os.X_OK):
        pytest.skip(f"{FENCE_KDUMP_SEND} is not installed (Debian: fence-agents)")
    netns = pcmk.netns(NODE)
    node, runner = node_addresses(netns)
    pcmk.pcs("stonith", "create", "fence-kdump", "fence_kdump", f"nodename={node}",
             f"timeout={KDUMP_TIMEOUT}", f"pcmk_host_list={NODE}", "pcmk_reboot_action=off",
             f"pcmk_off_timeout={KDUMP_TIMEOUT + 10}s", "pcmk_off_retries=1",
             "pcmk_monitor_action=metadata")
    pcmk.pcs("stonith", "create", "fence-nova-kdump", "fence_nova", *keystone,
             "power_driver=none", f"pcmk_host_list={NODE}")
    pcmk.pcs("stonith", "create", "fence-nova", "fence_nova", *keystone, *ipmi,
             f"pcmk_host_list={NODE}")
    pcmk.pcs("stonith", "level", "add", "1", NODE, "fence-kdump", "fence-nova-kdump", "--force")
    pcmk.pcs("stonith", "level", "add", "2", NODE, "fence-nova", "--force")
    pcmk.pcs("property", "set", "stonith-enabled=true")
    wait_registered("fence-kdump", "fence-nova-kdump", "fence-nova")
    yield lab, netns, runner
    pcmk.pcs("property", "set", "stonith-enabled=false", check=False)
    pcmk.pcs("stonith", "level", "clear", check=False)
    for device in ("fence-kdump", "fence-nova-kdump"):  # the cluster fixture deletes the rest
        pcmk.pcs("stonith", "delete", device, check=False)


def fence_node() -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = sh("stonith_admin", "--fence", NODE, "--timeout", "90", check=False, timeout=150)
    return done, time.monotonic() - started


def test_kdump_topology_keeps_a_dumping_node_on_and_fences_it_in_nova(kdump_topology):
    lab, netns, runner = kdump_topology
    # the node's crash kernel, as kdump.conf's fence_kdump_nodes runs it: one message a second
    sender = subprocess.Popen(["ip", "netns", "exec", netns, FENCE_KDUMP_SEND, "-i", "1",
                               "-c", "0", runner], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        done, took = fence_node()
    finally:
        sender.terminate()
        sender.wait(5)
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < KDUMP_TIMEOUT + 30  # level 1 ended at the first message, level 2 unused
    assert lab.bmc.power_state(NODE) is True  # its dump goes on
    svc = nova_service(lab, NODE)
    assert svc.is_forced_down and svc.disabled_reason.startswith("openstack-ha:v1 evacuation=")
    assert any(e.get("status") == "success" for e in fencing_history())


def test_kdump_topology_powers_a_silent_node_off_through_level_2(kdump_topology):
    lab, _, _ = kdump_topology
    done, took = fence_node()
    assert done.returncode == 0, done.stdout + done.stderr
    assert took >= KDUMP_TIMEOUT  # level 1 failed at fence_kdump's timeout, once
    assert lab.bmc.power_state(NODE) is False
    svc = nova_service(lab, NODE)
    assert svc.is_forced_down and svc.disabled_reason.startswith("openstack-ha:v1 evacuation=")
