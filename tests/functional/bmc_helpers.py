"""For the modules that test power drivers against the lab's BMCs: a BMC lab of its own with
both faces (IPMI and Redfish; the fixture is ``redfish_bmc_lab`` in conftest.py), for
test_lab_redfish.py and test_redfish_power.py, and one power attempt in a fresh process
(:func:`attempt_in_child`), for those and test_ipmi_power.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.bmc import BmcEndpoint, BmcLab, RedfishEndpoint

HOSTS = ("compute1", "compute2", "compute3")


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


REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    outcome: dict[str, Any]
    wall: float
    output: str  # stdout and stderr, for the password check


def attempt_in_child(child: str, request: dict[str, Any], password: str, deadline: float) -> Run:
    """Run CHILD (Python source that reads REQUEST as JSON on stdin and prints its outcome as
    JSON on its last line) in a fresh process of the suite's venv, as fence_nova runs one
    process per action; the password goes on stdin, never argv, and never comes out."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", child], input=json.dumps(request), cwd=REPO,
                          capture_output=True, text=True, timeout=deadline + 60, check=False)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = Run(json.loads(proc.stdout.strip().splitlines()[-1]), wall, proc.stdout + proc.stderr)
    assert password not in run.output
    return run
