"""ComputeLiveness in a real Pacemaker cluster with a pacemaker_remote compute node.

The agent is installed with openstack-ha-install and created with pcs as an
operator would. Failure is what really happens: SIGKILL of a process that a
critical check watches. The lab nodes share the host's process table, so the
watched process has a lab-only name.
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from cluster_helpers import attribute as node_attribute
from cluster_helpers import sh

pytestmark = pytest.mark.cluster

AGENT = "/usr/lib/ocf/resource.d/openstack-ha/ComputeLiveness"
NODE = "compute1"
WATCHED = "ohalab-nova-compute"
MONITOR_INTERVAL = 3
ATTRIBUTE = "openstack-ha-liveness"





def attribute(name: str, node: str = NODE) -> str | None:
    return node_attribute(name, node)


@pytest.fixture(scope="module")
def lab(pacemaker_lab):
    done = subprocess.run(
        [sys.executable, "-m", "agents.install"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return pacemaker_lab


def start_watched_process(lab) -> None:
    # Started inside the node's namespaces, so a power-off of the node kills it.
    lab.run_in_node(
        NODE,
        ["bash", "-c", f"setsid bash -c 'exec -a {WATCHED} sleep 100000' </dev/null >/dev/null 2>&1 &"],
        check=True,
    )
    lab.wait_until(lambda: watched_pids() != [], 10, f"{WATCHED} to run")


def watched_pids() -> list[int]:
    done = sh("pgrep", "-f", f"^{WATCHED} ", check=False)
    return [int(p) for p in done.stdout.split()]


def kill_watched_process() -> float:
    pids = watched_pids()
    assert pids, f"{WATCHED} is not running"
    killed_at = time.monotonic()
    sh("kill", "-KILL", *map(str, pids))
    return killed_at


def failures(lab) -> list[dict[str, str]]:
    root = ET.fromstring(sh("crm_mon", "-1", "--output-as=xml", "--include=failures").stdout)
    return [f.attrib for f in root.iter("failure")]


def resource_role(name: str, node: str = NODE) -> str | None:
    root = ET.fromstring(sh("crm_mon", "-1", "--output-as=xml").stdout)
    for res in root.iter("resource"):
        if res.get("id") == name and any(n.get("name") == node for n in res.iter("node")):
            return res.get("role")
    return None


@pytest.fixture
def liveness(lab):
    """The agent cloned onto the remote node, watching one process."""
    start_watched_process(lab)
    lab.pcs(
        "resource", "create", "liveness", "ocf:openstack-ha:ComputeLiveness",
        f"checks=process:{WATCHED}; degraded cmd:/bin/true", "check_timeout=2",
        "op", "monitor", f"interval={MONITOR_INTERVAL}s", "timeout=20s",
        "op", "start", "timeout=10s", "clone",
    )
    lab.pcs(
        "constraint", "location", "liveness-clone", "rule", "resource-discovery=exclusive",
        "score=0", "#kind", "eq", "remote",
    )
    lab.wait_until(lambda: resource_role("liveness") == "Started", 60, "liveness started on node")
    yield lab
    lab.pcs("resource", "delete", "liveness", "--force", check=False)
    sh("crm_resource", "--cleanup", check=False)
    for pid in watched_pids():
        sh("kill", "-KILL", str(pid), check=False)


def test_pcs_and_crm_resource_show_the_installed_agents_meta_data(lab):
    described = lab.pcs("resource", "describe", "ocf:openstack-ha:ComputeLiveness").stdout
    assert "Tells Pacemaker whether an OpenStack compute node can serve instances" in described
    assert "checks" in described and "check_timeout" in described
    shown = sh("crm_resource", "--show-metadata", "ocf:openstack-ha:ComputeLiveness").stdout
    root = ET.fromstring(shown)
    assert root.get("name") == "ComputeLiveness"
    assert {p.get("name") for p in root.iter("parameter")} == {
        "checks", "check_timeout", "attribute", "consul_url", "consul_token_file",
        "consul_ca_file",
    }


def test_ocf_tester_passes(lab):
    done = sh(
        "ocf-tester", "-n", "liveness-ocf-tester", "-o", "checks=cmd:/bin/true", AGENT,
        check=False, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed all tests" in done.stdout


def test_started_clone_publishes_ok_on_the_node(liveness):
    liveness.wait_until(lambda: attribute(ATTRIBUTE) == "ok", 20, f"{ATTRIBUTE}=ok")


def test_sigkill_of_a_watched_process_fails_the_monitor_and_pacemaker_restarts(liveness):
    liveness.wait_until(lambda: attribute(ATTRIBUTE) == "ok", 20, f"{ATTRIBUTE}=ok")
    killed_at = kill_watched_process()
    liveness.wait_until(
        lambda: any(f.get("task") == "monitor" for f in failures(liveness)),
        MONITOR_INTERVAL + 15, "the monitor failure",
    )
    detected = time.monotonic() - killed_at
    monitor_failure = next(f for f in failures(liveness) if f.get("task") == "monitor")
    assert monitor_failure["node"] == NODE
    assert f"critical check process:{WATCHED} failed" in monitor_failure["exitreason"]
    # One interval plus scheduling slack: the failure is seen at the next monitor.
    assert detected < MONITOR_INTERVAL + 15
    # on-fail=restart: Pacemaker stops and starts it again; start checks too, retries
    # until shortly before its 10 s timeout, finds the process still gone, and says so.
    liveness.wait_until(
        lambda: any(f.get("task") == "start" for f in failures(liveness)), 30, "the restart"
    )
    assert attribute(ATTRIBUTE) == f"failed:process:{WATCHED}"
    # The process is back: after a cleanup the node is alive again.
    start_watched_process(liveness)
    sh("crm_resource", "--cleanup", "-r", "liveness-clone")
    liveness.wait_until(lambda: resource_role("liveness") == "Started", 60, "liveness restarted")
    liveness.wait_until(lambda: attribute(ATTRIBUTE) == "ok", 20, f"{ATTRIBUTE}=ok")


def test_with_on_fail_fence_the_node_is_fenced(liveness):
    log = liveness.state_dir / "fence_labpower.log"
    lines_before = log.read_text().count("\n") if log.exists() else 0
    liveness.install_fence_labpower()
    liveness.pcs(
        "stonith", "create", "labpower", "fence_labpower", f"state_dir={liveness.state_dir}",
        f"pcmk_host_list={NODE}",
    )
    liveness.pcs(
        "resource", "update", "liveness", "op", "monitor", f"interval={MONITOR_INTERVAL}s",
        "timeout=20s", "on-fail=fence",
    )
    liveness.pcs("property", "set", "stonith-enabled=true")
    try:
        liveness.wait_until(lambda: attribute(ATTRIBUTE) == "ok", 30, f"{ATTRIBUTE}=ok")
        remoted_before = liveness.remoted_pid(NODE)
        kill_watched_process()

        def fenced_lines() -> list[str]:
            new_lines = log.read_text().splitlines()[lines_before:] if log.exists() else []
            return [
                line for line in new_lines
                if f"plug={NODE}" in line and ("action=off" in line or "action=reboot" in line)
            ]

        liveness.wait_until(
            lambda: fenced_lines() != [], MONITOR_INTERVAL + 30, "the fence device to be called"
        )
        assert "rc=0" in fenced_lines()[0]
        # The fencer records the action once the device has returned: shortly after its log
        # line (CI once read "0 events found" right after it).
        liveness.wait_until(
            lambda: any(word in sh("stonith_admin", "--history", NODE).stdout
                        for word in ("successful", "reboot")),
            30, "the fencing history to record it")
        # The node really lost power: its old pacemaker-remoted is gone.
        liveness.wait_until(
            lambda: liveness.remoted_pid(NODE) != remoted_before, 30, "the node's power cycle"
        )
    finally:
        liveness.pcs("property", "set", "stonith-enabled=false", check=False)
        liveness.pcs("stonith", "delete", "labpower", check=False)
        # reconnect() waits for the cluster to settle before booting the node:
        # a node back too early cannot reconnect for a minute (Pacemaker 2.1.5).
        liveness.reconnect(NODE)
        sh("crm_resource", "--cleanup", check=False)


def run_agent_in_node(lab, action: str, timeout_s: int, **params: str):
    env = {
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": "liveness-by-hand",
        "OCF_RESKEY_CRM_meta_timeout": str(timeout_s * 1000),
        "OCF_RESKEY_CRM_meta_on_node": NODE,
        "HA_LOGFACILITY": "none",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        **{f"OCF_RESKEY_{k}": v for k, v in params.items()},
    }
    return lab.run_in_node(NODE, [AGENT, action], env=env, timeout=timeout_s + 30)


def test_a_failing_degraded_check_is_published_but_not_fatal(lab):
    start_watched_process(lab)
    try:
        done = run_agent_in_node(
            lab, "start", 20, checks=f"process:{WATCHED}; degraded cmd:/bin/false",
            attribute="liveness-by-hand",
        )
        assert done.returncode == 0, done.stderr
        assert attribute("liveness-by-hand") == "degraded:cmd:false"
        assert "degraded check cmd:false failed" in done.stderr
    finally:
        run_agent_in_node(lab, "stop", 20, attribute="liveness-by-hand")
        for pid in watched_pids():
            sh("kill", "-KILL", str(pid), check=False)
    assert attribute("liveness-by-hand") is None


def test_the_reference_location_rule_keeps_it_off_a_node_whose_evacuation_is_pending(liveness):
    """scripts/configure-cluster.sh's rule: Pacemaker, not a waiting start, keeps the compute
    resources off a node while its ``evacuate`` attribute is yes or node@epoch."""
    liveness.pcs("constraint", "location", "liveness-clone", "rule", "score=-INFINITY",
                 "defined", "evacuate", "and", "evacuate", "ne", "no")
    try:
        sh("attrd_updater", "-n", "evacuate", "-U", "ctl1@1700000000", "-N", NODE)
        liveness.wait_until(lambda: resource_role("liveness") != "Started", 30,
                            "liveness stopped on the node while its evacuation is claimed")
        sh("attrd_updater", "-n", "evacuate", "-U", "no", "-N", NODE)
        liveness.wait_until(lambda: resource_role("liveness") == "Started", 30,
                            "liveness started again once the evacuation is done")
        sh("attrd_updater", "-n", "evacuate", "-D", "-N", NODE)
        time.sleep(MONITOR_INTERVAL)  # an absent attribute keeps it running too
        assert resource_role("liveness") == "Started"
    finally:
        sh("attrd_updater", "-n", "evacuate", "-D", "-N", NODE, check=False)
