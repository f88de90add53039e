"""A compute host crashes, the whole host at once, and its servers come back by themselves:
the scenario that runs against any deployment of the reference configuration
(``OPENSTACK_HA_TARGET``, tests/target.py), the lab's included.

In the lab the crash is a power cut its BMC does not see (every process of the node dies at
once); on a target it is its hosts file's ``crash`` command. Either way Pacemaker loses the
node, fences it through fence_nova (the BMC powers it off and says so), the NovaEvacuate
worker rebuilds its servers elsewhere, and only then is the host unfenced, powered on, and
back in Nova, taking servers again. (It replaces test_failover's check of the same
return after a killed pacemaker-remoted, which flaked once after a storm of refused fences:
the return is also proven in test_recovery_protocol.py.)
"""

from __future__ import annotations

import pytest

from lab import workload

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.target,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

SERVERS = 6
# in the order a recovery writes them (openstack_ha/timeline.py)
RECOVERY = ("fence_start", "power_off_confirmed", "forced_down", "evacuation_requested",
            "claimed", "evacuation_done")


def test_a_crashed_host_is_fenced_evacuated_and_returns_after_its_evacuation(healthy):
    d = healthy
    victim = d.hosts[0]
    conn = d.connection(compute_api_version=workload.MICROVERSION)
    ids = workload.boot(conn, victim, SERVERS, prefix="crash",
                        image_id=workload.image(conn, "plain").id,
                        flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, ids)

    t0 = d.mark("failure_injected", victim, how="crash")
    d.crash(victim)

    def names() -> list[str]:
        return [e["event"] for e in d.events(t0, victim)]

    workload.wait_for(lambda: "evacuation_done" in names(), 300, f"{victim} evacuated", 1)
    assert d.fenced(victim, t0), f"{victim} was not fenced by Pacemaker"
    for server in workload.servers(conn, ids).values():
        assert server.compute_host != victim and server.status == "ACTIVE", server.name
    seen = names()
    for step in RECOVERY:
        assert step in seen, f"no {step} in the timeline: {seen}"
    firsts = [seen.index(step) for step in RECOVERY]
    assert firsts == sorted(firsts), seen  # power-off confirmed before Nova was touched
    assert seen.count("instance_done") == SERVERS

    # Back only after its evacuation: nobody powers it on by hand; the worker asks Pacemaker
    # to unfence it once the evacuation is done (powered on), then it is in Nova again.
    def back() -> bool:
        service = d.service(victim)
        return (service.state == "up" and service.status == "enabled"
                and not service.is_forced_down and victim in d.started_on("liveness"))

    workload.wait_for(back, 300, f"{victim} serving again", 2)
    seen = names()
    fenced_at = seen.index("fence_start")
    unfenced = [i for i, name in enumerate(seen) if name == "unfenced" and i > fenced_at]
    assert unfenced and min(unfenced) > seen.index("evacuation_done"), seen
    assert d.ledger(victim) is None
    # workload is allowed back: servers land on the returned host
    again = workload.boot(conn, victim, 2, prefix="again",
                          image_id=workload.image(conn, "plain").id,
                          flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, again)
    assert all(s.compute_host == victim for s in workload.servers(conn, again).values())
