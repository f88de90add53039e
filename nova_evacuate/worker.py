"""The long-lived evacuation worker that ``ocf:openstack-ha:NovaEvacuate`` starts and monitors.

Why a worker process rather than work inside the monitor action: an evacuation of tens of
instances takes tens of seconds to minutes, far past a monitor's timeout, and a monitor
that returns and comes back 10 s later loses up to 10 s before a new request is seen (what
the stock NovaEvacuate does). The worker watches the ``evacuate`` node attributes every
second (a local ``attrd_updater`` call, ~5 ms), so a request fence_nova writes starts within
a second, and it reads Nova's service list (the ledger's truth, which outlives a full cluster
restart) every ``nova_interval`` seconds. Pacemaker still owns it: the agent's start spawns
it, stop ends it, and monitor fails when it died or stopped writing its status file, so
Pacemaker restarts or moves it. Evacuations run one thread per host, each an
:class:`~nova_evacuate.engine.Engine` with its own connection.

Each scan:

* a host whose ledger entry is ``requested``, or ``claimed`` by an engine whose claim
  expired (or by a dead process on this node), is claimed and evacuated; the safety gates
  apply, and a refusal is logged once per reason and kept in the status file;
* host return: a host whose evacuation finished (done or failed), once it is back in the
  cluster (online and clean; Pacemaker unfences it), gets force-down cleared
  (Nova refuses while the evacuation records are 'done', that is until the returning
  nova-compute has cleaned up; tried again each scan), then, once Nova sees it up, the
  marker removed and the service enabled unless ``leave_disabled``; it is checked again for
  a while, since a restarting nova-compute can write back a stale forced-down flag;
* the node-attribute mirror is put right where it disagrees with Nova.

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

from nova_evacuate import engine as engine_mod
from nova_evacuate import timeline
from nova_evacuate.ledger import (
    FINISHED,
    AttributeMirror,
    Ledger,
    LedgerEntry,
    LedgerError,
    State,
    attribute_value,
    parse_marker,
)
from nova_evacuate.nova import ComputeService, ForceUpRefused, Nova, NovaError

LOG = logging.getLogger(__name__)

# After force-down is cleared, how long the host is watched for a stale flag coming back.
RECHECK_SECONDS = 120.0


class Worker:
    def __init__(self, nova_factory: Callable[[], Nova], settings: engine_mod.Settings, *,
                 leave_disabled: bool = False, mirror: AttributeMirror | None = None,
                 attributes: Callable[[], dict[str, str]] | None = None,
                 status_file: str | None = None, nova_interval: float = 10.0,
                 tick: float = 1.0, by: str | None = None,
                 rejoined: Callable[[str], bool] | None = None) -> None:
        self.nova_factory = nova_factory
        self.settings = settings
        self.leave_disabled = leave_disabled
        self.mirror = mirror
        self.attributes = attributes  # node → ``evacuate`` value, the cheap wake-up signal
        # node → is it back in the cluster: the host-return step acts only on a node the
        # cluster took back (Pacemaker then unfences it). None without Pacemaker.
        self.rejoined = rejoined
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
        self.last_scan = -1e9
        self.last_error = ""
        self.seen_attributes: dict[str, str] = {}

    # ------------------------------------------------------------------ loop

    def serve(self) -> None:
        LOG.info("evacuation worker %s started", self.by)
        self.write_status()  # "up" for the agent's start, before any Nova call
        while not self.stop_event.is_set():
            self.step()
            self.stop_event.wait(self.tick)
        for thread in list(self.running.values()):
            thread.join(timeout=10)
        LOG.info("evacuation worker %s stopped", self.by)

    def step(self) -> None:
        woken = self._woken()
        if woken or time.monotonic() - self.last_scan >= self.nova_interval:
            try:
                self.scan()
                self.last_error = ""
            except Exception as exc:  # Nova, the ledger, attrd: the next scan tries again
                text = f"{type(exc).__name__}: {exc}"
                if text != self.last_error:
                    LOG.error("scan failed: %s", text)
                self.last_error = text
            self.last_scan = time.monotonic()
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
        # again at the next regular scan, not every second.
        changed = values != self.seen_attributes
        self.seen_attributes = values
        return changed

    def scan(self) -> None:
        services = self.nova.compute_services()
        now = datetime.now(UTC)
        for service in services:
            try:
                entry = parse_marker(service.disabled_reason)
            except LedgerError as exc:
                LOG.error("%s: %s", service.host, exc)
                continue
            self._reconcile_mirror(service.host, entry)
            if entry is None:
                self._recheck(service)
            elif self._claimable(entry, now) and service.host not in self.running:
                self._start(service.host)
            elif entry.state in FINISHED:
                self._host_return(service, entry)
        self._reap()

    # ------------------------------------------------------------------ evacuations

    def _claimable(self, entry: LedgerEntry, now: datetime) -> bool:
        if entry.state is State.REQUESTED:
            return True
        if entry.state is not State.CLAIMED:
            return False
        if now - entry.at >= timedelta(seconds=self.settings.claim_expiry):
            return True
        return entry.by == self.by or engine_mod.holder_dead_here(entry.by, self.by)

    def _start(self, host: str) -> None:
        def run() -> None:
            try:
                nova = self.nova_factory()
                ledger = Ledger(nova, self.mirror, domain=self.settings.domain)
                engine = engine_mod.Engine(nova, ledger, self.settings, by=self.by,
                                           stopping=self.stop_event.is_set)
                report = engine.run(host)
                self.refused.pop(host, None)
                LOG.info("%s: evacuation %s: %d done, %d failed or timed out", host,
                         "done" if report.ok else "failed", report.count(engine_mod.DONE),
                         report.count(engine_mod.FAILED, engine_mod.TIMED_OUT))
            except engine_mod.Refused as exc:
                if self.refused.get(host) != str(exc):
                    LOG.error("%s: NOT evacuating automatically: %s", host, exc)
                self.refused[host] = str(exc)
            except (engine_mod.ClaimLost, engine_mod.Stopped) as exc:
                LOG.info("%s: %s", host, exc)
            except (NovaError, LedgerError) as exc:
                LOG.error("%s: evacuation interrupted: %s; the next scan resumes it", host, exc)
            except Exception:
                LOG.exception("%s: evacuation crashed; the next scan resumes it", host)

        thread = threading.Thread(target=run, name=f"evacuate-{host}", daemon=True)
        self.running[host] = thread
        thread.start()

    def _reap(self) -> None:
        for host, thread in list(self.running.items()):
            if not thread.is_alive():
                del self.running[host]

    # ------------------------------------------------------------------ host return

    def _host_return(self, service: ComputeService, entry: LedgerEntry) -> None:
        """Force-down first; the marker and the disable only once nova-compute reports up.

        Nova accepts the force-up only once the returning nova-compute has cleaned up its
        evacuated instances (or when there were none), and enabling a service Nova sees
        down leaves the COMPUTE_STATUS_DISABLED trait on its resource provider until the
        compute's next periodic sync, so nothing could be scheduled there for a minute.
        """
        if self.rejoined is not None:
            try:
                if not self.rejoined(service.host):
                    return  # not back in the cluster: nothing to return
            except Exception as exc:
                LOG.warning("%s: cannot read the cluster's view of it: %s", service.host, exc)
                return
        if service.forced_down:
            try:
                self.nova.force_down(service.id, False)
                LOG.info("%s: force-down cleared", service.host)
            except ForceUpRefused:
                LOG.debug("%s: force-up still refused; nova-compute is not back yet",
                          service.host)
            return
        if service.state != "up":
            return  # not reporting yet: next scan
        self.ledger.clear(service.host)
        if not self.leave_disabled:
            self.nova.enable(service.id)
        self.rechecks[service.host] = time.monotonic() + RECHECK_SECONDS
        LOG.info("%s: returned%s", service.host, "" if self.leave_disabled else ", service enabled")
        timeline.record("host_back", service.host, enabled=not self.leave_disabled)

    def _recheck(self, service: ComputeService) -> None:
        until = self.rechecks.get(service.host)
        if until is None:
            return
        if time.monotonic() > until:
            del self.rechecks[service.host]
        elif service.forced_down:
            LOG.warning("%s: forced down again after its return (a stale flag written back);"
                        " clearing it again", service.host)
            self.nova.force_down(service.id, False)

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

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "by": self.by, "at": time.time(),
                "running": sorted(self.running), "refused": dict(self.refused),
                "error": self.last_error}

    def write_status(self) -> None:
        if not self.status_file:
            return
        tmp = f"{self.status_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.status(), f)
        os.replace(tmp, self.status_file)


def main(argv: list[str] | None = None) -> int:
    from oslo_config import cfg

    from nova_evacuate import conf as confmod
    from nova_evacuate import pacemaker
    from nova_evacuate.logsetup import setup_logging
    from nova_evacuate.nova import connect_from_conf

    p = argparse.ArgumentParser(prog="nova-evacuate-worker")
    p.add_argument("--config-file", action="append", dest="config_files")
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
    by = engine_mod.engine_id()
    mirror = attributes = None
    if not args.no_pacemaker:
        node = pacemaker.local_node_name()
        by = f"{node.split('.', 1)[0]}/{os.getpid()}"
        mirror = AttributeMirror(set=pacemaker.set_node_attribute,
                                 delete=pacemaker.delete_node_attribute)

        def attributes() -> dict[str, str]:
            return pacemaker.node_attribute_values(mirror.name)

    worker = Worker(lambda: connect_from_conf(conf, args.cloud), settings,
                    leave_disabled=conf.evacuation.leave_disabled, mirror=mirror,
                    attributes=attributes, status_file=args.status_file,
                    nova_interval=args.nova_interval, by=by,
                    rejoined=None if args.no_pacemaker else pacemaker.rejoined)

    def stop(signum: int, frame: Any) -> None:
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
