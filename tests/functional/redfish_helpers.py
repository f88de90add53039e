"""A BMC lab of its own with both faces (IPMI and Redfish), for the modules that test the lab's
Redfish face (test_lab_redfish.py) and the Redfish power driver against it
(test_redfish_power.py); the fixture is ``redfish_bmc_lab`` in conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.bmc import BmcEndpoint, BmcLab, RedfishEndpoint

HOSTS = ("compute1", "compute2", "compute3")


def why_no_lab() -> str | None:
    if os.geteuid() != 0:
        return "the BMC lab needs root (a network namespace, a veth pair)"
    for tool in ("ipmi_sim", "ipmitool", "openssl"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is not installed (apt-get install openipmi ipmitool openssl)"
    return None


@dataclass
class Lab:
    lab: BmcLab
    ipmi: dict[str, BmcEndpoint]
    faces: dict[str, RedfishEndpoint]
    tmp: Path

    def hook_log(self, host: str) -> list[str]:
        path = self.tmp / f"{host}.hooks"
        return path.read_text().split() if path.exists() else []

    def redfish_log(self, host: str) -> str:
        return (self.lab.state_dir / "hosts" / host / "redfish.log").read_text()


def ipmi(ep: BmcEndpoint, action: str) -> subprocess.CompletedProcess[str]:
    """``ipmitool chassis power ACTION`` against the IPMI face (not the code under test)."""
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-C", "3", "-H", ep.address, "-p", str(ep.port), "-U",
         ep.username, "-E", "chassis", "power", action],
        env={"PATH": os.environ["PATH"], "IPMI_PASSWORD": ep.password},
        capture_output=True, text=True, timeout=60, check=False)


def make_healthy(bmc: Lab) -> None:
    """Healthy, powered-on BMCs and empty hook logs, through ipmitool."""
    for host in HOSTS:
        bmc.lab.set_fault(host, "none")
        if not bmc.lab.power_state(host):
            proc = ipmi(bmc.ipmi[host], "on")
            assert proc.returncode == 0, proc.stderr
        (bmc.tmp / f"{host}.hooks").unlink(missing_ok=True)
