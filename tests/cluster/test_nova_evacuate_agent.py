"""ocf:openstack-ha:NovaEvacuate under the real Pacemaker lab: it picks up the request
fence_nova writes when Pacemaker fences compute1, evacuates the host's servers, and once the
host is unfenced and its nova-compute is back, clears force-down and re-enables it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cluster_helpers import attribute, nova_service, sh

from lab import workload
from lab.pacemaker import CONTROLLER
from nova_evacuate.ledger import State, parse_marker

pytestmark = [pytest.mark.cluster, pytest.mark.lab]

NODE = "compute1"
AGENT = "/usr/lib/ocf/resource.d/openstack-ha/NovaEvacuate"


def test_meta_data_validates_and_pcs_describes_it(pacemaker_lab):
    described = pacemaker_lab.pcs("resource", "describe", "ocf:openstack-ha:NovaEvacuate").stdout
    for name in ("config_file", "cloud", "nova_interval", "log_file"):
        assert name in described


@pytest.fixture
def evacuator(cluster, tmp_path):
    pcmk, lab, *_ = cluster
    conf = tmp_path / "openstack-ha.conf"
    conf.write_text(f"[cloud]\ncloud = lab\nclouds_yaml = {lab.clouds_yaml}\n"
                    "[evacuation]\npoll_interval = 1\n")
    log = tmp_path / "nova-evacuate.log"
    pcmk.pcs("resource", "create", "nova-evacuate", "ocf:openstack-ha:NovaEvacuate",
             f"config_file={conf}", f"log_file={log}", "nova_interval=5",
             "op", "monitor", "interval=5s", "--disabled")
    try:
        # on the controller only, as operators do (the compute nodes run ComputeLiveness)
        pcmk.pcs("constraint", "location", "nova-evacuate", "avoids", NODE)
        pcmk.pcs("resource", "enable", "nova-evacuate")
        pcmk.wait_until(lambda: "Started" in pcmk.pcs("resource", "status", "nova-evacuate").stdout,
                        60, "nova-evacuate started")
        yield cluster, log
    finally:
        pcmk.pcs("resource", "delete", "nova-evacuate", "--force", check=False)
        # the unfencing device first: without it, no default asks for unfencing again
        pcmk.pcs("stonith", "delete", "fence-nova", check=False)
        pcmk.pcs("stonith", "delete", f"fence-{CONTROLLER}", check=False)
        pcmk.pcs("resource", "defaults", "update", "requires=", check=False)
        print(log.read_text() if log.exists() else "(no worker log)")


def test_a_fenced_host_is_evacuated_and_returned_by_the_agent(evacuator):
    (pcmk, lab, keystone, ipmi, _, _), _ = evacuator
    conn = lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    ids = workload.boot(conn, NODE, 10, prefix="agent", image_id=workload.image(conn, "plain").id,
                        flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, ids)
    # With a device that provides unfencing, every resource would require it by default,
    # the controller's too: as in scripts/configure-cluster.sh, only what asks for it.
    pcmk.pcs("resource", "defaults", "update", "requires=fencing")
    # Pacemaker unfences every node that runs a device providing unfencing, the controller
    # too, through its own device, which every cluster has before instance HA (the lab's
    # fence_labpower: ctl1 is always on). Without one, unfencing ctl1 fails in each
    # transition and Pacemaker abandons the rest of it: compute1's connection start, at
    # its return, ran only when it won that race.
    pcmk.install_fence_labpower()
    pcmk.pcs("stonith", "create", f"fence-{CONTROLLER}", "fence_labpower",
             f"state_dir={pcmk.state_dir}", f"pcmk_host_list={CONTROLLER}")
    pcmk.pcs("stonith", "create", "fence-nova", "fence_nova", *keystone, *ipmi,
             f"pcmk_host_list={NODE}", "meta", "provides=unfencing")
    pcmk.pcs("property", "set", "stonith-enabled=true")

    fenced_at = time.monotonic()
    done = sh("stonith_admin", "--fence", NODE, "--timeout", "90", check=False, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr

    def evacuated():
        entry = parse_marker(nova_service(lab, NODE).disabled_reason)
        return entry if entry and entry.state is State.DONE else None

    entry = workload.wait_for(evacuated, 180, "the agent's evacuation done", 1)
    took = time.monotonic() - fenced_at
    assert entry.evacuated == 10 and entry.failed == 0
    assert entry.by.startswith("ctl1/")
    assert attribute("evacuate", NODE) == "no"
    now = workload.servers(conn, ids)
    assert all(s.compute_host != NODE and s.status == "ACTIVE" for s in now.values())
    print(f"fence to evacuation done: {took:.1f}s")

    # Unfencing powers the host on (its nova-compute starts), finds the evacuation done and
    # returns; the worker then clears force-down once Nova accepts it, and enables the host.
    done = sh("stonith_admin", "--unfence", NODE, "--timeout", "120", check=False, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert lab.openstack.compute_running(NODE)

    def returned():
        svc = nova_service(lab, NODE)
        return svc.state == "up" and not svc.is_forced_down and svc.status == "enabled"

    try:
        workload.wait_for(returned, 180, f"{NODE} back: up, enabled, not forced down", 2)
    except TimeoutError as exc:
        svc = nova_service(lab, NODE)
        cluster_view = sh("crm_mon", "-1", "--inactive", "--failcounts", check=False).stdout
        raise AssertionError(
            f"{exc}; Nova: {svc.state}, {svc.status}, forced_down={svc.is_forced_down},"
            f" reason={svc.disabled_reason!r}; its migrations:"
            f" {[(m.status, m.migration_type) for m in conn.compute.migrations(host=NODE)]};"
            f" the cluster:\n{cluster_view}\nPacemaker's last lines on {NODE}:\n"
            + "\n".join([line for line in pcmk.pacemaker_log.read_text(errors="replace")
                          .splitlines() if NODE in line][-40:])) from None
    assert nova_service(lab, NODE).disabled_reason is None
    status = json.loads(Path(next(Path("/run/resource-agents").glob(
        "NovaEvacuate-nova-evacuate.status"))).read_text())
    assert status["refused"] == {} and status["running"] == []
