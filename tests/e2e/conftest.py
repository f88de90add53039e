"""The end-to-end suite: the lab with its cluster (three compute nodes that run
pacemaker_remoted and nova-compute, one BMC each: compute3's fenced over Redfish), configured by
scripts/configure-cluster.sh, once for the session.

It runs in a pytest session of its own (``OPENSTACK_HA_E2E=1 pytest tests/e2e``, as
scripts/test.sh does): there is one such lab per machine, and the other suites bring up
labs of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.target import Target, TargetDeployment


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, require_lab) -> Iterator:
    """The lab's deployment, or with ``OPENSTACK_HA_TARGET`` the outside one
    (tests/target.py: deployed and configured by its owner, only the scenarios marked
    ``target`` run)."""
    target = Target.from_environment()
    if target is not None:
        yield TargetDeployment(target)
        return
    require_lab("pacemakerd", "corosync", "pcs", "ipmi_sim", "ipmitool")
    from lab.failover import Deployment
    from lab.stack import Lab

    # OPENSTACK_HA_E2E_CONTROLLERS=3: the controllers' session (tests/e2e/test_controllers.py)
    controllers = int(os.environ.get("OPENSTACK_HA_E2E_CONTROLLERS", "1"))
    # Ceph (about 7 s) for the storage fencing scenarios (test_storage_fencing.py); the
    # reference configuration fences by power alone until a test adds storage fencing.
    ceph = controllers == 1
    if ceph:
        require_lab("ceph-mon", "ceph-mgr", "ceph-osd", "rbd")
    lab = Lab(tmp_path_factory.mktemp("e2e-lab"), cluster=True, controllers=controllers)
    # compute3's fence device speaks Redfish to its BMC, the others IPMI: one cluster mixes
    # both, as the reference configuration allows (test_failover.py fails compute3 over)
    redfish_hosts = ("compute3",) if controllers == 1 else ()
    try:
        # Consul (serf pools, about 1 s) for test_consul_partition.py, which turns it on
        lab.up(3, ceph=ceph, redfish_hosts=redfish_hosts, consul=ceph)
        deployment = Deployment(lab)
        deployment.configure()
        yield deployment
    finally:
        lab.down()


@pytest.fixture
def healthy(deployment):
    """Every node serving, no servers, Nova clean: before and after each scenario."""
    deployment.heal()
    yield deployment
    deployment.heal()


# Two rebuilds at a time: about 20 s for 30 servers in the lab, so that a second fault lands
# while an evacuation runs, and longer than the node connection's reconnect interval (10 s).
SLOW = "max_concurrency = 2\nper_host_concurrency = 1\n"


@pytest.fixture(scope="module")
def slow_engine(deployment):
    deployment.reconfigure_engine(SLOW)
    yield
    deployment.reconfigure_engine()


@pytest.fixture
def slow(slow_engine, healthy):
    """``healthy``, with the evacuation slowed down for this module's tests."""
    return healthy


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed scenario carries the cluster's state at the failure in its report: a CI
    run is often the only place a rare failure is seen."""
    outcome = yield
    report = outcome.get_result()
    deployment = item.funcargs.get("deployment") if hasattr(item, "funcargs") else None
    if report.when != "call" or not report.failed or deployment is None:
        return
    try:
        report.sections.append(("lab state at the failure", deployment.diagnostics(call.start)))
    except Exception as exc:  # diagnostics must never hide the failure itself
        report.sections.append(("lab state at the failure", f"not collected: {exc}"))
