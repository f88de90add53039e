"""The long-lived evacuation worker that ``ocf:openstack-ha:NovaEvacuate`` starts and monitors.

Why a worker process rather than work inside the monitor action: an evacuation of tens of
instances takes tens of seconds to minutes, far past a monitor's timeout, and a monitor
that returns and comes back 10 s later loses up to 10 s before a new request is seen (what
the stock NovaEvacuate does). The worker watches the ``evacuate`` node attributes every
quarter second (a local ``attrd_updater`` call, ~5 ms), so a request fence_nova writes
starts within a quarter second (at once when fence_nova ran on this node: its nudge,
:mod:`openstack_ha.wake`), and it reads Nova's service list (the ledger's truth, which
outlives a full cluster restart) every ``nova_interval`` seconds. Pacemaker still owns it:
the agent's start spawns it, stop ends it, and monitor fails when it died or stopped writing
its status file, so Pacemaker restarts or moves it. Evacuations run one thread per host,
each an :class:`~nova_evacuate.engine.Engine` with its own connection (which starts from
the worker's Keystone token).

Each scan:

* a host whose ledger entry is ``requested``, or ``claimed`` by an engine whose claim
  expired (or by a dead process on this node), is claimed and evacuated; the safety gates
  apply, and a refusal is logged once per reason and kept in the status file;
* host return (:mod:`nova_evacuate.host_return`): a host whose evacuation finished (done
  or failed) is unfenced at once: the worker asks Pacemaker (``stonith_admin --unfence``),
  whose ``fence_nova on`` powers it on and releases its cluster connection; Pacemaker's own
  unfencing of the node is refused until then, so this is how a fenced host gets its power
  back by itself. Once it is back in the cluster (online and clean), its force-down is
  cleared (Nova refuses until the returning nova-compute has cleaned up; tried again each
  scan), then, once Nova sees it up, the marker removed and the service enabled unless
  ``leave_disabled``; it is checked again for a while, since a restarting nova-compute can
  write back a stale forced-down flag;
* the node-attribute mirror is put right where it disagrees with Nova.

Instance recovery (``[instance_recovery] enabled``, off by default;
:mod:`nova_evacuate.instance_recovery` decides): every ``interval`` seconds, in a thread of
its own with its own connection (at most one at a time, so a slow Nova never delays the
scans above), the opted-in servers that stopped by themselves on a host that is up and
not in the ledger are started again, each restart and each give-up recorded in the
timeline (``instance_restarted``, ``instance_recovery_gave_up``). What it remembers lives in
this process only: the restart times of each server (for ``max_restarts_per_hour``) and
the servers already decided at their current ``updated`` time. A worker that restarts (or
that Pacemaker moves) loses both: it reads the instance actions of the opted-in servers
stopped in the last hour once more, and may restart a server up to the limit again;
bounded, since a server it gave up on less than an hour ago gets that many more restarts
at most.

A refused evacuation (a gate: the mass-failure brake, or Nova seeing the host up) is
asked again at every scan; the timeline gets ``evacuation_refused`` (``reason``, ``brake``)
at most once a minute per host, the next line saying how many were held back
(``suppressed``; :class:`~nova_evacuate.brake.LineLimiter`).

Metrics (``[metrics] enabled``, off by default; :mod:`nova_evacuate.metrics`): served over
HTTP from a thread of their own, refreshed at the end of each successful scan from the
ledger it read and the timeline's new lines.

    python -m nova_evacuate.worker [--config-file FILE] [--cloud NAME] --status-file PATH
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from oslo_config import cfg

from nova_evacuate import conf as confmod
from nova_evacuate import engine as engine_mod
from nova_evacuate import host_return
from nova_evacuate import instance_recovery as recovery_mod
from nova_evacuate import metrics as metrics_mod
from nova_evacuate import plan as planning
from nova_evacuate.brake import LineLimiter, is_brake_reason
from nova_evacuate.ledger import (
    ATTRIBUTE,
    FINISHED,
    AttributeMirror,
    Ledger,
    LedgerEntry,
    LedgerError,
    State,
    attribute_value,
    claimable,
    pacemaker_mirror,
    parse_marker,
)
from nova_evacuate.nova import ComputeService, ForceUpRefused, Nova, NovaError, connect_from_conf
from openstack_ha import pacemaker, timeline, wake
from openstack_ha.logsetup import setup_logging

LOG = logging.getLogger(__name__)

# After force-down is cleared, how long the host is watched for a stale flag coming back.
RECHECK_SECONDS = 120.0
# A failed unfencing request (BMC or fencer unreachable) is sent again after this long.
UNFENCE_RETRY_SECONDS = 30.0
# How long one unfencing request may take (fence_nova on: one Nova read, a power-on).
UNFENCE_TIMEOUT_SECONDS = 60.0


class Worker:
    def __init__(self, nova_factory: Callable[[], Nova], settings: engine_mod.Settings, *,
                 leave_disabled: bool = False, mirror: AttributeMirror | None = None,
                 attributes: Callable[[], dict[str, str]] | None = None,
                 status_file: str | None = None, nova_interval: float = 10.0,
                 tick: float = 0.25, by: str | None = None,
                 rejoined: Callable[[str], bool] | None = None,
                 unfence: Callable[[str], None] | None = None,
                 node_gone: Callable[[str], bool] | None = None,
                 recovery: recovery_mod.Settings | None = None,
                 metrics: metrics_mod.Metrics | None = None,
                 nudges: wake.Listener | None = None) -> None:
        self.nova_factory = nova_factory
        self.settings = settings
        self.leave_disabled = leave_disabled
        self.mirror = mirror
        self.attributes = attributes  # node → ``evacuate`` value, the cheap wake-up signal
        # node → is it back in the cluster: the host-return step acts only on a node the
        # cluster took back (Pacemaker then unfences it). None without Pacemaker.
        self.rejoined = rejoined
        # node → ask Pacemaker to unfence it (power it on) once its evacuation is finished.
        self.unfence = unfence
        # cluster node → it left the cluster cleanly (fenced): its engines' claims are free.
        self.node_gone = node_gone
        # host → (the finished entry's time, monotonic time of the request, outcome or None
        # while it runs): one request per finished evacuation, again only after a failure.
        self.unfencing: dict[str, tuple[datetime, float, str | None]] = {}
        self.return_waits: dict[str, str] = {}  # host → what its return waits for, last said
        self.status_file = status_file
        self.nova_interval = nova_interval
        self.tick = tick
        self.by = by or engine_mod.engine_id()
        self.nova = nova_factory()
        self.ledger = Ledger(self.nova, mirror, domain=settings.domain)
        self.stop_event = threading.Event()
        self.running: dict[str, threading.Thread] = {}
        self.refused: dict[str, str] = {}
        self.rechecks: dict[str, float] = {}  # host → monotonic time the watch ends
        self.fenced_at: dict[str, datetime] = {}  # host → when its returned evacuation began
        self.repaired: set[str] = set()  # servers whose state a recheck reset
        self.last_scan = -1e9
        self.last_error = ""
        self.seen_attributes: dict[str, str] = {}
        # Instance recovery: None is off. Its state is only touched by its own thread.
        self.recovery = recovery
        self.recovery_thread: threading.Thread | None = None
        self.recovery_nova: Nova | None = None
        self.last_recovery = -1e9
        self.recovery_error = ""
        self.restarts: dict[str, list[float]] = {}  # server → monotonic times of our starts
        self.decided: dict[str, str] = {}  # server → its ``updated`` when left or given up
        # A refused evacuation is asked again every scan: one timeline line a host a minute.
        self.refusal_lines = LineLimiter()
        self.metrics = metrics  # None: [metrics] off
        # fence_nova's nudge on this node (openstack_ha.wake): scan at once, not at the next
        # tick's attribute read. None: ticks only.
        self.nudges = nudges

    # ------------------------------------------------------------------ loop

    def serve(self) -> None:
        LOG.info("evacuation worker %s started", self.by)
        self.write_status()  # "up" for the agent's start, before any Nova call
        nudged = False
        while not self.stop_event.is_set():
            self.step(nudged)
            nudged = self._pause()
        for thread in list(self.running.values()):
            thread.join(timeout=10)
        if self.recovery_thread is not None:
            self.recovery_thread.join(timeout=10)
        LOG.info("evacuation worker %s stopped", self.by)

    def _pause(self) -> bool:
        """One tick, cut short by a nudge; whether one came."""
        if self.nudges is None:
            self.stop_event.wait(self.tick)
            return False
        try:
            return self.nudges.wait(self.tick)
        except OSError as exc:  # the socket broke: ticks alone from now on
            LOG.warning("nudges from fence_nova no longer heard (%s); polling only", exc)
            self.nudges = None
            return False

    def step(self, nudged: bool = False) -> None:
        woken = self._woken()  # read even when nudged: it keeps what was seen current
        if woken or nudged or time.monotonic() - self.last_scan >= self.nova_interval:
            try:
                self.scan()
                self.last_error = ""
            except Exception as exc:  # Nova, the ledger, attrd: the next scan tries again
                text = f"{type(exc).__name__}: {exc}"
                if text != self.last_error:
                    LOG.error("scan failed: %s", text)
                self.last_error = text
            self.last_scan = time.monotonic()
        self._schedule_recovery()
        self.write_status()

    def _woken(self) -> bool:
        """A request or a change on the cluster side since the last look."""
        if self.attributes is None:
            return False
        try:
            values = self.attributes()
        except Exception as exc:  # attrd unreachable for a moment: Nova's scan still runs
            LOG.debug("node attributes unreadable: %s", exc)
            return False
        # Only a change wakes a scan: a request that stays (refused by a gate) is looked at
        # again at the next regular scan, not every tick.
        changed = values != self.seen_attributes
        self.seen_attributes = values
        return changed

    def scan(self) -> None:
        services = self.nova.compute_services()
        now = datetime.now(UTC)
        entries: dict[str, LedgerEntry | None] = {}
        for service in services:
            try:
                entry = parse_marker(service.disabled_reason)
            except LedgerError as exc:
                LOG.error("%s: %s", service.host, exc)
                continue
            entries[service.host] = entry
            self._reconcile_mirror(service.host, entry)
            if entry is None:
                self._recheck(service)
            elif self._claimable(entry, now) and service.host not in self.running:
                self._start(service.host, services)
            elif entry.state in FINISHED:
                self._host_return(service, entry)
        self._reap()
        if self.metrics is not None:
            self.metrics.scanned(
                entries, held_back=self.refusal_lines.held_back(),
                brake_here=any(is_brake_reason(r) for r in list(self.refused.values())))

    # ------------------------------------------------------------------ evacuations

    def _claimable(self, entry: LedgerEntry, now: datetime) -> bool:
        return claimable(entry, self.by, now, timedelta(seconds=self.settings.claim_expiry),
                         holder_gone=entry.state is State.CLAIMED and self.holder_gone(entry.by))

    def holder_gone(self, holder: str) -> bool:
        """The engine ``holder`` is known to be gone: its process died on this node, or its
        node left the cluster cleanly (fenced; a node awaiting fencing may still run it)."""
        if engine_mod.holder_dead_here(holder, self.by):
            return True
        if self.node_gone is None:
            return False
        try:
            return self.node_gone(holder.partition("/")[0])
        except Exception as exc:
            LOG.debug("cannot tell whether %s is gone: %s", holder, exc)
            return False

    def _start(self, host: str, services: list[ComputeService]) -> None:
        """Evacuate ``host`` in a thread of its own. ``services``: the scan's list, read
        just now: the engine's gates and targets start from it, one Nova read fewer
        between the request and the first evacuation (0.2 s at 1,000 hosts)."""

        def run() -> None:
            try:
                nova = self.nova_factory()
                nova.adopt_token(self.nova)  # the scan just used it: no password check
                ledger = Ledger(nova, self.mirror, domain=self.settings.domain)
                engine = engine_mod.Engine(nova, ledger, self.settings, by=self.by,
                                           stopping=self.stop_event.is_set,
                                           holder_gone=self.holder_gone)
                report = engine.run(host, services=services)
                self.refused.pop(host, None)
                LOG.info("%s: evacuation %s: %d done, %d failed or timed out", host,
                         "done" if report.ok else "failed", report.count(engine_mod.DONE),
                         report.count(engine_mod.FAILED, engine_mod.TIMED_OUT))
            except engine_mod.Refused as exc:
                if self.refused.get(host) != str(exc):
                    LOG.error("%s: NOT evacuating automatically: %s", host, exc)
                self.refused[host] = str(exc)
                self._record_refusal(host, str(exc))
            except (engine_mod.ClaimLost, engine_mod.Stopped) as exc:
                LOG.info("%s: %s", host, exc)
            except (NovaError, LedgerError) as exc:
                LOG.error("%s: evacuation interrupted: %s; the next scan resumes it", host, exc)
            except Exception:
                LOG.exception("%s: evacuation crashed; the next scan resumes it", host)

        thread = threading.Thread(target=run, name=f"evacuate-{host}", daemon=True)
        self.running[host] = thread
        thread.start()

    def _record_refusal(self, host: str, reason: str) -> None:
        """``evacuation_refused`` in the timeline, at most once a minute per host: the
        next line carries how many were held back (``suppressed``)."""
        held = self.refusal_lines.admit(host)
        if held is None:
            return
        extra = {"suppressed": held} if held else {}
        timeline.record("evacuation_refused", host, reason=reason,
                        brake=is_brake_reason(reason), **extra)

    def _reap(self) -> None:
        for host, thread in list(self.running.items()):
            if not thread.is_alive():
                del self.running[host]

    # ------------------------------------------------------------------ host return

    def _host_return(self, service: ComputeService, entry: LedgerEntry) -> None:
        """The steps of :mod:`nova_evacuate.host_return` this worker takes: unfencing a host
        whose evacuation finished, then clearing force-down, the marker and the disable."""
        # At once, whatever the cluster shows: while Pacemaker retries its connection to a
        # powered-off node (its hold failed), crm_mon lists the node online for the attempt.
        self._ask_unfence(service.host, entry)
        if self.rejoined is not None:
            try:
                if not self.rejoined(service.host):
                    self._waiting(service.host, "not back in the cluster yet (Pacemaker has"
                                  " no connection to it): nothing cleared until it is")
                    return
            except Exception as exc:
                LOG.warning("%s: cannot read the cluster's view of it: %s", service.host, exc)
                return
        step = host_return.next_step(
            host_return.HostState(entry, service.forced_down, service.state == "up"),
            leave_disabled=self.leave_disabled)
        if step.clear_force_down:
            try:
                service = self.nova.force_down(service.id, False)
                LOG.info("%s: force-down cleared", service.host)
            except ForceUpRefused:
                self._waiting(service.host, "Nova refuses to clear force-down until its"
                              " returning nova-compute has cleaned up the evacuated servers")
                return
            step = host_return.next_step(
                host_return.HostState(entry, service.forced_down, service.state == "up"),
                leave_disabled=self.leave_disabled)
        if not step.clear_marker:
            self._waiting(service.host, step.why)  # not reporting yet: next scan
            return
        self.ledger.clear(service.host)
        if step.enable:
            self.nova.enable(service.id)
        self.unfencing.pop(service.host, None)
        self.return_waits.pop(service.host, None)
        self.rechecks[service.host] = time.monotonic() + RECHECK_SECONDS
        self.fenced_at[service.host] = entry.at
        LOG.info("%s: returned: %s", service.host, step.why)
        timeline.record("host_back", service.host, enabled=step.enable)

    def _waiting(self, host: str, why: str) -> None:
        """Say once, at INFO, what a finished host's return waits for: a return that stalls
        (a connection Pacemaker does not start, a nova-compute that does not report) is
        then told in the log, not in silence."""
        if self.return_waits.get(host) != why:
            LOG.info("%s: its return waits: %s", host, why)
            self.return_waits[host] = why

    def _ask_unfence(self, host: str, entry: LedgerEntry) -> None:
        """Ask Pacemaker once per finished evacuation to unfence ``host``, in a thread: the
        request waits for fence_nova's ``on``, and the scan must go on meanwhile."""
        if self.unfence is None:
            return
        asked = self.unfencing.get(host)
        if asked is not None and asked[0] == entry.at:
            _, when, outcome = asked
            if outcome != "failed" or time.monotonic() - when < UNFENCE_RETRY_SECONDS:
                return  # running, done, or failed too recently
        self.unfencing[host] = (entry.at, time.monotonic(), None)
        unfence = self.unfence

        def run() -> None:
            try:
                unfence(host)
                outcome = "done"
                LOG.info("%s: evacuation %s: unfenced", host, entry.state)
            except Exception as exc:
                outcome = "failed"
                LOG.error("%s: evacuation %s, but unfencing failed: %s; asking again in"
                          " %.0f s", host, entry.state, exc, UNFENCE_RETRY_SECONDS)
            self.unfencing[host] = (entry.at, time.monotonic(), outcome)

        LOG.info("%s: evacuation %s: asking Pacemaker to unfence it", host, entry.state)
        timeline.record("unfence_requested", host, evacuation=str(entry.state))
        threading.Thread(target=run, name=f"unfence-{host}", daemon=True).start()

    def _recheck(self, service: ComputeService) -> None:
        until = self.rechecks.get(service.host)
        if until is None:
            return
        if time.monotonic() > until:
            del self.rechecks[service.host]
            self.fenced_at.pop(service.host, None)
            return
        if service.forced_down:
            LOG.warning("%s: forced down again after its return (a stale flag written back);"
                        " clearing it again", service.host)
            self.nova.force_down(service.id, False)
        self._repair_queued_request_errors(service.host)

    def _repair_queued_request_errors(self, host: str) -> None:
        """Reset to ACTIVE the servers ``host`` put in ERROR, once back, by running a rebuild
        request it took before it failed (see :func:`plan.left_in_error_by_a_late_request`):
        Nova refused that rebuild, so the server runs on the host it was evacuated to."""
        since = self.fenced_at.get(host, datetime.now(UTC)) - engine_mod.LOOKBACK
        candidates = [s for s in self.nova.servers_in_error(since)
                      if s.id not in self.repaired and s.host not in (host, None)]
        if not candidates:
            return
        live = {s.host for s in self.nova.compute_services() if s.live}
        for server in candidates:
            if not planning.left_in_error_by_a_late_request(
                    host, server, live, self.nova.rebuild_events(server.id, since)):
                continue
            self.nova.reset_state(server.id, "active")
            self.repaired.add(server.id)
            LOG.warning("%s (%s): left in ERROR by the rebuild request %s ran on its return"
                        " (Nova refused it: the server was evacuated to %s since); state"
                        " reset to ACTIVE", server.name, server.id, host, server.host)
            timeline.record("server_repaired", host, server=server.id, name=server.name,
                            on=server.host, why="queued rebuild request ran on return")

    def _reconcile_mirror(self, host: str, entry: LedgerEntry | None) -> None:
        if self.mirror is None or self.attributes is None or entry is None:
            return
        wanted = attribute_value(entry)
        if self.seen_attributes.get(host) != wanted:
            try:
                self.mirror.set(self.mirror.name, wanted, host)
                self.seen_attributes[host] = wanted
            except Exception as exc:
                LOG.warning("%s: node attribute %s=%s not written: %s", host,
                            self.mirror.name, wanted, exc)

    # ------------------------------------------------------------------ instance recovery

    def _schedule_recovery(self) -> None:
        """Start a recovery scan when one is due and none is running."""
        if self.recovery is None or self.stop_event.is_set():
            return
        if self.recovery_thread is not None and self.recovery_thread.is_alive():
            return
        if time.monotonic() - self.last_recovery < self.recovery.interval:
            return
        self.last_recovery = time.monotonic()
        self.recovery_thread = threading.Thread(target=self._recovery_run,
                                                name="instance-recovery", daemon=True)
        self.recovery_thread.start()

    def _recovery_run(self) -> None:
        try:
            self.recovery_scan()
            self.recovery_error = ""
        except Exception as exc:  # Nova or Glance unreachable: the next scan tries again
            text = f"{type(exc).__name__}: {exc}"
            if text != self.recovery_error:
                LOG.error("instance recovery scan failed: %s", text)
            self.recovery_error = text

    def recovery_scan(self) -> list[recovery_mod.Decision]:
        """One instance-recovery scan (see the module docstring), run in the calling thread:
        the servers started, left and given up on are acted on and returned, with those
        waiting and those not opted in."""
        settings = self.recovery or recovery_mod.Settings()
        if self.recovery_nova is None:
            nova = self.nova_factory()
            nova.adopt_token(self.nova)  # no password check of its own
            self.recovery_nova = nova
        nova = self.recovery_nova
        watched = recovery_mod.watched_hosts(nova.compute_services())
        stopped = nova.stopped_servers(datetime.now(UTC) - recovery_mod.LOOKBACK)
        # Forget what is no longer listed: started, deleted, or stopped too long ago.
        listed = {s.server.id: s for s in stopped}
        self.decided = {k: v for k, v in self.decided.items() if k in listed}
        now = time.monotonic()
        self.restarts = {k: recent for k, times in self.restarts.items()
                         if (recent := recovery_mod.restarts_in_window(times, now))}
        key = settings.marker_key
        tagged = nova.tagged_images(key) if recovery_mod.needs_images(
            stopped, watched, key, self.decided) else frozenset()
        to_read, decisions = recovery_mod.triage(stopped, watched, key, tagged, self.decided)
        for candidate in to_read:
            if self.stop_event.is_set():
                break
            actions = nova.instance_actions(candidate.server.id, recovery_mod.ACTIONS_READ)
            decision = recovery_mod.decide(candidate.server, actions,
                                           self.restarts.get(candidate.server.id, ()),
                                           time.monotonic(), settings.max_restarts_per_hour)
            self._act(nova, decision, candidate.updated)
            decisions.append(decision)
        for decision in decisions:
            if decision.verdict is recovery_mod.Verdict.WAIT:
                LOG.debug("%s (%s): stopped, not now: %s", decision.name, decision.server_id,
                          decision.why)
        return decisions

    def _act(self, nova: Nova, decision: recovery_mod.Decision, updated: str) -> None:
        server, name, host = decision.server_id, decision.name, decision.host
        if decision.verdict is recovery_mod.Verdict.START:
            # Counted before Nova is asked: a start it keeps refusing is tried at most the
            # limit's number of times too.
            times = self.restarts.setdefault(server, [])
            times.append(time.monotonic())
            try:
                nova.start(server)
            except NovaError as exc:
                LOG.error("%s (%s) on %s: not restarted: %s", name, server, host, exc)
                return
            LOG.warning("%s (%s) on %s: restarted: %s", name, server, host, decision.why)
            timeline.record("instance_restarted", host, server=server, name=name,
                            restarts_in_hour=len(times), why=decision.why)
        elif decision.verdict is recovery_mod.Verdict.GIVE_UP:
            self.decided[server] = updated
            LOG.error("%s (%s) on %s: left SHUTOFF: %s", name, server, host, decision.why)
            timeline.record("instance_recovery_gave_up", host, server=server, name=name,
                            why=decision.why)
        elif decision.verdict is recovery_mod.Verdict.LEAVE:
            self.decided[server] = updated
            LOG.info("%s (%s) on %s: stopped, left alone: %s", name, server, host,
                     decision.why)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        status = {"pid": os.getpid(), "by": self.by, "at": time.time(),
                  "running": sorted(self.running), "refused": dict(self.refused),
                  "error": self.last_error}
        if self.recovery is not None:
            status["instance_recovery_error"] = self.recovery_error
        return status

    def write_status(self) -> None:
        if not self.status_file:
            return
        tmp = f"{self.status_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.status(), f)
        os.replace(tmp, self.status_file)


