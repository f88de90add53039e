"""The Consul watcher: its decision on plain data, and its loop against real HTTP servers in
this process standing for each network's Consul (the lab's serf pools are in
tests/e2e/test_consul_partition.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_consul import FakeConsul, _serve, as_json, serf_check

from nova_evacuate import consul_watch
from nova_evacuate.consul_watch import Watch, read_pool
from openstack_ha.consul import ConsulClient, NetworkView

A, F, U = NetworkView.ALIVE, NetworkView.FAILED, NetworkView.UNKNOWN
NODES = ["compute1", "compute2", "compute3", "compute4"]


def reading(**by_node: tuple[NetworkView, NetworkView]) -> dict[str, dict[str, NetworkView]]:
    """network → node → view, every node alive on both networks but those given."""
    views = {"management": dict.fromkeys(NODES, A), "storage": dict.fromkeys(NODES, A)}
    for node, (management, storage) in by_node.items():
        views["management"][node] = management
        views["storage"][node] = storage
    return views


ONLINE = dict.fromkeys(NODES, True)


def test_a_node_failed_everywhere_samples_times_in_a_row_is_reported_once() -> None:
    watch = Watch(samples=3, max_down_fraction=0.5)
    failed = reading(compute1=(F, F))
    assert watch.observe(ONLINE, failed) == []
    assert watch.observe(ONLINE, failed) == []
    (report,) = watch.observe(ONLINE, failed)
    assert report.node == "compute1" and report.refusal is None
    assert report.views == "management=failed storage=failed"
    assert watch.observe(ONLINE, failed) == []  # once
    # Pacemaker lost it (fenced): a later failure of the same node is reported again
    watch.observe({**ONLINE, "compute1": False}, failed)
    assert [watch.observe(ONLINE, failed) for _ in range(3)][-1][0].node == "compute1"


@pytest.mark.parametrize("interruption", [
    (F, A),  # failed on management only: a partition, fence_nova's judge decides
    (F, U),  # a view not known
    (A, A),
])
def test_anything_but_failed_everywhere_starts_the_count_again(interruption) -> None:
    watch = Watch(samples=2, max_down_fraction=0.5)
    assert watch.observe(ONLINE, reading(compute1=(F, F))) == []
    assert watch.observe(ONLINE, reading(compute1=interruption)) == []
    assert watch.observe(ONLINE, reading(compute1=(F, F))) == []
    assert watch.observe(ONLINE, reading(compute1=(F, F)))[0].node == "compute1"


def test_a_node_pacemaker_already_lost_is_left_to_pacemaker() -> None:
    watch = Watch(samples=1, max_down_fraction=0.5)
    assert watch.observe({**ONLINE, "compute1": False}, reading(compute1=(F, F))) == []


def test_a_node_no_network_lists_is_not_failed() -> None:
    watch = Watch(samples=1, max_down_fraction=0.5)
    assert watch.observe(ONLINE, {}) == []
    assert watch.observe({"compute9": True}, reading()) == []


def test_the_brake_holds_when_too_many_look_failed() -> None:
    """The controller lost its own networks: every node looks failed everywhere."""
    watch = Watch(samples=1, max_down_fraction=0.5)
    everyone = reading(**{node: (F, F) for node in NODES})
    reports = watch.observe(ONLINE, everyone)
    assert [r.node for r in reports] == NODES
    assert all(r.refusal and "4 of 4 compute nodes look down" in r.refusal for r in reports)
    # nodes Pacemaker already lost count too: 2 lost + 1 failed = 3 of 4
    watch = Watch(samples=1, max_down_fraction=0.5)
    (report,) = watch.observe({**ONLINE, "compute2": False, "compute3": False},
                              reading(compute1=(F, F)))
    assert report.refusal is not None and "3 of 4" in report.refusal


def test_the_brake_does_not_count_nodes_this_suite_fenced_or_is_bringing_back() -> None:
    """compute2 is held off while evacuated and compute3 returning (both offline in
    Pacemaker, both explained): compute1 failed everywhere is one failure of four."""
    lost = {**ONLINE, "compute2": False, "compute3": False}
    watch = Watch(samples=1, max_down_fraction=0.5)
    (report,) = watch.observe(lost, reading(compute1=(F, F)), {"compute2", "compute3"})
    assert report.node == "compute1" and report.refusal is None
    # a mark left on a node Pacemaker sees online explains nothing: failed, it counts
    watch = Watch(samples=1, max_down_fraction=0.25)
    reports = watch.observe({**lost, "compute3": True},
                            reading(compute1=(F, F), compute3=(F, F)), {"compute2", "compute3"})
    assert [r.node for r in reports] == ["compute1", "compute3"]
    assert all(r.refusal and "2 of 4 compute nodes look down" in r.refusal for r in reports)


# ------------------------------------------------------------------ against real HTTP


class Pool:
    def __init__(self, server: FakeConsul) -> None:
        self.server = server
        self.set({})

    def set(self, statuses: dict[str, str]) -> None:
        """node → alive | failed; every node of NODES alive unless given."""
        codes = {"alive": 1, "failed": 4}
        members = [{"Name": node, "Addr": "10.0.0.1", "Port": 8301, "Tags": {},
                    "Status": codes[statuses.get(node, "alive")]} for node in NODES]
        self.server.answers["/v1/agent/members"] = as_json(members)
        for node in NODES:
            health = "critical" if statuses.get(node) == "failed" else "passing"
            self.server.answers[f"/v1/health/node/{node}"] = as_json([serf_check(node, health)])


@pytest.fixture
def pools() -> Iterator[dict[str, Pool]]:
    servers = [_serve(FakeConsul()) for _ in range(2)]
    management, storage = (next(server) for server in servers)
    yield {"management": Pool(management), "storage": Pool(storage)}
    for server in servers:
        next(server, None)


def clients(pools: dict[str, Pool]) -> dict[str, ConsulClient]:
    return {name: ConsulClient(pool.server.url, timeout=1) for name, pool in pools.items()}


def test_read_pool_asks_health_only_of_the_members_listed_failed(pools) -> None:
    pools["management"].set({"compute2": "failed"})
    client = ConsulClient(pools["management"].server.url, timeout=1)
    assert read_pool(client, [*NODES, "compute9"]) == {
        "compute1": A, "compute2": F, "compute3": A, "compute4": A, "compute9": U}
    paths = [path for path, _ in pools["management"].server.requests]
    assert paths == ["/v1/agent/members", "/v1/health/node/compute2"]


def test_read_pool_of_an_unreachable_consul_is_unknown() -> None:
    client = ConsulClient("http://127.0.0.1:9", timeout=1)
    assert read_pool(client, NODES) == dict.fromkeys(NODES, U)


def test_the_loop_fails_the_connection_of_a_node_failed_everywhere(
        pools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSTACK_HA_TIMELINE", str(tmp_path / "timeline.jsonl"))
    for pool in pools.values():
        pool.set({"compute3": "failed"})
    failed: list[str] = []
    stop = threading.Event()

    def fail_connection(node: str) -> None:
        failed.append(node)
        stop.set()

    thread = threading.Thread(target=consul_watch.run, args=(
        Watch(samples=2, max_down_fraction=0.5), clients(pools), 0.05,
        lambda: {**ONLINE, "compute2": False, "compute4": False}, fail_connection, stop,
        lambda: {"compute2", "compute4"}))
    thread.start()
    thread.join(10)
    # compute2 and compute4, offline and handled (held or returning), are not counted:
    # 1 of 4 (counted, 3 of 4 would hold the brake)
    assert not thread.is_alive() and failed == ["compute3"]
    (line,) = [json.loads(text) for text in (tmp_path / "timeline.jsonl").read_text().splitlines()]
    assert line["event"] == "consul_down" and line["host"] == "compute3"
    assert line["views"] == "management=failed storage=failed"


def test_the_loop_reports_a_refusal_once_a_minute_and_fails_nothing(
        pools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSTACK_HA_TIMELINE", str(tmp_path / "timeline.jsonl"))
    for pool in pools.values():
        pool.set(dict.fromkeys(NODES, "failed"))
    stop = threading.Event()
    thread = threading.Thread(target=consul_watch.run, args=(
        Watch(samples=1, max_down_fraction=0.5), clients(pools), 0.05,
        lambda: dict(ONLINE), lambda node: pytest.fail(f"{node} reported"), stop))
    thread.start()
    threading.Timer(0.6, stop.set).start()
    thread.join(10)
    lines = [json.loads(text) for text in (tmp_path / "timeline.jsonl").read_text().splitlines()]
    assert sorted(line["host"] for line in lines) == NODES  # several readings, one line each
    assert all(line["event"] == "consul_refused" for line in lines)


def test_the_worker_starts_the_watcher_only_with_networks_and_watch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from nova_evacuate import conf as confmod
    from nova_evacuate import worker
    from openstack_ha import pacemaker

    monkeypatch.setattr(pacemaker, "remote_nodes_down", lambda: {})  # no cluster here
    path = tmp_path / "openstack-ha.conf"
    stop = threading.Event()
    for text in ("[consul]\n",
                 "[consul]\nnetworks = management=http://127.0.0.1:9\nwatch = false\n",
                 "[consul]\nnetworks = management=ftp://127.0.0.1:9\n"):
        path.write_text(text)
        assert worker.start_consul_watch(confmod.load([str(path)]), stop) is None, text
    assert "no Consul watcher" in caplog.text  # the bad URL, one line
    path.write_text("[consul]\nnetworks = management=http://127.0.0.1:9\n")
    thread = worker.start_consul_watch(confmod.load([str(path)]), stop)
    assert thread is not None and thread.is_alive()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
