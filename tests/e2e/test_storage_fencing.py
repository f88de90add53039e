"""Storage fencing on the lab's real Ceph: the compute nodes are RBD clients (a process per
guest holds its disk ``vms/<uuid>_disk`` through librbd over the node's storage link and writes
a numbered record every half second, lab/rbd_guest.py), and the cluster fences with
scripts/configure-storage-fencing.sh on top of the reference configuration: level 1 powers the
node off and then blocklists its storage address, level 2 blocklists it alone.

What these tests prove is what would cause two copies of a guest writing one disk: after a
fence, no record of the fenced host follows a record of the host that took the guest over, in
the image itself and in each writer's log of acknowledged writes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_failover import RECOVERY_STEPS, boot, expect_recovery, servers

from fence_compute.storage import blocklist_entry
from lab import rbd_guest, workload
from lab.rbd_guest import Record
from nova_evacuate.disks import parse_blocklist

pytestmark = [pytest.mark.cluster, pytest.mark.lab,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

VICTIM = "compute1"
GUEST = Path(rbd_guest.__file__)


@pytest.fixture(scope="module")
def storage_fencing(deployment):
    if not deployment.lab.ceph.running():
        pytest.skip("the session's lab has no Ceph (the controllers' session)")
    deployment.enable_storage_fencing()
    deployment.reconfigure_engine(disk_check=True)
    yield deployment
    deployment.disable_storage_fencing()
    deployment.reconfigure_engine()


@pytest.fixture
def fenced(storage_fencing, healthy):
    return healthy


# ---------------------------------------------------------------------------- reading Ceph


def blocklisted(d) -> set[str]:
    """The blocklist entries Ceph lists (``ip:0/0`` for a whole host)."""
    out = d.lab.ceph.ceph("osd", "blocklist", "ls", "--format", "json").stdout
    return set(parse_blocklist(out))


def host_entry(d, host: str) -> str:
    return blocklist_entry(d.storage_addresses()[host])


def rbd(d, *args: str) -> str:
    ceph = d.lab.ceph
    done = subprocess.run(["rbd", "--conf", str(ceph.conf), "--id", "admin", *args],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def watcher_ips(d, server_id: str) -> set[str]:
    status = json.loads(rbd(d, "status", f"vms/{server_id}_disk", "--format", "json"))
    return {w["address"].rsplit(":", 1)[0] for w in status.get("watchers", [])}


def image_records(d, server_id: str) -> list[Record]:
    """The records in the server's disk, read by Ceph's admin (read-only, no lock), with the
    system's Python: Debian's librados bindings are not in the test's environment."""
    ceph = d.lab.ceph
    done = subprocess.run(
        ["/usr/bin/python3", "-I", str(GUEST), "dump", "--conf", str(ceph.conf), "--id", "admin",
         "--keyring", str(ceph.keyring("admin")), "--pool", "vms", "--image", f"{server_id}_disk"],
        capture_output=True, text=True, timeout=60, check=True)
    return [Record(r["seq"], r["host"], r["t"]) for r in json.loads(done.stdout)]


def acks(d, host: str, server_id: str) -> tuple[list[Record], list[dict]]:
    """HOST's guest's acknowledged writes to the server's disk, and its write errors."""
    path = d.lab.guest_dir(host) / f"{server_id}.{host}.jsonl"
    if not path.exists():
        return [], []
    return rbd_guest.acks_from_log(path.read_text().splitlines())


def wait_writing(d, host: str, ids: list[str], timeout: float = 60) -> None:
    workload.wait_for(lambda: all(len(acks(d, host, i)[0]) >= 2 for i in ids), timeout,
                      f"{host}'s guests writing their disks", 0.5)


def assert_one_writer_at_a_time(d, fenced_host: str, ids: list[str]) -> None:
    """Each server's new host writes its disk, and nothing of FENCED_HOST follows its first
    write: neither in the image (by sequence) nor in the acknowledged writes (by time)."""
    now = servers(d, ids)
    for server_id in ids:
        new_host = now[server_id].compute_host
        wait_writing(d, new_host, [server_id])
        records = image_records(d, server_id)
        assert {r.host for r in records} >= {fenced_host, new_host}, records[-5:]
        assert not rbd_guest.fenced_writes_after_takeover(records, fenced_host, new_host)
        both = acks(d, fenced_host, server_id)[0] + acks(d, new_host, server_id)[0]
        assert not rbd_guest.fenced_writes_after_takeover(both, fenced_host, new_host, by="t")
        assert watcher_ips(d, server_id) == {d.storage_addresses()[new_host]}


# ---------------------------------------------------------------------------- scenarios


def test_crash_with_power_and_storage_fencing(fenced):
    d = fenced
    ids = boot(d, VICTIM, 10, "stor-crash")
    wait_writing(d, VICTIM, ids)
    assert all(watcher_ips(d, i) == {d.storage_addresses()[VICTIM]} for i in ids)
    entry = host_entry(d, VICTIM)
    t0 = d.mark("failure_injected", VICTIM, how="SIGKILL pacemaker-remoted (storage fencing)")
    d.kill_remoted(VICTIM)

    workload.wait_for(lambda: entry in blocklisted(d), 120, f"{entry} blocklisted", 0.5)
    events = expect_recovery(d, VICTIM, ids, t0)
    names = [e["event"] for e in events]
    # power first, then storage, then Nova
    assert (names.index("power_off_confirmed") < names.index("storage_fenced")
            < names.index("forced_down"))
    assert_one_writer_at_a_time(d, VICTIM, ids)

    # unfencing removes the entry, and the host serves again
    workload.wait_for(lambda: entry not in blocklisted(d), 180, f"{entry} unblocked", 1)
    d.wait_serving(180)
    assert "storage_unfenced" in [e["event"] for e in d.events(t0, VICTIM)]


