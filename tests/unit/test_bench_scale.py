"""benchmarks/scale.py's pure parts: sizes, fake hosts' names and inventories, the request
logs, the summary, the goal and the tables. The lab's side is exercised by running it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import scale
from lab.openstack_config import Layout, nova_conf
from openstack_ha import timeline

# Lines as the lab's nova-api and Placement write them (uWSGI, oslo.log).
ADMIN = "ffaf01cf96ee48c89cc28b9242f4fc2a"
OTHER = "0123456789abcdef0123456789abcdef"
PROJECT = "aa0152fac689451e98e97fc8f32850a3"


def line(logger: str, at: str, user: str, request: str, status: int, length: int,
         tail: str) -> str:
    context = f"None req-1 {user} {PROJECT} - - default default" if user else "None req-1 - - - - - -"
    return (f"2026-12-03 {at} 6517 INFO {logger}.requestlog [{context}] 127.0.0.1"
            f' "{request}" status: {status} len: {length} microversion: {tail}')


def nova(at: str, user: str, request: str, status: int, length: int, seconds: float) -> str:
    return line("nova.api.openstack", at, user, request, status, length, f"2.53 time: {seconds}")


def placement(at: str, user: str, request: str, length: int) -> str:
    return line("placement", at, user, request, 200, length, "1.29")


NOVA_LOG = "\n".join([
    '2026-12-03 10:39:55.392 6517 INFO nova.api.openstack.requestlog [-] 127.0.0.1 "GET /"'
    " status: 200 len: 371 microversion: - time: 0.002803",
    nova("10:39:55.395", "", "GET /", 200, 371, 0.002141),
    nova("10:39:56.018", ADMIN, "GET /v2.1/os-services?binary=nova-compute", 200, 16, 0.337429),
    "[pid: 6517|app: 0|req: 1/1] 127.0.0.1 () {34 vars in 600 bytes} GET /v2.1/os-services",
    nova("10:39:57.034", ADMIN, "GET /v2.1/os-services?binary=nova-compute", 200, 16, 0.012952),
    nova("10:39:58.100", ADMIN, "POST /v2.1/servers/0b6c1a3e-7f1d-4c2b-9a57-2f7a0c8f1e11/action",
         409, 120, 0.2),
    nova("10:39:58.200", OTHER, "GET /v2.1/servers/detail", 200, 900, 0.05),
])
PLACEMENT_LOG = "\n".join([
    placement("10:39:55.055", "", "GET /", 136),
    placement("10:40:06.169", ADMIN, "GET /resource_providers", 2600),
    placement("10:40:06.184", ADMIN,
              "GET /allocation_candidates?resources=VCPU%3A1%2CMEMORY_MB%3A1", 91000),
    placement("10:40:06.206", OTHER,
              "PUT /resource_providers/c87e2f14-ade9-4b56-8c7d-f05e6d4b6d0c/aggregates", 77),
])
# compute3's provider as the fake driver reports it (nova/virt/fake.py, Nova's initial ratios)
REAL_INVENTORIES = {
    "VCPU": {"total": 1000, "reserved": 0, "min_unit": 1, "max_unit": 1000, "step_size": 1,
             "allocation_ratio": 4.0},
    "MEMORY_MB": {"total": 800000, "reserved": 512, "min_unit": 1, "max_unit": 800000,
                  "step_size": 1, "allocation_ratio": 1.0},
    "DISK_GB": {"total": 600000, "reserved": 0, "min_unit": 1, "max_unit": 600000,
                "step_size": 1, "allocation_ratio": 1.0},
}


def capacity(inventory: dict[str, Any]) -> int:
    """Placement's: (total - reserved) * allocation_ratio."""
    return int((inventory["total"] - inventory["reserved"]) * inventory["allocation_ratio"])


# ------------------------------------------------------------------------- sizes and names


def test_sizes_ascending_once_each() -> None:
    assert scale.parse_sizes([1000, 3, 100, 100]) == [3, 100, 1000]


@pytest.mark.parametrize("values", [[], [2], [3, 10003]])
def test_sizes_refused(values: list[int]) -> None:
    with pytest.raises(ValueError):
        scale.parse_sizes(values)


