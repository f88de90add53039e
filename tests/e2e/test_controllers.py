"""Three controllers: the evacuation survives the loss of the controller that runs it, and a
partitioned controller does nothing on its own.

The lab's controllers are corosync members, each in its own namespaces (ctl1 is the host,
whose tools the tests use); the reference configuration gives each a fence_labpower device.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_recovery_protocol import (
    SERVERS,
    VICTIM,
    assert_recovered,
    boot,
    evacuation_done,
    serving_again,
    some_done,
)

from lab import workload

pytestmark = [pytest.mark.cluster, pytest.mark.lab,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]


def pcs(d, *args: str) -> None:
    d.pcmk.pcs(*args)


@pytest.fixture
def three(deployment):
    if len(deployment.controllers) < 3:
        pytest.skip("the lab runs one controller (OPENSTACK_HA_E2E_CONTROLLERS=3 runs these)")
    return deployment


@pytest.fixture
def engine_home(three, slow):
    yield slow
    crm_resource("--clear", "--resource", "nova-evacuate")


def crm_resource(*args: str) -> None:
    # not pcs: pcs checks node names against /etc/corosync/corosync.conf, which the lab's
    # controllers (each with its own configuration file) are not in
    subprocess.run(["crm_resource", *args], check=True, capture_output=True, timeout=60)


def move_engine(d, controller: str) -> None:
    """NovaEvacuate on ``controller``: a preference (cleared after the test), so it runs
    elsewhere while that controller is gone."""
    crm_resource("--move", "--resource", "nova-evacuate", "--node", controller)
    workload.wait_for(lambda: d.started_on("nova-evacuate") == {controller}, 120,
                      f"nova-evacuate on {controller}", 1)


def test_the_controller_running_the_evacuation_crashes_mid_way(engine_home):
    d = engine_home
    move_engine(d, "ctl2")
    ids = boot(d, SERVERS, "ctlcrash")
    t0 = d.mark("failure_injected", VICTIM, how="SIGKILL pacemaker-remoted")
    d.kill_remoted(VICTIM)
    workload.wait_for(lambda: some_done(d, t0, 8), 180, "8 servers evacuated", 0.5)
    crashed = d.mark("failure_injected", "ctl2", how="controller crash")
    d.pcmk.power_off_controller("ctl2")

    def taken_over() -> dict | None:
        return next((e for e in d.events(crashed, VICTIM) if e["event"] == "claimed"
                     and not e.get("by", "").startswith("ctl2/")), None)

    # the majority fences ctl2, starts NovaEvacuate on ctl1 or ctl3, and its worker takes
    # the claim over at once: its holder's node left the cluster cleanly (fenced)
    takeover = workload.wait_for(taken_over, 180, "the claim taken over", 0.5)
    print(f"claim taken over {takeover['ts'] - crashed:.1f} s after ctl2 crashed")
    assert d.fenced("ctl2", crashed)
    workload.wait_for(lambda: evacuation_done(d, t0), 240, "evacuation done", 1)
    workload.wait_for(lambda: serving_again(d), 180, f"{VICTIM} serving again", 2)
    assert_recovered(d, ids, t0, also_fenced={"ctl2"})


def worker_on(d, controller: str) -> bool:
    """A NovaEvacuate worker runs in ``controller``'s namespaces."""
    for pid in d.pcmk.controller_pids(controller):
        with contextlib.suppress(OSError):
            if b"nova_evacuate.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
    return False


def quorate(d, controller: str) -> bool | None:
    done = d.pcmk.run_in_controller(controller, ["crm_mon", "-1", "--output-as=xml"])
    if done.returncode != 0:
        return None
    summary = ET.fromstring(done.stdout).find("summary/current_dc")
    return None if summary is None else summary.get("with_quorum") == "true"


def test_a_partitioned_controller_fences_nothing_and_the_majority_carries_on(engine_home):
    d = engine_home
    move_engine(d, "ctl3")
    assert worker_on(d, "ctl3")
    # The majority waits 20 s before fencing ctl3, so the minority's own reaction shows.
    pcs(d, "stonith", "update", "fence-ctl3", "pcmk_delay_base=20s")
    t0 = d.mark("failure_injected", "ctl3", how="partitioned from the other controllers")
    try:
        d.pcmk.partition_controller("ctl3")
        # the minority loses quorum and stops what it ran (no-quorum-policy=stop)
        workload.wait_for(lambda: quorate(d, "ctl3") is False, 60, "ctl3 without quorum", 1)
        workload.wait_for(lambda: not worker_on(d, "ctl3"), 60,
                          "the minority's NovaEvacuate stopped", 1)
        # the majority fences ctl3, then runs NovaEvacuate and serves a compute failure
        workload.wait_for(lambda: d.fenced("ctl3", t0), 120, "ctl3 fenced by the majority", 1)
        workload.wait_for(lambda: len(d.started_on("nova-evacuate") - {"ctl3"}) == 1, 120,
                          "nova-evacuate on the majority", 1)
        ids = boot(d, 6, "partition")
        t1 = d.mark("failure_injected", VICTIM, how="SIGKILL pacemaker-remoted")
        d.kill_remoted(VICTIM)
        workload.wait_for(lambda: evacuation_done(d, t1), 240, "evacuation done", 1)
        workload.wait_for(lambda: serving_again(d), 180, f"{VICTIM} serving again", 2)
        assert_recovered(d, ids, t1)
    finally:
        pcs(d, "stonith", "update", "fence-ctl3", "pcmk_delay_base=0")
        d.pcmk.heal_partition("ctl3")
    # nothing was fenced (powered off) on the minority's initiative; unfencing from ctl3,
    # which every controller asks for itself when it joins, is no fence. The history is
    # the cluster's whole: fences of the session's earlier tests (ctl3 may have been the
    # DC then, legitimately) are left out by their completion time.
    history = subprocess.run(["stonith_admin", "--history", "*", "--verbose"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
    by_minority = [line for line in history.splitlines()
                   if "origin=ctl3" in line and not line.strip().startswith("unfencing")
                   and completed_at(line) >= t0 - 1]
    assert not by_minority, by_minority


def completed_at(history_line: str) -> float:
    """The epoch of a ``stonith_admin --history --verbose`` line's ``completed='... Z'``
    (infinity when it has none: pending, so counted)."""
    found = re.search(r"completed='([0-9-]+ [0-9:]+)Z'", history_line)
    if found is None:
        return math.inf
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=UTC).timestamp()
