"""scripts/configure-cluster.sh's Consul settings and its check of the controllers' fence
devices, run for real against a pcs that records its arguments (the e2e suite turns Consul
on in a running configuration instead: lab/failover.py's Deployment.enable_consul, the
same parameters)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "configure-cluster.sh"


def configure(tmp_path: Path, **settings: str) -> list[str]:
    """The pcs commands configure-cluster.sh runs with ``settings``, one line each."""
    run(tmp_path, **settings)
    return (tmp_path / "pcs.calls").read_text().splitlines()


def run(tmp_path: Path, stubs: dict[str, str] | None = None,
        **settings: str) -> subprocess.CompletedProcess[str]:
    """configure-cluster.sh with ``settings``, against a pcs that records its arguments in
    pcs.calls, and ``stubs``: other commands' shell bodies (the real ones otherwise)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "pcs.calls"
    for name, body in {"pcs": f'echo "pcs $*" >> {calls}', **(stubs or {})}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    values = {"COMPUTES": "compute1", "AUTH_URL": "http://keystone/v3", "OS_USERNAME": "admin",
              "OS_PROJECT": "admin", "OS_PASSWORD_FILE": "/etc/openstack-ha/keystone",
              "ENGINE_CONFIG": "/etc/openstack-ha/openstack-ha.conf",
              "BMC_ADDRESS_compute1": "192.0.2.11", "BMC_USERNAME_compute1": "admin",
              "BMC_PASSWORD_FILE_compute1": "/etc/openstack-ha/bmc", **settings}
    file = tmp_path / "settings.sh"
    file.write_text("".join(f"{k}={v!r}\n" for k, v in values.items()))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(SCRIPT), str(file)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done


def device(calls: list[str]) -> str:
    (line,) = [c for c in calls if c.startswith("pcs stonith create fence-nova-compute1 ")]
    return line


def test_without_consul_the_device_reads_no_consul(tmp_path: Path) -> None:
    calls = configure(tmp_path)
    assert "consul_config" not in device(calls)
    assert "pcmk_off_timeout=60s" in device(calls)
    assert not any("stonith-max-attempts" in c for c in calls)


@pytest.mark.parametrize(("hold", "attempts"), [("", 70), ("60", 22)])
def test_consul_config_reaches_every_fence_nova_and_pacemaker_keeps_asking(
        tmp_path: Path, hold: str, attempts: int) -> None:
    settings = {"CONSUL_CONFIG": "/etc/openstack-ha/openstack-ha.conf",
                "PARTITION_POLICY": "storage=fence; *=fence; management=refuse",
                **({"PARTITION_HOLD": hold} if hold else {})}
    calls = configure(tmp_path, **settings)
    line = device(calls)
    assert " consul_config=/etc/openstack-ha/openstack-ha.conf " in line
    assert f" partition_hold={hold or 300} " in line
    assert " partition_policy=storage=fence; *=fence; management=refuse " in line
    assert " pcmk_off_timeout=80s " in line  # the wait for Consul before the power step
    assert f"pcs property set stonith-max-attempts={attempts}" in calls


def test_a_controller_no_fence_device_targets_is_warned_about(tmp_path: Path) -> None:
    """Pacemaker unfences every node that runs fence_nova (provides=unfencing), through the
    node's own device: where there is none, it abandons each transition that asks, a
    returning compute node's connection start with it."""
    crm_node = 'printf "1 ctl1 member\\n2 ctl2 member\\n3 ctl3 lost\\n"'
    stonith_admin = ('if [ "$2" = ctl1 ]; then echo fence-ctl1; echo "1 fence device found";'
                     ' else echo "0 fence devices found"; fi')
    done = run(tmp_path, {"crm_node": crm_node, "stonith_admin": stonith_admin})
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert "no fence device targets ctl2, so Pacemaker cannot unfence it" in warnings[0]
    assert "pcmk_host_list=ctl2" in warnings[0]
