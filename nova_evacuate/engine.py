"""The whole evacuation path of one failed host: gates, claim, plan, evacuate, track, finish.

:meth:`Engine.run` in order:

1. Gates. Nova must show the host's nova-compute down or forced down (Nova refuses to
   evacuate otherwise, and a host it sees up may be running its instances). Unless the
   operator forces it, the mass-failure brake (:func:`plan.mass_failure_brake`) must be off.
2. Ledger: record the request if nobody did (a run by hand), then claim the host; the claim
   is renewed while the run lasts and a run that loses it stops issuing work.
3. Plan (:mod:`nova_evacuate.plan`) from what Nova, Glance and Placement say now, including
   what an earlier run already did: evacuation migrations since shortly before the request
   are read first, so a server evacuated (or being evacuated) from the host by a run that
   was killed is tracked, never evacuated a second time, and a server that was being
   evacuated *to* the host when it died is evacuated again from there.
4. Execute, one thread: evacuate requests go out in plan order, phase by phase, within
   ``max_concurrency`` and ``per_host_concurrency`` (by target host), ``stagger`` apart;
   each server is locked with a reason first (which carries its original status, so a
   resumed run can still restore it) and unlocked when it ends. Progress is read from
   ``os-migrations`` with one filtered list call per poll, and server states with one
   ``changes-since`` list call when migrations finished, never one GET per server.
   Destinations are watched: while a server's migration is under way or done, the compute
   services are listed once per poll, and a server whose destination is down or forced
   down is failed at once, naming it (that host's own evacuation takes the server over),
   unless its rebuild never started there and Nova still places it on the failed host:
   then it is reset and sent elsewhere (a destination that hangs before it starts leaves
   its migration as created, which ``changes-since`` never lists: the destination named
   in the request is what is watched).
   A server is done only in its final state (the table of :mod:`nova_evacuate.plan`) on
   a live destination: where Nova's rebuild left it running but it is meant to be stopped
   or paused, the engine stops or pauses it first.
   A failed migration is retried up to ``migration_retries`` times, a failed API call up to
   ``api_retries`` times, each server's budget apart; a server still unfinished after
   ``instance_timeout`` is reported timed out.
5. Ledger: done when every planned server finished on another host, else failed, with the
   counts.

One loop decides, and a few threads send: each server costs two requests before its
evacuation starts (lock, evacuate; about 0.2 s each), so the requests of one round go out
``SUBMIT_THREADS`` at a time; every decision (what to send, what finished, what to retry)
stays in the loop's thread, and a track is only touched by one sender at a time.

The Keystone session re-authenticates by itself when its token expires; a Nova API outage
during tracking only delays polling (the per-server timeout still bounds the run).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nova_evacuate import plan as planning
from nova_evacuate.ledger import FINISHED, Ledger, LedgerEntry, LedgerError, State, parse_marker
from nova_evacuate.nova import ComputeService, Nova, NovaError
from nova_evacuate.plan import Inventory, Migration, Plan, Planned, Policy, Server, ServiceState
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

    @classmethod
    def from_conf(cls, conf: Any) -> Settings:
        ev, safety = conf.evacuation, conf.safety
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
            claim_expiry=safety.claim_expiry, domain=conf.cloud.domain)


# What happens to one planned server, in order; the last three are ends.
PENDING, SUBMITTED, RESTORING, DONE, FAILED, TIMED_OUT = (
    "pending", "evacuating", "restoring", "done", "failed", "timed out")
ENDS = frozenset({DONE, FAILED, TIMED_OUT})


@dataclass
class Track:
    """One planned server's progress through the run."""

    move: Planned
    original_status: str
    failed_host: str  # the host this run evacuates (the timeline's host for this server)
    state: str = PENDING
    reason: str = ""
    dest: str | None = None
    attempts: int = 0  # evacuate requests Nova accepted
    api_failures: int = 0
    last_migration_id: int = 0  # migrations up to this id are from before our last request
    started: float | None = None  # clock() of the first request
    not_before: float = 0.0  # clock() before which no new request is sent
    uncertain: bool = False  # the last request failed without an answer; look before resending
    we_locked: bool = False
    reset_done: bool = False
    # its last request went to a destination that died before starting the rebuild: Nova
    # still shows it rebuilding on the failed host, so the next request resets it first
    stuck: bool = False
    # sent to this run's host and never started: the evacuation of the host it was sent
    # from (named here) sends it on; this run waits until it is settled (see _resume)
    waits_for: str | None = None

    @property
    def server(self) -> Server:
        return self.move.server

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.server.id, "name": self.server.name, "phase": self.move.phase,
                "state": self.state, "reason": self.reason, "from_status": self.original_status,
                "target": self.move.target, "dest": self.dest, "attempts": self.attempts}


