"""The recovery timeline: one JSON line per step of every recovery, and its rendering.

Every part of the suite appends what it did, with the time, to one file (by default
``/var/log/openstack-ha/timeline.jsonl``; ``OPENSTACK_HA_TIMELINE`` overrides it, an empty
value turns recording off)::

    {"ts": 1796045372.125, "event": "power_off_confirmed", "host": "compute1", "by": "fence_nova"}

Events, in the order of a recovery: ``failure_injected`` (the lab or an operator's test),
``detected`` or ``node_lost`` (Pacemaker's alerts: a failed operation of the node's
connection or of a resource on it; the node leaving) or ``consul_down`` (the NovaEvacuate
worker's Consul watcher: the node failed on every network, its connection failed so that
Pacemaker fences it; ``views``), ``fence_start`` (with fence_nova ``consul_config``,
``consul``: each network's view and the partition judge's reason),
``power_off_confirmed`` (or ``kdump_detected``: the host was heard from its crash kernel,
fence_nova ``kdump_wait``, and its power left on), ``storage_fenced`` (with
``storage_fence=ceph``), ``forced_down``,
``evacuation_requested`` (fence_nova),
``claimed``, ``instance_done`` / ``instance_failed`` (one per instance),
``evacuation_done`` / ``evacuation_failed`` (the engine), ``fence_failed`` (fence_nova,
with the reason), ``unfence_refused`` (fence_nova ``on`` while the evacuation is pending:
the host stays off; or its blocklist entries not removed), ``unfence_requested`` (the
worker, once it is done), ``storage_unfenced``, ``unfenced`` (fence_nova ``on``),
``host_back`` (force-down cleared, service enabled: the engine); ``evacuation_refused`` (the
NovaEvacuate worker: a gate, the mass-failure brake or Nova seeing the host up, refused the
evacuation; ``reason``, ``brake``; at most one line a minute per host, the next one with
``suppressed``: how many were held back); ``consul_refused`` (the Consul watcher held back
by the brake: ``views``, ``reason``; limited alike).

The NovaEvacuate worker's instance recovery (``[instance_recovery]``,
nova_evacuate/instance_recovery.py) records ``instance_restarted`` (an opted-in server that
stopped by itself on a healthy host, started again: ``server``, ``name``,
``restarts_in_hour``, ``why``) and ``instance_recovery_gave_up`` (one left SHUTOFF: the
restart limit reached, or its restart did not bring it up: ``server``, ``name``, ``why``);
``host`` is the server's host. They change no MTTR; rendering lists them with that host's
latest recovery, or as one of their own.

Recording never fails the caller: a line that cannot be written is logged and dropped.
The agents write as root and the alert agent as hacluster (group ``haclient``), so the
file is readable and writable by its owner and the cluster group only, never by everyone;
it is opened without following a symbolic link (a link planted in the directory would
otherwise make root append to, and change the mode of, any file), and only a regular file
with a single link is written.

    python -m openstack_ha.timeline [FILE] [--host HOST] [--json]

renders each recovery with times relative to its start, and the MTTR with its parts:
detection (failure → detected), fencing (detected → evacuation requested) and evacuation
(requested → last instance done). Each line of the file is read into a typed, bounded
:class:`Event`; a line that is not one (not UTF-8 JSON, a field missing or of the wrong
type, a time that is no finite epoch, too long or too deeply nested) is skipped and
counted, and one line on stderr says how many. Text from the file is printed without its
control characters; ``--json`` prints the events exactly as read. Rendering is linear in
the number of events.
"""

from __future__ import annotations

import argparse
import fcntl
import grp
import json
import logging
import math
import os
import re
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, NoReturn

LOG = logging.getLogger(__name__)

DEFAULT_PATH = "/var/log/openstack-ha/timeline.jsonl"
ENV = "OPENSTACK_HA_TIMELINE"
CLUSTER_GROUP = "haclient"  # Pacemaker's group: the alert agent runs as hacluster in it

# Where a recovery starts and what closes it; what counts as noticing the failure:
# Pacemaker's alerts, or the Consul watcher (nova_evacuate/consul_watch.py).
DETECTION = ("detected", "node_lost", "consul_down")
STARTS = ("failure_injected", *DETECTION, "fence_start")
ENDS = ("evacuation_done", "evacuation_failed")
_RETURNS = ("host_back", "unfenced")
_CLOSERS = (*ENDS, *_RETURNS)
_INSTANCE_EVENTS = ("instance_done", "instance_failed")

