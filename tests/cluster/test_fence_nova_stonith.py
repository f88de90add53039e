"""fence_nova as Pacemaker runs it: a stonith device created with pcs, fencing a remote node.

compute1 is both the cluster lab's pacemaker_remote node and the OpenStack lab's
nova-compute host with a BMC, so the device really powers a host off through
its BMC and really forces its Nova service down.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.cluster, pytest.mark.lab]

NODE = "compute1"


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


@pytest.fixture
def cluster(pacemaker_lab, clean_lab, tmp_path):
    """Secrets go to 0600 files the device reads: nothing secret in the CIB."""
    auth = yaml.safe_load(clean_lab.clouds_yaml.read_text())["clouds"]["lab"]["auth"]
    bmc = clean_lab.hosts()[NODE]
    secrets = {"keystone": auth["password"], "bmc": bmc["password"]}
    files = {}
    for name, value in secrets.items():
        path = tmp_path / f"{name}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
        files[name] = str(path)
    keystone = [
        f"auth_url={auth['auth_url']}", f"username={auth['username']}",
        f"password_file={files['keystone']}", f"tenant_name={auth['project_name']}",
        "endpoint_type=internal", "power_timeout=8", "login_timeout=3",
    ]
    ipmi = [
        f"ip={bmc['address']}", f"ipport={bmc['port']}", f"bmc_username={bmc['username']}",
        f"bmc_password_file={files['bmc']}",
    ]
    pacemaker_lab.pcs("property", "set", "stonith-action=off")
    yield pacemaker_lab, clean_lab, keystone, ipmi, bmc, files
    pacemaker_lab.pcs("property", "set", "stonith-enabled=false", check=False)
    pacemaker_lab.pcs("stonith", "level", "clear", check=False)
    for device in ("fence-nova", "fence-ipmi"):
        pacemaker_lab.pcs("stonith", "delete", device, check=False)
    pacemaker_lab.pcs("property", "unset", "stonith-action", check=False)
    pacemaker_lab.reconnect(NODE)
    sh("attrd_updater", "-n", "evacuate", "-D", "-N", NODE, check=False)


def nova_service(lab):
    conn = lab.openstack.connection()
    (svc,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == NODE]
    return svc


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
    svc = nova_service(lab)
    assert svc.is_forced_down and svc.status == "disabled"
    assert svc.disabled_reason.startswith("openstack-ha:v1 evacuation=requested ")
    assert any(e.get("status") == "success" for e in fencing_history())
    attr = sh("attrd_updater", "-Q", "-n", "evacuate", "-N", NODE).stdout
    assert 'value="yes"' in attr
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
    svc = nova_service(lab)
    assert svc.is_forced_down and svc.disabled_reason.startswith("openstack-ha:v1 evacuation=")
