"""benchmarks/mttr.py's pure parts: the failure kinds and their undoing, detection from the
timeline, a failure nobody notices, the summary, the goals and the tables (older result files
too). The lab's side is exercised by running the benchmark."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import mttr

# ---------------------------------------------------------------------------- fakes


class FakeDeployment:
    """What one_run, inject and undo_at_once use of lab/failover.py's Deployment, recorded."""

    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.timeline = events or []
        self.pcmk = self
        self.lab = self
        self.openstack = self

    # lab.pacemaker / lab.openstack
    def power_off(self, host: str) -> None:
        self.calls.append(("power_off", host))

    def kill_compute(self, host: str) -> None:
        self.calls.append(("kill_compute", host))

    def connection(self, **_: Any) -> object:
        return object()

    # Deployment
    def hang(self, host: str) -> None:
        self.calls.append(("hang", host))

    def unhang(self, host: str) -> None:
        self.calls.append(("unhang", host))

    def cut_link(self, host: str) -> None:
        self.calls.append(("cut_link", host))

    def restore_link(self, host: str) -> None:
        self.calls.append(("restore_link", host))

    def cut_storage_link(self, host: str) -> None:
        self.calls.append(("cut_storage_link", host))

    def restore_storage_link(self, host: str) -> None:
        self.calls.append(("restore_storage_link", host))

    def heal(self, serving: Any = None) -> None:
        self.calls.append(("heal", ""))

    def mark(self, event: str, host: str, **fields: Any) -> float:
        self.calls.append((event, fields["failure"]))
        return 1000.0

    def events(self, since: float, host: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.timeline if e["ts"] >= since and e["host"] == host]


class FakeDB:
    def progress(self, ids: list[str]) -> tuple[int, int]:
        return 0, 0


def record(mode: str, failure: str, n: int, mttr_s: float | None, **more: Any) -> dict[str, Any]:
    """A run's record as one_run writes it."""
    run = {"mode": mode, "failure": failure, "scenario": None, "n": n, "outcome": "recovered",
           "mttr": mttr_s, "settled": None, "detection": 0.1, "fencing": 1.0,
           "evacuation": None if mttr_s is None else mttr_s - 1.1,
           "first_evacuate_accepted": 2.0, "detected_by": "detected compute1",
           "instances_rebuilt": n}
    return {**run, **more}


def not_detected(mode: str, failure: str, n: int) -> dict[str, Any]:
    return {"mode": mode, "failure": failure, "scenario": None, "n": n,
            "outcome": mttr.NOT_DETECTED, "waited": 120.0, **dict.fromkeys(mttr.FIGURES),
            "detected_by": None, "instances_rebuilt": 0}


def result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"date": "2026-12-04T00:00:00Z", "machine": "x86_64, 2 cores", "command": "cmd",
            "runs": runs}


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("failure", "injected", "undone"), [
    ("crash", [("power_off", "compute1")], []),
    ("hang", [("hang", "compute1")], [("unhang", "compute1")]),
    ("link-cut", [("cut_link", "compute1")], [("restore_link", "compute1")]),
    ("all-links-cut", [("cut_link", "compute1"), ("cut_storage_link", "compute1")],
     [("restore_link", "compute1"), ("restore_storage_link", "compute1")]),
    ("nova-compute", [("kill_compute", "compute1")], []),
])
def test_each_failure_is_injected_with_the_labs_injector_and_undone(failure, injected, undone):
    d = FakeDeployment()
    mttr.inject(d, failure, "compute1")
    assert d.calls == injected
    d.calls.clear()
    mttr.undo_at_once(d, failure, "compute1")
    assert d.calls == undone  # a crash and a dead nova-compute are heal()'s


def test_an_unknown_failure_is_refused():
    with pytest.raises(ValueError):
        mttr.inject(FakeDeployment(), "meteor", "compute1")


def test_every_failure_kind_says_how_it_was_injected():
    assert set(mttr.FAILURE_HOW) == set(mttr.FAILURES)


# ---------------------------------------------------------------------------- detection


def test_detection_is_the_alert_agents_first_event():
    events = [{"ts": 1.0, "event": "fence_start"},
              {"ts": 2.0, "event": "detected", "rsc": "liveness", "task": "monitor"},
              {"ts": 3.0, "event": "node_lost"}]
    found = mttr.detection_event(events, "ours")
    assert found["ts"] == 2.0
    assert mttr.detected_by(found) == "detected liveness"