def test_zombie_with_a_silent_bmc_is_fenced_at_its_storage(fenced):
    """Management link cut, BMC silent, storage link up: the node runs on and its guests keep
    writing. Level 1 cannot power it off; level 2 blocklists it; its guests' writes fail; every
    server is rebuilt elsewhere. It comes back only once it has been powered off."""
    d = fenced
    ids = boot(d, VICTIM, 10, "zombie")
    wait_writing(d, VICTIM, ids)
    entry = host_entry(d, VICTIM)
    d.lab.bmc.set_fault(VICTIM, "noreply")
    t0 = d.mark("failure_injected", VICTIM, how="management link down, BMC silent")
    d.cut_link(VICTIM)

    def evacuated():
        return any(e["event"] == "evacuation_done" for e in d.events(t0, VICTIM))

    workload.wait_for(evacuated, 300, f"{VICTIM} evacuated", 1)
    events = d.events(t0, VICTIM)
    names = [e["event"] for e in events]
    failed = [e for e in events if e["event"] == "fence_failed"]
    assert failed and "power-off not confirmed" in failed[0]["reason"], names
    assert names.index("storage_fenced") < names.index("forced_down")
    for step in RECOVERY_STEPS:
        assert step in names, f"no {step} in the timeline: {names}"
    assert entry in blocklisted(d)
    assert d.pcmk.is_powered(VICTIM), "the zombie was meant to run on"
    now = servers(d, ids)
    assert all(s.compute_host != VICTIM and s.status == "ACTIVE" for s in now.values())

    # The zombie's guests ran on until the blocklist, then their writes failed.
    for server_id in ids:
        written, errors = acks(d, VICTIM, server_id)
        assert written and errors, f"{server_id}: the zombie's guest did not fail: {errors}"
    assert_one_writer_at_a_time(d, VICTIM, ids)

    # Its BMC and link come back: it is on and was never powered off, so unfencing keeps its
    # entry; powered off through its BMC, it is unfenced (the entry goes) and serves again.
    d.lab.bmc.set_fault(VICTIM, "none")
    d.restore_link(VICTIM)
    refused = workload.wait_for(
        lambda: [e for e in d.events(t0, VICTIM) if e["event"] == "unfence_refused"
                 and "storage stays fenced" in e.get("reason", "")], 120,
        "unfencing refused while the zombie is on", 1)
    assert "powered off" in refused[-1]["reason"]
    assert entry in blocklisted(d)
    done = d.lab.ipmitool(VICTIM, "chassis", "power", "off")
    assert done.returncode == 0, done.stderr
    workload.wait_for(lambda: entry not in blocklisted(d), 180, f"{entry} unblocked", 1)
    d.wait_serving(180)


def test_the_engine_refuses_servers_whose_disk_the_failed_host_still_holds(fenced):
    """No fence at all (the operator forces the host down and runs nova-evacuate): the
    servers whose guests still write from the host are refused, the others rebuilt."""
    d = fenced
    ids = boot(d, VICTIM, 6, "held")
    wait_writing(d, VICTIM, ids)
    free, held = ids[:3], ids[3:]
    for server_id in free:  # those guests stopped: their disks are free
        subprocess.run(["pkill", "-TERM", "-f", f"image {server_id}_disk"], check=False)
    workload.wait_for(lambda: all(not watcher_ips(d, i) for i in free), 30,
                      "the stopped guests' disks free", 0.5)
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    conn.compute.update_service_forced_down(d.service(VICTIM), VICTIM, "nova-compute", True)
    try:
        done = subprocess.run(
            ["/usr/sbin/nova-evacuate", VICTIM, "--json",
             "--config-file", str(d.dir / "openstack-ha.conf")],
            capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode != 0, done.stdout
        report = json.loads(done.stdout)
        by_id = {t["id"]: t for t in report["instances"]}
        address = d.storage_addresses()[VICTIM]
        for server_id in held:
            assert by_id[server_id]["state"] == "failed", by_id[server_id]
            assert by_id[server_id]["reason"].startswith(f"still held by {VICTIM} ({address}:")
        assert all(by_id[i]["state"] == "done" for i in free), report
        now = servers(d, ids)
        assert all(now[i].compute_host == VICTIM for i in held)
        assert all(now[i].compute_host != VICTIM and now[i].status == "ACTIVE" for i in free)
        assert all(watcher_ips(d, i) == {address} for i in held)  # never opened elsewhere
    finally:
        # As after any evacuation, the host's nova-compute restarts, which completes Nova's
        # evacuation records; the worker then clears the force-down.
        d.lab.openstack.kill_compute(VICTIM)
        d.lab.openstack.start_compute(VICTIM)
