"""Consul as a second health channel (fence_nova consul_config), on the lab's serf pools.

The lab runs a real serf agent per node per network (management and storage) and Consul's
HTTP API in front of the controller's agents (lab/consul.py; Consul itself cannot be
installed here). fence_nova reads both networks before it touches the power:

- a node that lost only its management network (its storage link up, seen alive there) is
  not fenced: every attempt is refused with the per-network view, nothing is powered off,
  forced down or moved; once the link is back an operator's ``pcs stonith confirm`` (what
  ends a refusal before partition_hold: Pacemaker keeps a remote node unclean until a fence
  succeeds, see fence_compute/partition_hold.py) brings it back with its servers;
- a link that flaps every second makes no mixed view decide anything: no fence at all;
- with Consul's API unreachable a crash is fenced as without Consul;
- a hung node (every process SIGSTOPped, its serf agents too), or one with every link cut,
  is failed on every network:
  the NovaEvacuate worker's watcher fails its cluster connection at once, Pacemaker fences
  it (fence_nova's view, failed everywhere, on the fence's first line) and it is evacuated.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from test_failover import boot, expect_recovery, migrations, servers

from lab import workload
from lab.consul import POOLS

pytestmark = [pytest.mark.cluster, pytest.mark.lab,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

VICTIM = "compute1"
SERVERS = 6
HOLD = 300  # the documented default: the test ends the refusal by hand, as an operator does


@pytest.fixture(scope="module")
def consul_fencing(deployment):
    if not deployment.lab.consul.running():
        pytest.skip("the e2e lab runs Consul only with one controller")
    deployment.enable_consul(HOLD)
    yield
    deployment.disable_consul()


@pytest.fixture
def with_consul(consul_fencing, healthy):
    healthy.lab.consul.wait_for_nodes(healthy.hosts)
    return healthy


def fence_events(d, since: float) -> list[dict]:
    return [e for e in d.events(since, VICTIM)
            if e["event"] in ("fence_start", "fence_failed", "power_off_confirmed",
                              "forced_down", "evacuation_requested")
            and e.get("by") != "pacemaker"]


def test_a_node_that_lost_only_its_management_network_is_not_fenced(with_consul):
    d = with_consul
    ids = boot(d, VICTIM, SERVERS, "mgmt")

    # Flapping: the management link down for a second, up for a second. Neither Pacemaker's
    # connection (its monitor's timeout is 5 s) nor gossip (a suspect that comes back
    # refutes) loses the node: nothing is fenced, nothing refused, on a mixed window.
    flapping = d.mark("failure_injected", VICTIM, how="management link flapping")
    for _ in range(4):
        d.cut_link(VICTIM)
        time.sleep(1)
        d.restore_link(VICTIM)
        time.sleep(1)
    time.sleep(6)
    assert fence_events(d, flapping) == []
    assert d.serving()

    cut = d.mark("failure_injected", VICTIM, how="management link cut")
    d.cut_link(VICTIM)

    def refused() -> list[dict]:
        return [e for e in d.events(cut, VICTIM) if e["event"] == "fence_failed"
                and e.get("reason", "").startswith("partition refused")]

    (first, *_) = workload.wait_for(refused, 120, f"a refused fence of {VICTIM}", 1)
    assert first["reason"].startswith("partition refused: management=failed storage=alive:"
                                      " only management is lost"), first["reason"]
    time.sleep(6)  # Pacemaker asks again meanwhile (an attempt lasts 5 s): each one refused
    assert d.lab.bmc.power_state(VICTIM), "powered off"
    service = d.service(VICTIM)
    assert not service.is_forced_down and service.status == "enabled"
    assert d.ledger(VICTIM) is None
    steps = {e["event"] for e in fence_events(d, cut)}
    assert steps <= {"fence_start", "fence_failed"}, steps
    assert all(s.compute_host == VICTIM and s.status == "ACTIVE"
               for s in servers(d, ids).values())

    # The link is back; the operator sees the host healthy (Consul too, once gossip has it
    # again) and ends the refusal. Meanwhile every attempt is still refused: nothing seen
    # since says the host failed.
    d.restore_link(VICTIM)
    d.lab.consul.wait_for_nodes([VICTIM], timeout=90)
    subprocess.run(["stonith_admin", "--confirm", VICTIM], check=True, timeout=60,
                   capture_output=True)

    def back() -> bool:
        service = d.service(VICTIM)
        return (service.state == "up" and service.status == "enabled"
                and VICTIM in d.started_on("liveness"))

    workload.wait_for(back, 120, f"{VICTIM} serving again", 2)
    assert d.lab.bmc.power_state(VICTIM)
    assert {e["event"] for e in fence_events(d, cut)} <= {"fence_start", "fence_failed"}
    assert migrations(d, VICTIM) == []
    assert all(s.compute_host == VICTIM and s.status == "ACTIVE"
               for s in servers(d, ids).values())
    # its unfencing (after the confirmation) ended the episode: a next partition is new
    unfenced = [e for e in d.events(cut, VICTIM) if e["event"] == "unfenced"]
    assert unfenced, "the confirmed node was not unfenced"


def test_with_consul_unreachable_a_crash_is_fenced_as_without_it(with_consul):
    """Both faces stopped (the agents' HTTP API gone, gossip going on): every view is
    unknown, which neither refuses a fence nor makes one; fence_nova does not wait for it."""
    d = with_consul
    ids = boot(d, VICTIM, SERVERS, "noconsul")
    for network in POOLS:
        d.lab.consul.stop_face(network)
    t0 = d.mark("failure_injected", VICTIM, how="crash, Consul unreachable")
    d.crash(VICTIM)
    events = expect_recovery(d, VICTIM, ids, t0)
    start = next(e for e in events if e["event"] == "fence_start")
    assert start.get("consul", "").startswith(
        "management=unknown storage=unknown: no network gives a view"), start
    # heal() starts the faces again


def test_every_pool_lists_every_node_alive_when_healthy(with_consul):
    """The faces answer from live gossip: what the tests above read."""
    from openstack_ha.consul import ConsulClient, NetworkView, read_node

    for network in POOLS:
        client = ConsulClient(network.url, timeout=2)
        assert {host: read_node(client, host) for host in with_consul.hosts} == {
            host: NetworkView.ALIVE for host in with_consul.hosts}, network.name


@pytest.mark.parametrize("failure", ["hang", "every link cut"])
def test_the_worker_reports_a_node_failed_everywhere_before_a_slow_monitor(with_consul,
                                                                            failure):
    """The watcher ([consul] in the engine's configuration): a hung node, or one whose links
    are all cut, failed on every network for three readings, has its connection failed at
    once, and Pacemaker fences it.

    The lab's connection monitor (5 s interval, 5 s timeout) already notices a hang about
    as soon as serf's LAN timings do; this test gives the victim's connection Pacemaker's
    default monitor timeout (20 s), where the watcher is what notices first."""
    d = with_consul
    d.reconfigure_engine(consul=True)
    d.pcmk.pcs("resource", "update", VICTIM, "op", "monitor", "interval=5s", "timeout=20s")
    try:
        ids = boot(d, VICTIM, SERVERS, "watched")
        t0 = d.mark("failure_injected", VICTIM, how=f"{failure}, Consul watched")
        if failure == "hang":
            d.hang(VICTIM)  # every process SIGSTOPped, its serf agents too
        else:
            d.cut_link(VICTIM)
            d.cut_storage_link(VICTIM)
        events = expect_recovery(d, VICTIM, ids, t0, timeout=300)
        names = [e["event"] for e in events]
        assert "consul_down" in names, names
        assert names.index("consul_down") < names.index("fence_start"), names
        down = next(e for e in events if e["event"] == "consul_down")
        assert down["views"] == "management=failed storage=failed"
        # fence_nova read Consul too: what it saw is on the fence's first line
        start = next(e for e in events if e["event"] == "fence_start")
        assert start.get("consul", "").startswith(
            "management=failed storage=failed: failed on every network"), start
        print(f"{failure}, watched: failure -> consul_down {down['ts'] - t0:.1f} s,"
              f" -> fence_start {start['ts'] - t0:.1f} s")
    finally:
        d.pcmk.pcs("resource", "update", VICTIM, "op", "monitor", "interval=5s", "timeout=5s")
        d.heal()  # the victim back first: the worker is idle, its restart quick
        d.reconfigure_engine()
