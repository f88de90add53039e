"""The whole evacuation path of one failed host: gates, claim, plan, evacuate, track, finish.

:meth:`Engine.run` in order:

1. Gates. Nova must show the host's nova-compute down or forced down (Nova refuses to
   evacuate otherwise, and a host it sees up may be running its instances). Unless the
   operator forces it, the mass-failure brake (:mod:`nova_evacuate.brake`) must be off.
2. Ledger: record the request if nobody did (a run by hand), then claim the host; the claim
   is renewed while the run lasts and a run that loses it stops issuing work.
3. Plan (:mod:`nova_evacuate.plan`) from what Nova, Glance and Placement say now, including
   what an earlier run already did: evacuation migrations since shortly before the request
   are read first, so a server evacuated (or being evacuated) from the host by a run that
   was killed is tracked, never evacuated a second time, and a server that was being
   evacuated *to* the host when it died is evacuated again from there.
   ``capacity_check`` says when the free capacity is read: ``before`` the first evacuate
   (each server gets a target), ``alongside`` the first evacuations (sent with no target;
   the servers not sent yet when the read is back get targets then,
   :func:`~nova_evacuate.plan.with_capacity`), or ``off`` (never: the scheduler places
   every server).
4. Execute, one thread: evacuate requests go out in plan order, phase by phase, within
   ``max_concurrency`` and ``per_host_concurrency`` (by target host), ``stagger`` apart;
   a server is locked with a reason first (which carries its original status, so a
   resumed run can still restore it) and unlocked when it ends: with ``lock_servers =
   when_needed`` (the default) only the servers meant to end SHUTOFF, PAUSED or SUSPENDED
   (:func:`~nova_evacuate.progress.needs_lock`), with ``always`` every one; with ``[storage]``, each
   request is preceded by one read of who holds the server's RBD disk
   (:mod:`nova_evacuate.disks`), and a disk the failed host still holds fails that server.
   Progress is read from ``os-migrations`` with one filtered list call per poll, and server
   states with one ``changes-since`` list call when migrations finished, never one GET per
   server.
   Destinations are watched: while a server's migration is under way or done, the compute
   services are listed once per poll, and a server whose destination is forced down
   (fenced) is failed at once, naming it (that host's own evacuation takes the server over),
   unless its rebuild never started there and Nova still places it on the failed host:
   then it is reset and sent elsewhere (a destination that hangs before it starts leaves
   its migration as created, which ``changes-since`` never lists: the destination named
   in the request is what is watched). A destination down by its heartbeat alone (a host
   booting back after its own recovery, a stalled nova-compute) is waited for: it may still
   run the rebuild, so nothing is sent elsewhere until it is fenced.
   A server is done only in its final state (the table of :mod:`nova_evacuate.plan`) on
   a live destination: where Nova's rebuild left it running but it is meant to be stopped
   or paused, the engine stops or pauses it first.
   A failed migration is retried up to ``migration_retries`` times, a failed API call up to
   ``api_retries`` times, each server's budget apart; a server still unfinished after
   ``instance_timeout`` is reported timed out.
5. Ledger: done when every planned server finished on another host, else failed, with the
   counts.

Each server's own steps (what its request is, what an answer, a migration or its server
read means for it, retries, timeouts, when it is done) are the pure rules of
:mod:`nova_evacuate.progress`: this module reads Nova, turns each answer into an event for
:func:`~nova_evacuate.progress.advance`, and carries out the actions it returns
(:meth:`Engine._apply`). What concerns several servers at once is decided here: batches
within the bounds, one list call per poll for all of them.

One loop decides, and a few threads send: each server costs one or two requests before its
evacuation starts (a lock where one is taken, the evacuate; about 0.2 s each), so the
requests of one round go out ``SUBMIT_THREADS`` at a time; every decision (what to send,
what finished, what to retry) stays in the loop's thread, and a track is only touched by one
sender at a time.

The Keystone session re-authenticates by itself when its token expires; a Nova API outage
during tracking only delays polling (the per-server timeout still bounds the run).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nova_evacuate.brake import Brake, HostView, mass_failure
from nova_evacuate.disks import DiskCheckError, RbdDisks
from nova_evacuate.ledger import FINISHED, Ledger, LedgerEntry, LedgerError, State, parse_marker
from nova_evacuate.nova import ComputeService, Nova, NovaError, match_service
from nova_evacuate.plan import (
    Inventory,
    Migration,
    Plan,
    Planned,
    Policy,
    Resources,
    Server,
    latest_migrations,
    make_plan,
    rebuilding_onto,
    spare_hosts,
    with_capacity,
)
from nova_evacuate.progress import (
    ENDS,
    Action,
    AskIfEvacuating,
    CallFailed,
    CheckDisk,
    DestinationDied,
    DiskHeld,
    End,
    Evacuate,
    EvacuateAccepted,
    Event,
    HostEvacuating,
    Limits,
    Lock,
    Locked,
    Log,
    MigrationSeen,
    Pause,
    Picked,
    Progress,
    ResetDone,
    ResetToError,
    RestoreAccepted,
    Resumed,
    ServerProgress,
    ServerRead,
    Show,
    Stop,
    Tick,
    Unlock,
    Unlocked,
    WaitedServerRead,
    WatchDestination,
    advance,
    initial_progress,
    rebuild_unseen,
    rebuilt,
    unlock_at_exit,
)
from nova_evacuate.storage_map import addresses_of, parse_storage_map
from nova_evacuate.watchdog import FLAVOR_KEY as WATCHDOG_FLAVOR_KEY
from nova_evacuate.watchdog import effective_action
from openstack_ha import timeline

LOG = logging.getLogger(__name__)

LOCK_PREFIX = "openstack-ha: evacuating from"
# Requests of one round sent at once (lock, state reset, evacuate per server).
SUBMIT_THREADS = 4
# How far before the request migrations are still read as this episode's: covers a claim
# renewed by a run that then died, and clock skew between Nova and the fence agent.
LOOKBACK = timedelta(minutes=15)


def engine_id() -> str:
    """``<node>/<pid>``, the ledger's ``by`` for an engine."""
    node = socket.gethostname().split(".", 1)[0] or "engine"
    return f"{node}/{os.getpid()}"


