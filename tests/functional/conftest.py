"""Fixtures shared by modules of the functional suite."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from bmc_helpers import HOSTS, Lab

from lab import workload
from lab.bmc import BmcLab, PowerHooks
from nova_evacuate.nova import Nova, connect


@pytest.fixture
def lab(clean_lab):
    """The session's OpenStack lab, or the outside target (tests/target.py), clean for this
    test (a module may define its own)."""
    return clean_lab


@pytest.fixture
def conn(lab):
    """A plain openstacksdk connection at the suite's microversion: the independent witness."""
    return lab.connection(compute_api_version=workload.MICROVERSION)


@pytest.fixture
def nova(lab) -> Nova:
    """The suite's Nova adapter, on the same cloud."""
    return connect(cloud=lab.cloud, clouds_yaml=lab.clouds_yaml)


@pytest.fixture(scope="module")
def redfish_bmc_lab(tmp_path_factory: pytest.TempPathFactory, require_lab) -> Iterator[Lab]:
    """Three BMCs with both faces, whose hooks append "on"/"off" to a file per host; one per
    module (a BMC lab per machine: it runs before the session's OpenStack lab, see
    tests/conftest.py). Skips where the lab cannot run, unless OPENSTACK_HA_REQUIRE_LAB=1 (CI),
    where a skip would pass for nothing (``require_lab``)."""
    require_lab("ipmi_sim", "ipmitool", "openssl")
    tmp = tmp_path_factory.mktemp("redfish-lab")

    def hook(host: str, action: str) -> list[str]:
        return ["sh", "-c", f"echo {action} >> {tmp}/{host}.hooks"]

    lab = BmcLab(tmp / "state")
    t0 = time.monotonic()
    ipmi = lab.up({h: PowerHooks(on=hook(h, "on"), off=hook(h, "off")) for h in HOSTS}, redfish=True)
    print(f"BMC lab with Redfish up in {time.monotonic() - t0:.2f}s")  # shown with -s / -rA
    try:
        yield Lab(lab, ipmi, lab.redfish_endpoints(), tmp)
    finally:
        lab.down()