# Bounds of one event as read: anything beyond is not a line this suite wrote.
MAX_LINE_BYTES = 64 * 1024
MAX_EVENT_NAME = 128
MAX_HOST = 255  # a DNS name is at most 253 characters
MAX_DEPTH = 16  # nesting of the extra fields' values (the suite writes flat ones)
MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a date can show
MAX_FIELD_CHARS = 4096  # a longer string field is cut when written, so lines stay readable


# ---------------------------------------------------------------------------- terminal text

# ANSI/ECMA-48 escape sequences: CSI (ESC [ ... final), the string controls OSC, DCS, SOS,
# PM and APC up to their terminator (BEL or ST) or the end, and the two-character escapes.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|\Z)"
    r"|\x1b[ -/]*[0-~]",
    re.DOTALL)
# C0 (tab and newline included: a name never spans lines), DEL, C1, the Unicode line and
# paragraph separators, the bidirectional overrides and isolates (they reorder what a line
# shows) and lone surrogates (they cannot be encoded, so printing one would fail).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
                      "\u2066-\u2069\ud800-\udfff]")


def terminal_text(text: object) -> str:
    """``text`` as it is safe to print on a terminal: escape sequences and control
    characters removed, so data from a file, the configuration or Nova can neither move
    the cursor, clear the screen, set the clipboard (OSC 52) nor forge a line of its own."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", str(text)))


# ---------------------------------------------------------------------------- recording


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
    try:
        when = round(at if at is not None else time.time(), 3)
        values = {k: _bounded(v) for k, v in fields.items()}
        line = json.dumps({"ts": when, "event": event, "host": host, **values},
                          separators=(",", ":"), default=str, allow_nan=False) + "\n"
        _append(target, line.encode())  # ASCII: json.dumps escapes the rest
    except Exception as exc:  # best effort: a recovery never fails over its timeline
        LOG.warning("timeline %s not written: %s", target, exc)


# A line a refusal repeats (Pacemaker retries a fence the mass-failure brake refuses, each
# attempt a process of its own) is written at most this often per host.
REPEAT_INTERVAL = 60.0
# What may name a file of the repeated lines' state: a key and a host name as Nova and
# Pacemaker spell them. Anything else is not limited.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_HELD_BYTES = 256  # the state file: {"last": epoch, "held": count}


def admit_repeated(key: str, host: str, *, interval: float = REPEAT_INTERVAL,
                   now: float | None = None) -> int | None:
    """Whether a repeated line (``key``: what repeats, e.g. ``brake``) for ``host`` may be
    written now: None to hold it back (and count it), else how many were held back since
    the last one written (for that line's ``suppressed``).

    Shared by every process on this machine through a small file beside the timeline
    (``.held/KEY@HOST``, root's alone), read and written under an exclusive lock. When that
    file cannot be used, or the names cannot name a file, the line is written: one line
    too many is better than one lost."""
    target = path()
    if target is None or not (_FILE_NAME.fullmatch(key) and _FILE_NAME.fullmatch(host)):
        return 0
    when = time.time() if now is None else now
    directory = os.path.join(os.path.dirname(target) or ".", ".held")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, f"{key}@{host}"),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        LOG.warning("timeline: repeated lines not limited (%s)", exc)
        return 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        fcntl.flock(fd, fcntl.LOCK_EX)
        last, held = held_state(os.pread(fd, _HELD_BYTES, 0))
        # a clock set back (now before last) starts a new minute rather than hold forever
        if last is not None and 0 <= when - last < interval:
            last, held, admitted = last, held + 1, None
        else:
            last, held, admitted = when, 0, held
        data = json.dumps({"last": last, "held": held}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return admitted
    except OSError as exc:
        LOG.warning("timeline: repeated lines not limited (%s)", exc)
        return 0
    finally:
        os.close(fd)


def held_state(raw: bytes) -> tuple[float | None, int]:
    """The state file's (last line's time, lines held since); (None, 0) for anything that
    is not one (empty, cut short, tampered with)."""
    try:
        data = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, 0
    if not isinstance(data, dict):
        return None, 0
    last, held = data.get("last"), data.get("held")
    if isinstance(last, bool) or not isinstance(last, int | float) or not math.isfinite(last):
        return None, 0
    if isinstance(held, bool) or not isinstance(held, int) or not 0 <= held < 2**31:
        held = 0
    return float(last), held


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return value[:MAX_FIELD_CHARS - 3] + "..."
    return value


def _cluster_gid() -> int | None:
    try:
        return grp.getgrnam(CLUSTER_GROUP).gr_gid
    except KeyError:
        return None


def _make_directory(directory: str) -> None:
    """Create the timeline's directory when missing: writable by root and the cluster group
    only (the alert agent creates the file when it is first), setgid so the file gets the
    cluster's group; without that group, root's alone and readable by its group."""
    if os.path.isdir(directory):
        return  # the installer's or the operator's: its mode is theirs
    os.makedirs(directory, mode=0o700, exist_ok=True)
    gid = _cluster_gid()
    if gid is not None and os.geteuid() == 0:
        os.chown(directory, 0, gid)
    os.chmod(directory, 0o2770 if gid is not None else 0o750)


def _append(target: str, data: bytes) -> None:
    _make_directory(os.path.dirname(target) or ".")
    # O_NOFOLLOW: a symbolic link in place of the file is refused (ELOOP), never followed.
    # O_NONBLOCK: a FIFO without a reader fails at once instead of blocking the caller.
    flags = (os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
             | os.O_CLOEXEC)
    try:
        fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
    except FileExistsError:
        fd = os.open(target, flags)
        created = False
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(f"{target} is not a regular file")
        if found.st_nlink != 1:
            raise OSError(f"{target} has {found.st_nlink} hard links; only a file of its own"
                          f" is written")
        if created:
            gid = _cluster_gid()
            if gid is not None and found.st_gid != gid and os.geteuid() == 0:
                os.fchown(fd, -1, gid)
            # the cluster group appends too (the alert agent); nobody else reads
            os.fchmod(fd, 0o660 if gid is not None else 0o640)
        elif found.st_uid == os.geteuid() and stat.S_IMODE(found.st_mode) & ~0o660:
            os.fchmod(fd, stat.S_IMODE(found.st_mode) & 0o660)  # an older file: not for all
        # One write with O_APPEND: lines from concurrent writers do not interleave.
        os.write(fd, data)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True, eq=False)
class Event:
    """One timeline line, checked: ``ts`` a finite epoch time, ``event`` and ``host``
    non-empty bounded strings; ``data`` is the whole line as read (for ``--json``)."""

    ts: float
    event: str
    host: str
    data: dict[str, Any]

    def details(self) -> Iterator[tuple[str, Any]]:
        """The fields other than the time, the event and the host, in their order."""
        return ((k, v) for k, v in self.data.items() if k not in ("ts", "event", "host"))


def event_from(data: object) -> Event | None:
    """The :class:`Event` that ``data`` (a decoded JSON line) holds, or None when it holds
    none within the bounds."""
    if not isinstance(data, dict):
        return None
    ts, name, host = data.get("ts"), data.get("event"), data.get("host")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    if not (isinstance(name, str) and 0 < len(name) <= MAX_EVENT_NAME):
        return None
    if not (isinstance(host, str) and 0 < len(host) <= MAX_HOST):
        return None
    if isinstance(ts, int) and not 0 <= ts <= MAX_TS:  # before float(): no OverflowError
        return None
    if not 0.0 <= float(ts) <= MAX_TS:  # NaN fails this too
        return None
    if not all(_plain_json(value) for _, value in data.items()):
        return None
    return Event(float(ts), name, host, data)


def _plain_json(value: Any) -> bool:
    """Whether ``value`` prints back as the same JSON: finite numbers only, nesting within
    :data:`MAX_DEPTH` (no recursion here, so depth costs nothing to check)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_line(line: bytes) -> Event | None:
    """The event on one line of the file, or None when it is not one. Never raises."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        text = line.decode("utf-8")
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return event_from(data)


def _lines(source: BinaryIO) -> Iterator[bytes | None]:
    """Each line of ``source``; None for one longer than :data:`MAX_LINE_BYTES`, which is
    read past in bounded pieces, never held whole."""
    while True:
        line = source.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):
                line = source.readline(MAX_LINE_BYTES)
            yield None
            continue
        yield line


def read(source: str) -> tuple[list[Event], int]:
    """The events in file ``source``, in time order, and how many lines were skipped (not
    an event); blank lines are neither. Raises OSError when the file cannot be read."""
    events: list[Event] = []
    skipped = 0
    with open(source, "rb") as f:
        for line in _lines(f):
            if line is not None and not line.strip():
                continue
            event = parse_line(line) if line is not None else None
            if event is None:
                skipped += 1
            else:
                events.append(event)
    events.sort(key=lambda e: e.ts)  # stable; nearly sorted already, so about linear
    return events, skipped


# ---------------------------------------------------------------------------- recoveries


@dataclass
class Recovery:
    host: str
    events: list[Event] = field(default_factory=list)
    closed: bool = False  # an end or a return was seen: the next start is a new recovery

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.closed = self.closed or event.event in _CLOSERS

    def first(self, *names: str) -> float | None:
        return min((e.ts for e in self.events if e.event in names), default=None)

    def last(self, *names: str) -> float | None:
        return max((e.ts for e in self.events if e.event in names), default=None)

    @property
    def start(self) -> float:
        return self.events[0].ts

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


def recoveries(events: Iterable[Event | Mapping[str, Any]]) -> list[Recovery]:
    """Events grouped per host into recoveries: a new one starts at a start event after the
    previous recovery of that host ended (or was returned). Mappings are read as lines are;
    one that is no event is left out. One pass: linear in the number of events."""
    typed = (e if isinstance(e, Event) else event_from(dict(e)) for e in events)
    open_: dict[str, Recovery] = {}
    done: list[Recovery] = []
    for event in sorted((e for e in typed if e is not None), key=lambda e: e.ts):
        current = open_.get(event.host)
        if current is None or (event.event in STARTS and current.closed):
            current = open_[event.host] = Recovery(event.host)
            done.append(current)
        current.add(event)
    return done


def render(recovery: Recovery) -> str:
    """The recovery as text for a terminal: every piece from the file without its control
    characters."""
    t0 = recovery.start
    when = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"{terminal_text(recovery.host)}: recovery starting {when}"]
    instances = [e for e in recovery.events if e.event in _INSTANCE_EVENTS]
    many = len(instances) > 6
    first_instance, last_instance = (instances[0], instances[-1]) if instances else (None, None)
    for e in recovery.events:
        if many and e.event in _INSTANCE_EVENTS and e is not first_instance \
                and e is not last_instance:
            continue  # many instances: the first and the last say enough
        detail = terminal_text(" ".join(f"{k}={v}" for k, v in e.details()))
        lines.append(f"  +{e.ts - t0:7.2f}s  {terminal_text(e.event):<22} {detail}".rstrip())
    if many:
        lines.append(f"  ({len(instances)} instance events; first and last shown)")
    parts = recovery.parts()

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    lines.append(f"  MTTR {fmt(parts['mttr'])} = detection {fmt(parts['detection'])}"
                 f" + fencing {fmt(parts['fencing'])} + evacuation {fmt(parts['evacuation'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command

PROG = "openstack-ha-timeline"
EXIT_OK, EXIT_USAGE = 0, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not argparse's usage block: the refusal is the message
        print(f"{self.prog}: error: {terminal_text(message)} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog=PROG, description="Render recovery timelines with their MTTR.")
    p.add_argument("file", nargs="?", default=path() or DEFAULT_PATH)
    p.add_argument("--host", help="only this host's recoveries")
    p.add_argument("--json", action="store_true", help="recoveries and MTTR parts as JSON")
    args = p.parse_args(argv)
    try:
        events, skipped = read(args.file)
    except OSError as exc:
        print(f"{PROG}: {terminal_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if skipped:
        print(f"{PROG}: {skipped} line{'s' if skipped != 1 else ''} of"
              f" {terminal_text(args.file)} skipped: not timeline events", file=sys.stderr)
    found = [r for r in recoveries(events) if not args.host or r.host == args.host]
    if hasattr(sys.stdout, "reconfigure"):  # a terminal in a non-UTF-8 locale: no crash
        sys.stdout.reconfigure(errors="replace")
    if args.json:
        text = json.dumps([{"host": r.host, "start": r.start, **r.parts(),
                            "events": [e.data for e in r.events]} for r in found], indent=2)
    else:
        text = "\n\n".join(render(r) for r in found) if found else "no recoveries recorded"
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