def test_fake_hosts_continue_where_the_last_size_stopped() -> None:
    assert scale.fake_hosts_between(0, 3) == ["scale-0001", "scale-0002", "scale-0003"]
    assert scale.fake_hosts_between(97, 99) == ["scale-0098", "scale-0099"]
    assert scale.fake_hosts_between(97, 97) == []
    assert all(h.startswith(scale.PREFIX) for h in scale.fake_hosts_between(0, 20))


def test_fake_hosts_join_the_aggregates_in_turn() -> None:
    names = [scale.aggregate_of(i) for i in range(1, 22)]
    assert names[0] == "scale-agg-01" and names[9] == "scale-agg-10" and names[10] == "scale-agg-01"
    assert len(set(names)) == scale.AGGREGATES
    assert scale.aggregate_name(3).startswith(scale.PREFIX)  # the teardown finds them too


# ------------------------------------------------------------------------- inventories


def test_nearly_full_providers_are_in_the_capacity_read_yet_fit_no_lab_server() -> None:
    fake = scale.fake_inventories(REAL_INVENTORIES, "nearly-full")
    assert set(fake) == set(REAL_INVENTORIES)
    for rc, inventory in fake.items():
        assert {k: v for k, v in inventory.items() if k != "reserved"} == \
            {k: v for k, v in REAL_INVENTORIES[rc].items() if k != "reserved"}
        assert inventory["reserved"] == inventory["total"] - 1
    # the engine's smallest request (VCPU:1,MEMORY_MB:1) fits: the provider is summarized
    assert capacity(fake["VCPU"]) >= 1 and capacity(fake["MEMORY_MB"]) >= 1
    # lab.tiny (64 MiB) does not: neither the plan nor the scheduler can pick it
    assert capacity(fake["MEMORY_MB"]) < 64


def test_fully_reserved_providers_have_no_capacity() -> None:
    fake = scale.fake_inventories(REAL_INVENTORIES, "none")
    assert all(capacity(i) == 0 and i["reserved"] == i["total"] for i in fake.values())


def test_unknown_capacity_mode_refused() -> None:
    with pytest.raises(ValueError):
        scale.fake_inventories(REAL_INVENTORIES, "half")


def test_flavor_as_placement_resources() -> None:
    assert scale.flavor_resources(1, 64, 1) == "VCPU:1,MEMORY_MB:64,DISK_GB:1"
    assert scale.flavor_resources(2, 128, 0) == "VCPU:2,MEMORY_MB:128"


# ------------------------------------------------------------------------- heartbeat, psql


def test_heartbeat_keeps_the_labs_fake_services_up() -> None:
    down, interval = scale.heartbeat_interval(nova_conf(Layout(Path("/tmp/lab"))))
    assert down == 10.0  # the lab's service_down_time
    assert 1.0 <= interval <= down / 3


def test_heartbeat_interval_without_the_option_and_bounds() -> None:
    assert scale.heartbeat_interval("[DEFAULT]\ndebug = false\n") == (60.0, 10.0)
    assert scale.heartbeat_interval("[DEFAULT]\nservice_down_time = 2\n") == (2.0, 1.0)


def test_psql_values_are_checked() -> None:
    assert scale.psql_list(["scale-0001", "scale-0002"]) == "scale-0001,scale-0002"
    for bad in (["a,b"], ["x'; DROP TABLE services; --"], ["a b"]):
        with pytest.raises(ValueError):
            scale.psql_list(bad)


def test_chunks() -> None:
    assert scale.chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert scale.chunks([], 3) == []


# ------------------------------------------------------------------------- request logs


def test_request_lines_parsed_from_both_logs() -> None:
    found = scale.parse_requests(NOVA_LOG)
    to_placement = scale.parse_requests(PLACEMENT_LOG)
    # the "[-]" line (no context) is not one; an unauthenticated "GET /" is, by user "-"
    assert [r.service for r in found] == ["nova"] * 5 and found[0].user == "-"
    assert {r.service for r in to_placement} == {"placement"}
    assert found[1].kind == "GET /v2.1/os-services" and found[1].seconds == pytest.approx(0.337429)
    assert found[3].kind == "POST /v2.1/servers/{id}/action" and found[3].status == 409
    assert to_placement[2].kind == "GET /allocation_candidates" and to_placement[2].length == 91000
    assert to_placement[3].kind == "PUT /resource_providers/{id}/aggregates"
    assert to_placement[1].seconds is None
    assert found[2].at - found[1].at == pytest.approx(1.016)


