"""Prometheus metrics of the NovaEvacuate worker (``[metrics] enabled``).

What is served comes from two sources the worker already has, so that what other
processes did counts too:

* the recovery timeline (:mod:`openstack_ha.timeline`), which every fence_nova process,
  Pacemaker's alert agent, the engine and the worker append to: read incrementally on each
  scan (the file stays open; a rotated file is read to its end before the new one, a
  truncated one from its start);
* the ledger the worker reads from Nova on each scan: hosts per state, and new evacuation
  requests (each one a fence that fence_nova confirmed), counted even with the timeline off.

The first file read starts at the file's beginning, so the counters are "since the
timeline began" and survive a worker restart, until the file is rotated.

:class:`RecoveryStats` derives the values from parsed events (no I/O; tested alone),
:class:`TimelineFollower` reads the file, :class:`Metrics` holds both and the ledger's view
behind a lock and is the prometheus-client collector, on a registry of its own, served by
:func:`serve` in a daemon thread.

Series (``openstack_ha_`` prefix, seconds, ``_total`` counters)::

    recoveries_total{outcome="done|failed"}             evacuation_done / evacuation_failed
    instances_total{result="evacuated|failed|timed_out|skipped"}
    fences_total{outcome="confirmed|failed", reason=...}  power_off_confirmed / fence_failed
    detection_seconds, fencing_seconds, evacuation_seconds, mttr_seconds   (histograms)
    ledger_hosts{state="requested|claimed|done|failed"}
    ledger_requests_total                                 new requests seen in the ledger
    brake_engaged                                         1 while the brake holds
    timeline_lines_suppressed_total{event=...}            held back while the brake holds
    timeline_lines_held_back                              held back, not reported yet
    timeline_lines_skipped_total                          lines that are no event
    worker_last_scan_timestamp_seconds                    last successful scan (epoch)

Durations, per recovery (a recovery groups a host's events as the timeline's rendering
does: a new one begins at a start event once the previous one ended; here also at a
drill's ``failure_injected``, and at any start event once the previous one has had no line
for :data:`STALE_SECONDS`):

* detection: the failure (``failure_injected``: a drill by the lab or an operator) to the
  first ``fence_start``; no observation when the timeline does not know the failure;
* fencing: the first ``fence_start`` to ``power_off_confirmed`` or ``kdump_detected`` (or
  ``forced_down`` when neither came), retries included;
* evacuation: the first ``evacuation_requested`` (else ``claimed``) to ``evacuation_done``;
* MTTR: the recovery's first start event (failure, detection or fence) to
  ``evacuation_done``.

A failed evacuation is counted in ``recoveries_total{outcome="failed"}``, not observed in
the evacuation or MTTR histograms (it repaired nothing).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from nova_evacuate.brake import is_brake_reason
from nova_evacuate.ledger import LedgerEntry, State
from openstack_ha import timeline
from openstack_ha.timeline import Event

LOG = logging.getLogger(__name__)

PREFIX = "openstack_ha_"

# Bucket bounds, seconds. Detection and fencing: Pacemaker notices a lost node within one
# or two monitor intervals (5-10 s), and a BMC confirms power-off within seconds, or a
# minute when slow (fence_nova's power_timeout); beyond five minutes is retries.
SHORT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Evacuation and MTTR: tens of seconds for a few servers, minutes for a full host (tens of
# rebuilds at bounded concurrency), up to the claim's and the operator's patience (an hour).
LONG_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0,
                3600.0)
HISTOGRAMS = {
    "detection": ("Seconds from a host's failure (when the timeline knows it: a drill) to"
                  " its first fence attempt.", SHORT_BUCKETS),
    "fencing": ("Seconds from a host's first fence attempt to its confirmed power-off (or"
                " force-down), retries included.", SHORT_BUCKETS),
    "evacuation": ("Seconds from a host's evacuation request to its evacuation's end"
                   " (done).", LONG_BUCKETS),
    "mttr": ("Seconds from a host's failure (its first recovery event) to its evacuation's"
             " end (done).", LONG_BUCKETS),
}

# A brake line older than this, with nothing since, no longer holds the gauge: Pacemaker
# retries a refused fence at least every cluster-recheck-interval (15 min by default),
# the worker a refused evacuation every scan (one line a minute, limited), so a brake that
# still holds has written again by then.
BRAKE_FRESH_SECONDS = 20 * 60.0
# A recovery with nothing written for its host for this long is over, ended or not (fences
# refused once, then the operator's repair): the host's next failure is a recovery of its
# own, not timed from the old one. A running evacuation writes a line per instance, and a
# brake that holds a line at least every 15 minutes (see above).
STALE_SECONDS = 3600.0
# At most this much of the timeline is read per scan (a scan must stay short): a larger
# backlog (the first read of a long file) is caught up over the next scans.
READ_LIMIT_BYTES = 16 * 1024 * 1024

_STARTS = frozenset(timeline.STARTS)
# Events that may begin a recovery: a failure seen or a fence, or an evacuation asked by
# hand (``nova-evacuate HOST`` writes ``claimed`` with no fence before it).
_OPENERS = _STARTS | {"evacuation_requested", "claimed"}
_CLOSERS = frozenset({*timeline.ENDS, "host_back", "unfenced"})
# Events after which the brake no longer holds for the host: it was fenced or evacuated.
_BRAKE_CLEARED = frozenset({"power_off_confirmed", "kdump_detected", "claimed", *_CLOSERS})
# The fence's confirmation: the power cut, or the host seen in its crash kernel (fence_nova
# kdump_wait); force-down when no such line came.
_FENCED = frozenset({"power_off_confirmed", "kdump_detected", "forced_down"})
LEDGER_STATES = tuple(s.value for s in State)


def fence_failure_reason(text: str) -> str:
    """The class of a ``fence_failed`` reason (free text) as a label value."""
    if is_brake_reason(text):
        return "brake"
    if text.startswith("power-off not confirmed"):
        return "power_not_confirmed"
    if text.startswith("storage fence not confirmed"):
        return "storage_not_confirmed"
    if text.startswith("partition refused"):
        return "partition"  # fence_nova partition_policy: Consul sees the host alive
    if text.startswith("cannot read the cluster's view"):
        return "cluster_unreadable"  # the brake cannot be asked: refused, fail closed
    return "error"


def fence_success_reason(how: str) -> str:
    """The class of a ``power_off_confirmed`` line's ``how`` as a label value."""
    if how.startswith(("power_driver=none", "record_only")):
        return "delegated"  # another device of the topology level cuts the power
    if "already" in how:
        return "already_off"
    return "bmc"


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bound, not cumulative
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)  # lines from two clocks a moment apart
        self.total += seconds
        self.observations += 1
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
                return

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative, ``+Inf`` last, as the exposition format wants."""
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((_float_text(bound), running))
        out.append(("+Inf", self.observations))
        return out


def _float_text(value: float) -> str:
    return repr(float(value))


@dataclass
class _Recovery:
    """What one open recovery of a host needs remembered; not the events themselves."""

    start: float
    last: float  # its latest event's time
    failure: float | None = None
    fence_start: float | None = None
    fenced: bool = False
    evacuation_start: float | None = None
    closed: bool = False


class RecoveryStats:
    """The values derived from timeline events, fed in file order with :meth:`add`. Memory
    is bounded by the number of hosts, not of events."""

    def __init__(self) -> None:
        self.recoveries: Counter[str] = Counter()
        self.instances: Counter[str] = Counter()
        self.fences: Counter[tuple[str, str]] = Counter()
        self.suppressed: Counter[str] = Counter()
        self.histograms = {name: _Histogram(buckets) for name, (_, buckets)
                           in HISTOGRAMS.items()}
        self.brake_lines: dict[str, float] = {}  # host → its last brake line's time
        self._open: dict[str, _Recovery] = {}

    def add_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)

    def add(self, event: Event) -> None:
        name, host, ts, data = event.event, event.host, event.ts, event.data
        suppressed = data.get("suppressed")
        if isinstance(suppressed, int) and not isinstance(suppressed, bool) and suppressed > 0:
            self.suppressed[name] += suppressed
        if name in _BRAKE_CLEARED:
            self.brake_lines.pop(host, None)
        current = self._open.get(host)
        # A drill's mark is a new failure by definition, whatever came before it.
        if name in _OPENERS and (current is None or current.closed or name == "failure_injected"
                                 or ts - current.last > STALE_SECONDS):
            current = self._open[host] = _Recovery(ts, ts)
        if name == "fence_failed":
            reason = _text(data.get("reason"))
            self.fences["failed", fence_failure_reason(reason)] += 1
            if is_brake_reason(reason):
                self.brake_lines[host] = ts
        elif name == "evacuation_refused":
            if data.get("brake") is True:
                self.brake_lines[host] = ts
        elif name == "power_off_confirmed":
            self.fences["confirmed", fence_success_reason(_text(data.get("how")))] += 1
        elif name == "kdump_detected":
            self.fences["confirmed", "kdump"] += 1  # its crash kernel runs: power left on
        elif name == "instance_done":
            self.instances["evacuated"] += 1
        elif name == "instance_failed":
            state = data.get("state")
            self.instances["timed_out" if state == "timed out" else "failed"] += 1
        elif name in timeline.ENDS:
            self.recoveries["done" if name == "evacuation_done" else "failed"] += 1
            skipped = data.get("skipped")
            if isinstance(skipped, int) and not isinstance(skipped, bool) and skipped > 0:
                self.instances["skipped"] += skipped
        if current is not None:
            self._durations(current, name, ts)

    def _durations(self, recovery: _Recovery, name: str, ts: float) -> None:
        recovery.last = max(recovery.last, ts)
        if recovery.closed:
            return  # returns and unfencing after the end: nothing more to time
        if name == "failure_injected" and recovery.failure is None:
            recovery.failure = ts
        elif name == "fence_start" and recovery.fence_start is None:
            recovery.fence_start = ts
            if recovery.failure is not None:
                self.histograms["detection"].observe(ts - recovery.failure)
        elif name in _FENCED and not recovery.fenced:
            recovery.fenced = True
            if recovery.fence_start is not None:
                self.histograms["fencing"].observe(ts - recovery.fence_start)
        elif name in ("evacuation_requested", "claimed") and recovery.evacuation_start is None:
            recovery.evacuation_start = ts
        elif name == "evacuation_done":
            if recovery.evacuation_start is not None:
                self.histograms["evacuation"].observe(ts - recovery.evacuation_start)
            self.histograms["mttr"].observe(ts - recovery.start)
        if name in _CLOSERS:
            recovery.closed = True

    def brake_engaged(self, now: float) -> bool:
        """A host's latest brake line is recent and nothing cleared it since."""
        return any(now - ts < BRAKE_FRESH_SECONDS for ts in self.brake_lines.values())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class TimelineFollower:
    """Reads the timeline's new complete lines, file call after call, like ``tail -F``.

    The file stays open between reads. It is opened without following a symbolic link and
    without blocking, and only a regular file is read (a FIFO planted in its place would
    otherwise hang the scan). A file replaced (rotated) is read to its end before the new
    one is opened; one that shrank (truncated) is read again from its start. A line
    longer than the timeline's bound is skipped, as the timeline's reader does.
    """

    def __init__(self, path: str | None, read_limit: int = READ_LIMIT_BYTES) -> None:
        self.path = path
        self.read_limit = read_limit
        self.skipped = 0
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the open file
        self._offset = 0
        self._partial = b""  # the start of a line whose end is not written yet
        self._discarding = False  # inside an overlong line: drop up to its newline

    def read_new(self) -> list[Event]:
        """The events on the lines completed since the last call. Never raises."""
        if self.path is None:
            return []
        try:
            return list(self._read_new(self.path))
        except OSError as exc:
            LOG.debug("timeline %s unreadable: %s", self.path, exc)
            return []

    def _read_new(self, path: str) -> Iterator[Event]:
        if self._fd is not None:
            if self._replaced(path):
                yield from self._parse(self._drain())  # the rotated file's last lines
                self._close()
            else:
                size = os.fstat(self._fd).st_size
                if size < self._offset:  # truncated: what is there now is new
                    self._offset, self._partial, self._discarding = 0, b"", False
        if self._fd is None and not self._open(path):
            return
        yield from self._parse(self._drain())

    def _replaced(self, path: str) -> bool:
        try:
            found = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False  # moved away, the new one not created yet: keep reading the old
        return (found.st_dev, found.st_ino) != self._identity

    def _open(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                         | os.O_NOCTTY)
        except FileNotFoundError:
            return False  # nothing recorded yet
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file")
        self._fd, self._identity = fd, (found.st_dev, found.st_ino)
        self._offset, self._partial, self._discarding = 0, b"", False
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity = None, None

    def close(self) -> None:
        self._close()

    def _drain(self) -> bytes:
        assert self._fd is not None
        data = os.pread(self._fd, self.read_limit, self._offset)
        self._offset += len(data)
        return data

    def _parse(self, data: bytes) -> Iterator[Event]:
        if not data:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # after the last newline: incomplete (or empty)
        for line in lines:
            if self._discarding:
                self._discarding = False  # this is the overlong line's end
                continue
            if not line.strip():
                continue
            event = timeline.parse_line(line)
            if event is None:
                self.skipped += 1
            else:
                yield event
        if len(self._partial) > timeline.MAX_LINE_BYTES:
            self.skipped += 1  # too long to be a line of ours: dropped up to its newline
            self._partial, self._discarding = b"", True


