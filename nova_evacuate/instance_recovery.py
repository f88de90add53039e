"""Which stopped servers to start again: the decision of the worker's instance recovery.

Pure functions over plain data: no I/O, no clock. The NovaEvacuate worker
(:mod:`nova_evacuate.worker`) gathers the data from Nova and Glance, starts the servers
decided here and writes the timeline.

A guest whose OS crashed with a ``poweroff`` watchdog action, or whose hypervisor process
died, ends SHUTOFF while its host is fine, and nobody starts it again. With
``[instance_recovery] enabled``, the worker does, for the servers opted in
(``marker_key``, default ``ha:recover=true``, in the server's metadata, its embedded
flavor's extra specs or its image's properties), on the hosts it may act on (up, not
forced down, and not in the evacuation ledger: a host being evacuated or returning is the
engine's).

**A user's stop is never undone.** Nova's instance actions tell the two apart. When
nova-compute finds a guest shut down that Nova believes ACTIVE, it is Nova itself that
stops the server: ``ComputeManager._sync_power_states`` (the periodic task, every
``[DEFAULT] sync_power_state_interval``) and ``ComputeManager.handle_lifecycle_event`` (a
hypervisor event; libvirt's comes 15 s after a guest stopped) both call
``ComputeManager._sync_instance_power_state``, which for vm_state ``active`` and a power
state ``SHUTDOWN`` or ``CRASHED`` calls ``_stop_unexpected_shutdown_instance``, which
calls ``compute_api.stop`` (``API.force_stop`` for a stopped or paused server whose power
state disagrees). ``API.force_stop`` records the instance action through
``_record_action_start`` → ``InstanceAction.action_start`` with the caller's context; the
context is ``nova.context.get_admin_context()`` (the periodic task's, made by
``nova.service.Service.periodic_tasks``; the lifecycle event's, made in
``handle_lifecycle_event``): ``user_id=None`` and ``project_id=None``, and a request id
of its own. So the action is ``stop`` with ``user_id`` and ``project_id`` null. A stop
through the API (``openstack server stop``, an admin's or the evacuation engine's
included) records the same ``stop`` action with the caller's user and project ids (nova
34, nova/objects/instance_action.py ``pack_action_start``).

The rule, on the server's newest instance actions (``GET
/servers/{id}/os-instance-actions``, newest first):

* the newest is not a ``stop``: someone acted on the server after it stopped (an
  ``evacuate`` that landed it stopped, a lock by an operator looking into it, ...): left
  alone; but a ``start`` that left it SHUTOFF after a restart of ours is a give-up;
* a ``stop`` with a user or project: a stop through the API, left alone;
* a ``stop`` by Nova: the actions before it are read back, over those that do not change
  whether the guest runs (lock, resize, migrations, an evacuation at the engine's
  microversion 2.94, volume and port changes, ...), to the last one that does. One that
  leaves the guest running (:data:`RUNNING_AFTER`: ``create``, ``start``, ``reboot``,
  ...) means the guest stopped by itself: it is started again. One that leaves it not
  running (:data:`NOT_RUNNING_AFTER`: ``stop``, ``pause``, ...) means its owner did not
  want it running: Nova stopped a guest started outside Nova (``virsh start``) on a
  stopped server, or one that died while paused; a start would boot what was stopped or
  paused: left alone. None among the actions read: left alone.

A guest OS shut down from inside (``poweroff`` in the guest) reaches Nova the same way as
a crash, and is restarted like one: opting a server in says its guest is not to stay down.

At most ``max_restarts_per_hour`` restarts of one server within any hour: after that the
server is left SHUTOFF and the timeline says the worker gave up.

What is read, so that a scan costs the same whatever the size of the cloud: one list of
the compute services; one list of the servers SHUTOFF that changed in the last hour
(:data:`LOOKBACK`; a server stopped longer ago, with no worker running to see it, is left
to its owner); Glance's list of the images with the marker only when a stopped server on a
watched host is not opted in by its metadata or flavor; and the instance actions (one
request, the :data:`ACTIONS_READ` newest) only of an opted-in server on a watched host,
with no task under way, not decided already at its current ``updated`` time: a server is
read again only once Nova saved something new about it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from nova_evacuate.plan import Server, is_true

# "Per hour": a sliding window of this many seconds.
WINDOW_SECONDS = 3600.0
# Servers changed longer ago than this are not listed.
LOOKBACK = timedelta(hours=1)
# Newest instance actions read per server (one request, microversion 2.58+ ``limit``).
ACTIONS_READ = 20
# Nova's server metadata and flavor extra spec keys, less the space (the option's regex).
MARKER_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,255}")

# Nova's instance action names (nova/compute/instance_actions.py) after which the guest
# runs, and after which it does not. Every other action leaves that as it was.
RUNNING_AFTER = frozenset({"create", "start", "reboot", "unpause", "resume", "unshelve",
                           "unrescue", "restore"})
NOT_RUNNING_AFTER = frozenset({"stop", "pause", "suspend", "shelve", "shelveOffload",
                               "rescue"})


@dataclass(frozen=True)
class Settings:
    """``[instance_recovery]``, as the worker uses it."""

    marker_key: str = "ha:recover"
    max_restarts_per_hour: int = 3
    interval: float = 30.0

    @classmethod
    def from_conf(cls, conf: Any) -> Settings:
        group = conf.instance_recovery
        return cls(marker_key=group.marker_key,
                   max_restarts_per_hour=group.max_restarts_per_hour,
                   interval=float(group.interval))


@dataclass(frozen=True)
class StoppedServer:
    """A SHUTOFF server from ``GET /servers/detail``, with Nova's ``updated`` time of it
    (changed whenever Nova saves the server: a stop, a start, a task)."""

    server: Server
    updated: str


@dataclass(frozen=True)
class InstanceAction:
    """One entry of ``GET /servers/{id}/os-instance-actions``."""

    action: str
    request_id: str = ""
    user_id: str | None = None
    project_id: str | None = None
    start_time: str = ""
    message: str | None = None  # "Error" once one of its events failed

    @property
    def by_nova(self) -> bool:
        """Recorded under Nova's own admin context (no user, no project): its power-state
        sync, not an API caller."""
        return not self.user_id and not self.project_id

    def describe(self) -> str:
        who = "Nova's power-state sync" if self.by_nova else f"user {self.user_id}"
        return f"'{self.action}' by {who} (request {self.request_id or '?'})"


class Verdict(StrEnum):
    START = "start"  # it stopped by itself: start it
    LEAVE = "leave"  # not for us (a user's stop, ...): until Nova saves something new
    GIVE_UP = "give_up"  # ours, but not again (the restart limit, a failed start)
    WAIT = "wait"  # not now: a task under way, its host not watched; look next scan
    NOT_OPTED_IN = "not_opted_in"


@dataclass(frozen=True)
class Decision:
    server_id: str
    name: str
    host: str
    verdict: Verdict
    why: str


class ServiceView(Protocol):
    """What is read of a nova-compute service (nova.ComputeService has it)."""

    @property
    def host(self) -> str: ...

    @property
    def live(self) -> bool: ...

    @property
    def disabled_reason(self) -> str | None: ...


# ---------------------------------------------------------------------------- selection


def valid_marker_key(key: str) -> bool:
    """Whether ``key`` can be a metadata key, a flavor extra spec and an image property."""
    return MARKER_KEY_PATTERN.fullmatch(key) is not None


def opted_in_by_server(server: Server, key: str) -> bool:
    """The marker in the server's own metadata or its embedded flavor's extra specs."""
    return is_true(server.metadata.get(key, "")) or \
        is_true(server.flavor_extra_specs.get(key, ""))


def opted_in(server: Server, key: str, tagged_images: Set[str]) -> bool:
    """The marker anywhere: metadata, flavor, or its image (``tagged_images``: the ids of
    the images whose property ``key`` is true)."""
    return opted_in_by_server(server, key) or \
        (server.image_id is not None and server.image_id in tagged_images)


def watched_hosts(services: Iterable[ServiceView]) -> set[str]:
    """The hosts whose stopped servers may be started: Nova sees them up and not forced
    down, and the evacuation ledger has no entry for them (an unreadable entry counts as
    one: the host is left to whoever wrote it)."""
    # imported here: the ledger imports the Nova adapter, which imports this module's types
    from nova_evacuate.ledger import LedgerError, parse_marker

    hosts = set()
    for service in services:
        if not service.live:
            continue
        try:
            if parse_marker(service.disabled_reason) is not None:
                continue
        except LedgerError:
            continue
        hosts.add(service.host)
    return hosts


def _undecided(stopped: Iterable[StoppedServer], watched: Set[str],
               decided: Mapping[str, str]) -> Iterable[StoppedServer]:
    """The stopped servers worth a look: on a watched host, no task under way, and not
    decided already at their current ``updated`` time."""
    for s in stopped:
        if decided.get(s.server.id) == s.updated:
            continue
        if s.server.host in watched and s.server.task_state is None:
            yield s


def needs_images(stopped: Iterable[StoppedServer], watched: Set[str], key: str,
                 decided: Mapping[str, str]) -> bool:
    """Whether Glance's list of marked images is needed this scan: a server worth a look
    that has an image and is not opted in by its metadata or flavor."""
    return any(s.server.image_id and not opted_in_by_server(s.server, key)
               for s in _undecided(stopped, watched, decided))


def triage(stopped: Sequence[StoppedServer], watched: Set[str], key: str,
           tagged_images: Set[str], decided: Mapping[str, str],
           ) -> tuple[list[StoppedServer], list[Decision]]:
    """Split this scan's stopped servers into those whose instance actions are to be read
    (opted in, on a watched host, no task under way, new since they were last decided)
    and the decisions that need no read (WAIT, NOT_OPTED_IN). Servers decided already at
    their current ``updated`` time are in neither."""
    to_read: list[StoppedServer] = []
    decisions: list[Decision] = []
    for s in stopped:
        server = s.server
        if decided.get(server.id) == s.updated:
            continue
        host = server.host or ""
        if not opted_in(server, key, tagged_images):
            decisions.append(_decision(server, Verdict.NOT_OPTED_IN, f"no {key}=true"))
        elif server.host not in watched:
            decisions.append(_decision(server, Verdict.WAIT, f"its host {host or '(none)'} is"
                                       " down, forced down or in the evacuation ledger"))
        elif server.task_state is not None:
            decisions.append(_decision(server, Verdict.WAIT,
                                       f"task {server.task_state} under way"))
        else:
            to_read.append(s)
    return to_read, decisions


# ---------------------------------------------------------------------------- the decision


def restarts_in_window(times: Iterable[float], now: float) -> list[float]:
    """The restart times (seconds, one clock) within the sliding hour before ``now``."""
    return [t for t in times if now - WINDOW_SECONDS < t <= now]


def decide(server: Server, actions: Sequence[InstanceAction], restarts: Sequence[float],
           now: float, max_restarts_per_hour: int) -> Decision:
    """What to do with ``server`` (opted in, SHUTOFF on a watched host, no task), from its
    instance actions (newest first) and the times the worker restarted it (the module's
    docstring gives the rule)."""
    recent = restarts_in_window(restarts, now)
    if not actions:
        return _decision(server, Verdict.LEAVE, "Nova lists no instance action for it")
    newest = actions[0]
    if newest.action == "start" and recent:
        failed = f" ({newest.message})" if newest.message else ""
        return _decision(server, Verdict.GIVE_UP, f"restarted {len(recent)} time(s) in the"
                         f" last hour, but it did not come up: Nova's start{failed} left it"
                         " SHUTOFF")
    if newest.action != "stop":
        return _decision(server, Verdict.LEAVE, f"its newest instance action is"
                         f" {newest.describe()}, not a stop by Nova")
    if not newest.by_nova:
        return _decision(server, Verdict.LEAVE, f"stopped through the API: {newest.describe()}")
    before = _last_power_action(actions[1:])
    if before is None:
        return _decision(server, Verdict.LEAVE, f"stopped by Nova ({newest.describe()}), but"
                         f" none of its {len(actions)} newest actions says it was running")
    if before.action in NOT_RUNNING_AFTER:
        return _decision(server, Verdict.LEAVE, f"stopped by Nova ({newest.describe()}) when"
                         f" it was not meant to run, after {before.describe()} (its guest"
                         " started outside Nova, or died while paused)")
    if len(recent) >= max_restarts_per_hour:
        return _decision(server, Verdict.GIVE_UP, f"stopped by itself again after"
                         f" {len(recent)} restart(s) in the last hour ([instance_recovery]"
                         f" max_restarts_per_hour = {max_restarts_per_hour}): left SHUTOFF")
    return _decision(server, Verdict.START, f"stopped by itself: {newest.describe()} after"
                     f" {before.describe()}; restart {len(recent) + 1} of at most"
                     f" {max_restarts_per_hour} in an hour")


def _last_power_action(actions: Iterable[InstanceAction]) -> InstanceAction | None:
    """The newest of ``actions`` (newest first) that says whether the guest runs."""
    for action in actions:
        if action.action in RUNNING_AFTER or action.action in NOT_RUNNING_AFTER:
            return action
    return None


def _decision(server: Server, verdict: Verdict, why: str) -> Decision:
    return Decision(server.id, server.name, server.host or "", verdict, why)
