"""The recovery timeline: one JSON line per step of every recovery, and its rendering.

Every part of the suite appends what it did, with the time, to one file (by default
``/var/log/openstack-ha/timeline.jsonl``; ``OPENSTACK_HA_TIMELINE`` overrides it, an empty
value turns recording off)::

    {"ts": 1796045372.125, "event": "power_off_confirmed", "host": "compute1", "by": "fence_nova"}

Events, in the order of a recovery: ``failure_injected`` (the lab or an operator's test),
``detected`` or ``node_lost`` (Pacemaker's alerts: a failed operation of the node's
connection or of a resource on it; the node leaving), ``fence_start``,
``power_off_confirmed``, ``forced_down``, ``evacuation_requested`` (fence_nova),
``claimed``, ``instance_done`` / ``instance_failed`` (one per instance),
``evacuation_done`` / ``evacuation_failed`` (the engine), ``fence_failed`` (fence_nova,
with the reason), ``unfence_refused`` (fence_nova ``on`` while the evacuation is pending:
the host stays off), ``unfence_requested`` (the worker, once it is done), ``unfenced``
(fence_nova ``on``), ``host_back`` (force-down cleared, service enabled: the engine).

Recording never fails the caller: a line that cannot be written is logged and dropped.

    python -m nova_evacuate.timeline [FILE] [--host HOST] [--json]

renders each recovery with times relative to its start, and the MTTR with its parts:
detection (failure → detected), fencing (detected → evacuation requested) and evacuation
(requested → last instance done).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_PATH = "/var/log/openstack-ha/timeline.jsonl"
ENV = "OPENSTACK_HA_TIMELINE"

# Where a recovery starts and what closes it; what counts as Pacemaker noticing.
DETECTION = ("detected", "node_lost")
STARTS = ("failure_injected", *DETECTION, "fence_start")
ENDS = ("evacuation_done", "evacuation_failed")


def path() -> str | None:
    value = os.environ.get(ENV)
    if value is None:
        return DEFAULT_PATH
    return value or None


def record(event: str, host: str, *, at: float | None = None, **fields: Any) -> None:
    """Append one event (``at``: when it happened, default now); never raises."""
    target = path()
    if target is None:
        return
    when = round(at if at is not None else time.time(), 3)
    line = json.dumps({"ts": when, "event": event, "host": host, **fields},
                      separators=(",", ":"), default=str) + "\n"
    try:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        # One write with O_APPEND: lines from concurrent writers do not interleave.
        # 0664: the alert agent writes as hacluster (group haclient), the agents as root
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o664)
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, 0o664)  # the umask took the group's write bit
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        LOG.warning("timeline %s not written: %s", target, exc)


def read(source: str) -> list[dict[str, Any]]:
    events = []
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                float(event["ts"])
                str(event["event"])
                str(event["host"])
            except (ValueError, KeyError, TypeError):
                LOG.warning("%s:%d: not a timeline event, skipped", source, number)
                continue
            events.append(event)
    return sorted(events, key=lambda e: e["ts"])


@dataclass
class Recovery:
    host: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def first(self, *names: str) -> float | None:
        times = [e["ts"] for e in self.events if e["event"] in names]
        return min(times) if times else None

    def last(self, *names: str) -> float | None:
        times = [e["ts"] for e in self.events if e["event"] in names]
        return max(times) if times else None

    @property
    def start(self) -> float:
        return self.events[0]["ts"]

    def parts(self) -> dict[str, float | None]:
        """MTTR and its parts, in seconds; None where the events are missing."""
        failure = self.first("failure_injected") or self.first(*DETECTION, "fence_start")
        detected = self.first(*DETECTION) or self.first("fence_start")
        requested = self.first("evacuation_requested")
        done = self.last("instance_done")
        ended = self.first(*ENDS)
        recovered = done if done is not None else (ended if self.first("evacuation_done") else None)

        def span(a: float | None, b: float | None) -> float | None:
            return round(b - a, 2) if a is not None and b is not None else None

        return {"detection": span(failure, detected), "fencing": span(detected, requested),
                "evacuation": span(requested, recovered), "mttr": span(failure, recovered)}


def recoveries(events: Iterable[dict[str, Any]]) -> list[Recovery]:
    """Events grouped per host into recoveries: a new one starts at a start event after the
    previous recovery of that host ended (or was returned)."""
    open_: dict[str, Recovery] = {}
    done: list[Recovery] = []
    for event in sorted(events, key=lambda e: e["ts"]):
        host = event["host"]
        current = open_.get(host)
        finished = current is not None and any(
            e["event"] in (*ENDS, "host_back", "unfenced") for e in current.events)
        if current is None or (event["event"] in STARTS and finished
                               and event["event"] not in ("host_back", "unfenced")):
            current = open_[host] = Recovery(host)
            done.append(current)
        current.events.append(event)
    return done


def render(recovery: Recovery) -> str:
    t0 = recovery.start
    when = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"{recovery.host}: recovery starting {when}"]
    instances = [e for e in recovery.events if e["event"] in ("instance_done", "instance_failed")]
    for e in recovery.events:
        if e["event"] in ("instance_done", "instance_failed") and len(instances) > 6 \
                and e is not instances[0] and e is not instances[-1]:
            continue  # many instances: the first and the last say enough
        detail = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("ts", "event", "host"))
        lines.append(f"  +{e['ts'] - t0:7.2f}s  {e['event']:<22} {detail}".rstrip())
    if len(instances) > 6:
        lines.append(f"  ({len(instances)} instance events; first and last shown)")
    parts = recovery.parts()

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    lines.append(f"  MTTR {fmt(parts['mttr'])} = detection {fmt(parts['detection'])}"
                 f" + fencing {fmt(parts['fencing'])} + evacuation {fmt(parts['evacuation'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="openstack-ha-timeline",
                                description="Render recovery timelines with their MTTR.")
    p.add_argument("file", nargs="?", default=path() or DEFAULT_PATH)
    p.add_argument("--host", help="only this host's recoveries")
    p.add_argument("--json", action="store_true", help="recoveries and MTTR parts as JSON")
    args = p.parse_args(argv)
    try:
        events = read(args.file)
    except OSError as exc:
        print(f"openstack-ha-timeline: {exc}", file=sys.stderr)
        return 2
    found = [r for r in recoveries(events) if not args.host or r.host == args.host]
    if args.json:
        print(json.dumps([{"host": r.host, "start": r.start, **r.parts(), "events": r.events}
                          for r in found], indent=2))
    else:
        print("\n\n".join(render(r) for r in found) if found else "no recoveries recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