def test_requests_counted_for_one_user_and_before_a_time() -> None:
    found = scale.parse_requests(NOVA_LOG)
    counted = scale.count_requests(found, ADMIN)
    assert counted["calls"] == 3
    assert counted["by_kind"] == {"GET /v2.1/os-services": 2, "POST /v2.1/servers/{id}/action": 1}
    assert counted["seconds_by_kind"]["GET /v2.1/os-services"] == pytest.approx(0.350, abs=1e-3)
    assert counted["errors"] == 1
    assert counted["other_users"] == 2  # the unauthenticated "GET /" and another user
    before = scale.count_requests(found, ADMIN, until=found[3].at)
    assert before["calls"] == 2 and before["errors"] == 0
    counted = scale.count_requests(scale.parse_requests(PLACEMENT_LOG), ADMIN)
    assert counted["by_kind"] == {"GET /resource_providers": 1, "GET /allocation_candidates": 1}
    assert counted["bytes_by_kind"]["GET /allocation_candidates"] == 91000
    assert counted["seconds_by_kind"] == {}


def test_claimed_read_from_the_runs_timeline() -> None:
    events = [e for e in (timeline.event_from(d) for d in (
        {"ts": 99.0, "event": "claimed", "host": "compute1", "by": "old"},
        {"ts": 101.5, "event": "claimed", "host": "compute2", "by": "x"},
        {"ts": 101.2, "event": "claimed", "host": "compute1", "by": "x"},
        {"ts": 130.0, "event": "evacuation_done", "host": "compute1"})) if e is not None]
    assert scale.first_event_at(events, "claimed", "compute1", 100.0) == 101.2
    assert scale.first_event_at(events, "claimed", "compute3", 100.0) is None


def test_plan_targets_counts_each_target() -> None:
    plan = {"moves": [{"target": "compute2"}, {"target": "compute3"}, {"target": "compute2"},
                      {"target": None}]}
    assert scale.plan_targets(plan) == {"compute2": 2, "compute3": 1, "None": 1}
    assert scale.plan_targets({}) == {}


# ------------------------------------------------------------------------- rig checks


def facts(fake: int, **changes: int) -> dict[str, int]:
    base = {"fake_hosts": fake, "fake_services": fake, "fake_services_up": fake,
            "fake_providers": fake, "fake_in_capacity_read": fake, "fake_with_room_for_flavor": 0,
            "fake_hosts_in_nova_aggregates": fake, "fake_providers_in_aggregates": fake}
    return base | changes


def test_rig_as_intended() -> None:
    assert scale.rig_problems(facts(97), "nearly-full") == []
    assert scale.rig_problems(facts(97, fake_in_capacity_read=0), "none") == []
    assert scale.rig_problems({"fake_hosts": 0, "fake_services": 0, "fake_services_up": 0,
                               "fake_providers": 0, "fake_in_capacity_read": 0,
                               "fake_with_room_for_flavor": 0}, "nearly-full") == []


@pytest.mark.parametrize("change", [
    {"fake_with_room_for_flavor": 1},  # the scheduler could send a rebuild there
    {"fake_services_up": 90},  # the heartbeat fell behind
    {"fake_in_capacity_read": 0},  # nearly-full providers must be summarized
    {"fake_providers_in_aggregates": 50},  # Nova's mirror into Placement
])
def test_rig_problems_named(change: dict[str, int]) -> None:
    problems = scale.rig_problems(facts(97, **change), "nearly-full")
    assert len(problems) == 1 and next(iter(change)) in problems[0]


def test_fully_reserved_providers_must_stay_out_of_the_capacity_read() -> None:
    assert scale.rig_problems(facts(97), "none") == ["fake_in_capacity_read is 97, expected 0"]


# ------------------------------------------------------------------------- summary and tables


def run(hosts: int, first: float, *, ok: bool = True, dry: float = 1.0) -> dict[str, Any]:
    return {"hosts": hosts, "round": 0, "ok": ok, "rc": 0 if ok else 1, "dry_run_s": dry,
            "first_evacuate_s": first, "makespan_s": first + 20, "claimed_s": 0.8,
            "claim_to_first_evacuate_s": first - 0.8, "servers": {"ACTIVE@compute2": 25},
            "dry_run": {"rc": 0,
                        "nova": {"calls": 6, "by_kind": {"GET /v2.1/os-services": 3},
                                 "bytes_by_kind": {"GET /v2.1/os-services": 300},
                                 "seconds_by_kind": {"GET /v2.1/os-services": 0.3}},
                        "placement": {"calls": 2, "by_kind": {"GET /allocation_candidates": 1},
                                      "bytes_by_kind": {"GET /allocation_candidates": 5000 * hosts},
                                      "seconds_by_kind": {}}}}