class Refused(Exception):
    """A safety gate refused to act; the message says which and why."""


class ClaimLost(Exception):
    """Another engine holds the host's evacuation."""


class Stopped(Exception):
    """The engine was asked to stop; its claim was handed back for another to resume."""


@dataclass(frozen=True)
class Settings:
    """The ``[evacuation]`` and ``[safety]`` options the engine reads."""

    policy: Policy = field(default_factory=Policy)
    max_concurrency: int = 20
    per_host_concurrency: int = 10
    stagger: float = 0.0
    instance_timeout: float = 600.0
    poll_interval: float = 2.0
    migration_retries: int = 1
    api_retries: int = 3
    max_down_fraction: float = 0.5
    max_down_per_aggregate: int = 0
    claim_expiry: float = 300.0
    domain: str | None = None
    # ``[storage]``: who may still hold each disk (None: no disk check)
    disks: RbdDisks | None = None
    storage_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    disk_release_wait: float = 45.0
    # when the free capacity is read: "before" the first evacuate, "alongside" it, or "off"
    capacity_check: str = "before"
    # which servers are locked before their request: "when_needed" or "always"
    lock_servers: str = "when_needed"

    @classmethod
    def from_conf(cls, conf: Any) -> Settings:
        ev, safety, storage = conf.evacuation, conf.safety, conf.storage
        return cls(
            policy=Policy(instance_filtering=ev.instance_filtering,
                          exclude_names=tuple(ev.exclude_names),
                          exclude_metadata=tuple(ev.exclude_metadata),
                          priority_key=ev.priority_key, reserved_hosts=tuple(ev.reserved_hosts),
                          reserved_aggregate=ev.reserved_aggregate),
            max_concurrency=ev.max_concurrency, per_host_concurrency=ev.per_host_concurrency,
            stagger=ev.stagger, instance_timeout=ev.instance_timeout,
            poll_interval=ev.poll_interval, migration_retries=ev.migration_retries,
            api_retries=ev.api_retries, max_down_fraction=safety.max_down_fraction,
            max_down_per_aggregate=safety.max_down_per_aggregate,
            claim_expiry=safety.claim_expiry, domain=conf.cloud.domain,
            disks=RbdDisks(storage.rbd_pool, storage.ceph_conf, storage.ceph_user,
                           storage.ceph_keyring_file, storage.check_timeout)
            if storage.rbd_pool else None,
            storage_map=parse_storage_map(storage.storage_map) if storage.storage_map else {},
            disk_release_wait=storage.release_wait, capacity_check=ev.capacity_check,
            lock_servers=ev.lock_servers)

    @property
    def limits(self) -> Limits:
        """Each server's budget, as :mod:`nova_evacuate.progress` reads it."""
        return Limits(self.migration_retries, self.api_retries, self.instance_timeout,
                      check_disk=self.disks is not None,
                      disk_release_wait=self.disk_release_wait,
                      lock_all=self.lock_servers == "always")


# The per-server states (:class:`Progress`), by the names cli.py, worker.py and the tests
# import from here; the last three are ends.
PENDING, SUBMITTED, RESTORING = Progress.PENDING, Progress.SUBMITTED, Progress.RESTORING
DONE, FAILED, TIMED_OUT = Progress.DONE, Progress.FAILED, Progress.TIMED_OUT


@dataclass
class Track:
    """One planned server in this run: its progress (:class:`ServerProgress`), replaced by
    each step (:meth:`Engine._apply`), as the report and the progress display read it."""

    progress: ServerProgress

    @property
    def move(self) -> Planned:
        return self.progress.move

    @property
    def server(self) -> Server:
        return self.progress.move.server

    @property
    def original_status(self) -> str:
        return self.progress.original_status

    @property
    def failed_host(self) -> str:
        """The host this run evacuates (the timeline's host for this server)."""
        return self.progress.failed_host

    @property
    def state(self) -> Progress:
        return self.progress.state

    @property
    def reason(self) -> str:
        return self.progress.reason

    @property
    def dest(self) -> str | None:
        return self.progress.dest

    @property
    def attempts(self) -> int:
        return self.progress.attempts

    @property
    def waits_for(self) -> str | None:
        return self.progress.waits_for

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.server.id, "name": self.server.name, "phase": self.move.phase,
                "state": self.state.value, "reason": self.reason,
                "from_status": self.original_status, "target": self.move.target,
                "dest": self.dest, "attempts": self.attempts}