@dataclass
class Report:
    host: str
    plan: Plan
    tracks: list[Track]
    ok: bool = False
    ledger: LedgerEntry | None = None

    def count(self, *states: str) -> int:
        return sum(t.state in states for t in self.tracks)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "done": self.count(DONE),
                "failed": self.count(FAILED), "timed_out": self.count(TIMED_OUT),
                "instances": [t.as_dict() for t in self.tracks],
                "skipped": [{"id": s.server.id, "name": s.server.name, "reason": s.reason}
                            for s in self.plan.skipped],
                "shortfall": list(self.plan.shortfall),
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
        self.live_hosts: set[str] | None = None
        self.stopping = stopping
        self._progress_lock = threading.Lock()
        self.ledger = ledger
        self.settings = settings
        self.by = by or engine_id()
        self._progress = progress
        self.clock = clock
        self.sleep = sleep
        self.now = now

    def progress(self, track: Track) -> None:
        with self._progress_lock:  # senders report from their threads
            self._progress(track)

    # ------------------------------------------------------------------ gates

    def service(self, host: str) -> ComputeService:
        return self.nova.compute_service(host, self.settings.domain)

    def check_gates(self, host: str, *, force: bool = False) -> ComputeService:
        """The host's service, or :class:`Refused` naming the gate that stopped it."""
        service = self.service(host)
        if service.live:
            raise Refused(f"Nova sees {service.host} up and not forced down: refusing to"
                          f" evacuate a host that may still run its instances")
        if not force:
            brake = self.brake(service.host)
            if brake.engaged:
                raise Refused(f"mass-failure brake: {brake.reason}"
                              f" (nova-evacuate {service.host} --force overrides)")
        return service

    def brake(self, host: str) -> planning.Brake:
        services = [ServiceState(s.host, s.state == "down" or s.forced_down,
                                 fenced=_carries_marker(s.disabled_reason))
                    for s in self.nova.compute_services()]
        aggregates = self.nova.aggregates() if self.settings.max_down_per_aggregate else []
        return planning.mass_failure_brake(services, aggregates, host,
                                           self.settings.max_down_fraction,
                                           self.settings.max_down_per_aggregate)

    # ------------------------------------------------------------------ plan

    def inventory(self, host: str, since: datetime) -> tuple[Inventory, list[Migration]]:
        nova, policy = self.nova, self.settings.policy
        # Every evacuation since: the ones from the host (an earlier run's) and the ones
        # that were rebuilding servers onto it when it failed. Read before the servers:
        # Nova saves a server's new host before it marks its migration done, so a
        # migration done here has its server already off the host below, and one that
        # finishes in between is still seen under way (resumed, not sent again).
        listed = nova.evacuation_migrations(None, since)
        # ...and those not started yet, which changes-since misses: an earlier run's last
        # requests, and the ones the host took and never started (a server sent on elsewhere
        # since is this host's too, so that the host returns only once it is settled there)
        unstarted = nova.unstarted_evacuations(since)
        migrations = list({m.id: m for m in [*listed, *unstarted]}.values())
        on_host = nova.servers(host=host)
        here = {s.id for s in on_host}
        moved_ids = ({m.server_id for m in migrations if m.source_host == host}
                     | planning.rebuilding_onto(host, migrations)) - here
        moved = nova.servers(changes_since=since, ids=moved_ids) if moved_ids else []
        filtering = policy.instance_filtering
        services = [s for s in nova.compute_services()
                    if s.host != host and s.live
                    and s.status == "enabled"]
        aggregates = nova.aggregates()
        inventory = Inventory(
            host=host, servers=[*on_host, *moved],
            tagged_images=nova.tagged_images() if filtering else frozenset(),
            any_tagged_flavor=nova.any_flavor_tagged() if filtering else False,
            aggregates=aggregates,
            free=nova.free_resources(s.host for s in services))
        return inventory, migrations

    def plan(self, host: str, since: datetime | None = None) -> tuple[Plan, list[Migration]]:
        since = since or self.now() - LOOKBACK
        inventory, migrations = self.inventory(host, since)
        return planning.make_plan(inventory, self.settings.policy), migrations

    # ------------------------------------------------------------------ run

    def run(self, host: str, *, force: bool = False) -> Report:
        """Evacuate ``host`` to the end. Raises :class:`Refused` (a gate), :class:`ClaimLost`
        (another engine has it), NovaError or LedgerError (cannot start)."""
        service = self.check_gates(host, force=force)
        host = service.host
        entry = self.ledger.read(host)
        if entry is None or entry.state in FINISHED:
            entry = self.ledger.request(host, by=self.by, note="by hand")
        requested_at = entry.at
        expiry = timedelta(seconds=self.settings.claim_expiry)
        if entry.state is State.CLAIMED and entry.by != self.by:
            if self.holder_gone(entry.by):
                expiry = timedelta(0)  # its engine is gone: no need to wait
            if self.now() - entry.at >= expiry:
                LOG.warning("%s: taking over the evacuation claimed by %s at %s", host,
                            entry.by, entry.at.isoformat())
        try:
            self.ledger.claim(host, self.by, self.now(), expiry)
        except LedgerError as exc:
            raise ClaimLost(str(exc)) from None
        LOG.info("%s: evacuation claimed by %s", host, self.by)
        timeline.record("claimed", host, by=self.by)
        since = requested_at - LOOKBACK
        plan, migrations = self.plan(host, since)
        if plan.shortfall:
            LOG.warning("%s: capacity shortfall: no surviving host has room for %d of %d"
                        " instances; trying them anyway", host, len(plan.shortfall), len(plan.moves))
        for skipped in plan.skipped:
            LOG.info("%s: leaving %s (%s): %s", host, skipped.server.name, skipped.server.id,
                     skipped.reason)
        report = Report(host, plan, [self._track(m, host) for m in plan.moves])
        self._resume(report.tracks, migrations, host)
        try:
            self._execute(report, since)
        except Stopped:
            self._release(host)
            raise
        finally:
            self._unlock_all(report.tracks)
        report.ok = all(t.state == DONE for t in report.tracks)
        report.ledger = self._finish(report)
        return report

    def _track(self, move: Planned, host: str) -> Track:
        server = move.server
        ours = locked_by_us(server)
        return Track(move, original_status=ours or server.status, failed_host=host,
                     we_locked=ours is not None,
                     reset_done=ours is not None and server.status == "ERROR")

    def _resume(self, tracks: list[Track], migrations: list[Migration], host: str) -> None:
        """Pick up what an earlier run did: servers already moved are done (after the usual
        verification), evacuations under way are tracked, not sent again. An evacuation
        *to* the host (it died during or right after that rebuild) is evacuated anew."""
        latest = planning.latest_migrations(migrations)
        for track in tracks:
            m = latest.get(track.server.id)
            if m is None:
                continue
            moved_away = track.server.host != host
            first_host = track.server.host
            if m.dest_host != host and (not m.finished or (m.succeeded and moved_away)):
                track.state, track.started, track.dest = SUBMITTED, self.clock(), m.dest_host
                track.attempts = 1
                track.last_migration_id = m.id - 1  # this migration is the one to follow
                LOG.info("%s: %s already %s by an earlier run", host, track.server.name,
                         "evacuated" if m.finished else "evacuating")
            elif m.dest_host == host and m.status == "accepted" and first_host not in (
                    host, None) and self._evacuation_running(first_host):
                # A request this host took and never started, for a server still on the host
                # it was evacuated from: that host's engine sends it on elsewhere (it sees
                # this destination dead). Sending it from here as well would race that one
                # (and reset a server it is rebuilding): wait until the server is settled on
                # a live host, read as a server (Nova's later evacuation reuses this very
                # migration record, and its own may never be updated: see _check_waiting).
                track.state, track.started, track.waits_for = SUBMITTED, self.clock(), first_host
                track.last_migration_id = m.id
                LOG.info("%s: %s was sent here and never started; %s's evacuation sends it"
                         " on, followed from here", host, track.server.name, first_host)
            else:
                track.last_migration_id = m.id  # an old or failed one: evacuate anew

    def _evacuation_running(self, host: str) -> bool:
        """Whether ``host``'s evacuation is requested or under way (unknown counts as yes:
        waiting is bounded by the instance timeout, a second sender is not)."""
        try:
            entry = self.ledger.read(host)
        except (NovaError, LedgerError) as exc:
            LOG.warning("cannot read %s's evacuation (%s); assuming it runs", host, exc)
            return True
        return entry is not None and entry.state not in FINISHED

    def _execute(self, report: Report, since: datetime) -> None:
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
                    batch = self._next_batch(report.tracks, phase)
                    if s.stagger:
                        for i, track in enumerate(batch):
                            if i:
                                self.sleep(s.stagger)
                            self._submit(track, host)
                    else:
                        list(senders.map(lambda t: self._submit(t, host), batch))
                    if all(t.state in ENDS for t in phase):
                        break
                    self.sleep(s.poll_interval)
                    self._poll(report.tracks, host, since)

    def _next_batch(self, tracks: list[Track], phase: list[Track]) -> list[Track]:
        """The pending servers of ``phase`` that the bounds let go now, in plan order."""
        batch: list[Track] = []
        for track in phase:
            if track.state == PENDING and track.not_before <= self.clock() \
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
            return True
        return sum((t.dest or t.move.target) == target for t in inflight) < s.per_host_concurrency

    def _submit(self, track: Track, host: str) -> None:
        server = track.server
        target = track.move.target if track.attempts == 0 else None  # a retry: scheduler's pick
        if target is not None and self.live_hosts is not None and target not in self.live_hosts:
            target = None  # the planned host died since the plan: the scheduler picks
        try:
            if not server.locked and not track.we_locked:
                self.nova.lock(server.id, lock_reason(host, track.original_status))
                track.we_locked = True
            if (track.move.reset_first and not track.reset_done) or track.stuck:
                # Nova evacuates only ACTIVE, SHUTOFF or ERROR servers with no task
                self.nova.reset_state(server.id, "error")
                track.reset_done, track.stuck = True, False
            self.nova.evacuate(server.id, target)
        except NovaError as exc:
            self._api_failure(track, exc)
            return
        track.attempts += 1
        track.uncertain = False
        track.state = SUBMITTED
        # Watched from now on: Nova's changes-since misses a migration never updated since
        # its creation, which is what a destination that hangs before it starts leaves.
        track.dest = target
        if track.started is None:
            track.started = self.clock()
        LOG.info("%s: evacuating %s (%s)%s", host, server.name, server.id,
                 f" to {target}" if target else "")
        self.progress(track)

    def _api_failure(self, track: Track, exc: NovaError) -> None:
        if exc.kind in ("refused", "not_found"):
            # 400/409: Nova will not (the host looks up again, a task is under way);
            # 404: the server is gone. Neither gets better by asking again.
            self._end(track, FAILED, f"Nova refused the evacuation: {exc}")
            return
        track.api_failures += 1
        if track.api_failures > self.settings.api_retries:
            self._end(track, FAILED, f"API failed {track.api_failures} times: {exc}")
            return
        # The request may have been accepted before the answer was lost: the next poll
        # looks for a migration before anything is sent again.
        track.uncertain = True
        track.state = SUBMITTED
        if track.started is None:
            track.started = self.clock()
        track.not_before = self.clock() + min(30.0, 2.0 ** track.api_failures)
        LOG.warning("%s: %s; trying again (%d of %d)", track.server.name, exc,
                    track.api_failures, self.settings.api_retries)

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
            latest = planning.latest_migrations(self.nova.evacuation_migrations(None, since))
        except NovaError as exc:
            LOG.warning("%s: cannot read migrations (%s); trying again", host, exc)
            self._check_timeouts(active)
            return
        watched: list[Track] = []  # a migration under way or done, or a state restore
        for track in active:
            if track.state == RESTORING:
                watched.append(track)
                continue
            m = latest.get(track.server.id)
            if m is None or m.id <= track.last_migration_id:
                if track.uncertain and self.clock() >= track.not_before:
                    track.state = PENDING  # nothing was accepted: send it again
                elif track.dest:
                    watched.append(track)  # not listed yet: its destination is watched
                continue
            track.uncertain = False
            track.dest = m.dest_host or track.dest
            if not m.finished or m.succeeded:
                watched.append(track)
                continue
            track.last_migration_id = m.id
            if track.attempts <= self.settings.migration_retries:
                LOG.warning("%s: evacuation migration of %s %s; evacuating again",
                            host, track.server.name, m.status)
                track.state, track.dest = PENDING, None  # the scheduler picks anew
                self.progress(track)
            else:
                self._end(track, FAILED, f"evacuation migration {m.status}"
                                         f" ({track.attempts} attempts)")
        finished = self._watch(watched, latest, host)
        if finished:
            self._verify(finished, host, since)
        self._check_timeouts([t for t in active if t.state not in ENDS])

    def _check_waiting(self, tracks: list[Track], host: str, since: datetime) -> None:
        """Servers another evacuation sends on (:attr:`Track.waits_for`), looked at as
        servers, whatever migrations Nova lists: settled once on a live host with no task;
        this run's to send once that evacuation is over and left them on their first host."""
        try:
            live = {s.host for s in self.nova.compute_services() if s.live}
            now = {s.id: s for s in self.nova.servers(changes_since=since,
                                                      ids=[t.server.id for t in tracks])}
        except NovaError as exc:
            LOG.warning("%s: cannot read servers (%s); trying again", host, exc)
            return
        self.live_hosts = live
        for track in tracks:
            server, first_host = now.get(track.server.id), track.waits_for or ""
            if server is None:
                self._end(track, FAILED, "the server was deleted during its evacuation")
            elif server.host in live and server.host not in (host, first_host) \
                    and not server.task_state:
                track.waits_for = None
                self._settle(track, server)
            elif server.host == first_host and not self._evacuation_running(first_host):
                LOG.warning("%s: %s's evacuation is over and left %s there; evacuating it"
                            " from here", host, first_host, track.server.name)
                track.waits_for, track.state, track.stuck = None, PENDING, True
                self.progress(track)

    def _watch(self, tracks: list[Track], latest: dict[str, Migration],
               host: str) -> list[Track]:
        """Fail the servers whose destination died; return the rest whose migration is
        done (or whose state is being restored), to verify."""
        live: set[str] = set()
        if any(t.dest for t in tracks):
            try:  # one list call per poll, whatever the number of servers
                live = {s.host for s in self.nova.compute_services() if s.live}
            except NovaError as exc:
                LOG.warning("%s: cannot read compute services (%s); trying again", host, exc)
                return []  # nothing counts as done on a destination not known to be live
            self.live_hosts = live
        finished: list[Track] = []
        dead = [t for t in tracks if t.dest and t.dest not in live]
        unstarted = self._still_on(host, [t for t in dead if self._unseen(t, latest)])
        for track in tracks:
            m = latest.get(track.server.id)
            if track in dead and track.server.id in unstarted \
                    and track.attempts <= self.settings.migration_retries:
                # Its rebuild never started there, and it is still on the host this run
                # evacuates (powered off, confirmed): sending it elsewhere is safe.
                LOG.warning("%s: destination %s of %s died before the rebuild started;"
                            " evacuating again", host, track.dest, track.server.name)
                track.state, track.dest, track.stuck = PENDING, None, True
                track.last_migration_id = max(track.last_migration_id,
                                              m.id if m is not None else 0)
                self.progress(track)
            elif track in dead:
                self._end(track, FAILED, f"destination {track.dest} died during the rebuild"
                                         f" (down or forced down); its evacuation takes the"
                                         f" server over")
            elif track.state == RESTORING or (
                    m is not None and m.id > track.last_migration_id and m.succeeded):
                finished.append(track)
        return finished

    @staticmethod
    def _unseen(track: Track, latest: dict[str, Migration]) -> bool:
        """No migration of our last request listed yet, or one still as created."""
        m = latest.get(track.server.id)
        return m is None or m.id <= track.last_migration_id or m.status == "accepted"

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
        """Servers whose migration is done, on a live destination: done once in their final
        state (:func:`plan.final_status`), after a stop or a pause where the rebuild left
        them running."""
        try:
            now = {s.id: s for s in self.nova.servers(changes_since=since,
                                                      ids=[t.server.id for t in tracks])}
        except NovaError as exc:
            LOG.warning("%s: cannot read servers (%s); trying again", host, exc)
            return
        for track in tracks:
            server = now.get(track.server.id)
            if server is None:
                self._end(track, FAILED, "the server was deleted during its evacuation")
            elif server.task_state or server.host in (host, None) or \
                    (track.dest is not None and server.host != track.dest):
                continue  # Nova has not finished saving it on its destination yet
            elif server.status == "ERROR":
                self._end(track, FAILED, f"ended in ERROR on {server.host}")
            else:
                self._settle(track, server)

    def _settle(self, track: Track, server: Server) -> None:
        """``server``, rebuilt on its destination: done in its final state, else brought to it."""
        wanted = planning.final_status(track.original_status)
        track.dest = server.host
        restore = {"SHUTOFF": self.nova.stop, "PAUSED": self.nova.pause}.get(wanted)
        if server.status == wanted:
            self._end(track, DONE, f"{wanted} on {server.host}")
        elif track.state == RESTORING:
            pass  # the stop or pause is under way
        elif server.status == "ACTIVE" and restore is not None:
            try:  # rebuilt running (after a state reset): bring it to its final state
                restore(server.id)
                track.state = RESTORING
                self.progress(track)
            except NovaError as exc:
                self._api_failure(track, exc)
        else:
            self._end(track, FAILED, f"came back {server.status} on {server.host},"
                                     f" not {wanted}")

    def _check_timeouts(self, tracks: list[Track]) -> None:
        limit = self.settings.instance_timeout
        for track in tracks:
            if track.state not in ENDS and track.started is not None and \
                    self.clock() - track.started > limit:
                self._end(track, TIMED_OUT, f"not finished after {limit:.0f}s")

    def _end(self, track: Track, state: str, reason: str) -> None:
        track.state, track.reason = state, reason
        log = LOG.info if state == DONE else LOG.error
        log("%s (%s): %s: %s", track.server.name, track.server.id, state, reason)
        timeline.record("instance_done" if state == DONE else "instance_failed",
                        track.failed_host, server=track.server.id, name=track.server.name,
                        dest=track.dest, state=state, reason=reason)
        if track.we_locked:
            self._unlock(track)
        self.progress(track)

    def _unlock(self, track: Track) -> None:
        try:
            self.nova.unlock(track.server.id)
            track.we_locked = False
        except NovaError as exc:
            LOG.warning("%s: unlock failed (%s); trying again at the end", track.server.name, exc)

    def _unlock_all(self, tracks: list[Track]) -> None:
        """Every path out unlocks what this run locked (an exception included)."""
        for track in tracks:
            if track.we_locked and (track.state in ENDS or track.state == PENDING):
                for _ in range(3):
                    self._unlock(track)
                    if not track.we_locked:
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
