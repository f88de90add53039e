"""Fixtures for tests against a real Pacemaker cluster (lab/pacemaker.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from lab.pacemaker import PacemakerLab


def _why_no_lab() -> str | None:
    if os.geteuid() != 0:
        return "the Pacemaker lab needs root (network namespaces, corosync, the CIB)"
    for tool in ("pacemakerd", "corosync", "pcs"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return (f"{tool} is not installed "
                    "(apt-get install pacemaker pacemaker-cli-utils corosync pcs)")
    return None


@pytest.fixture(scope="session")
def pacemaker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacemakerLab]:
    """One cluster for the whole session: controller ctl1 plus remote node compute1.

    Tests leave it as they found it (no extra resources, stonith-enabled=false, compute1
    online). Where the lab cannot run it skips, unless OPENSTACK_HA_REQUIRE_LAB=1 (CI), where a
    silently skipped cluster suite would pass for the wrong reason.
    """
    reason = _why_no_lab()
    if reason is not None:
        if os.environ.get("OPENSTACK_HA_REQUIRE_LAB") == "1":
            pytest.fail(f"OPENSTACK_HA_REQUIRE_LAB=1 but {reason}")
        pytest.skip(reason)
    lab = PacemakerLab(tmp_path_factory.mktemp("pacemaker-lab"))
    lab.up(("compute1",))
    try:
        yield lab
    finally:
        lab.down()
