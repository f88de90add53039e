"""The Consul watcher: a node Consul sees failed on every network is reported to Pacemaker at
once, instead of after its connection's monitor times out.

A hung node or one whose links are all cut answers nothing: Pacemaker notices only when the
remote connection's monitor times out. Gossip notices on its own clock, and when every
network's pool has declared the node failed for ``samples`` readings in a row (``interval``
apart, the ``[consul]`` options), the watcher fails the node's connection resource
(``crm_resource --fail``), exactly what a timed-out monitor does: Pacemaker then fences the
node through its topology, fence_nova reads Consul again (failed everywhere: a fence), and the
recovery goes on as usual. The watcher never fences by itself and acts on nothing Pacemaker
does not see as online.

It runs in the NovaEvacuate worker, in a thread of its own: the worker already runs exactly
once on the controllers (a Pacemaker resource of its own would be another copy to place and
monitor), and it has the mass-failure brake's settings. The brake holds here too: with more of
the compute nodes failed than ``[safety] max_down_fraction`` (the controller lost its own
networks, more likely than half the hosts dying at once), nothing is reported.

Its decisions go to the timeline: ``consul_down`` (the views, the connection failed) and
``consul_refused`` (the brake's reason; at most one line a minute per host).

`Watch` is the decision, plain data in and out; `run` is the loop with its I/O.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field

from nova_evacuate import brake
from nova_evacuate.brake import HostView, LineLimiter
from openstack_ha import timeline
from openstack_ha.consul import (
    CheckStatus,
    ConsulClient,
    ConsulError,
    MemberStatus,
    NetworkView,
    views_text,
)

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """What to do about ``node``: fail its connection (``refusal`` None), or not, and why."""

    node: str
    views: str
    refusal: str | None = None


@dataclass
class Watch:
    """Counts, per node, the readings in a row that found it failed on every network."""

    samples: int
    max_down_fraction: float
    failed_in_a_row: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    def observe(self, online: Mapping[str, bool],
                views: Mapping[str, Mapping[str, NetworkView]],
                handled: Set[str] = frozenset()) -> list[Report]:
        """One reading. ``online``: each pacemaker_remote node → Pacemaker sees it online;
        ``views``: network → node → view; ``handled``: the nodes whose absence this suite
        explains (fenced and held, or returning: not counted by the brake while offline).
        The nodes to report now (each once, until Pacemaker has lost it or gossip sees it
        again)."""
        shown: dict[str, str] = {}
        for node, is_online in sorted(online.items()):
            seen = {network: by_node.get(node, NetworkView.UNKNOWN)
                    for network, by_node in views.items()}
            if not is_online or not seen or any(v is not NetworkView.FAILED
                                                for v in seen.values()):
                self.failed_in_a_row.pop(node, None)
                self.reported.discard(node)
                continue
            self.failed_in_a_row[node] = self.failed_in_a_row.get(node, 0) + 1
            shown[node] = views_text(seen)
        # the brake counts every node down or failed in this reading, so counted after all
        hosts = [HostView(name, not up or self.failed_in_a_row.get(name, 0) >= self.samples,
                          handled=not up and name in handled)
                 for name, up in online.items()]
        reports = []
        for node, views_shown in shown.items():
            if self.failed_in_a_row[node] < self.samples or node in self.reported:
                continue
            verdict = brake.mass_failure(hosts, node, self.max_down_fraction,
                                         limit=f"max_down_fraction={self.max_down_fraction:g}",
                                         what="compute nodes")
            if verdict.engaged:
                reports.append(Report(node, views_shown, verdict.reason))
                continue
            self.reported.add(node)
            reports.append(Report(node, views_shown))
        return reports


def read_pool(client: ConsulClient, nodes: list[str]) -> dict[str, NetworkView]:
    """One network's view of each of ``nodes`` in one reading: the member list once, and
    ``serfHealth`` only for the members it lists failed or left (a node is FAILED only when
    both say so, as `openstack_ha.consul.read_node` has it); ALIVE stands here for "not
    failed". Consul unreadable: every node UNKNOWN."""
    try:
        members = client.members()
        views = {}
        for node in nodes:
            status = members.get(node)
            if status in (MemberStatus.FAILED, MemberStatus.LEFT):
                health = client.node_health(node)
                views[node] = (NetworkView.FAILED if health in (CheckStatus.CRITICAL, None)
                               else NetworkView.UNKNOWN)
            else:
                views[node] = NetworkView.ALIVE if status is MemberStatus.ALIVE \
                    else NetworkView.UNKNOWN
        return views
    except ConsulError as exc:
        LOG.debug("consul watch: %s", exc)
        return dict.fromkeys(nodes, NetworkView.UNKNOWN)


def run(watch: Watch, clients: dict[str, ConsulClient], interval: float,
        nodes_online: Callable[[], dict[str, bool]], fail_connection: Callable[[str], None],
        stop: threading.Event,
        handled_nodes: Callable[[], set[str]] = set) -> None:
    """The watcher's loop, until ``stop``: read every network (at once), decide, report.
    ``handled_nodes`` is read only in a reading where some node is offline."""
    limiter = LineLimiter()
    period = max(interval, 0.5)
    while not stop.is_set():
        began = time.monotonic()
        try:
            online = nodes_online()
        except Exception as exc:  # the cluster unreadable for a moment: the next reading
            LOG.debug("consul watch: cluster unreadable: %s", exc)
            online = {}
        handled: set[str] = set()
        if not all(online.values()):
            try:
                handled = handled_nodes()
            except Exception as exc:  # unreadable: every offline node counts, as down
                LOG.debug("consul watch: handled nodes unreadable: %s", exc)
        if online:
            for report in watch.observe(online, read_pools(clients, list(online)), handled):
                _act(report, fail_connection, limiter)
        stop.wait(max(0.0, began + period - time.monotonic()))


def read_pools(clients: dict[str, ConsulClient],
               nodes: list[str]) -> dict[str, dict[str, NetworkView]]:
    """`read_pool` of every network at once (a thread each): network → node → view."""
    views: dict[str, dict[str, NetworkView]] = {}

    def read(name: str, client: ConsulClient) -> None:
        views[name] = read_pool(client, nodes)

    threads = [threading.Thread(target=read, args=item, daemon=True, name=f"watch-{item[0]}")
               for item in clients.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # bounded: two requests per failed node at the client's timeout
    return {name: views[name] for name in clients}  # the networks' order, not the threads'


def _act(report: Report, fail_connection: Callable[[str], None],
         limiter: LineLimiter) -> None:
    if report.refusal is not None:
        LOG.error("%s: Consul sees it failed on every network (%s), not reported: %s",
                  report.node, report.views, report.refusal)
        held = limiter.admit(report.node)
        if held is not None:
            timeline.record("consul_refused", report.node, by="nova-evacuate",
                            views=report.views, reason=report.refusal,
                            **({"suppressed": held} if held else {}))
        return
    LOG.warning("%s: Consul sees it failed on every network (%s): failing its cluster"
                " connection so that Pacemaker fences it now", report.node, report.views)
    timeline.record("consul_down", report.node, by="nova-evacuate", views=report.views)
    try:
        fail_connection(report.node)
    except Exception as exc:  # Pacemaker's own monitor still finds it, later
        LOG.error("%s: its connection could not be failed (%s); Pacemaker's monitor will"
                  " find it", report.node, exc)