@dataclass(frozen=True)
class CapacityUnderWay:
    """``capacity_check = alongside``: the capacity read, still under way when the first
    evacuations go out, and what its answer is applied with
    (:func:`~nova_evacuate.plan.with_capacity`)."""

    read: Future[dict[str, Resources]]  # free per host this run may name
    spare: frozenset[str]  # spare hosts, targets first
    # ids of the servers this run sends (pending once resumed): those sent before the
    # read is back are the ones whose demand is counted against it (an earlier run's,
    # resumed, were placed before the read began: Placement counts them already)
    to_send: frozenset[str]


class WatchdogRead:
    """Each planned server's effective watchdog action (:func:`~nova_evacuate.watchdog.
    effective_action`: its embedded flavor's ``hw:watchdog_action``, overridden by its
    image's ``hw_watchdog_action``), read in a thread of its own once the plan is made: the
    report and the timeline carry it, and no evacuation waits for it."""

    def __init__(self, nova: Nova, plan: Plan) -> None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchdog")
        self._read = pool.submit(watchdog_actions, nova, plan)
        pool.shutdown(wait=False)
        self._failed = False  # not answered in time once, or failed: never waited for again

    def of(self, server_id: str, wait: float = 1.0) -> str:
        """The action, or "unknown" when Glance or Nova did not answer within ``wait``
        seconds (the first time only: a read that is late is not waited for again)."""
        if self._failed and not self._read.done():
            return "unknown"
        try:
            return self._read.result(timeout=wait).get(server_id, "unknown")
        except Exception as exc:  # a report without it is still a report
            if not self._failed:
                self._failed = True
                LOG.warning("watchdog actions not read (%s): reported as unknown",
                            f"{type(exc).__name__}: {exc}" if str(exc) else "no answer")
            return "unknown"


def watchdog_actions(nova: Nova, plan: Plan) -> dict[str, str]:
    """Server id → effective watchdog action of every server of ``plan``: one Glance read
    of the servers' images (a handful of requests, whatever the number of servers)."""
    servers = [m.server for m in plan.moves]
    images = nova.image_watchdog_actions(s.image_id for s in servers if s.image_id)
    return {s.id: effective_action(s.flavor_extra_specs.get(WATCHDOG_FLAVOR_KEY),
                                   images.get(s.image_id) if s.image_id else None).action
            for s in servers}


@dataclass
class Report:
    host: str
    plan: Plan  # with alongside: replaced once the capacity is back (targets, shortfall)
    tracks: list[Track]
    ok: bool = False
    ledger: LedgerEntry | None = None
    watchdog: WatchdogRead | None = None

    def watchdog_of(self, server_id: str) -> str:
        return "unknown" if self.watchdog is None else self.watchdog.of(server_id)

    def count(self, *states: str) -> int:
        return sum(t.state in states for t in self.tracks)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "done": self.count(DONE),
                "failed": self.count(FAILED), "timed_out": self.count(TIMED_OUT),
                "instances": [{**t.as_dict(), "watchdog": self.watchdog_of(t.server.id)}
                              for t in self.tracks],
                "skipped": [{"id": s.server.id, "name": s.server.name, "reason": s.reason}
                            for s in self.plan.skipped],
                "shortfall": list(self.plan.shortfall),
                "capacity_checked": self.plan.capacity_known,
                "ledger": self.ledger.state.value if self.ledger else None}


def lock_reason(host: str, status: str) -> str:
    return f"{LOCK_PREFIX} {host} (was {status})"


def locked_by_us(server: Server) -> str | None:
    """The original status a lock of ours recorded, or None when the lock is not ours."""
    reason = server.locked_reason or ""
    if not (server.locked and reason.startswith(LOCK_PREFIX) and reason.endswith(")")):
        return None
    return reason.rpartition("(was ")[2][:-1] or None