RUNS = [run(3, 1.2), run(3, 1.4), run(1000, 1.9), run(1000, 2.1), run(1000, 9.0, ok=False)]


def test_summary_over_ok_runs_only() -> None:
    summary = scale.summarize(RUNS, [3, 1000])
    assert summary["1000"]["runs"] == 3 and summary["1000"]["ok"] == 2
    assert summary["1000"]["first_evacuate_s"] == {"median": 2.0, "min": 1.9, "max": 2.1}
    assert summary["3"]["dry_run_nova_calls"]["median"] == 6
    assert summary["1000"]["allocation_candidates_bytes"]["median"] == 5_000_000


def test_goal_met_within_one_second() -> None:
    g = scale.goal(scale.summarize(RUNS, [3, 1000]))
    assert g["difference_s"] == 0.7 and g["met"] is True and g["as_stated"] is True
    line = scale.goal_line(g)
    assert "3 hosts 1.3 s" in line and "1,000 hosts 2.0 s" in line and "+0.70 s, met" in line


def test_goal_not_met_or_not_measured() -> None:
    slow = scale.goal(scale.summarize([run(3, 1.0), run(100, 2.5)], [3, 100]))
    assert slow["met"] is False and not slow["as_stated"]
    assert "not met" in scale.goal_line(slow) and "between 3 and 100 hosts" in scale.goal_line(slow)
    none = scale.goal(scale.summarize([run(3, 1.0)], [3, 1000]))
    assert none["difference_s"] is None and "not measured" in scale.goal_line(none)


def test_cells() -> None:
    assert scale.cell({"median": None, "min": None, "max": None}) == "-"
    assert scale.cell({"median": 2.0, "min": 1.9, "max": 2.1}) == "2.0 (1.9–2.1)"
    assert scale.cell({"median": 2.0, "min": 2.0, "max": 2.0}) == "2.0"
    assert scale.cell({"median": 15000.0, "min": 500.0, "max": 5e6}, size=True) == \
        "15,000 (500–5,000,000)"


def test_rounded_walks_nested_values() -> None:
    assert scale.rounded({"a": [1.23456, {"b": 2.0001}], "c": "x", "d": 3}) == \
        {"a": [1.235, {"b": 2.0}], "c": "x", "d": 3}


def test_markdown_has_the_table_and_the_goal() -> None:
    summary = scale.summarize(RUNS, [3, 1000])
    result = {
        "benchmark": "bench", "date": "2026-12-01T00:00:00Z", "command": "cmd",
        "machine": {"cpu": "cpu", "cores": 2, "mem_mib": 1024, "os": "Debian", "python": "3.11",
                    "nova": "34.0.0", "load_average_at_start": [0.5, 0.5, 0.5], "ours_code": "tree"},
        "host": "compute1", "instances": 50, "fake_capacity": "nearly-full",
        "capacity_check": "default", "ours_command": "nova-evacuate", "heartbeat_interval_s": 3.33,
        "service_down_time_s": 10.0, "heartbeat": {"beats": 10, "failures": 0, "max_gap_s": 3.4,
                                                   "last_error": None},
        "setup": {}, "population": {"3": {"added": 0}, "1000": {"added": 997, "total_s": 61.0}},
        "rig_checks": {"1000": facts(997)}, "leftovers_at_start": {}, "teardown": {},
        "total_s": 1.0, "summary": summary, "goal": scale.goal(summary), "error": None,
        "runs": RUNS,
    }
    text = scale.markdown(result)
    assert "| hosts | dry-run s | first evacuate s | makespan s | ok runs |" in text
    assert "| 3 | 1.0 | 1.3 (1.2–1.4) | 21.3 (21.2–21.4) | 2/2 |" in text
    assert "| 1,000 |" in text and "2/3" in text
    assert "997 in 61.0 s" in text and "| 5,000,000 |" in text
    assert "**Goal: 1,000 hosts within 1 s of 3 hosts" in text
    assert "`GET /allocation_candidates` 1.0 (5,000,000 B)" in text
    assert "Failed runs:" in text and "1,000 hosts, round 0" in text
