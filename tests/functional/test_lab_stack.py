"""The whole lab: a BMC's power really stops and starts its host's nova-compute."""

from __future__ import annotations

import json
import subprocess
import sys

import openstack
import pytest

from lab.workload import wait_for
from tests.target import Target

pytestmark = pytest.mark.lab


def compute_service(conn, host: str):
    (service,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == host]
    return service



def test_hosts_json_and_clouds_yaml_describe_the_lab(clean_lab, monkeypatch):
    hosts = json.loads(clean_lab.hosts_json.read_text())
    assert sorted(hosts) == ["compute1", "compute2", "compute3"]
    assert set(hosts["compute1"]) == {"host", "address", "port", "username", "password",
                                      "power_driver", "redfish", "crash", "restore"}
    assert hosts["compute1"]["power_driver"] == "ipmi"  # no redfish_hosts: every host by IPMI
    assert set(hosts["compute1"]["redfish"]) == {"url", "system", "username", "password", "ca_file"}
    assert oct(clean_lab.hosts_json.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clean_lab.clouds_yaml))
    conn = openstack.connect(cloud="lab")
    assert {s.host for s in conn.compute.services(binary="nova-compute")} == set(hosts)


def test_the_hosts_file_makes_the_lab_a_target_that_crashes_and_restores_a_host(clean_lab):
    """hosts.json read as any outside target's (tests/target.py): its crash and restore
    commands, run as a target runs them, stop the host's nova-compute and start it again."""
    target = Target(clean_lab.hosts_json, cloud="lab", clouds_yaml=clean_lab.clouds_yaml)
    assert list(target.target_hosts) == ["compute1", "compute2", "compute3"]
    target.crash("compute2")
    assert not clean_lab.openstack.compute_running("compute2")
    target.restore("compute2")
    assert clean_lab.openstack.compute_running("compute2")


def test_bmc_power_off_kills_nova_compute_and_power_on_starts_it(clean_lab):
    conn = clean_lab.openstack.connection()
    assert clean_lab.openstack.compute_running("compute2")
    done = clean_lab.ipmitool("compute2", "chassis", "power", "off")
    assert done.returncode == 0, done.stderr
    # The BMC acknowledges off only after the host's processes are dead.
    assert not clean_lab.openstack.compute_running("compute2")
    assert "off" in clean_lab.ipmitool("compute2", "chassis", "power", "status").stdout
    wait_for(lambda: compute_service(conn, "compute2").state == "down", 60, "compute2 down in Nova")

    done = clean_lab.ipmitool("compute2", "chassis", "power", "on")
    assert done.returncode == 0, done.stderr
    assert clean_lab.openstack.compute_running("compute2")
    wait_for(lambda: compute_service(conn, "compute2").state == "up", 90, "compute2 up in Nova")


def test_lab_cli_reports_status_and_sets_faults(clean_lab):
    run = [sys.executable, "-m", "lab", "--state-dir", str(clean_lab.state_dir)]
    status = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "compute1" in status.stdout
    fault = subprocess.run([*run, "bmc-fault", "compute1", "reject"], capture_output=True, text=True)
    assert fault.returncode == 0, fault.stderr
    refused = clean_lab.ipmitool("compute1", "chassis", "power", "off")
    assert refused.returncode != 0
    assert clean_lab.openstack.compute_running("compute1")
