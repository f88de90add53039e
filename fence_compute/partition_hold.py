"""How long fence_nova has been refusing to fence a host, across its attempts.

Pacemaker keeps a remote node whose connection failed unclean until a fence of it succeeds,
even once its connection is back (measured on the lab, Pacemaker 2.1.5: ten refused fences
in 18 s, then "Too many failures to fence, giving up" until the next transition; a resource
cleanup made one more refused attempt; only ``stonith_admin --confirm`` or a fence that
succeeds brings the node back). So a refusal by the partition policy can only delay the
fence, and ``partition_hold`` bounds the delay: each attempt is a process of its own, so the
start of the refusals is kept in a small file per host (``STATE_DIR/HOST``, root's alone,
read and written under a lock, links not followed).

An episode of refusals ends when a fence of the host proceeds or the host is unfenced
(`end`: after ``pcs stonith confirm`` Pacemaker unfences it), or when no attempt came for
`EPISODE_GAP` seconds (Pacemaker, having given up, tries again at the next
transition: at the latest ``cluster-recheck-interval``, 15 minutes by default). When the file
cannot be used, the refusal is not made: the hold cannot be bounded, and a refusal is never
the default.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import stat

STATE_DIR = "/run/openstack-ha/partition-hold"
EPISODE_GAP = 3600.0
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_STATE_BYTES = 256


class HoldUnknown(Exception):
    """The refusals' start cannot be kept for this host."""


def episode_start(first: float | None, last: float | None, now: float,
                  gap: float = EPISODE_GAP) -> float:
    """When the current episode of refusals began, given the state read (``first``, ``last``
    refusal) and now: a new episode when there is none, the last refusal is older than
    ``gap``, or the times make no sense (a clock set back)."""
    if first is None or last is None or not first <= last <= now or now - last > gap:
        return now
    return first


def parse_state(raw: bytes) -> tuple[float | None, float | None]:
    """The state file's (first, last) refusal times; (None, None) for anything else."""
    try:
        data = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    times = [data.get("first"), data.get("last")]
    if any(isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)
           for t in times):
        return None, None
    return float(times[0]), float(times[1])


def _path(host: str) -> str:
    if not _HOST.fullmatch(host):
        raise HoldUnknown(f"host name {host[:64]!r} cannot name a state file")
    return os.path.join(STATE_DIR, host)


def ongoing(host: str, now: float) -> bool:
    """Whether an episode of refusals of ``host`` is under way (read only; False when the
    state cannot be read)."""
    try:
        fd = os.open(_path(host), os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
                     | os.O_CLOEXEC)
    except (OSError, HoldUnknown):
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)
        first, last = parse_state(os.pread(fd, _STATE_BYTES, 0))
    except OSError:
        return False
    finally:
        os.close(fd)
    return first is not None and episode_start(first, last, now) == first


def refused(host: str, now: float) -> float:
    """Note a refusal of ``host`` now; the time its episode of refusals began."""
    try:
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        fd = os.open(_path(host), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY
                     | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HoldUnknown(f"{STATE_DIR}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HoldUnknown(f"{_path(host)} is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)
        first = episode_start(*parse_state(os.pread(fd, _STATE_BYTES, 0)), now)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"first": first, "last": now}).encode(), 0)
        return first
    except OSError as exc:
        raise HoldUnknown(f"{_path(host)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def end(host: str) -> None:
    """The host's episode of refusals is over (its fence proceeds); never raises."""
    with contextlib.suppress(OSError, HoldUnknown):
        os.unlink(_path(host))