class Engine:
    """Evacuates failed hosts through ``nova`` and records it in ``ledger``."""

    def __init__(self, nova: Nova, ledger: Ledger, settings: Settings, *, by: str | None = None,
                 progress: Callable[[Track], None] = lambda track: None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 stopping: Callable[[], bool] = lambda: False,
                 holder_gone: Callable[[str], bool] | None = None) -> None:
        self.nova = nova
        # engine id → known to be gone, so its claim is free at once (ledger.claimable)
        self.holder_gone = holder_gone or (lambda holder: holder_dead_here(holder, self.by))
        # The hosts Nova last showed up and not forced down (None: not read yet); a planned
        # target outside them is not named in an evacuate request.
        self.live_hosts: frozenset[str] | None = None
        self.stopping = stopping
        self._progress_lock = threading.Lock()
        self.ledger = ledger
        self.settings = settings
        self.by = by or engine_id()
        self._progress = progress
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self._watchdog_reads: dict[str, WatchdogRead] = {}  # failed host → its servers'

    def _show(self, track: Track) -> None:
        """Hand ``track`` to the progress display (the CLI's)."""
        with self._progress_lock:  # senders report from their threads
            self._progress(track)

    # ------------------------------------------------------------------ gates

    def service(self, host: str, services: list[ComputeService] | None = None
                ) -> ComputeService:
        """The host's service, found in ``services`` when given (read otherwise)."""
        if services is None:
            return self.nova.compute_service(host, self.settings.domain)
        return match_service(services, host, self.settings.domain)

    def check_gates(self, host: str, *, force: bool = False,
                    services: list[ComputeService] | None = None) -> ComputeService:
        """The host's service, or :class:`Refused` naming the gate that stopped it.
        ``services``: the compute services as just read (read here otherwise): on a large
        cloud each read of the whole list costs a noticeable fraction of a second."""
        services = self.nova.compute_services() if services is None else services
        service = self.service(host, services)
        if service.live:
            raise Refused(f"Nova sees {service.host} up and not forced down: refusing to"
                          f" evacuate a host that may still run its instances")
        if not force:
            brake = self.brake(service.host, services)
            if brake.engaged:
                raise Refused(f"mass-failure brake: {brake.reason}"
                              f" (nova-evacuate {service.host} --force overrides)")
        return service

    def brake(self, host: str, services: list[ComputeService] | None = None) -> Brake:
        """The mass-failure brake (:mod:`nova_evacuate.brake`) over Nova's view
        (``services``, as just read; read here otherwise)."""
        services = self.nova.compute_services() if services is None else services
        hosts = [HostView(s.host, s.state == "down" or s.forced_down,
                          handled=_carries_marker(s.disabled_reason))
                 for s in services]
        aggregates = self.nova.aggregates() if self.settings.max_down_per_aggregate else []
        fraction = self.settings.max_down_fraction
        return mass_failure(hosts, host, fraction, limit=f"max_down_fraction={fraction:g}",
                            what="compute services", aggregates=aggregates,
                            max_down_per_aggregate=self.settings.max_down_per_aggregate)

    # ------------------------------------------------------------------ plan

    def inventory(self, host: str, since: datetime, capacity_check: str = "before",
                  services: list[ComputeService] | None = None
                  ) -> tuple[Inventory, list[Migration], Future[dict[str, Resources]] | None]:
        """What the plan is made from, and the evacuations since ``since``.
        ``capacity_check`` (:attr:`Settings.capacity_check`): ``before`` waits for the
        capacity; ``alongside`` returns its read still under way (the third item, else
        None) and an inventory without it; ``off`` does not read it. ``services``: the
        compute services as the gates read them (read here otherwise)."""
        nova, policy = self.nova, self.settings.policy
        filtering = policy.instance_filtering
        # What does not depend on the servers is read meanwhile, each in a thread of its own:
        # one request each (two for the whole cloud's capacity), whatever the cloud's size.
        # Not a ``with`` block: its exit would wait for the capacity read, which
        # ``alongside`` leaves running while the first evacuations go out.
        reads = ThreadPoolExecutor(max_workers=6, thread_name_prefix="inventory")
        try:
            capacity_read: Future[dict[str, Resources]] | None = None
            if capacity_check != "off":
                # the services only say which hosts the capacity may name
                services_read = reads.submit(
                    nova.compute_services if services is None else (lambda: services))

                def free_on_targets() -> dict[str, Resources]:
                    free = nova.free_resources()
                    targets = evacuation_targets(services_read.result(), host)
                    return {h: r for h, r in free.items() if h in targets}

                capacity_read = reads.submit(free_on_targets)
            aggregates_read = reads.submit(nova.aggregates)
            images_read = reads.submit(nova.tagged_images) if filtering else None
            flavors_read = reads.submit(nova.any_flavor_tagged) if filtering else None
            # Every evacuation since: the ones from the host (an earlier run's) and the ones
            # that were rebuilding servers onto it when it failed. Read before the servers:
            # Nova saves a server's new host before it marks its migration done, so a
            # migration done here has its server already off the host below, and one that
            # finishes in between is still seen under way (resumed, not sent again).
            listed_read = reads.submit(nova.evacuation_migrations, None, since)
            # ...and those not started yet, which changes-since misses: an earlier run's
            # last requests, and the ones the host took and never started (a server sent on
            # elsewhere since is this host's too, so that the host returns only once it is
            # settled there). Both before the servers, each in a thread.
            unstarted = nova.unstarted_evacuations(since)
            listed = listed_read.result()
            migrations = list({m.id: m for m in [*listed, *unstarted]}.values())
            on_host = nova.servers(host=host)
            here = {s.id for s in on_host}
            moved_ids = ({m.server_id for m in migrations if m.source_host == host}
                         | rebuilding_onto(host, migrations)) - here
            moved = nova.servers(changes_since=since, ids=moved_ids) if moved_ids else []
            known = capacity_check == "before"
            inventory = Inventory(
                host=host, servers=[*on_host, *moved],
                tagged_images=images_read.result() if images_read else frozenset(),
                any_tagged_flavor=flavors_read.result() if flavors_read else False,
                aggregates=aggregates_read.result(),
                free=capacity_read.result() if known and capacity_read is not None else {},
                capacity_known=known)
        finally:
            reads.shutdown(wait=False)  # each thread ends with its read
        return inventory, migrations, capacity_read if capacity_check == "alongside" else None

    def plan(self, host: str, since: datetime | None = None,
             services: list[ComputeService] | None = None) -> tuple[Plan, list[Migration]]:
        """The whole plan, as ``--dry-run`` shows it. With ``capacity_check = alongside`` the
        capacity is read first as with ``before``: a dry run has no evacuations for the read
        to overlap; with ``off`` it is not read."""
        since = since or self.now() - LOOKBACK
        check = "off" if self.settings.capacity_check == "off" else "before"
        inventory, migrations, _ = self.inventory(host, since, check, services)
        return make_plan(inventory, self.settings.policy), migrations

    # ------------------------------------------------------------------ run

    def run(self, host: str, *, force: bool = False,
            services: list[ComputeService] | None = None) -> Report:
        """Evacuate ``host`` to the end. Raises :class:`Refused` (a gate), :class:`ClaimLost`
        (another engine has it), NovaError or LedgerError (cannot start).

        ``services``: the whole compute service list, when the caller has just read it (the
        worker's scan that found the request); otherwise it is read here."""
        # One read of the whole service list for the gates, the ledger's state and the
        # targets; the claim reads the host's record afresh, as a write must.
        if services is None:
            services = self.nova.compute_services()
        service = self.check_gates(host, force=force, services=services)
        host = service.host
        entry = parse_marker(service.disabled_reason)
        if entry is None or entry.state in FINISHED:
            entry = self.ledger.request(host, by=self.by, note="by hand", service=service)
        requested_at = entry.at
        expiry = timedelta(seconds=self.settings.claim_expiry)
        if entry.state is State.CLAIMED and entry.by != self.by:
            if self.holder_gone(entry.by):
                expiry = timedelta(0)  # its engine is gone: no need to wait
            if self.now() - entry.at >= expiry:
                LOG.warning("%s: taking over the evacuation claimed by %s at %s", host,
                            entry.by, entry.at.isoformat())
        since = requested_at - LOOKBACK
        # The claim (a write and its read-back) and the reads the plan is made from go side
        # by side: the reads change nothing, and nothing is sent before the claim is ours.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="claim") as claiming:
            claim = claiming.submit(self.ledger.claim, host, self.by, self.now(), expiry)
            try:
                inventory, migrations, capacity_read = self.inventory(
                    host, since, self.settings.capacity_check, services)
            finally:  # a lost claim says more than a failed read: the host is not ours
                lost = claim.exception()
                if isinstance(lost, LedgerError):
                    raise ClaimLost(str(lost)) from None
        claim.result()  # anything else it raised
        LOG.info("%s: evacuation claimed by %s", host, self.by)
        timeline.record("claimed", host, by=self.by)
        plan = make_plan(inventory, self.settings.policy)
        if plan.shortfall:
            LOG.warning("%s: capacity shortfall: no surviving host has room for %d of %d"
                        " instances; trying them anyway", host, len(plan.shortfall), len(plan.moves))
        elif capacity_read is not None:
            LOG.info("%s: capacity read under way (capacity_check=alongside): the first"
                     " evacuations go to the scheduler's pick", host)
        elif not plan.capacity_known:
            LOG.info("%s: capacity not checked (capacity_check=off): the scheduler places"
                     " every instance", host)
        for skipped in plan.skipped:
            LOG.info("%s: leaving %s (%s): %s", host, skipped.server.name, skipped.server.id,
                     skipped.reason)
        report = Report(host, plan, [self._track(m, host) for m in plan.moves],
                        watchdog=WatchdogRead(self.nova, plan))
        self._watchdog_reads[host] = report.watchdog
        self._resume(report.tracks, migrations)
        capacity = None if capacity_read is None else CapacityUnderWay(
            capacity_read, frozenset(spare_hosts(self.settings.policy, inventory.aggregates)),
            frozenset(t.server.id for t in report.tracks if t.state == PENDING))
        try:
            self._execute(report, since, capacity)
        except Stopped:
            self._release(host)
            raise
        finally:
            self._unlock_all(report.tracks)
        report.ok = all(t.state == DONE for t in report.tracks)
        report.ledger = self._finish(report)
        return report

    def _track(self, move: Planned, host: str) -> Track:
        return Track(initial_progress(move, host, locked_by_us(move.server)))

    def _resume(self, tracks: list[Track], migrations: list[Migration]) -> None:
        """Pick up what an earlier run did: servers already moved are done (after the usual
        verification), evacuations under way are tracked, not sent again. An evacuation
        *to* the host (it died during or right after that rebuild) is evacuated anew, unless
        another host's evacuation sends it on (:attr:`Track.waits_for`)."""
        latest = latest_migrations(migrations)
        for track in tracks:
            m = latest.get(track.server.id)
            if m is not None:
                self._apply(track, Resumed(m))

    def _evacuation_running(self, host: str) -> bool:
        """Whether ``host``'s evacuation is requested or under way (unknown counts as yes:
        waiting is bounded by the instance timeout, a second sender is not)."""
        try:
            entry = self.ledger.read(host)
        except (NovaError, LedgerError) as exc:
            LOG.warning("cannot read %s's evacuation (%s); assuming it runs", host, exc)
            return True
        return entry is not None and entry.state not in FINISHED

    def _execute(self, report: Report, since: datetime,
                 capacity: CapacityUnderWay | None = None) -> None:
        """Send and follow every planned server to its end. ``capacity``: the capacity read
        still under way (``alongside``), applied at the first round after it is back."""
        s = self.settings
        host = report.host
        phases = [[t for t in report.tracks if t.move.phase == p]
                  for p in sorted({t.move.phase for t in report.tracks}, reverse=True)]
        last_renewal = self.clock()
        with ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="evacuate") as senders:
            for phase in phases:
                while not all(t.state in ENDS for t in phase):
                    if self.stopping():
                        raise Stopped(f"{host}: stopping; evacuations sent go on in Nova")
                    if self.clock() - last_renewal > s.claim_expiry / 3:
                        self._renew(host)
                        last_renewal = self.clock()
                    if capacity is not None and capacity.read.done():
                        self._plan_the_rest(report, capacity)
                        capacity = None
                    batch = self._next_batch(report.tracks, phase)
                    if s.stagger:
                        for i, track in enumerate(batch):
                            if i:
                                self.sleep(s.stagger)
                            self._submit(track)
                    else:
                        list(senders.map(self._submit, batch))
                    if all(t.state in ENDS for t in phase):
                        break
                    self.sleep(s.poll_interval)
                    self._poll(report.tracks, host, since)
        if capacity is not None:
            LOG.info("%s: every instance was sent before the capacity read was back;"
                     " it is not used", host)

    def _plan_the_rest(self, report: Report, capacity: CapacityUnderWay) -> None:
        """``alongside``: the capacity read is back. The servers not sent yet get their
        targets from it (:func:`~nova_evacuate.plan.with_capacity`), and the shortfall among
        them is logged; a failed read leaves them to the scheduler's pick."""
        host = report.host
        try:
            free = capacity.read.result()
        except NovaError as exc:
            LOG.warning("%s: capacity read failed (%s); the scheduler places every"
                        " instance", host, exc)
            return
        mine = [t for t in report.tracks if t.server.id in capacity.to_send]
        unsent = {t.server.id for t in mine if t.state == PENDING and t.attempts == 0}
        sent = [(t.server, t.dest) for t in mine if t.server.id not in unsent]
        report.plan = with_capacity(report.plan, free, unsent, sent, capacity.spare)
        moves = {m.server.id: m for m in report.plan.moves}
        for track in report.tracks:
            if track.server.id in unsent:  # its first request names the planned target
                track.progress = replace(track.progress, move=moves[track.server.id])
        LOG.info("%s: capacity read back with %d instances sent (counted on the host Nova"
                 " chose for %d, not known for the others); %d planned from it", host,
                 len(sent), sum(dest is not None for _, dest in sent), len(unsent))
        if report.plan.shortfall:
            LOG.warning("%s: capacity shortfall: no surviving host has room for %d of the %d"
                        " instances not sent yet; trying them anyway", host,
                        len(report.plan.shortfall), len(unsent))

    def _next_batch(self, tracks: list[Track], phase: list[Track]) -> list[Track]:
        """The pending servers of ``phase`` that the bounds let go now, in plan order."""
        batch: list[Track] = []
        for track in phase:
            if track.state == PENDING and track.progress.not_before <= self.clock() \
                    and self._room(tracks, track, batch):
                batch.append(track)
        return batch

    def _room(self, tracks: list[Track], track: Track, batch: list[Track]) -> bool:
        s = self.settings
        inflight = [t for t in tracks if t.state in (SUBMITTED, RESTORING)] + batch
        if len(inflight) >= s.max_concurrency:
            return False
        target = track.move.target
        if target is None:
            return True  # the scheduler's pick: only the global bound is known to apply
        # A server sent with no target counts towards its host once Nova names it (dest).
        return sum((t.dest or t.move.target) == target for t in inflight) < s.per_host_concurrency

    def _submit(self, track: Track) -> None:
        """Lock, reset if needed, evacuate (in a sender thread)."""
        self._apply(track, Picked(self.live_hosts))

    # ------------------------------------------------------------------ per-server steps

    def _apply(self, track: Track, event: Event) -> list[Action]:
        """Advance ``track`` by ``event`` (the rules: :mod:`nova_evacuate.progress`) and
        carry out the actions, in order; a Nova call that fails drops the rest. Returns the
        actions."""
        track.progress, actions = advance(track.progress, event, self.clock(),
                                          self.settings.limits)
        for action in actions:
            if not self._do(track, action):
                break
        return actions

    def _do(self, track: Track, action: Action) -> bool:
        """Carry out one action; False when it was a Nova call that failed."""
        server_id = track.server.id
        match action:
            case Lock():
                reason = lock_reason(track.failed_host, track.original_status)
                return self._call(track, lambda: self.nova.lock(server_id, reason), Locked())
            case ResetToError():
                return self._call(track, lambda: self.nova.reset_state(server_id, "error"),
                                  ResetDone())
            case CheckDisk():
                held = self._disk_held(track)
                if held is not None:
                    self._apply(track, DiskHeld(held))
                    return False
            case Evacuate(target=target):
                return self._call(track, lambda: self.nova.evacuate(server_id, target),
                                  EvacuateAccepted(target))
            case Stop():
                return self._call(track, lambda: self.nova.stop(server_id), RestoreAccepted())
            case Pause():
                return self._call(track, lambda: self.nova.pause(server_id), RestoreAccepted())
            case AskIfEvacuating(host=host):
                self._apply(track, HostEvacuating(host, self._evacuation_running(host)))
            case Unlock():
                self._unlock(track)
            case End(state=state, reason=reason):
                log = LOG.info if state == DONE else LOG.error
                log("%s (%s): %s: %s", track.server.name, server_id, state, reason)
                watchdog = self._watchdog_reads.get(track.failed_host)
                timeline.record("instance_done" if state == DONE else "instance_failed",
                                track.failed_host, server=server_id, name=track.server.name,
                                dest=track.dest, state=state.value, reason=reason,
                                watchdog=watchdog.of(server_id) if watchdog else "unknown")
            case Log(level="info", text=text):
                LOG.info("%s", text)
            case Log(text=text):
                LOG.warning("%s", text)
            case Show():
                self._show(track)
            case WatchDestination():
                pass  # the poll collects these (_poll)
        return True

    def _disk_held(self, track: Track) -> str | None:
        """Why the server must not be rebuilt yet: the failed host still holds its disk, or
        Ceph cannot tell (fail closed). None: free, or no RBD disk (:mod:`nova_evacuate.disks`)."""
        disks = self.settings.disks
        assert disks is not None  # CheckDisk is asked for only with [storage] rbd_pool
        host = track.failed_host
        addresses = addresses_of(self.settings.storage_map, host, self.settings.domain)
        try:
            watcher = disks.held_by(track.server.id, addresses)
        except DiskCheckError as exc:
            return f"its disk could not be checked ({exc}); not rebuilt while {host} may hold it"
        if watcher is None:
            return None
        return f"still held by {host} ({watcher.address})"

    def _call(self, track: Track, call: Callable[[], None], accepted: Event) -> bool:
        """Make one Nova call for the server; its answer is the next event: ``accepted``, or
        :class:`~nova_evacuate.progress.CallFailed` (then False)."""
        try:
            call()
        except NovaError as exc:
            self._apply(track, CallFailed(exc.kind, str(exc)))
            return False
        self._apply(track, accepted)
        return True

    # ------------------------------------------------------------------ follow

    def _poll(self, tracks: list[Track], host: str, since: datetime) -> None:
        waiting = [t for t in tracks if t.state == SUBMITTED and t.waits_for]
        if waiting:
            self._check_waiting(waiting, host, since)
            self._check_timeouts([t for t in waiting if t.state == SUBMITTED and t.waits_for])
        active = [t for t in tracks if t.state in (SUBMITTED, RESTORING) and not t.waits_for]
        if not active:
            return
        try:
            # From any host: a server taken over from a dead destination is still
            # evacuated from its first failed host, which Nova names as its source.
            latest = latest_migrations(self.nova.evacuation_migrations(None, since))
        except NovaError as exc:
            LOG.warning("%s: cannot read migrations (%s); trying again", host, exc)
            self._check_timeouts(active)
            return
        watched: list[Track] = []  # a migration under way or done, or a state restore
        for track in active:
            actions = self._apply(track, MigrationSeen(latest.get(track.server.id)))
            if WatchDestination() in actions:
                watched.append(track)
        finished = self._watch(watched, latest, host)
        if finished:
            self._verify(finished, host, since)
        self._check_timeouts([t for t in active if t.state not in ENDS])

    def _check_waiting(self, tracks: list[Track], host: str, since: datetime) -> None:
        """Servers another evacuation sends on (:attr:`Track.waits_for`), looked at as
        servers, whatever migrations Nova lists."""
        try:
            live = frozenset(s.host for s in self.nova.compute_services() if s.live)
            now = {s.id: s for s in self.nova.servers(changes_since=since,
                                                      ids=[t.server.id for t in tracks])}
        except NovaError as exc:
            LOG.warning("%s: cannot read servers (%s); trying again", host, exc)
            return
        self.live_hosts = live
        for track in tracks:
            self._apply(track, WaitedServerRead(now.get(track.server.id), live))

    def _watch(self, tracks: list[Track], latest: dict[str, Migration],
               host: str) -> list[Track]:
        """Fail or resend the servers whose destination died; return the rest whose migration
        is done (or whose state is being restored), to verify."""
        live: frozenset[str] = frozenset()
        fenced: frozenset[str] = frozenset()
        if any(t.dest for t in tracks):
            try:  # one list call per poll, whatever the number of servers
                services = self.nova.compute_services()
            except NovaError as exc:
                LOG.warning("%s: cannot read compute services (%s); trying again", host, exc)
                return []  # nothing counts as done on a destination not known to be live
            live = frozenset(s.host for s in services if s.live)
            fenced = frozenset(s.host for s in services if s.forced_down)
            self.live_hosts = live
        # Dead means forced down: fenced (its power-off confirmed) or said so by an operator.
        # Down by heartbeat alone is a host that may still run the rebuild (one booting
        # back with a stale heartbeat, a busy nova-compute): its servers are waited for,
        # never failed or sent elsewhere, until it is live again, fenced, or they time out.
        dead = [t for t in tracks if t.dest and t.dest in fenced]
        unseen = [t for t in dead if rebuild_unseen(t.progress, latest.get(t.server.id))]
        still_on = self._still_on(host, unseen)
        finished: list[Track] = []
        for track in tracks:
            m = latest.get(track.server.id)
            if track in dead:
                self._apply(track, DestinationDied(m, track.server.id in still_on))
            elif (not track.dest or track.dest in live) and rebuilt(track.progress, m):
                finished.append(track)
        return finished

    def _still_on(self, host: str, tracks: list[Track]) -> set[str]:
        """Of ``tracks``, the servers Nova still places on ``host`` (one list call)."""
        if not tracks:
            return set()
        try:
            now = self.nova.servers(ids=[t.server.id for t in tracks])
        except NovaError as exc:
            LOG.warning("%s: cannot read servers (%s)", host, exc)
            return set()  # unknown: failed, and taken over by that host's evacuation
        return {s.id for s in now if s.host == host}

    def _verify(self, tracks: list[Track], host: str, since: datetime) -> None:
        """Servers whose migration is done, on a live destination: read once for all."""
        try:
            now = {s.id: s for s in self.nova.servers(changes_since=since,
                                                      ids=[t.server.id for t in tracks])}
        except NovaError as exc:
            LOG.warning("%s: cannot read servers (%s); trying again", host, exc)
            return
        for track in tracks:
            self._apply(track, ServerRead(now.get(track.server.id)))

    def _check_timeouts(self, tracks: list[Track]) -> None:
        for track in tracks:
            self._apply(track, Tick())

    def _unlock(self, track: Track) -> None:
        try:
            self.nova.unlock(track.server.id)
        except NovaError as exc:
            LOG.warning("%s: unlock failed (%s); trying again at the end", track.server.name, exc)
            return
        self._apply(track, Unlocked())

    def _unlock_all(self, tracks: list[Track]) -> None:
        """Every path out unlocks what this run locked (an exception included)."""
        for track in tracks:
            if unlock_at_exit(track.progress):
                for _ in range(3):
                    self._unlock(track)
                    if not track.progress.we_locked:
                        break
                    self.sleep(1)

    def _renew(self, host: str) -> None:
        try:
            self.ledger.claim(host, self.by, self.now(),
                              timedelta(seconds=self.settings.claim_expiry))
        except LedgerError as exc:
            raise ClaimLost(str(exc)) from None
        except NovaError as exc:  # Nova down for a moment: the claim is still young
            LOG.warning("%s: cannot renew the claim (%s)", host, exc)

    def _release(self, host: str) -> None:
        try:
            self.ledger.release(host, self.by)
            LOG.info("%s: claim handed back; another engine resumes at once", host)
        except (LedgerError, NovaError) as exc:
            LOG.warning("%s: claim not handed back (%s); it expires after %.0fs", host, exc,
                        self.settings.claim_expiry)

    def _finish(self, report: Report) -> LedgerEntry | None:
        done, failed = report.count(DONE), report.count(FAILED, TIMED_OUT)
        note = "" if report.ok else "; ".join(
            f"{t.server.name}: {t.reason}" for t in report.tracks if t.state != DONE)[:200]
        for attempt in range(1, 6):
            try:
                entry = self.ledger.finish(report.host, report.ok, done, failed, note, by=self.by)
                LOG.info("%s: evacuation %s: %d done, %d failed, %d skipped", report.host,
                         entry.state, done, failed, len(report.plan.skipped))
                timeline.record("evacuation_done" if report.ok else "evacuation_failed",
                                report.host, done=done, failed=failed,
                                skipped=len(report.plan.skipped))
                return entry
            except NovaError as exc:
                LOG.warning("%s: cannot record the end (%s), attempt %d", report.host, exc, attempt)
                self.sleep(min(10, 2 ** attempt))
        LOG.error("%s: the ledger still says claimed; the claim expires and a new run"
                  " verifies and records the end", report.host)
        return None


def evacuation_targets(services: list[ComputeService], failed_host: str) -> set[str]:
    """The hosts a plan may name: every other compute host up, not forced down, enabled."""
    return {s.host for s in services
            if s.host != failed_host and s.live and s.status == "enabled"}


def _carries_marker(reason: str | None) -> bool:
    try:
        return parse_marker(reason) is not None
    except LedgerError:
        return False  # not readable as ours: counted as an unexplained failure


def holder_dead_here(holder: str, me: str) -> bool:
    """Whether the engine ``holder`` (``node/pid``) ran on the node of ``me`` and its
    process is gone: its claim can be taken over without waiting for it to expire."""
    node, _, pid = holder.partition("/")
    if not pid.isdigit() or node != me.partition("/")[0]:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
