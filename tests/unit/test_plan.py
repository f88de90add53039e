"""The evacuation plan (nova_evacuate/plan.py): selection, order, capacity, the brake."""

from __future__ import annotations

import pytest

from nova_evacuate.plan import (
    Aggregate,
    Inventory,
    Policy,
    RebuildEvent,
    Resources,
    Server,
    assign_targets,
    left_in_error_by_a_late_request,
    make_plan,
    select,
    with_capacity,
)

HOST = "compute1"


def server(name: str, *, image: str = "img-plain", specs: dict | None = None, ram: int = 64,
           status: str = "ACTIVE", metadata: dict | None = None, task: str | None = None) -> Server:
    return Server(id=f"id-{name}", name=name, status=status, host=HOST, task_state=task,
                  image_id=image, flavor_name="f", vcpus=1, ram_mb=ram, disk_gb=1,
                  flavor_extra_specs=specs or {}, metadata=metadata or {})


FREE = {"compute2": Resources(100, 1000, 100), "compute3": Resources(100, 500, 100)}


def names(servers) -> list[str]:
    return sorted(s.name for s in servers)


def test_nothing_tagged_selects_everything():
    inv = Inventory(HOST, [server("a"), server("b")])
    chosen, skipped, how = select(inv, Policy())
    assert names(chosen) == ["a", "b"] and not skipped
    assert "nothing is tagged" in how


def test_a_tagged_image_or_flavor_anywhere_restricts_to_tagged_instances():
    servers = [server("by-image", image="img-tagged"), server("by-flavor", specs={"evacuable": "True"}),
               server("plain"), server("false-flavor", specs={"evacuable": "false"})]
    inv = Inventory(HOST, servers, tagged_images=frozenset({"img-tagged"}))
    chosen, skipped, _ = select(inv, Policy())
    assert names(chosen) == ["by-flavor", "by-image"]
    assert names(s.server for s in skipped) == ["false-flavor", "plain"]
    assert all("not tagged" in s.reason for s in skipped)
    # a tagged flavor elsewhere in the cloud is enough to switch filtering on
    inv = Inventory(HOST, [server("plain")], any_tagged_flavor=True)
    assert select(inv, Policy())[0] == []


def test_a_tagged_aggregate_selects_every_instance_of_its_hosts_only():
    tagged = Aggregate("ha", frozenset({HOST}), {"evacuable": "true"})
    inv = Inventory(HOST, [server("plain")], aggregates=[tagged])
    assert names(select(inv, Policy())[0]) == ["plain"]
    elsewhere = Aggregate("ha", frozenset({"compute9"}), {"evacuable": "true"})
    inv = Inventory(HOST, [server("plain")], aggregates=[elsewhere])
    assert select(inv, Policy())[0] == []


def test_instance_filtering_off_selects_everything_even_when_tagged():
    inv = Inventory(HOST, [server("plain")], tagged_images=frozenset({"x"}))
    assert names(select(inv, Policy(instance_filtering=False))[0]) == ["plain"]


def test_excludes_by_name_and_metadata_are_reported():
    inv = Inventory(HOST, [server("db-1"), server("web-1", metadata={"ha": "off"}), server("app")])
    policy = Policy(exclude_names=("^db-",), exclude_metadata=("ha=off",))
    chosen, skipped, _ = select(inv, policy)
    assert names(chosen) == ["app"]
    assert {s.server.name: s.reason for s in skipped} == {
        "db-1": "name matches exclude_names", "web-1": "metadata matches exclude_metadata"}


def test_servers_only_migrating_to_the_host_are_reported_not_moved():
    inbound = Server(id="id-in", name="in", status="ACTIVE", host="compute2")
    chosen, skipped, _ = select(Inventory(HOST, [], inbound=[inbound]), Policy())
    assert not chosen and "still on compute2" in skipped[0].reason


def test_order_is_by_priority_in_phases_then_biggest_first():
    servers = [server("low", metadata={"ha:priority": "-1"}), server("small"),
               server("big", ram=512), server("high", metadata={"ha:priority": "10"}),
               server("junk", metadata={"ha:priority": "soon"})]
    plan = make_plan(Inventory(HOST, servers, free=FREE), Policy())
    assert [m.server.name for m in plan.moves] == ["high", "big", "junk", "small", "low"]
    assert [[m.server.name for m in phase] for phase in plan.phases()] == [
        ["high"], ["big", "junk", "small"], ["low"]]


def test_targets_prefer_spare_hosts_then_most_free_memory():
    servers = [server(f"s{i}", ram=400) for i in range(3)]
    targets, short = assign_targets(servers, FREE, spare={"compute3"})
    assert [targets[s.id] for s in servers] == ["compute3", "compute2", "compute2"]
    assert short == []
    targets, _ = assign_targets(servers[:1], FREE, spare=set())
    assert targets["id-s0"] == "compute2"