def start_metrics(address: str, port: int) -> metrics_mod.Metrics | None:
    """The metrics, served at ``address:port``; None (logged) when the port cannot be
    bound: evacuation goes on without metrics rather than not at all."""
    metrics = metrics_mod.Metrics(timeline.path())
    try:
        metrics_mod.serve(metrics, address, port)
    except OSError as exc:
        LOG.error("metrics not served on %s port %d: %s", address, port, exc)
        return None
    LOG.info("metrics served at http://%s/metrics",
             f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return metrics


def start_consul_watch(conf: cfg.ConfigOpts, stop: threading.Event) -> threading.Thread | None:
    """The Consul watcher (nova_evacuate/consul_watch.py) in a daemon thread, when
    ``[consul] networks`` is set and ``watch`` is on; None otherwise (or when its settings
    cannot be used: logged, the worker goes on without it)."""
    from nova_evacuate import consul_watch
    from openstack_ha import consul_config

    def as_text(value: Any) -> str:  # what the same option says in fence_nova's file
        return str(value).lower() if isinstance(value, bool) else str(value)

    try:
        settings = consul_config.settings_from_mapping(
            {name: as_text(getattr(conf.consul, name)) for name in consul_config.OPTIONS})
    except ValueError as exc:
        LOG.error("[consul]: %s; no Consul watcher", exc)
        return None
    if not settings.enabled or not settings.watch:
        return None
    watch = consul_watch.Watch(settings.samples, conf.safety.max_down_fraction)

    def nodes_online() -> dict[str, bool]:
        return {node: not down for node, down in pacemaker.remote_nodes_down().items()}

    thread = threading.Thread(
        target=consul_watch.run, name="consul-watch",
        args=(watch, settings.clients(), settings.interval, nodes_online,
              pacemaker.fail_connection, stop,
              lambda: pacemaker.handled_connections(time.time())), daemon=True)
    thread.start()
    LOG.info("Consul watcher on: %s, a reading every %gs, %d in a row to report a node",
             ", ".join(settings.networks), max(settings.interval, 0.5), settings.samples)
    return thread


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nova-evacuate-worker")
    p.add_argument("--config-file", action="append", dest="config_files")
    p.add_argument("--no-config-file", action="store_const", const=[], dest="config_files",
                   help="read no file: every option at its default")
    p.add_argument("--cloud")
    p.add_argument("--status-file")
    p.add_argument("--nova-interval", type=float, default=10.0)
    p.add_argument("--no-pacemaker", action="store_true",
                   help="no node attributes: watch Nova only")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    setup_logging("nova-evacuate", debug=args.debug)
    try:
        conf = confmod.load(args.config_files)
    except (cfg.Error, ValueError) as exc:
        LOG.error("configuration: %s", exc)
        return 2
    settings = engine_mod.Settings.from_conf(conf)
    recovery = (recovery_mod.Settings.from_conf(conf) if conf.instance_recovery.enabled
                else None)
    by = engine_mod.engine_id()
    mirror = attributes = None
    if not args.no_pacemaker:
        try:
            node = pacemaker.local_node_name()
        except pacemaker.PacemakerError as exc:
            LOG.error("cannot tell this cluster node's name: %s", exc)
            return 1
        by = f"{node.split('.', 1)[0]}/{os.getpid()}"
        mirror = pacemaker_mirror()

        def attributes() -> dict[str, str]:
            return pacemaker.node_attribute_values(ATTRIBUTE)

    worker = Worker(lambda: connect_from_conf(conf, args.cloud), settings,
                    leave_disabled=conf.evacuation.leave_disabled, mirror=mirror,
                    attributes=attributes, status_file=args.status_file,
                    nova_interval=args.nova_interval, by=by,
                    rejoined=None if args.no_pacemaker else pacemaker.rejoined,
                    unfence=None if args.no_pacemaker else (
                        lambda node: pacemaker.unfence(node, UNFENCE_TIMEOUT_SECONDS)),
                    node_gone=None if args.no_pacemaker else pacemaker.cluster_node_gone,
                    recovery=recovery)
    if conf.metrics.enabled:
        worker.metrics = start_metrics(conf.metrics.listen_address, conf.metrics.port)
    if recovery is not None:
        LOG.info("instance recovery on: servers with %s=true, at most %d restarts an hour"
                 " each, a scan every %.0f s", recovery.marker_key,
                 recovery.max_restarts_per_hour, recovery.interval)

    if not args.no_pacemaker:
        start_consul_watch(conf, worker.stop_event)
        worker.nudges = listen_for_nudges()

    def stop(signum: int, frame: Any) -> None:
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.serve()
    finally:
        if worker.nudges is not None:
            worker.nudges.close()
    return 0


def listen_for_nudges(path: str = wake.SOCKET) -> wake.Listener | None:
    """fence_nova's nudges on this node (:mod:`openstack_ha.wake`), or None: requests are
    then found by the attribute poll alone, a quarter second later at most."""
    try:
        return wake.Listener(path)
    except OSError as exc:
        LOG.warning("not listening for fence_nova's nudges on %s (%s): requests are found by"
                    " polling alone", path, exc)
        return None


if __name__ == "__main__":
    sys.exit(main())
