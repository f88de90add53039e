"""benchmarks/fence_off.py's pure parts: one run's phases from the timeline it wrote, and
the table they make. The lab's side is exercised by running the benchmark."""

from __future__ import annotations

from benchmarks import fence_off

T = 1_800_000_000.0


def test_a_runs_phases_follow_its_timeline_from_launch_to_exit() -> None:
    events = [{"event": "fence_start", "ts": T + 0.12},
              {"event": "power_off_confirmed", "ts": T + 0.40},
              {"event": "forced_down", "ts": T + 0.45},
              {"event": "evacuation_requested", "ts": T + 0.50},
              {"event": "fence_start", "ts": T + 9.0}]  # a later one: the first counts
    split = fence_off.phases(events, launched=T, exited=T + 0.60)
    assert list(split.values()) == [0.12, 0.28, 0.05, 0.05, 0.1]
    assert list(split) == [name for name, _, _ in fence_off.PHASES]


def test_a_refused_run_has_only_the_phases_it_reached() -> None:
    split = fence_off.phases([{"event": "fence_start", "ts": T + 0.1},
                              {"event": "fence_failed", "ts": T + 0.2}], T, T + 0.3)
    assert list(split) == [fence_off.PHASES[0][0]]


def test_the_table_shows_each_phases_median_per_row() -> None:
    first = fence_off.PHASES[0][0]
    result = {"benchmark": "b", "host": "compute1", "machine": "m", "date": "d",
              "ratio_stock_over_ours": 4.8, "ratio_stock_power_wait_0_over_ours": 1.7,
              "rows": {}, "census": {}, "stock_parts": {}, "stock_versions": {},
              "setup": {}, "error": None, "runs": [],
              "our_phases": {"ours": {first: {"median_s": 0.11}},
                             "ours_cold": {first: {"median_s": 0.13}}}}
    text = fence_off.markdown(result)
    assert f"| {first} | 0.11 | 0.13 |" in text
    assert f"| {fence_off.PHASES[1][0]} | - | - |" in text


def test_power_phases_that_waited_out_pyghmis_retransmit_timer_are_named() -> None:
    power = fence_off.PHASES[1][0]
    runs = [{"row": "ours", "round": 2, "phases_s": {power: 1.01}},
            {"row": "ours_cold", "round": 0, "phases_s": {power: 0.35}},
            {"row": "stock", "round": 1, "phases_s": {}}]
    note = fence_off.slow_power_note(runs)
    assert "Power phases over 0.6 s: round 2 ours 1.01 s." in note[1]
    assert fence_off.slow_power_note(runs[1:]) == []
