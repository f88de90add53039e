"""A compute node fails in the real cluster and its instances come back by themselves.

The deployment is scripts/configure-cluster.sh on the lab with its cluster (see conftest.py):
Pacemaker notices, fences through fence_nova (the node's BMC powers it off), the NovaEvacuate
worker evacuates its servers, and every step lands in the recovery timeline. Then the worker
asks Pacemaker to unfence the node (fence_nova ``on``, refused until the evacuation is done,
powers it on) and it serves again.
"""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest

from lab import workload
from lab.failover import METRICS_PORT
from openstack_ha import timeline
from tests.metrics_text import sample_values

pytestmark = [pytest.mark.cluster, pytest.mark.lab,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

VICTIM = "compute1"
RECOVERY_STEPS = ("fence_start", "power_off_confirmed", "forced_down", "evacuation_requested",
                  "claimed", "instance_done", "evacuation_done")


def boot(d, host: str, count: int, prefix: str) -> list[str]:
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    ids = workload.boot(conn, host, count, prefix=prefix,
                        image_id=workload.image(conn, "plain").id,
                        flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, ids)
    return ids


def servers(d, ids):
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    return workload.servers(conn, ids)


def migrations(d, host: str) -> list:
    conn = d.lab.openstack.connection()
    return list(conn.compute.migrations(source_compute=host, migration_type="evacuation"))


def expect_recovery(d, host: str, ids: list[str], since: float, timeout: float = 240) -> list:
    """Fenced (powered off, confirmed), evacuated: every server ACTIVE elsewhere, and the
    node unfenced only after that. The timeline's events."""

    def evacuated():
        return any(e["event"] == "evacuation_done" for e in d.events(since, host))

    workload.wait_for(evacuated, timeout, f"{host} evacuated", 1)
    assert d.fenced(host, since), f"{host} was not fenced by Pacemaker"
    now = servers(d, ids)
    assert all(s.compute_host != host and s.status == "ACTIVE" for s in now.values())
    assert {m.server_id for m in migrations(d, host)} >= set(ids)
    events = d.events(since, host)
    names = [e["event"] for e in events]
    for step in RECOVERY_STEPS:
        assert step in names, f"no {step} in the timeline: {names}"
    # in order: the power-off was confirmed before Nova was touched, and before evacuation
    first = {n: names.index(n) for n in RECOVERY_STEPS}
    assert first["power_off_confirmed"] < first["forced_down"] < first["evacuation_requested"]
    assert first["evacuation_requested"] < first["claimed"] < first["instance_done"]
    assert sum(n == "instance_done" for n in names) == len(ids)
    # Pacemaker powers it on again, but only after the evacuation. An unfencing between the
    # fault and the fence (Pacemaker may unfence a node whose connection it is retrying; with
    # no evacuation pending that changes nothing) is not this host's return.
    fenced_at = names.index("fence_start")
    returns = [i for i, n in enumerate(names) if n == "unfenced" and i > fenced_at]
    assert all(i > names.index("evacuation_done") for i in returns), names
    return events


def scrape_metrics(d) -> dict[str, float]:
    """The NovaEvacuate worker's /metrics (lab.failover.METRICS_PORT, on the loopback of the
    controller that runs it), each sample as ``name{label=value,...}`` → value."""
    (node,) = d.started_on("nova-evacuate")
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    if node == d.controllers[0]:  # ctl1 is the host: its loopback is ours
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    else:  # another controller's loopback: read from inside its namespaces
        done = d.pcmk.run_in_controller(node, [
            sys.executable, "-c", "import sys, urllib.request; sys.stdout.write(urllib.request"
            ".urlopen(sys.argv[1], timeout=10).read().decode())", url], check=True)
        text = done.stdout
    return sample_values(text)


def expect_metrics_of(d, before: dict[str, float], events: list, timeout: float = 60) -> None:
    """The worker's metrics moved from ``before`` by what the timeline's ``events`` (one
    host's recovery, as expect_recovery returned them) say happened. The worker reads the
    timeline at each scan (every 10 s at most), so the metrics are waited for."""
    names = [e["event"] for e in events]

    def delta(values: dict[str, float], key: str) -> float:
        return values.get(key, 0.0) - before.get(key, 0.0)

    def caught_up() -> dict[str, float] | None:
        values = scrape_metrics(d)
        return values if delta(values, "openstack_ha_recoveries_total{outcome=done}") >= 1 \
            else None

    after = workload.wait_for(caught_up, timeout, "the worker's metrics counting the recovery", 2)
    assert delta(after, "openstack_ha_recoveries_total{outcome=done}") \
        == names.count("evacuation_done") == 1
    assert delta(after, "openstack_ha_recoveries_total{outcome=failed}") == 0
    assert delta(after, "openstack_ha_instances_total{result=evacuated}") \
        == names.count("instance_done")
    assert delta(after, "openstack_ha_instances_total{result=failed}") == 0
    # fence_nova's own process wrote these: the worker counts them from the timeline
    confirmed = sum(v for k, v in after.items() if k.startswith(
        "openstack_ha_fences_total{outcome=confirmed,")) - sum(v for k, v in before.items(
        ) if k.startswith("openstack_ha_fences_total{outcome=confirmed,"))
    assert confirmed == names.count("power_off_confirmed") >= 1
    for histogram in ("fencing", "evacuation", "mttr"):
        assert delta(after, f"openstack_ha_{histogram}_seconds_count") == 1, histogram
    # the failure's time is known (the lab marked it): detection observed too
    assert delta(after, "openstack_ha_detection_seconds_count") == 1
    t0 = events[0]["ts"]
    done_at = next(e["ts"] for e in events if e["event"] == "evacuation_done")
    assert 0 < delta(after, "openstack_ha_mttr_seconds_sum") <= done_at - t0 + 0.01
    # (its value depends on the session's earlier scenarios: a refused fence holds it a while)
    assert "openstack_ha_brake_engaged" in after
    assert after["openstack_ha_worker_last_scan_timestamp_seconds"] > time.time() - 60


def test_pacemaker_remoted_sigkill(healthy):
    ids = boot(healthy, VICTIM, 6, "remoted")
    metrics_before = scrape_metrics(healthy)
    t0 = healthy.mark("failure_injected", VICTIM, how="SIGKILL pacemaker-remoted")
    healthy.kill_remoted(VICTIM)
    events = expect_recovery(healthy, VICTIM, ids, t0)
    assert any(e["event"] in timeline.DETECTION for e in events), "the alert agent saw nothing"
    expect_metrics_of(healthy, metrics_before, events)


def test_a_redfish_host_fails_over_and_returns_through_redfish(healthy):
    """compute3's fence device has power_driver=redfish (scripts/configure-cluster.sh with
    BMC_DRIVER_compute3=redfish): its BMC's Redfish face powers it off (ForceOff, then Off
    polled) and, once its evacuation is done, on again."""
    host = "compute3"
    assert healthy.lab.hosts()[host]["power_driver"] == "redfish"
    log = healthy.lab.bmc.state_dir / "hosts" / host / "redfish.log"
    seen = len(log.read_text()) if log.exists() else 0
    ids = boot(healthy, host, 6, "redfish")
    t0 = healthy.mark("failure_injected", host, how="SIGKILL pacemaker-remoted")
    healthy.kill_remoted(host)
    expect_recovery(healthy, host, ids, t0)
    workload.wait_for(lambda: host in healthy.started_on("liveness"), 180,
                      f"{host} serving again", 1)
    resets = [line for line in log.read_text()[seen:].splitlines()
              if "ComputerSystem.Reset" in line]
    # one ForceOff (fence), one On (unfence); each answered 204 after the power changed
    assert len(resets) >= 2 and all(" 204" in line for line in resets), resets
    assert healthy.lab.bmc.power_state(host) is True


def test_link_cut(healthy):
    ids = boot(healthy, VICTIM, 6, "link")
    t0 = healthy.mark("failure_injected", VICTIM, how="link down")
    healthy.cut_link(VICTIM)
    expect_recovery(healthy, VICTIM, ids, t0)


def test_node_hung(healthy):
    ids = boot(healthy, VICTIM, 6, "hung")
    t0 = healthy.mark("failure_injected", VICTIM, how="SIGSTOP every process of the node")
    healthy.hang(VICTIM)
    expect_recovery(healthy, VICTIM, ids, t0)


def test_nova_compute_dies_and_cannot_restart(healthy):
    ids = boot(healthy, VICTIM, 6, "nova-dies")
    t0 = healthy.mark("failure_injected", VICTIM, how="SIGKILL nova-compute")
    healthy.lab.openstack.kill_compute(VICTIM)
    events = expect_recovery(healthy, VICTIM, ids, t0)
    detected = [e for e in events if e["event"] == "detected"]
    assert any(e.get("rsc", "").startswith("liveness") for e in detected), detected


def test_another_critical_check_fails(healthy):
    ids = boot(healthy, VICTIM, 6, "check")
    t0 = healthy.mark("failure_injected", VICTIM, how="critical cmd: check fails")
    healthy.break_check(VICTIM)
    expect_recovery(healthy, VICTIM, ids, t0)
    # nova-compute itself was fine until the BMC cut the power


def test_a_node_that_pauses_for_a_second_is_not_fenced(healthy):
    """The other side of fast detection: a node that stops for a second (a hypervisor under
    memory pressure, a live snapshot) and goes on is not a failure. Five one-second freezes
    over ten seconds span two of the connection's monitors (every 5 s) and one of
    ComputeLiveness's (every 10 s)."""
    ids = boot(healthy, VICTIM, 2, "paused")
    t0 = healthy.mark("failure_injected", VICTIM, how="SIGSTOP every process of the node"
                      " for 1 s, five times, 1 s apart")
    for _ in range(5):
        healthy.hang(VICTIM)
        time.sleep(1)
        healthy.unhang(VICTIM)
        time.sleep(1)
    time.sleep(20)  # the monitors that ran during a freeze have reported by now
    names = [e["event"] for e in healthy.events(t0, VICTIM)]
    assert not {"detected", "node_lost", "fence_start"} & set(names), names
    assert healthy.lab.bmc.power_state(VICTIM) is True
    assert VICTIM in healthy.started_on("liveness")
    assert all(s.compute_host == VICTIM and s.status == "ACTIVE"
               for s in servers(healthy, ids).values())


def test_bmc_that_fails_to_power_off_means_no_evacuation(healthy):
    ids = boot(healthy, VICTIM, 4, "stuck")
    healthy.lab.bmc.set_fault(VICTIM, "stuck-on")
    t0 = healthy.mark("failure_injected", VICTIM, how="SIGKILL pacemaker-remoted, BMC stuck on")
    healthy.kill_remoted(VICTIM)

    def refused():
        return [e for e in healthy.events(t0, VICTIM) if e["event"] == "fence_failed"]

    failures = workload.wait_for(refused, 120, "fence_nova's refusal", 1)
    assert "power-off not confirmed" in failures[0]["reason"]
    time.sleep(10)  # Pacemaker retries; every attempt must fail the same way
    assert not healthy.fenced(VICTIM, t0)
    assert healthy.ledger(VICTIM) is None
    svc = healthy.service(VICTIM)
    assert not svc.is_forced_down and svc.status == "enabled"
    assert not migrations(healthy, VICTIM)
    assert all(s.compute_host == VICTIM for s in servers(healthy, ids).values())
    names = {e["event"] for e in healthy.events(t0, VICTIM)}
    assert not names & {"power_off_confirmed", "forced_down", "evacuation_requested"}


def test_two_nodes_fail_one_after_the_other(healthy):
    first = boot(healthy, "compute1", 4, "first")
    second = boot(healthy, "compute2", 4, "second")
    t0 = healthy.mark("failure_injected", "compute1", how="SIGKILL pacemaker-remoted")
    healthy.kill_remoted("compute1")
    expect_recovery(healthy, "compute1", first, t0)
    # compute1 is powered on again once its evacuation is done; a second node failing after
    # it is back is one of three down, under the documented brake (50 %)
    workload.wait_for(lambda: "compute1" in healthy.started_on("liveness"), 180,
                      "compute1 serving again", 1)
    t1 = healthy.mark("failure_injected", "compute2", how="SIGKILL pacemaker-remoted")
    healthy.kill_remoted("compute2")
    expect_recovery(healthy, "compute2", second, t1)
    now = servers(healthy, first + second).values()
    assert all(s.status == "ACTIVE" and s.compute_host != "compute2" for s in now)


def test_a_node_failing_while_another_returns_is_fenced_and_evacuated(healthy):
    """compute1 is fenced, evacuated and powered on, but not back yet (its link is down, as
    a host still booting is unreachable); compute2 fails meanwhile. compute1's absence is
    this suite's doing (it is returning), so the brake sees one failure of three, not two:
    compute2 is fenced at its first attempt and evacuated, and compute1 rejoins once it can.
    Counted as down, compute1 would have had compute2's fence refused until Pacemaker gave
    up asking (stonith-max-attempts), leaving compute2's servers down."""
    first = boot(healthy, "compute1", 4, "first")
    second = boot(healthy, "compute2", 4, "second")
    t0 = healthy.mark("failure_injected", "compute1",
                      how="link down, then SIGKILL pacemaker-remoted")
    healthy.cut_link("compute1")
    healthy.kill_remoted("compute1")
    expect_recovery(healthy, "compute1", first, t0)
    workload.wait_for(lambda: healthy.lab.bmc.power_state("compute1"), 60,
                      "compute1 powered on", 0.5)
    assert "compute1" not in healthy.started_on("liveness")  # returning, not back
    t1 = healthy.mark("failure_injected", "compute2", how="SIGKILL pacemaker-remoted")
    healthy.kill_remoted("compute2")
    events = expect_recovery(healthy, "compute2", second, t1)
    refused = [e for e in events if e["event"] == "fence_failed"]
    assert not refused, refused
    fenced_at = next(e["ts"] for e in events if e["event"] == "power_off_confirmed")
    print(f"compute2 powered off {fenced_at - t1:.1f} s after its failure")
    healthy.restore_link("compute1")
    workload.wait_for(lambda: "compute1" in healthy.started_on("liveness"), 180,
                      "compute1 serving again", 1)
    now = servers(healthy, first + second).values()
    assert all(s.status == "ACTIVE" and s.compute_host != "compute2" for s in now)


def test_every_compute_failing_at_once_fences_nothing(healthy):
    ids = boot(healthy, VICTIM, 3, "all")
    t0 = healthy.mark("failure_injected", VICTIM, how="SIGKILL pacemaker-remoted everywhere")
    for host in healthy.hosts:
        healthy.kill_remoted(host)

    def refusals():
        return [e for e in healthy.events(t0) if e["event"] == "fence_failed" and "reason" in e]

    # Pacemaker fences one node at a time and retries the first: fence_nova refuses each time
    found = workload.wait_for(refusals, 120, "fence_nova refusing to fence", 1)
    assert all("3 of 3 compute nodes look down" in e["reason"] for e in found)
    time.sleep(15)
    assert all("not acting automatically" in e["reason"] for e in refusals())
    for host in healthy.hosts:
        assert not healthy.fenced(host, t0), host
        assert healthy.lab.bmc.power_state(host) is True, host
        assert healthy.ledger(host) is None, host
    assert not migrations(healthy, VICTIM)
    assert all(s.compute_host == VICTIM for s in servers(healthy, ids).values())