class Metrics(Collector):
    """The worker's metrics: the timeline's and the ledger's values, refreshed by the scan
    (:meth:`scanned`), collected by the HTTP server's thread (:meth:`collect`)."""

    def __init__(self, timeline_path: str | None, *,
                 clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.follower = TimelineFollower(timeline_path)
        self.stats = RecoveryStats()
        self.ledger_hosts: Counter[str] = Counter()
        self.ledger_requests = 0
        self._pending: set[str] = set()  # hosts requested or claimed at the last scan
        self.last_scan: float | None = None
        self.brake_here = False  # the worker's own latest refusal was the brake's
        self.held_back = 0

    def refresh_timeline(self) -> None:
        """Read the timeline's new lines into the values."""
        events = self.follower.read_new()
        with self._lock:
            self.stats.add_all(events)

    def scanned(self, entries: Mapping[str, LedgerEntry | None], *, brake_here: bool = False,
                held_back: int = 0) -> None:
        """After a successful scan: the ledger as read (host → entry), whether the worker's
        own evacuations are held by the brake, the timeline lines its limiter holds back;
        then the timeline's new lines."""
        now = self._clock()
        hosts: Counter[str] = Counter()
        pending: set[str] = set()
        new_requests = 0
        for host, entry in entries.items():
            if entry is None:
                continue
            hosts[entry.state.value] += 1
            if entry.state in (State.REQUESTED, State.CLAIMED):
                pending.add(host)
                if host not in self._pending:
                    new_requests += 1  # a host entering the ledger: a new request
        with self._lock:
            self.ledger_hosts = hosts
            self._pending = pending
            self.ledger_requests += new_requests
            self.brake_here = brake_here
            self.held_back = held_back
            self.last_scan = now
        self.refresh_timeline()

    # ------------------------------------------------------------------ collector

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._families(self._clock())

    def _families(self, now: float) -> Iterator[Metric]:
        stats = self.stats
        recoveries = CounterMetricFamily(
            f"{PREFIX}recoveries", "Evacuations of failed hosts that ended, by outcome.",
            labels=["outcome"])
        for outcome in ("done", "failed"):
            recoveries.add_metric([outcome], stats.recoveries[outcome])
        yield recoveries
        instances = CounterMetricFamily(
            f"{PREFIX}instances", "Instances of failed hosts by result: evacuated, failed,"
            " timed_out (their evacuation did not end in time), skipped (left by the plan:"
            " not evacuable or excluded).", labels=["result"])
        for result in ("evacuated", "failed", "timed_out", "skipped"):
            instances.add_metric([result], stats.instances[result])
        yield instances
        fences = CounterMetricFamily(
            f"{PREFIX}fences", "Fence outcomes of fence_nova (any process), by reason:"
            " confirmed (bmc, already_off, delegated, kdump) or failed (brake,"
            " power_not_confirmed,"
            " storage_not_confirmed, cluster_unreadable, partition, error).", labels=["outcome", "reason"])
        # the usual series exist from the start, at 0, so that rate() sees their first one
        counts = dict.fromkeys((("confirmed", "bmc"), ("failed", "brake"),
                                ("failed", "power_not_confirmed")), 0)
        counts.update(stats.fences)
        for (outcome, reason), count in sorted(counts.items()):
            fences.add_metric([outcome, reason], count)
        yield fences
        for name, (text, _) in HISTOGRAMS.items():
            histogram = stats.histograms[name]
            family = HistogramMetricFamily(f"{PREFIX}{name}_seconds", text)
            family.add_metric([], histogram.buckets(), histogram.total)
            yield family
        hosts = GaugeMetricFamily(f"{PREFIX}ledger_hosts", "Hosts per ledger state (Nova's"
                                  " service records, as the worker's last scan read them).",
                                  labels=["state"])
        for state in LEDGER_STATES:
            hosts.add_metric([state], self.ledger_hosts[state])
        yield hosts
        yield CounterMetricFamily(
            f"{PREFIX}ledger_requests", "Hosts seen entering the ledger (requested or claimed)"
            " since the worker started: each a fence fence_nova confirmed, or an evacuation"
            " asked by hand; counted even with the timeline off.", value=self.ledger_requests)
        yield GaugeMetricFamily(
            f"{PREFIX}brake_engaged", "1 while the mass-failure brake holds: a fence or an"
            " evacuation refused by it and nothing done for that host since.",
            value=1 if self.brake_here or stats.brake_engaged(now) else 0)
        suppressed = CounterMetricFamily(
            f"{PREFIX}timeline_lines_suppressed", "Timeline lines held back while the brake"
            " held (one line per host a minute; the next line carries the count), by event.",
            labels=["event"])
        for event, count in sorted(stats.suppressed.items()):
            suppressed.add_metric([event], count)
        yield suppressed
        yield GaugeMetricFamily(
            f"{PREFIX}timeline_lines_held_back", "Timeline lines this worker holds back now,"
            " to be counted on the host's next line.", value=self.held_back)
        yield CounterMetricFamily(
            f"{PREFIX}timeline_lines_skipped", "Timeline lines read that are no event.",
            value=self.follower.skipped)
        if self.last_scan is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}worker_last_scan_timestamp_seconds", "When the worker last read"
                " Nova's service list successfully (Unix time).", value=self.last_scan)


def registry_for(metrics: Metrics) -> CollectorRegistry:
    """A registry of its own (not the process-wide default, with its process and
    platform collectors): only this suite's series are served."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def serve(metrics: Metrics, address: str, port: int) -> tuple[Any, threading.Thread]:
    """Serve ``metrics`` at ``http://address:port/metrics`` in a daemon thread; the server
    (``shutdown()`` stops it) and its thread. OSError when the port cannot be bound."""
    return start_http_server(port, addr=address, registry=registry_for(metrics))
