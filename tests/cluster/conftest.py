"""Fixtures of the cluster tests that use both labs: a fence_nova stonith setup."""

from __future__ import annotations

import pytest
import yaml
from cluster_helpers import sh

from openstack_ha import pacemaker

NODE = "compute1"


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
    pacemaker.release_connection(NODE)  # fence_nova off held it while the node was off
    pacemaker_lab.reconnect(NODE)
    sh("attrd_updater", "-n", "evacuate", "-D", "-N", NODE, check=False)