def test_the_consul_watchers_report_is_detection_when_it_comes_first():
    events = [{"ts": 1.0, "event": "consul_down", "views": "management=failed"},
              {"ts": 1.1, "event": "fence_start"}, {"ts": 4.0, "event": "detected",
                                                    "rsc": "compute1", "task": "monitor"}]
    found = mttr.detection_event(events, "consul-watch")
    assert found["ts"] == 1.0 and mttr.detected_by(found) == "consul_down"
    # and a Consul mode without an alert falls back to fence_start, as ours does
    assert mttr.detection_event(events[1:2], "consul")["event"] == "fence_start"


def test_without_an_alert_ours_falls_back_to_fence_start_and_says_so():
    events = [{"ts": 1.0, "event": "fence_start"}, {"ts": 2.0, "event": "fenced"}]
    found = mttr.detection_event(events, "ours")
    assert found["ts"] == 1.0 and mttr.detected_by(found) == "fence_start"
    assert mttr.detection_event(events, "stock") is None  # no fence_nova there
    assert mttr.detected_by(None) is None


def test_a_failure_nobody_notices_is_recorded_and_undone(monkeypatch):
    """Stock and nova-compute dying alone: after the bounded wait the run is 'not detected'
    with no figures, the fault's immediate undo still runs, and the benchmark goes on."""
    monkeypatch.setattr(mttr, "DETECTION_WAIT", 0.05)
    monkeypatch.setattr(mttr, "engine_on", lambda d, controller: None)
    monkeypatch.setattr(mttr.time, "sleep", lambda s: None)
    monkeypatch.setattr(mttr.workload, "image", lambda conn, name: type("I", (), {"id": "i"}))
    monkeypatch.setattr(mttr.workload, "flavor", lambda conn, name: type("F", (), {"id": "f"}))
    monkeypatch.setattr(mttr.workload, "boot", lambda conn, host, n, **kw: ["id"] * n)
    monkeypatch.setattr(mttr.workload, "wait_active", lambda conn, ids, timeout: {})
    d = FakeDeployment(events=[{"ts": 999.0, "host": "compute1", "event": "detected"}])
    run = mttr.one_run(d, FakeDB(), "stock", 4, d.heal, failure="hang")
    assert run["outcome"] == mttr.NOT_DETECTED and run["waited"] == 0.05
    assert all(run[key] is None for key in mttr.FIGURES)
    assert run["failure"] == "hang" and run["scenario"] is None
    assert d.calls == [("heal", ""), ("failure_injected", "hang"), ("hang", "compute1"),
                       ("unhang", "compute1")]


# ---------------------------------------------------------------------------- records


def test_records_written_before_the_failure_kinds_are_crashes():
    plain_old = {"mode": "ours", "n": 20, "mttr": 12.0}
    plain_last = {"mode": "ours", "scenario": "crash", "n": 20, "settled": None}
    scenario_old = {"mode": "ours", "scenario": "worker-killed", "n": 30, "settled": 16.3}
    assert mttr.kind_of(plain_old) == ("ours", "crash", None)
    assert mttr.kind_of(plain_last) == ("ours", "crash", None)
    assert mttr.kind_of(scenario_old) == ("ours", "crash", "worker-killed")
    assert mttr.kind_of(record("stock", "hang", 20, 20.0)) == ("stock", "hang", None)
    assert mttr.kind_of(record("ours", "crash", 30, 13.0, scenario="crash", settled=None)) \
        == ("ours", "crash", "crash")


