"""Host return: the one decision "may this host serve again, and what must be cleared".

Fencing (``fence_nova off``) leaves a failed host powered off, its nova-compute service
forced down and disabled with the ledger's marker, and the node attribute ``evacuate`` set.
The way back, in this order, each step taken by whoever sees it first:

1. **While the evacuation is pending** (``requested`` or ``claimed``) the host stays
   powered off: unfencing (``fence_nova on``) refuses at once without touching the power,
   and the reference configuration's location rule on ``evacuate`` keeps the compute
   resources off the node. Nothing waits: Pacemaker re-evaluates the attribute by itself.
2. **Once the ledger says done or failed**, the NovaEvacuate worker asks Pacemaker to
   unfence the node (``stonith_admin --unfence``): ``fence_nova on`` powers it on
   (unless ``unfence_power=keep-off``), the node boots, rejoins, and Pacemaker unfences it
   again through its own transition before starting anything there.
3. **Force-down** is cleared as soon as Nova accepts it. Nova refuses while the host's
   evacuation migrations are still ``done``; they turn ``completed`` only when the returning
   nova-compute starts and cleans up, so whoever tries first and is refused leaves it to
   the next try (unfencing accepts the refusal; the worker tries every scan).
4. **The marker and the disable** go once Nova sees the service up: enabling a service
   Nova sees down leaves ``COMPUTE_STATUS_DISABLED`` on its resource provider until the
   compute's next periodic sync, and nothing could be scheduled there meanwhile. The
   service is enabled only when the disable was ours (no operator's reason from before
   the failure) and ``leave_disabled`` is off.

Pure: callers read Nova and act; :func:`next_step` only decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from nova_evacuate.ledger import LedgerEntry, evacuation_finished


@dataclass(frozen=True)
class HostState:
    """What Nova says of the host: its ledger entry and its service's flags."""

    entry: LedgerEntry | None
    forced_down: bool
    reports_up: bool


@dataclass(frozen=True)
class Step:
    """What may happen now. ``why`` is one line for the log."""

    may_power_on: bool
    clear_force_down: bool = False
    clear_marker: bool = False
    enable: bool = False
    why: str = ""


def may_power_on(entry: LedgerEntry | None) -> bool:
    """Invariant 4: a fenced host gets power (so nova-compute) only once its evacuation
    has finished; a host with no entry of ours was never fenced by us, or is back."""
    return evacuation_finished(entry)


def next_step(state: HostState, *, leave_disabled: bool) -> Step:
    entry = state.entry
    if not may_power_on(entry):
        assert entry is not None
        return Step(False, why=f"evacuation {entry.state} (by {entry.by}): the host stays"
                               " powered off until it is done")
    if state.forced_down:
        return Step(True, clear_force_down=True,
                    why="forced down: cleared once the returning nova-compute has cleaned up")
    if not state.reports_up:
        return Step(True, why="waiting for nova-compute to report up")
    if entry is None:
        return Step(True, why="nothing of ours to clear")
    enable = not leave_disabled and entry.prior is None
    why = ("marker removed, service enabled" if enable else
           "marker removed, service left disabled"
           + (" (leave_disabled)" if leave_disabled else f" ({entry.prior!r} from before)"))
    return Step(True, clear_marker=True, enable=enable, why=why)
