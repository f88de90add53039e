"""The recovery timeline (openstack_ha/timeline.py) and the alert agent's reading of
Pacemaker's events (agents/timeline_alert.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agents import timeline_alert
from openstack_ha import timeline

REPO = Path(__file__).resolve().parents[2]

T = 1796000000.0


def events(*pairs: tuple[float, str], host: str = "compute1") -> list[dict]:
    return [{"ts": T + dt, "event": name, "host": host} for dt, name in pairs]


RECOVERY = events((0, "failure_injected"), (4.5, "detected"), (4.6, "fence_start"),
                  (5.5, "power_off_confirmed"), (5.8, "forced_down"),
                  (5.9, "evacuation_requested"), (6.2, "claimed"), (9.0, "instance_done"),
                  (12.4, "instance_done"), (12.6, "evacuation_done"), (60, "unfenced"),
                  (75, "host_back"))


def test_mttr_and_its_parts():
    (recovery,) = timeline.recoveries(RECOVERY)
    assert recovery.parts() == {"detection": 4.5, "fencing": 1.4, "evacuation": 6.5,
                                "mttr": 12.4}


def test_a_new_failure_after_the_host_came_back_is_a_new_recovery():
    again = events((100, "detected"), (101, "fence_start"))
    found = timeline.recoveries(RECOVERY + again + events((0, "detected"), host="compute2"))
    assert [(r.host, len(r.events)) for r in found] == [("compute1", 12), ("compute2", 1),
                                                        ("compute1", 2)]


def test_missing_steps_give_no_figure_instead_of_a_wrong_one():
    (recovery,) = timeline.recoveries(events((0, "fence_start"), (1, "fence_failed")))
    assert recovery.parts()["mttr"] is None and recovery.parts()["evacuation"] is None


def test_record_appends_lines_and_the_renderer_reads_them(tmp_path, monkeypatch):
    path = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(path))
    timeline.record("detected", "compute1", at=T, rsc="compute1")
    timeline.record("evacuation_requested", "compute1", at=T + 2)
    path.open("a").write("not json\n")
    timeline.record("instance_done", "compute1", at=T + 5, name="vm-1", dest="compute2")
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()[:2]] == [
        "detected", "evacuation_requested"]
    done = subprocess.run([sys.executable, "-m", "openstack_ha.timeline", str(path)],
                          capture_output=True, text=True, check=True)
    assert "MTTR 5.0s = detection 0.0s + fencing 2.0s + evacuation 3.0s" in done.stdout
    assert "+   5.00s  instance_done" in done.stdout


def test_recording_off_or_impossible_never_raises(tmp_path, monkeypatch):
    monkeypatch.setenv(timeline.ENV, "")
    timeline.record("detected", "compute1")
    monkeypatch.setenv(timeline.ENV, str(tmp_path / "file" / "below-a-file"))
    (tmp_path / "file").write_text("")
    timeline.record("detected", "compute1")


def alert(**env: str) -> tuple | None:
    return timeline_alert.event({f"CRM_alert_{k}": v for k, v in env.items()})


def test_alert_a_failed_monitor_on_a_node_is_detection(monkeypatch):
    monkeypatch.setattr(timeline_alert, "_is_remote_connection", lambda rsc: False)
    assert alert(kind="resource", node="compute1", rsc="liveness", task="monitor", rc="1",
                 target_rc="0", interval="10000", desc="error") == (
        "detected", "compute1", {"rsc": "liveness", "task": "monitor", "rc": "1",
                                 "desc": "error"})


def test_alert_a_failed_remote_connection_names_the_remote_node(monkeypatch):
    monkeypatch.setattr(timeline_alert, "_is_remote_connection", lambda rsc: rsc == "compute2")
    found = alert(kind="resource", node="ctl1", rsc="compute2", task="monitor", rc="1",
                  target_rc="0", interval="5000")
    assert found is not None and found[:2] == ("detected", "compute2")


def test_alert_ignores_successes_probes_and_stops():
    assert alert(kind="resource", node="c1", rsc="x", task="monitor", rc="0", target_rc="0") is None
    assert alert(kind="resource", node="c1", rsc="x", task="monitor", rc="7", target_rc="0",
                 interval="0") is None
    assert alert(kind="resource", node="c1", rsc="x", task="monitor", rc="0", target_rc="7",
                 interval="0") is None
    assert alert(kind="resource", node="c1", rsc="x", task="stop", rc="1", target_rc="0") is None
    assert alert(kind="attribute", node="c1") is None


def test_alert_fencing_results():
    off = "Operation off of compute1 by ctl1 for pacemaker-controld.1@ctl1: "
    assert alert(kind="fencing", node="compute1", rc="0", desc=off + "OK")[0] == "fenced"
    assert alert(kind="fencing", node="compute1", rc="1", desc=off + "Error")[0] == "fence_failed"
    unfence = "Operation on of ctl1 by the cluster for pacemaker-controld.1@ctl1: No fence device"
    assert alert(kind="fencing", node="ctl1", rc="1", desc=unfence) is None
    assert alert(kind="node", node="ctl2", desc="lost") == ("node_lost", "ctl2", {})


# ---------------------------------------------------------------------------- repeated lines


def test_a_repeated_line_is_admitted_once_a_minute_with_the_count_held_back(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv(timeline.ENV, str(tmp_path / "timeline.jsonl"))
    assert timeline.admit_repeated("brake", "compute1", now=1000.0) == 0
    assert timeline.admit_repeated("brake", "compute1", now=1010.0) is None
    assert timeline.admit_repeated("brake", "compute1", now=1059.0) is None
    assert timeline.admit_repeated("brake", "compute2", now=1059.0) == 0  # a host of its own
    assert timeline.admit_repeated("brake", "compute1", now=1060.0) == 2
    assert timeline.admit_repeated("brake", "compute1", now=1061.0) is None
    # a clock set back does not hold the lines for ever
    assert timeline.admit_repeated("brake", "compute1", now=500.0) == 1
    state = tmp_path / ".held" / "brake@compute1"
    assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_the_count_is_shared_by_processes(tmp_path):
    """Each fencing attempt is a process of its own: the state lives in the file."""
    code = ("import sys; from openstack_ha import timeline; "
            "print(timeline.admit_repeated('brake', 'compute1', now=float(sys.argv[1])))")
    env = {"OPENSTACK_HA_TIMELINE": str(tmp_path / "timeline.jsonl"), "PYTHONPATH": str(REPO)}
    seen = [subprocess.run([sys.executable, "-c", code, str(now)], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
            for now in (1000, 1030, 1070)]
    assert seen == ["0", "None", "1"]


def test_without_a_usable_state_file_every_line_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(timeline.ENV, "")  # recording off: nothing to limit
    assert timeline.admit_repeated("brake", "compute1", now=1.0) == 0
    monkeypatch.setenv(timeline.ENV, str(tmp_path / "timeline.jsonl"))
    for name in ("../etc", "a/b", "", ".hidden", "x" * 300):
        assert timeline.admit_repeated("brake", name, now=1.0) == 0
        assert timeline.admit_repeated("brake", name, now=2.0) == 0
    held = tmp_path / ".held"
    held.mkdir()
    (held / "brake@compute9").symlink_to(tmp_path / "elsewhere")
    assert timeline.admit_repeated("brake", "compute9", now=1.0) == 0  # not followed
    assert timeline.admit_repeated("brake", "compute9", now=2.0) == 0
    assert not (tmp_path / "elsewhere").exists()
    (held / "brake@compute8").write_text("{not json")
    assert timeline.admit_repeated("brake", "compute8", now=1.0) == 0  # a bad file: restarted
    assert timeline.admit_repeated("brake", "compute8", now=2.0) is None


@given(st.binary(max_size=300))
def test_any_state_file_is_read_or_ignored(raw):
    last, held = timeline.held_state(raw)
    assert last is None or isinstance(last, float)
    assert isinstance(held, int) and held >= 0
