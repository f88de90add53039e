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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nova_evacuate.plan import Aggregate


@dataclass(frozen=True)
class HostView:
    """One host as an observer sees it."""

    host: str
    down: bool  # Pacemaker: offline or unclean; Nova: down or forced down
    handled: bool = False  # fenced by this suite: its power-off was confirmed


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