def test_capacity_shortfall_is_reported_and_the_rest_still_planned():
    servers = [server("big", ram=900), server("huge", ram=2000), server("small")]
    plan = make_plan(Inventory(HOST, servers, free=FREE), Policy())
    assert not plan.capacity_ok
    assert plan.shortfall == ("id-huge",)
    by_name = {m.server.name: m.target for m in plan.moves}
    assert by_name == {"huge": None, "big": "compute2", "small": "compute3"}


def test_without_the_capacity_no_target_is_named_and_nothing_is_a_shortfall():
    servers = [server("a", ram=900), server("b")]
    # read, and no host has room: every server is a shortfall...
    read = make_plan(Inventory(HOST, servers, free={}), Policy())
    assert read.shortfall == ("id-a", "id-b") and read.capacity_known
    # ...not read (capacity_check = off, or alongside while the read runs): nothing is known
    plan = make_plan(Inventory(HOST, servers, capacity_known=False), Policy())
    assert [m.target for m in plan.moves] == [None, None]
    assert plan.shortfall == () and plan.capacity_ok and not plan.capacity_known
    assert [m.server.name for m in plan.moves] == ["a", "b"]  # the order does not change


def test_once_the_capacity_is_back_the_servers_not_sent_get_targets():
    """capacity_check = alongside: a and b went out with no target, a known on compute2."""
    servers = [server("a", ram=150), server("b", ram=150), server("c", ram=100),
               server("d", ram=100)]
    plan = make_plan(Inventory(HOST, servers, capacity_known=False), Policy())
    free = {"compute2": Resources(10, 200, 10), "compute3": Resources(10, 100, 10)}

    later = with_capacity(plan, free, unsent={"id-c", "id-d"},
                          sent=[(servers[0], "compute2"), (servers[1], None)], spare=set())

    # a's 150 MB is off compute2 (50 left): c goes to compute3, d fits nowhere; b's host is
    # not known, so its demand is counted nowhere
    assert {m.server.name: m.target for m in later.moves} == {
        "a": None, "b": None, "c": "compute3", "d": None}
    assert later.shortfall == ("id-d",) and later.capacity_known
    assert [m.server.name for m in later.moves] == [m.server.name for m in plan.moves]
    # without a's host known, c would go to the host with the most free memory
    unknown = with_capacity(plan, free, {"id-c", "id-d"}, [(servers[0], None)], set())
    assert {m.server.name: m.target for m in unknown.moves}["c"] == "compute2"
    # a host Nova chose that the plan may not name (not in free) is simply not counted
    elsewhere = with_capacity(plan, free, {"id-c"}, [(servers[0], "compute9")], set())
    assert {m.server.name: m.target for m in elsewhere.moves}["c"] == "compute2"
    # spare hosts first, as in a plan made before
    spare = with_capacity(plan, free, {"id-c"}, [], spare={"compute3"})
    assert {m.server.name: m.target for m in spare.moves}["c"] == "compute3"


def test_reserved_aggregate_hosts_are_spares():
    spare = Aggregate("spares", frozenset({"compute3"}))
    plan = make_plan(Inventory(HOST, [server("a")], free=FREE, aggregates=[spare]),
                     Policy(reserved_aggregate="spares"))
    assert plan.moves[0].target == "compute3"


@pytest.mark.parametrize(("status", "task", "reset"), [
    ("ACTIVE", None, False), ("SHUTOFF", None, False), ("ERROR", None, False),
    ("BUILD", "spawning", True), ("ACTIVE", "rebooting", True)])
def test_states_nova_refuses_to_evacuate_are_reset_first(status, task, reset):
    plan = make_plan(Inventory(HOST, [server("a", status=status, task=task)], free=FREE), Policy())
    assert plan.moves[0].reset_first is reset


def test_a_server_left_in_error_by_a_late_request_is_recognised_by_the_hosts_failed_rebuild():
    def server(status: str = "error", task: str | None = "rebuilding",
               host: str = "compute3") -> Server:
        shown = "REBUILD" if task == "rebuilding" else status.upper()  # as Nova shows it
        return Server(id="s", name="s", status=shown, host=host, task_state=task,
                      vm_state=status)

    live = {"compute2", "compute3"}
    failed_on_compute2 = [RebuildEvent("compute3", "Success"), RebuildEvent("compute2", "Error")]
    assert left_in_error_by_a_late_request("compute2", server(), live, failed_on_compute2)
    assert left_in_error_by_a_late_request("compute2", server(task=None), live,
                                           failed_on_compute2)
    # not that: no failed rebuild by compute2, another cause of ERROR, or not settled
    assert not left_in_error_by_a_late_request(
        "compute2", server(), live, [RebuildEvent("compute3", "Success")])
    assert not left_in_error_by_a_late_request(
        "compute2", server(), live, [RebuildEvent("compute2", "")])
    assert not left_in_error_by_a_late_request("compute2", server(status="active"), live,
                                               failed_on_compute2)
    assert not left_in_error_by_a_late_request("compute2", server(task="deleting"), live,
                                               failed_on_compute2)
    assert not left_in_error_by_a_late_request("compute2", server(host="compute2"), live,
                                               failed_on_compute2)
    assert not left_in_error_by_a_late_request("compute2", server(host="compute4"), live,
                                               failed_on_compute2)
