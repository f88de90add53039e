"""The mass-failure brake (nova_evacuate/brake.py): one rule, asked by fence_nova over
Pacemaker's view and by the engine over Nova's."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fence_compute import actions
from nova_evacuate.brake import HostView, mass_failure
from nova_evacuate.plan import Aggregate
from openstack_ha import pacemaker

HOST = "compute1"


def views(*down: bool) -> list[HostView]:
    return [HostView(f"compute{i}", d) for i, d in enumerate(down, 1)]


def brake(hosts, target=HOST, fraction=0.5, **kw):
    return mass_failure(hosts, target, fraction, limit=f"max_down_fraction={fraction}",
                        what="compute services", **kw)


def test_it_engages_above_the_fraction_of_hosts_down():
    assert not brake(views(True, False, False)).engaged
    assert not brake(views(True, True, False, False)).engaged
    engaged = brake(views(True, True, False))
    assert engaged.engaged
    assert "2 of 3 compute services look down (compute1, compute2)" in engaged.reason
    assert "more than max_down_fraction=0.5" in engaged.reason


def test_an_empty_view_engages_it():
    assert brake([]).engaged


def test_per_aggregate_counts_only_the_aggregates_of_the_target():
    rack = Aggregate("rack1", frozenset({"compute1", "compute2"}))
    other = Aggregate("rack2", frozenset({"compute3", "compute4"}))
    many = views(True, True, True, True, False, False, False, False, False)
    assert brake(many, aggregates=[rack], max_down_per_aggregate=1).engaged
    assert "rack1" in brake(many, aggregates=[rack], max_down_per_aggregate=1).reason
    assert not brake(many, aggregates=[other], max_down_per_aggregate=1).engaged
    assert not brake(many, aggregates=[rack], max_down_per_aggregate=0).engaged


def test_a_host_already_fenced_by_the_suite_does_not_count():
    # compute1 was fenced and is being evacuated; compute2 fails next: one unexplained
    # failure of three, not a partition
    hosts = [HostView("compute1", True, handled=True), HostView("compute2", True),
             HostView("compute3", False)]
    assert not brake(hosts, "compute2").engaged
    # the target counts even when handled, and unhandled hosts always count
    hosts = [HostView("compute1", True, handled=True), HostView("compute2", True, handled=True),
             HostView("compute3", True)]
    verdict = brake(hosts, "compute2")
    assert verdict.engaged and "fenced and handled, not counted: compute1" in verdict.reason


@pytest.mark.parametrize("fraction", [math.nan, math.inf, -math.inf, 1.5, -0.1])
def test_it_fails_closed_on_a_bound_that_is_no_fraction(fraction):
    # 10 of 10 hosts down: with NaN every comparison was false and nothing braked
    every = [HostView(f"compute{i}", True) for i in range(10)]
    assert brake(every, "compute0", fraction).engaged
    one = [HostView("compute0", True)] + [HostView(f"c{i}", False) for i in range(9)]
    verdict = brake(one, "compute0", fraction)
    assert verdict.engaged and "max_down_fraction" in verdict.reason


def test_valid_bounds():
    one_of_four = [HostView("compute0", True)] + [HostView(f"c{i}", False) for i in range(3)]
    assert not brake(one_of_four, "compute0", 0.25).engaged
    assert brake(one_of_four, "compute0", 0.2).engaged
    assert not brake(one_of_four, "compute0", 1.0).engaged


@given(st.integers(1, 60), st.integers(0, 60), st.integers(0, 100))
def test_percent_and_fraction_draw_the_same_line(total, down, percent):
    # fence_nova's max_down_percent is divided by 100: the verdict must be the integer rule
    down = min(down, total)
    hosts = [HostView(f"h{i}", i < down) for i in range(total)]
    verdict = mass_failure(hosts, "h0", percent / 100, limit="p", what="nodes")
    assert verdict.engaged == (down * 100 > percent * total)


# --- fence_nova asks it over Pacemaker's view ------------------------------------------------

class Options:
    def __init__(self, percent: int | None) -> None:
        self.percent = percent

    def number(self, name: str) -> int | None:
        assert name == "max_down_percent"
        return self.percent


def cluster(monkeypatch, nodes: dict[str, bool], held: set[str]) -> None:
    monkeypatch.setattr(pacemaker, "remote_nodes_down", lambda: nodes)
    monkeypatch.setattr(pacemaker, "handled_connections", lambda now: held)


def test_fencing_does_not_count_a_node_it_fenced_and_holds(monkeypatch):
    nodes = {"compute1": True, "compute2": True, "compute3": False}
    # compute1 failed first and is held off while evacuated: compute2 is one of three
    cluster(monkeypatch, nodes, {"compute1"})
    assert actions.mass_failure(Options(50), "compute2") is None
    # the same two down with nothing held: a partition or a broken observer
    cluster(monkeypatch, nodes, set())
    reason = actions.mass_failure(Options(50), "compute2")
    assert reason is not None and "2 of 3 compute nodes look down" in reason
    assert "max_down_percent=50" in reason
    # held nodes never hide many unexplained losses
    cluster(monkeypatch, {n: True for n in nodes}, {"compute1"})
    reason = actions.mass_failure(Options(50), "compute2")
    assert reason is not None and "not counted: compute1" in reason


def test_fencing_brake_off_by_hand_or_at_100_percent(monkeypatch):
    cluster(monkeypatch, {"compute1": True, "compute2": True}, set())
    assert actions.mass_failure(Options(100), "compute1") is None

    def no_cluster():
        raise pacemaker.NoCluster("no cluster here")

    monkeypatch.setattr(pacemaker, "remote_nodes_down", no_cluster)
    assert actions.mass_failure(Options(0), "compute1") is None


def test_fencing_refuses_when_the_cluster_cannot_be_read(monkeypatch):
    def broken():
        raise pacemaker.PacemakerError("crm_mon timed out")

    monkeypatch.setattr(pacemaker, "remote_nodes_down", broken)
    reason = actions.mass_failure(Options(50), "compute1")
    assert reason is not None and "cannot read the cluster's view" in reason
