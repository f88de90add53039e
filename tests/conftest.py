"""Fixtures shared by every test directory: the OpenStack + BMC lab (lab/stack.py) and
the Pacemaker cluster lab (lab/pacemaker.py).

The lab starts once per test session (about a minute) and is torn down at the
end; each test that uses ``clean_lab`` starts from a clean state (no servers,
every compute up, enabled and not forced down, every BMC on and healthy).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.target import TARGET_VARIABLE, Target


def lab_unavailable(*tools: str) -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, daemons, apt)"
    for tool in tools:
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is not installed"
    return None


def skip_or_fail(reason: str) -> None:
    # In CI (OPENSTACK_HA_REQUIRE_LAB=1) a lab test that cannot run is a failure:
    # a silently skipped suite would pass for the wrong reason.
    if os.environ.get("OPENSTACK_HA_REQUIRE_LAB") == "1":
        pytest.fail(f"OPENSTACK_HA_REQUIRE_LAB=1 but {reason}")
    pytest.skip(reason)


def pytest_ignore_collect(collection_path, config) -> bool | None:
    """tests/e2e brings up the lab with its cluster, and there is one lab per machine: it
    runs alone, in a session of its own (OPENSTACK_HA_E2E=1 pytest tests/e2e), and the other
    suites never run in that session."""
    e2e = os.environ.get("OPENSTACK_HA_E2E") == "1"
    if collection_path.name == "e2e":
        return not e2e
    if e2e and collection_path.name in ("unit", "functional", "cluster"):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests of the session's OpenStack lab last.

    A few modules bring up a BMC lab of their own, and there is one per machine:
    they must run before the session lab takes it (a stable sort keeps the rest
    of the order as collected).

    Against an outside target (``OPENSTACK_HA_TARGET``, tests/target.py), only the tests
    that can run there do: the lab's tests skip unless their module is marked ``target``, and
    a ``lab_only`` test of such a module skips with its reason.
    """
    items.sort(key=lambda item: "openstack_lab" in getattr(item, "fixturenames", ()))
    if not os.environ.get(TARGET_VARIABLE):
        return
    for item in items:
        lab_only = item.get_closest_marker("lab_only")
        if lab_only is not None:
            item.add_marker(pytest.mark.skip(reason="lab only: " + " ".join(lab_only.args)))
        elif (item.get_closest_marker("lab") or item.get_closest_marker("cluster")) \
                and not item.get_closest_marker("target"):
            item.add_marker(pytest.mark.skip(
                reason=f"lab only: its module does not run against {TARGET_VARIABLE}"))


@pytest.fixture(scope="session")
def require_lab():
    """``require_lab(*tools)``: skip (or, in CI, fail) unless the lab can run here."""
    def check(*tools: str) -> None:
        reason = lab_unavailable(*tools)
        if reason is not None:
            skip_or_fail(reason)
    return check


@pytest.fixture(scope="session")
def openstack_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Keystone, Nova with three fake-driver computes, and one BMC per compute (IPMI and Redfish).

    With ``OPENSTACK_HA_TARGET``, the outside target instead (tests/target.py): started and
    stopped by whoever owns it, not by this session."""
    target = Target.from_environment()
    if target is not None:
        yield target
        return
    reason = lab_unavailable("ipmi_sim", "ipmitool")
    if reason is not None:
        skip_or_fail(reason)
    from lab.stack import Lab

    lab = Lab(tmp_path_factory.mktemp("openstack-lab"))
    try:
        # Redfish: each BMC's second face (under 1 s for three), for fence_nova's Redfish tests
        lab.up(3, token_expiration=3600, redfish=True)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="session")
def pacemaker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One cluster for the whole session: controller ctl1 plus remote node compute1.

    Tests leave it as they found it (no extra resources, stonith-enabled=false, compute1
    online). Where the lab cannot run it skips, unless OPENSTACK_HA_REQUIRE_LAB=1 (CI), where a
    silently skipped cluster suite would pass for the wrong reason.
    """
    if os.environ.get(TARGET_VARIABLE):
        pytest.skip(f"lab only: the session's cluster lab is not started against {TARGET_VARIABLE}")
    reason = lab_unavailable("pacemakerd", "corosync", "pcs")
    if reason is not None:
        skip_or_fail(reason)
    from lab.pacemaker import PacemakerLab

    lab = PacemakerLab(tmp_path_factory.mktemp("pacemaker-lab"))
    lab.up(("compute1",))
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def clean_lab(openstack_lab):
    openstack_lab.reset()
    return openstack_lab
