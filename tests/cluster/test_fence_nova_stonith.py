"""fence_nova as Pacemaker runs it: a stonith device created with pcs, fencing a remote node.

compute1 is both the cluster lab's pacemaker_remote node and the OpenStack lab's
nova-compute host with a BMC, so the device really powers a host off through
its BMC and really forces its Nova service down.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cluster_helpers import nova_service, sh

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


def test_stonith_admin_fences_a_remote_node_through_fence_nova(cluster):
    pcmk, lab, keystone, ipmi, _, files = cluster
    pcmk.pcs("stonith", "create", "fence-nova", "fence_nova", *keystone, *ipmi,
             f"pcmk_host_list={NODE}")
    pcmk.pcs("property", "set", "stonith-enabled=true")
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
    done = sh("stonith_admin", "--fence", NODE, "--timeout", "90", check=False, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    # fence_ipmilan cut the power through the BMC; fence_nova, trusting the level,
    # marked the host in Nova.
    assert lab.bmc.power_state(NODE) is False
    svc = nova_service(lab, NODE)
    assert svc.is_forced_down and svc.disabled_reason.startswith("openstack-ha:v1 evacuation=")
