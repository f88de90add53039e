"""The NovaEvacuate worker's Prometheus metrics (nova_evacuate/metrics.py), the ``[metrics]``
options, and the timeline's rate limit while the brake holds (nova_evacuate/brake.py)."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nova_evacuate import conf as confmod
from nova_evacuate import engine as engine_mod
from nova_evacuate import metrics as m
from nova_evacuate.brake import LineLimiter, is_brake_reason, mass_failure
from nova_evacuate.engine import Settings
from nova_evacuate.ledger import LedgerEntry, State, format_marker
from nova_evacuate.nova import ComputeService
from nova_evacuate.worker import Worker
from openstack_ha import timeline
from tests.metrics_text import sample_values

T0 = 1_800_000_000.0
BRAKE = ("3 of 3 compute nodes look down (compute1, compute2, compute3), more than"
         " max_down_percent=50: a partition or a broken observer, not acting automatically")


def ev(offset: float, event: str, host: str = "compute1", **fields: Any) -> timeline.Event:
    found = timeline.event_from({"ts": T0 + offset, "event": event, "host": host, **fields})
    assert found is not None
    return found


def failover(host: str = "compute1", at: float = 0.0, instances: int = 3) -> list[timeline.Event]:
    """One drill's lines, as the lab's end-to-end failover writes them."""
    lines = [ev(at, "failure_injected", host, by="lab"),
             ev(at + 4, "detected", host, by="pacemaker"),
             ev(at + 6, "fence_start", host, by="fence_nova"),
             ev(at + 8, "power_off_confirmed", host, how="BMC 10.0.0.11:623 reports off"),
             ev(at + 8.5, "forced_down", host),
             ev(at + 9, "evacuation_requested", host, state="requested"),
             ev(at + 9.2, "claimed", host, by="ctl1/42")]
    lines += [ev(at + 10 + i, "instance_done", host, server=f"s{i}", state="done")
              for i in range(instances)]
    lines += [ev(at + 10 + instances, "evacuation_done", host, done=instances, failed=0,
                 skipped=1),
              ev(at + 40, "unfence_requested", host, evacuation="done"),
              ev(at + 45, "unfenced", host, state="evacuation done"),
              ev(at + 60, "host_back", host, enabled=True)]
    return lines


def observed(stats: m.RecoveryStats, name: str) -> tuple[int, float]:
    histogram = stats.histograms[name]
    return histogram.observations, round(histogram.total, 3)


# ---------------------------------------------------------------------------- derivation


def test_a_failover_gives_each_count_and_duration() -> None:
    stats = m.RecoveryStats()
    stats.add_all(failover(instances=3))
    assert stats.recoveries == {"done": 1}
    assert stats.instances == {"evacuated": 3, "skipped": 1}
    assert stats.fences == {("confirmed", "bmc"): 1}
    assert observed(stats, "detection") == (1, 6.0)  # failure → fence_start
    assert observed(stats, "fencing") == (1, 2.0)  # fence_start → power_off_confirmed
    assert observed(stats, "evacuation") == (1, 4.0)  # requested → evacuation_done
    assert observed(stats, "mttr") == (1, 13.0)  # failure → evacuation_done
    assert not stats.brake_engaged(T0 + 100)


def test_without_a_known_failure_detection_is_not_observed_and_mttr_starts_at_detection() -> None:
    stats = m.RecoveryStats()
    stats.add_all(e for e in failover() if e.event != "failure_injected")
    assert observed(stats, "detection") == (0, 0.0)
    assert observed(stats, "mttr") == (1, 9.0)  # detected (+4) → done (+13)


def test_two_recoveries_of_one_host_are_timed_apart() -> None:
    stats = m.RecoveryStats()
    stats.add_all(failover(at=0) + failover(at=100, instances=2))
    assert stats.recoveries == {"done": 2}
    assert stats.instances["evacuated"] == 5
    assert observed(stats, "mttr") == (2, 25.0)  # 13 + 12: the second from its own failure
    assert observed(stats, "fencing") == (2, 4.0)


def test_a_stale_open_recovery_does_not_time_the_next_failure() -> None:
    stats = m.RecoveryStats()
    # a fence refused by the brake, never followed (the operator repaired by hand) ...
    stats.add_all([ev(0, "fence_start"), ev(0.1, "fence_failed", reason=BRAKE)])
    # ... then, a day later, a real failure
    stats.add_all(failover(at=86400))
    assert observed(stats, "fencing") == (1, 2.0)
    assert observed(stats, "mttr") == (1, 13.0)


def test_fencing_without_a_power_off_line_ends_at_force_down() -> None:
    stats = m.RecoveryStats()
    stats.add_all([ev(0, "fence_start"), ev(3, "forced_down"),
                   ev(4, "evacuation_requested"), ev(20, "evacuation_done", skipped=0)])
    assert observed(stats, "fencing") == (1, 3.0)


def test_a_host_heard_in_its_crash_kernel_is_a_confirmed_fence_of_its_own_reason() -> None:
    stats = m.RecoveryStats()
    stats.add_all([ev(0, "fence_start"), ev(2.5, "kdump_detected", source="10.0.0.11"),
                   ev(3, "forced_down"), ev(4, "evacuation_requested"),
                   ev(20, "evacuation_done", skipped=0)])
    assert observed(stats, "fencing") == (1, 2.5)
    assert stats.fences == {("confirmed", "kdump"): 1}


def test_fence_retries_count_each_outcome_and_time_fencing_from_the_first_attempt() -> None:
    stats = m.RecoveryStats()
    stats.add_all([
        ev(0, "fence_start"),
        ev(30, "fence_failed", reason="power-off not confirmed: BMC timed out"),
        ev(35, "fence_start"),
        ev(37, "power_off_confirmed", how="BMC reports off"),
        ev(38, "fence_start", host="compute2"),
        ev(39, "fence_failed", host="compute2", reason="storage fence not confirmed: x"),
        ev(40, "fence_failed", host="compute3", reason="mystery"),
        ev(41, "power_off_confirmed", host="compute4",
           how="power_driver=none: power off is left to another device"),
    ])
    assert stats.fences == {("failed", "power_not_confirmed"): 1, ("confirmed", "bmc"): 1,
                            ("failed", "storage_not_confirmed"): 1, ("failed", "error"): 1,
                            ("confirmed", "delegated"): 1}
    assert observed(stats, "fencing") == (1, 37.0)


def test_failed_evacuations_count_but_time_no_repair() -> None:
    stats = m.RecoveryStats()
    stats.add_all([ev(0, "fence_start"), ev(1, "power_off_confirmed", how="reports off"),
                   ev(2, "evacuation_requested"),
                   ev(5, "instance_failed", state="failed", reason="no valid host"),
                   ev(6, "instance_failed", state="timed out", reason="no end in 600 s"),
                   ev(7, "evacuation_failed", done=0, failed=2, skipped=0)])
    assert stats.recoveries == {"failed": 1}
    assert stats.instances == {"failed": 1, "timed_out": 1}
    assert observed(stats, "evacuation") == (0, 0.0)
    assert observed(stats, "mttr") == (0, 0.0)


def test_the_brake_holds_until_the_host_is_fenced_or_the_lines_stop() -> None:
    stats = m.RecoveryStats()
    stats.add_all([ev(0, "fence_start"), ev(0.1, "fence_failed", reason=BRAKE)])
    assert stats.fences == {("failed", "brake"): 1}
    assert stats.brake_engaged(T0 + 60)
    assert not stats.brake_engaged(T0 + m.BRAKE_FRESH_SECONDS + 1)
    stats.add(ev(100, "power_off_confirmed", how="reports off"))
    assert not stats.brake_engaged(T0 + 101)
    # the worker's refused evacuation holds it too; a refusal for another reason does not
    stats.add(ev(200, "evacuation_refused", host="compute2", reason="Nova sees it up",
                 brake=False))
    assert not stats.brake_engaged(T0 + 201)
    stats.add(ev(300, "evacuation_refused", host="compute2", reason=f"brake: {BRAKE}",
                 brake=True, suppressed=5))
    assert stats.brake_engaged(T0 + 301)
    assert stats.suppressed == {"evacuation_refused": 5}


def test_lines_of_other_kinds_change_nothing() -> None:
    stats = m.RecoveryStats()
    stats.add_all([ev(0, "instance_restarted", server="s1"), ev(1, "host_back"),
                   ev(2, "unfenced"), ev(3, "fenced", by="pacemaker"),
                   ev(4, "evacuation_done", skipped=True)])  # a bool is no count
    assert not stats.instances and stats.recoveries == {"done": 1}
    assert observed(stats, "mttr") == (0, 0.0)  # no recovery was open


def test_the_brakes_reasons_are_told_apart() -> None:
    from nova_evacuate.brake import HostView

    down = [HostView("a", True), HostView("b", True), HostView("c", False)]
    for view, kw in ((down, {}), ([], {})):
        verdict = mass_failure(view, "a", 0.5, limit="max_down_percent=50",
                               what="compute nodes", **kw)
        assert verdict.engaged and is_brake_reason(verdict.reason), verdict.reason
    assert is_brake_reason(mass_failure(down, "a", float("nan"), limit="x", what="y").reason)
    calm = mass_failure(down[:1] + down[2:], "a", 0.5, limit="x", what="compute nodes")
    assert not calm.engaged and not is_brake_reason(calm.reason)
    assert m.fence_failure_reason(BRAKE) == "brake"
    assert m.fence_failure_reason("cannot read the cluster's view of the compute nodes (x)") \
        == "cluster_unreadable"
    assert m.fence_success_reason("BMC reports off already; nothing sent") == "already_off"
    assert m.fence_success_reason("record_only: power off is left to another") == "delegated"


def test_histogram_buckets_are_cumulative_and_end_at_inf() -> None:
    stats = m.RecoveryStats()
    histogram = stats.histograms["fencing"]
    for seconds in (0.2, 3.0, 3.0, 10_000.0):
        histogram.observe(seconds)
    buckets = dict(histogram.buckets())
    assert buckets["0.5"] == 1 and buckets["5.0"] == 3 and buckets["300.0"] == 3
    assert buckets["+Inf"] == 4
    assert list(buckets.values()) == sorted(buckets.values())


# ---------------------------------------------------------------------------- the file


def line(event: timeline.Event) -> bytes:
    return (json.dumps(event.data) + "\n").encode()


def test_the_follower_reads_new_lines_only_and_waits_for_a_lines_end(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    follower = m.TimelineFollower(str(path))
    assert follower.read_new() == []  # no file yet
    first, second = failover()[:2]
    path.write_bytes(line(first) + line(second)[:10])
    assert [e.event for e in follower.read_new()] == ["failure_injected"]
    assert follower.read_new() == []
    with path.open("ab") as f:
        f.write(line(second)[10:] + b"not json\n\n")
    assert [e.event for e in follower.read_new()] == ["detected"]
    assert follower.skipped == 1


def test_the_follower_finishes_a_rotated_file_then_reads_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    events = failover()
    path.write_bytes(line(events[0]))
    follower = m.TimelineFollower(str(path))
    assert len(follower.read_new()) == 1
    with path.open("ab") as f:
        f.write(line(events[1]))  # written just before the rotation
    path.rename(tmp_path / "timeline.jsonl.1")
    assert [e.event for e in follower.read_new()] == ["detected"]  # still the old file
    path.write_bytes(line(events[2]))
    assert [e.event for e in follower.read_new()] == ["fence_start"]
    assert follower.read_new() == []


def test_the_follower_reads_a_truncated_file_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    events = failover()
    path.write_bytes(b"".join(line(e) for e in events[:4]))
    follower = m.TimelineFollower(str(path))
    assert len(follower.read_new()) == 4
    path.write_bytes(line(events[5]))  # same inode, shorter
    assert [e.event for e in follower.read_new()] == ["evacuation_requested"]


def test_the_follower_skips_an_overlong_line(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    follower = m.TimelineFollower(str(path), read_limit=1024)
    with path.open("wb") as f:
        f.write(b"x" * (timeline.MAX_LINE_BYTES + 10) + b"\n" + line(failover()[0]))
    found = []
    for _ in range(200):  # 1 KiB a read
        found += follower.read_new()
    assert [e.event for e in found] == ["failure_injected"] and follower.skipped == 1


def test_the_follower_reads_neither_a_fifo_nor_a_link(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    assert m.TimelineFollower(str(fifo)).read_new() == []  # at once, not blocked
    target = tmp_path / "real.jsonl"
    target.write_bytes(line(failover()[0]))
    (tmp_path / "link.jsonl").symlink_to(target)
    assert m.TimelineFollower(str(tmp_path / "link.jsonl")).read_new() == []
    assert m.TimelineFollower(None).read_new() == []  # the timeline off


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
       junk=st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=3))
def test_however_the_file_grows_the_follower_reads_what_a_whole_read_does(
        tmp_path_factory: pytest.TempPathFactory, cuts: list[int], junk: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("grow") / "timeline.jsonl"
    content = b"".join(line(e) for e in failover()) + b"".join(j + b"\n" for j in junk)
    path.write_bytes(b"")
    follower = m.TimelineFollower(str(path))
    found: list[timeline.Event] = []
    written = 0
    for cut in sorted({min(c, len(content)) for c in cuts} | {len(content)}):
        with path.open("ab") as f:
            f.write(content[written:cut])
        written = cut
        found += follower.read_new()
    whole, skipped = timeline.read(str(path))
    assert [e.data for e in found] == [e.data for e in whole]
    assert follower.skipped == skipped


# ---------------------------------------------------------------------------- served


def entry(state: State) -> LedgerEntry:
    return LedgerEntry(state, datetime(2026, 11, 30, tzinfo=UTC), "fence_nova"
                       if state is State.REQUESTED else "ctl1/42")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (http, ours)
        text = answer.read().decode()
    return sample_values(text)


def test_the_endpoint_serves_the_timeline_and_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    path.write_bytes(b"".join(line(e) for e in failover(instances=4)))
    metrics = m.Metrics(str(path), clock=lambda: T0 + 100)
    server, thread = m.serve(metrics, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        before = scrape(url)
        assert "openstack_ha_worker_last_scan_timestamp_seconds" not in before  # no scan yet
        assert before["openstack_ha_recoveries_total{outcome=done}"] == 0
        metrics.scanned({"compute1": entry(State.DONE), "compute2": entry(State.REQUESTED),
                         "compute3": None}, held_back=2)
        values = scrape(url)
    finally:
        server.shutdown()
        thread.join(5)
    assert values["openstack_ha_recoveries_total{outcome=done}"] == 1
    assert values["openstack_ha_recoveries_total{outcome=failed}"] == 0
    assert values["openstack_ha_instances_total{result=evacuated}"] == 4
    assert values["openstack_ha_instances_total{result=skipped}"] == 1
    assert values["openstack_ha_fences_total{outcome=confirmed,reason=bmc}"] == 1
    assert values["openstack_ha_fences_total{outcome=failed,reason=brake}"] == 0
    assert values["openstack_ha_mttr_seconds_count"] == 1
    assert values["openstack_ha_mttr_seconds_sum"] == 14.0
    assert values["openstack_ha_mttr_seconds_bucket{le=20.0}"] == 1
    assert values["openstack_ha_mttr_seconds_bucket{le=10.0}"] == 0
    assert values["openstack_ha_detection_seconds_count"] == 1
    assert values["openstack_ha_ledger_hosts{state=done}"] == 1
    assert values["openstack_ha_ledger_hosts{state=requested}"] == 1
    assert values["openstack_ha_ledger_hosts{state=claimed}"] == 0
    assert values["openstack_ha_ledger_requests_total"] == 1
    assert values["openstack_ha_brake_engaged"] == 0
    assert values["openstack_ha_timeline_lines_held_back"] == 2
    assert values["openstack_ha_worker_last_scan_timestamp_seconds"] == T0 + 100
    # nothing but the suite's series: no process or platform collectors
    assert all(name.startswith("openstack_ha_") for name in values)


def test_a_host_entering_the_ledger_counts_once_per_request() -> None:
    metrics = m.Metrics(None)
    for states in ([State.REQUESTED], [State.CLAIMED], [State.DONE], [None],
                   [State.CLAIMED], [State.REQUESTED]):
        metrics.scanned({"compute1": entry(states[0]) if states[0] else None})
    assert metrics.ledger_requests == 2


# ---------------------------------------------------------------------------- options


def load(tmp_path: Path, text: str):
    path = tmp_path / "openstack-ha.conf"
    path.write_text(text)
    return confmod.load([str(path)])


def test_metrics_are_off_by_default_on_loopback(tmp_path: Path) -> None:
    conf = load(tmp_path, "")
    assert (conf.metrics.enabled, conf.metrics.listen_address, conf.metrics.port) \
        == (False, "127.0.0.1", 9464)
    conf = load(tmp_path, "[metrics]\nenabled = true\nlisten_address = ::\nport = 9999\n")
    assert (conf.metrics.enabled, conf.metrics.listen_address, conf.metrics.port) \
        == (True, "::", 9999)


@pytest.mark.parametrize("text, says", [
    ("port = 0", "[metrics] port"),
    ("port = 65536", "[metrics] port"),
    ("port =", "[metrics] port: empty"),
    ("listen_address = metrics.example", "[metrics] listen_address"),
    ("enabled = sometimes", "[metrics] enabled"),
])
def test_a_bad_metrics_value_is_refused_at_load(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(confmod.ConfigValueError, match=rf"^{__import__('re').escape(says)}"):
        load(tmp_path, f"[metrics]\n{text}\n")


# ---------------------------------------------------------------------------- rate limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_host_a_minute_with_the_count_held_back() -> None:
    clock = Clock()
    limiter = LineLimiter(60.0, clock)
    assert limiter.admit("compute1") == 0
    for _ in range(5):
        clock.now += 10
        assert limiter.admit("compute1") is None
    assert limiter.admit("compute2") == 0  # per host
    assert limiter.held_back() == 5
    clock.now += 10.5  # 60.5 s after the first line
    assert limiter.admit("compute1") == 5
    assert limiter.held_back() == 0
    clock.now += 60
    assert limiter.admit("compute1") == 0


def test_the_limiter_counts_every_line_of_concurrent_callers() -> None:
    limiter = LineLimiter(60.0, lambda: 0.0)
    threads = [threading.Thread(target=lambda: [limiter.admit("h") for _ in range(500)])
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limiter.held_back() == 4 * 500 - 1


class RefusingEngine:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self, host: str, **kwargs: Any) -> None:
        raise engine_mod.Refused(f"mass-failure brake: {BRAKE} (nova-evacuate {host} --force"
                                 f" overrides)")


class OneHostNova:
    def __init__(self, state: State) -> None:
        self.service = ComputeService("id-1", "compute1", "down", "disabled", True,
                                      format_marker(entry(state)), None)

    def compute_services(self) -> list[ComputeService]:
        return [self.service]

    def adopt_token(self, other: Any) -> None:
        pass


def test_the_worker_writes_a_refusal_once_a_minute_and_the_metrics_say_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "Engine", RefusingEngine)
    nova = OneHostNova(State.REQUESTED)
    metrics = m.Metrics(timeline.path())
    worker = Worker(lambda: nova, Settings(), metrics=metrics)  # type: ignore[arg-type]
    clock = Clock()
    worker.refusal_lines = LineLimiter(60.0, clock)

    def scan() -> None:
        worker.scan()
        for thread in list(worker.running.values()):
            thread.join(5)
        worker._reap()  # as the next scan would, before it starts the next attempt

    for _ in range(6):  # a scan every 10 s: one line, five held back
        scan()
        clock.now += 10
    scan()  # 60 s after the first: the next line, with the count
    scan()  # held back again; the metrics read what the scan before wrote
    path = timeline.path()
    assert path is not None
    events, _ = timeline.read(path)
    refusals = [e.data for e in events if e.event == "evacuation_refused"]
    assert len(refusals) == 2
    assert refusals[0]["brake"] is True and "suppressed" not in refusals[0]
    assert refusals[1]["suppressed"] == 5
    assert metrics.stats.suppressed == {"evacuation_refused": 5}
    assert metrics.held_back == 1  # the last scan's refusal
    assert metrics.brake_here
    assert metrics.ledger_hosts == {"requested": 1}
    families = {f.name: f for f in metrics.collect()}
    assert families["openstack_ha_brake_engaged"].samples[0].value == 1
    assert metrics.last_scan is not None


def test_a_drills_failure_mark_begins_a_recovery_of_its_own() -> None:
    stats = m.RecoveryStats()
    # a fence refused minutes ago, its recovery still open (not stale) ...
    stats.add_all([ev(0, "fence_start"), ev(0.1, "fence_failed", reason=BRAKE)])
    stats.add_all(failover(at=300))  # ... then a drill: timed from its own mark
    assert observed(stats, "detection") == (1, 6.0)
    assert observed(stats, "mttr") == (1, 13.0)
