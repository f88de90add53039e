"""Instance recovery against the lab's real Nova and Glance: the NovaEvacuate worker's
recovery scan (nova_evacuate/instance_recovery.py), called directly on a Worker with a real
Nova adapter, never through Pacemaker.

A server "crashes" as a guest does on a real host: ``Lab.crash_guest`` makes the lab's virt
driver (lab/nova_guest_driver.py) report the guest shut down from then on, behind Nova's
back, and Nova notices it by itself: its power-state sync (``sync_power_state_interval`` on
the lab's computes) finds the guest off while the server is ACTIVE and stops the server
with its own admin context, which is what the recovery tells apart from a user's stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import workload
from nova_evacuate import instance_recovery as ir
from nova_evacuate.engine import Settings
from nova_evacuate.nova import Nova, connect
from nova_evacuate.worker import Worker
from openstack_ha import timeline

pytestmark = [pytest.mark.lab, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

HOST = "compute1"
KEY = "ha:recover"
# From the crash to SHUTOFF: the lab computes' sync_power_state_interval, the stop, slack.
NOTICED_WITHIN = 90.0


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The timeline the worker writes, in the test's directory (never the machine's)."""
    path = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(path))
    return path


@pytest.fixture
def plain(conn):
    return workload.image(conn, "plain"), workload.flavor(conn, "lab.tiny")


@pytest.fixture
def marked(conn) -> Iterator[tuple]:
    """An image and a flavor carrying the marker; removed afterwards."""
    image = workload.image(conn, "recover-tagged-image", **{KEY: "true"})
    flavor = workload.flavor(conn, "recover.tagged", extra_specs={KEY: "true"})
    yield image, flavor
    conn.image.delete_image(image, ignore_missing=True)
    conn.compute.delete_flavor(flavor, ignore_missing=True)


def worker(lab, limit: int = 3) -> Worker:
    return Worker(lambda: connect(cloud="lab", clouds_yaml=lab.clouds_yaml), Settings(),
                  recovery=ir.Settings(KEY, limit, 5.0))


def boot(conn, prefix: str, image, flavor, metadata: dict[str, str] | None = None) -> str:
    (sid,) = workload.boot(conn, HOST, 1, prefix=prefix, image_id=image.id,
                           flavor_id=flavor.id, metadata=metadata)
    workload.wait_active(conn, [sid], timeout=120)
    return sid


def status(conn, sid: str) -> str:
    return conn.compute.get_server(sid).status


def crash(lab, conn, nova: Nova, *ids: str) -> None:
    """The guests of ``ids`` die behind Nova's back; return once Nova's own power-state
    sync has stopped their servers, checking that it did so as the recovery expects."""
    for sid in ids:
        lab.crash_guest(HOST, sid)
    workload.wait_for(lambda: all(s.status == "SHUTOFF"
                                  for s in workload.servers(conn, ids).values()),
                      NOTICED_WITHIN, f"{len(ids)} server(s) SHUTOFF after their guest crashed")
    for sid in ids:
        newest = nova.instance_actions(sid, 1)[0]
        # What ComputeManager._sync_instance_power_state leaves: a stop by no user or project
        assert (newest.action, newest.user_id, newest.project_id) == ("stop", None, None), \
            newest


def wait_active(conn, sid: str) -> None:
    workload.wait_for(lambda: status(conn, sid) == "ACTIVE", 60, f"{sid} ACTIVE again")


def verdicts(decisions: list[ir.Decision], *ids: str) -> dict[str, ir.Verdict]:
    return {d.server_id: d.verdict for d in decisions if d.server_id in ids}


def recorded_events(path: Path) -> list[timeline.Event]:
    return timeline.read(str(path))[0] if path.exists() else []


def test_crashed_opted_in_servers_are_restarted_and_the_timeline_says_so(
        lab, conn, nova, recorded, plain, marked) -> None:
    image, flavor = plain
    marked_image, marked_flavor = marked
    by_metadata = boot(conn, "by-metadata", image, flavor, {KEY: "true"})
    by_flavor = boot(conn, "by-flavor", image, marked_flavor)
    by_image = boot(conn, "by-image", marked_image, flavor)
    ids = (by_metadata, by_flavor, by_image)
    crash(lab, conn, nova, *ids)

    w = worker(lab)
    assert verdicts(w.recovery_scan(), *ids) == dict.fromkeys(ids, ir.Verdict.START)
    for sid in ids:
        wait_active(conn, sid)
        newest = nova.instance_actions(sid, 1)[0]
        assert newest.action == "start" and newest.user_id  # ours, through the API
    events = [e for e in recorded_events(recorded) if e.event == "instance_restarted"]
    assert {e.data["server"] for e in events} == set(ids)
    assert {e.host for e in events} == {HOST}
    assert all(e.data["restarts_in_hour"] == 1 and "stopped by itself" in e.data["why"]
               for e in events)
    # running again, nothing more to do
    assert verdicts(w.recovery_scan(), *ids) == {}


def test_a_user_stopped_server_is_left_alone(lab, conn, nova, recorded, plain) -> None:
    image, flavor = plain
    sid = boot(conn, "user-stopped", image, flavor, {KEY: "true"})
    workload.stop(conn, [sid])

    w = worker(lab)
    (decision,) = [d for d in w.recovery_scan() if d.server_id == sid]
    assert decision.verdict is ir.Verdict.LEAVE
    assert "stopped through the API" in decision.why
    assert verdicts(w.recovery_scan(), sid) == {}  # decided: its actions are not read again
    assert status(conn, sid) == "SHUTOFF"
    assert recorded_events(recorded) == []


def test_a_crashed_server_not_opted_in_is_left_alone(lab, conn, nova, recorded,
                                                     plain) -> None:
    image, flavor = plain
    sid = boot(conn, "not-opted-in", image, flavor)
    crash(lab, conn, nova, sid)

    w = worker(lab)
    assert verdicts(w.recovery_scan(), sid) == {sid: ir.Verdict.NOT_OPTED_IN}
    assert status(conn, sid) == "SHUTOFF"
    assert nova.instance_actions(sid, 1)[0].user_id is None  # nobody started it
    assert recorded_events(recorded) == []


def test_after_the_restart_limit_the_server_stays_shutoff_and_the_timeline_says_so(
        lab, conn, nova, recorded, plain) -> None:
    image, flavor = plain
    sid = boot(conn, "crash-loop", image, flavor, {KEY: "true"})
    w = worker(lab, limit=2)
    for _ in range(2):
        crash(lab, conn, nova, sid)
        assert verdicts(w.recovery_scan(), sid) == {sid: ir.Verdict.START}
        wait_active(conn, sid)

    crash(lab, conn, nova, sid)
    assert verdicts(w.recovery_scan(), sid) == {sid: ir.Verdict.GIVE_UP}
    assert verdicts(w.recovery_scan(), sid) == {}  # given up: not read again
    assert status(conn, sid) == "SHUTOFF"
    assert nova.instance_actions(sid, 1)[0].user_id is None  # Nova's stop is the last word
    assert [e.event for e in recorded_events(recorded)] == [
        "instance_restarted", "instance_restarted", "instance_recovery_gave_up"]
    gave_up = recorded_events(recorded)[-1]
    assert gave_up.data["server"] == sid and gave_up.host == HOST
    assert "max_restarts_per_hour = 2" in gave_up.data["why"]