def test_summary_per_failure_with_ours_against_stock():
    runs = [record("ours", "crash", 20, 10.0), record("ours", "crash", 20, 12.0),
            record("stock", "crash", 20, 20.0), record("ours", "hang", 20, 18.0),
            record("stock", "hang", 20, 24.0), record("ours", "nova-compute", 20, 40.0),
            not_detected("stock", "nova-compute", 20)]
    summary = mttr.summarize(runs)
    rows = {(r["mode"], r["failure"]): r for r in summary["rows"]}
    assert [(r["failure"], r["mode"]) for r in summary["rows"]] == [
        ("crash", "ours"), ("crash", "stock"), ("hang", "ours"), ("hang", "stock"),
        ("nova-compute", "ours"), ("nova-compute", "stock")]
    assert rows["ours", "crash"]["mttr"] == {"median": 11.0, "min": 10.0, "max": 12.0}
    assert rows["stock", "nova-compute"]["not_detected"] == 1
    assert rows["stock", "nova-compute"]["mttr"]["median"] is None
    ratios = {(c["failure"], c["n"]): c["ours_over_stock"] for c in summary["comparisons"]}
    assert ratios == {("crash", 20): 0.55, ("hang", 20): 0.75, ("nova-compute", 20): None}


def test_markdown_tables_goals_and_what_stock_never_noticed():
    runs = [record("ours", "crash", 20, 10.0, first_evacuate_accepted=0.9),
            record("stock", "crash", 20, 20.0), record("ours", "link-cut", 20, 19.0),
            record("stock", "link-cut", 20, 25.0), record("ours", "nova-compute", 20, 40.0),
            not_detected("stock", "nova-compute", 20), not_detected("stock", "nova-compute", 20)]
    text = mttr.markdown(result(runs))
    assert "## crash: node crash" in text and "## link-cut: management link down" in text
    assert "## hang" not in text  # not run
    assert "| stock | 20 | 2, 2 not detected | - |" in text
    assert "not detected within 120 s in 2 of 2 runs (the stock configuration has no" \
           " ComputeLiveness" in text
    assert "(crash):** ours 10.0 s, stock 20.0 s: **0.5**, met." in text
    assert "* MTTR ours/stock, link-cut, N=20: **0.76** (ours 19.0 s, stock 25.0 s)." in text
    assert ("* MTTR ours/stock, nova-compute, N=20: not measured (ours 40.0 s, stock -); stock"
            " did not notice the failure in 2 of 2 runs (120 s waited).") in text
    assert "  * crash, N=20: 0.9 s, met" in text
    assert "  * link-cut, N=20: 2.0 s, not met" in text
    assert "settled" not in text.split("## Against")[0]  # no row measured it
    assert "ours+" not in text


def test_markdown_renders_a_file_written_before_the_failure_kinds():
    old = {"date": "2026-12-03T00:24:33Z", "machine": "x86_64, 2 cores", "command": "cmd",
           "summary": {"ours-20": {}, "ratio-20": 1.48},  # the old summary's shape: unused
           "runs": [
               {"mode": "stock", "n": 20, "mttr": 17.73, "detection": 0.01, "fencing": 3.22,
                "evacuation": 14.5, "first_evacuate_accepted": 11.75, "instances_rebuilt": 20,
                "earlier_run": "2026-11-30T14:38:39Z"},
               {"mode": "ours", "n": 20, "mttr": 12.0, "detection": 0.01, "fencing": 1.21,
                "evacuation": 10.79, "first_evacuate_accepted": 2.53, "instances_rebuilt": 20,
                "earlier_run": "2026-11-30T15:10:09Z"},
               {"mode": "ours", "scenario": "worker-killed", "n": 30, "mttr": 15.9,
                "settled": 16.31, "detection": 0.16, "fencing": 1.51, "evacuation": 14.23,
                "first_evacuate_accepted": 2.58, "instances_rebuilt": 30}]}
    text = mttr.markdown(old)
    assert "## crash: node crash" in text
    assert "| ours | 20 | 1 | 12.0 (12.0–12.0) | - | 0.0 (0.0–0.0) | 1.2 (1.2–1.2) |" in text
    assert "| ours+worker-killed | 30 | 1 | 15.9 (15.9–15.9) | 16.3 (16.3–16.3) |" in text
    assert "(crash):** ours 12.0 s, stock 17.7 s: **0.68**, not met." in text
    assert "Rows stock crash: from the run of 2026-11-30T14:38:39Z" in text
    assert "Rows `ours+SCENARIO`" in text


def test_scenarios_only_follow_a_crash(monkeypatch):
    def no_lab(*args: Any, **kw: Any) -> None:
        raise AssertionError("the arguments are refused before any lab is made")

    monkeypatch.setattr(mttr, "Lab", no_lab)
    with pytest.raises(SystemExit):
        mttr.main(["--scenarios", "worker-killed", "--failures", "hang"])
