"""The end-to-end suite: the lab with its cluster (three compute nodes that run
pacemaker_remoted and nova-compute, one BMC each), configured by
scripts/configure-cluster.sh, once for the session.

It runs in a pytest session of its own (``OPENSTACK_HA_E2E=1 pytest tests/e2e``, as
scripts/test.sh does): there is one such lab per machine, and the other suites bring up
labs of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, require_lab) -> Iterator:
    require_lab("pacemakerd", "corosync", "pcs", "ipmi_sim", "ipmitool")
    from lab.failover import Deployment
    from lab.stack import Lab

    lab = Lab(tmp_path_factory.mktemp("e2e-lab"), cluster=True)
    try:
        lab.up(3)
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
