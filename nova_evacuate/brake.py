"""The mass-failure brake: the one rule for "so many hosts look down at once that acting
automatically is unsafe".

So many hosts failing together is a partition or a broken observer more often than failed
hardware, and fencing or evacuating them all would turn a network blip into an outage. The
rule is asked at two moments, over the two views of the same failure:

* ``fence_nova off`` and ``reboot``, before any power action, over Pacemaker's view (the
  pacemaker_remote nodes offline or unclean); the limit is the fence device's
  ``max_down_percent`` (fence-agents parameters are integers, hence percent);
* the evacuation engine, before it evacuates, over Nova's view (compute services down or
  forced down); the limits are ``[safety] max_down_fraction`` and
  ``[safety] max_down_per_aggregate``.

In both, a host this suite already fenced (its power-off was confirmed, past this brake) is
a failure being handled, not one that "looks down": it does not count, except the target
itself. Counting it would deadlock a second failure during a recovery: the second host's
fence or evacuation would wait for the first host to return, which waits for Pacemaker.

Pure: callers read Pacemaker or Nova and pass what they saw.

While the brake holds, whoever it stops asks again and again (the worker at every scan,
Pacemaker at every fencing attempt); :class:`LineLimiter` keeps the timeline to one line
per host a minute, the next line saying how many were held back (``suppressed=N``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nova_evacuate.plan import Aggregate


@dataclass(frozen=True)
class HostView:
    """One host as an observer sees it."""

    host: str
    down: bool  # Pacemaker: offline or unclean; Nova: down or forced down
    handled: bool = False  # fenced by this suite: its power-off was confirmed


# Every reason an engaged brake gives ends its sentence with one of these: how a reason
# read back from the timeline (fence_nova's ``fence_failed``, the worker's
# ``evacuation_refused``) is told apart from a BMC's or Nova's failure.
_ENGAGED_PHRASES = ("not acting automatically", "acting on nothing automatically")


@dataclass(frozen=True)
class Brake:
    engaged: bool
    reason: str


def mass_failure(hosts: Sequence[HostView], target: str, max_down_fraction: float, *,
                 limit: str, what: str, aggregates: Sequence[Aggregate] = (),
                 max_down_per_aggregate: int = 0) -> Brake:
    """Whether acting on ``target`` automatically is unsafe now.

    Engaged when more than ``max_down_fraction`` of ``hosts`` look down, or more than
    ``max_down_per_aggregate`` (0: no limit) in one aggregate that ``target`` is in.
    ``limit`` names the setting for the reason (``max_down_percent=50``); ``what`` names
    the hosts (``compute nodes``). An empty view, or a bound that is no fraction, engages it.
    """
    if not hosts:
        return Brake(True, f"no {what} listed; acting on nothing automatically")
    # Fail closed: every comparison with NaN is false, so each test is written as "not
    # within the bound", and a bound that is no fraction at all engages the brake.
    if not 0.0 <= max_down_fraction <= 1.0:
        return Brake(True, f"{limit} is not a fraction from 0 to 1; acting on nothing"
                           " automatically")
    down = sorted(h.host for h in hosts if h.down and (h.host == target or not h.handled))
    handled = sorted(h.host for h in hosts if h.down and h.handled and h.host != target)
    not_counted = f" (fenced and handled, not counted: {', '.join(handled)})" if handled else ""
    if not len(down) / len(hosts) <= max_down_fraction:
        return Brake(True, f"{len(down)} of {len(hosts)} {what} look down ({', '.join(down)}),"
                           f" more than {limit}: a partition or a broken observer, not acting"
                           f" automatically{not_counted}")
    if max_down_per_aggregate:
        down_set = set(down)
        for aggregate in aggregates:
            if target in aggregate.hosts:
                n = len(aggregate.hosts & down_set)
                if not n <= max_down_per_aggregate:
                    return Brake(True, f"{n} hosts of aggregate {aggregate.name} look down:"
                                       f" more than max_down_per_aggregate="
                                       f"{max_down_per_aggregate}; not acting automatically")
    return Brake(False, f"{len(down)} of {len(hosts)} {what} down{not_counted}")


def is_brake_reason(text: str) -> bool:
    """Whether ``text`` (a refusal's reason, as written to the timeline) is an engaged
    brake's reason, given by :func:`mass_failure`."""
    return any(phrase in text for phrase in _ENGAGED_PHRASES)


class LineLimiter:
    """At most one timeline line per key (a host) every ``interval`` seconds.

    :meth:`admit` says whether a line may be written now and, when it may, how many were
    held back since the last one, for the line to carry (``suppressed=N``): the timeline
    keeps the first refusal at once and a count of the repeats, not a line per scan.
    Thread-safe (the worker's evacuation threads share one); ``clock`` is monotonic seconds.
    """

    def __init__(self, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # key → when its last line was admitted
        self._held: dict[str, int] = {}  # key → lines held back since then

    def admit(self, key: str) -> int | None:
        """None: hold this line back (counted). Otherwise write it, with the count
        returned (0: none held back)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)

    def held_back(self) -> int:
        """Lines held back and not yet reported by a later line, over every key."""
        with self._lock:
            return sum(self._held.values())
