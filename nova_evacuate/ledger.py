"""The ledger: which failed hosts need evacuation, who is doing it, how it ended.

Per host: ``requested`` (by the fence agent, with the time) → ``claimed`` (by which engine,
when) → ``done`` or ``failed`` (with counts). The source of truth is the host's nova-compute
service record: the disable reason carries a marker this module writes and parses, so the
state survives a controller failover, a full cluster restart and a reinstall of the engine,
and an operator reads it in ``openstack compute service list --long``::

    openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova
    openstack-ha:v1 evacuation=done at=2026-11-30T12:03:10Z by=ctl-1/4242 evacuated=12 failed=0

It is mirrored to the Pacemaker node attribute ``evacuate`` (``yes`` / ``<node>@<epoch>`` /
``no``, NovaEvacuate's convention), which the cluster side (ComputeLiveness, unfencing) reads.
The mirror is injected (:class:`AttributeMirror`), so :class:`Ledger` runs without
Pacemaker in tests; :func:`pacemaker_mirror` is the one mirror every caller uses.

The first part is pure (marker format, transitions); :class:`Ledger` does the I/O.

Race left open: Nova has no compare-and-set on the disable reason, so two engines that both
read ``requested`` can both write a claim, and the later write wins. :meth:`Ledger.claim`
narrows the window by reading the record back after writing and giving up when the ``by``
it reads is not its own; two engines whose write-then-read sequences interleave exactly
(A writes, A reads, B writes, B reads) still both proceed. Pacemaker runs one NovaEvacuate
copy, so this takes a split brain or an operator running ``nova-evacuate`` by hand at the
same moment; what keeps an instance from being evacuated twice is the engine checking each
server's migrations before it acts, not this claim.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nova_evacuate.nova import DISABLED_REASON_MAX, ComputeService
from openstack_ha import pacemaker

LOG = logging.getLogger(__name__)

PREFIX = "openstack-ha:"
VERSION = "v1"
ATTRIBUTE = "evacuate"  # the node attribute NovaEvacuate and fence_compute use
FENCE_AGENT = "fence_nova"  # ``by`` of a request written by the fence agent

# Who wrote an entry: "fence_nova", or an engine as "<node>/<pid>". No spaces or quotes, so
# it stays one bare token of the marker; 100 characters leave room for any node name.
_BY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[0-9]{1,10})?")
_TOKEN = re.compile(r'\s*([a-z]+)=("(?:[^"\\]|\\.)*"|[^\s"]+)(?=\s|$)')
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class LedgerError(Exception):
    """A refused transition, or a marker of ours that cannot be read or written."""


class State(enum.StrEnum):
    REQUESTED = "requested"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"


FINISHED = frozenset({State.DONE, State.FAILED})


@dataclass(frozen=True)
class LedgerEntry:
    """One host's evacuation state. ``at`` is when this state was entered (UTC, whole
    seconds, as the marker stores it); ``prior`` is the operator's own disable reason found
    when the failure was first recorded, kept so :meth:`Ledger.clear` can put it back."""

    state: State
    at: datetime
    by: str
    evacuated: int | None = None
    failed: int | None = None
    note: str = ""
    prior: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("LedgerEntry.at must be timezone-aware (UTC)")
        if not _BY.fullmatch(self.by):
            raise ValueError(f"LedgerEntry.by {self.by!r} is not 'fence_nova' or '<node>/<pid>'")
        for name in ("evacuated", "failed"):
            count = getattr(self, name)
            if count is not None and not 0 <= count <= 10**6:
                raise ValueError(f"LedgerEntry.{name} must be 0 to 1000000, got {count}")
        # Store the time as the marker does, so an entry equals its own round trip.
        object.__setattr__(self, "at", self.at.astimezone(UTC).replace(microsecond=0))
        object.__setattr__(self, "note", _clean(self.note))
        object.__setattr__(self, "prior", _clean(self.prior) or None)


def _clean(text: str | None) -> str:
    # One line of printable text: a disable reason is shown in a table column.
    return " ".join("".join(c if c.isprintable() else " " for c in text or "").split())


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def format_marker(entry: LedgerEntry) -> str:
    """The disable reason for ``entry``; at most 255 characters (Nova's limit).

    ``openstack-ha:v1`` then ``key=value`` tokens: evacuation, at, by, evacuated and failed
    (when set), then the free-text ``note`` and ``prior`` in double quotes. When too long,
    ``note`` is shortened first (ending in "..."), then dropped, then ``prior`` the same way;
    the rest is bounded (``by`` ≤ 111 characters) and always fits.
    """
    head = [f"{PREFIX}{VERSION}", f"evacuation={entry.state.value}",
            f"at={entry.at.strftime(_TIME_FORMAT)}", f"by={entry.by}"]
    head += [f"{k}={v}" for k, v in (("evacuated", entry.evacuated), ("failed", entry.failed))
             if v is not None]
    base = " ".join(head)
    note, prior = entry.note, entry.prior or ""
    while True:  # each round returns, or shortens note or prior (the head alone always fits)
        tail = [f"note={_quote(note)}"] if note else []
        tail += [f"prior={_quote(prior)}"] if prior else []
        text = " ".join([base, *tail])
        excess = len(text) - DISABLED_REASON_MAX
        if excess <= 0:
            return text
        if note:
            note = _shorten(note, excess)
        else:
            prior = _shorten(prior, excess)


def _shorten(text: str, excess: int) -> str:
    keep = len(text) - excess - 3
    return text[:keep].rstrip() + "..." if keep >= 8 else ""


def parse_marker(reason: str | None) -> LedgerEntry | None:
    """The entry in a disable reason; None when the reason is not ours (an operator's own
    reason, or none). Ours but unreadable (another version, a missing or bad field) raises
    :class:`LedgerError`: guessing would either lose a pending evacuation or start one."""
    if not reason or not reason.startswith(PREFIX):
        return None
    version, _, rest = reason[len(PREFIX):].partition(" ")
    if version != VERSION:
        raise LedgerError(f"ledger marker version {version!r} is not {VERSION!r}: {reason!r}")
    fields: dict[str, str] = {}
    pos = 0
    # Each token is matched where the last one ended, never searched for further on: a
    # search would retry the pattern at every later position (quadratic in the length).
    while (token := _TOKEN.match(rest, pos)) is not None and token[1] not in fields:
        fields[token[1]] = _unquote(token[2])
        pos = token.end()
    if rest[pos:].strip():
        raise LedgerError(f"malformed ledger marker at {rest[pos:pos + 30]!r}: {reason!r}")
    try:
        entry = LedgerEntry(
            state=State(fields.pop("evacuation")),
            at=datetime.strptime(fields.pop("at"), _TIME_FORMAT).replace(tzinfo=UTC),
            by=fields.pop("by"),
            evacuated=_count(fields.pop("evacuated", None)),
            failed=_count(fields.pop("failed", None)),
            note=fields.pop("note", ""),
            prior=fields.pop("prior", None),
        )
    except (KeyError, ValueError) as exc:
        raise LedgerError(f"malformed ledger marker ({exc}): {reason!r}") from None
    if fields:
        raise LedgerError(f"unknown fields {sorted(fields)} in ledger marker: {reason!r}")
    return entry


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    # ASCII digits only, as written: str.isdigit() also takes "²" (int() refuses it) and
    # other scripts' digits; more than 7 digits is past LedgerEntry's bound anyway.
    if not (text.isascii() and text.isdigit() and len(text) <= 7):
        raise ValueError(f"count {text[:20]!r} is not a number from 0 to 1000000")
    return int(text)


def attribute_value(entry: LedgerEntry) -> str:
    """The ``evacuate`` node attribute for ``entry``: ``yes`` (requested), ``<node>@<epoch>``
    (claimed: the engine's node and the claim's time) or ``no`` (done or failed)."""
    if entry.state is State.REQUESTED:
        return "yes"
    if entry.state is State.CLAIMED:
        return f"{entry.by.split('/', 1)[0]}@{int(entry.at.timestamp())}"
    return "no"


def evacuation_finished(entry: LedgerEntry | None) -> bool:
    """True when nothing is pending: no entry of ours (never failed, or the service was
    enabled since, which clears the reason), or done, or failed."""
    return entry is None or entry.state in FINISHED


def claimable(entry: LedgerEntry | None, by: str, now: datetime, claim_expiry: timedelta,
              *, holder_gone: bool = False) -> bool:
    """The one claim rule: may engine ``by`` claim (or renew) the evacuation ``entry`` now?

    Requested: yes. Claimed by ``by``: yes (a renewal). Claimed by another engine: once the
    claim is ``claim_expiry`` old, or at once when its holder is known to be gone (its
    process died on this node, or its node left the cluster cleanly, that is fenced).
    Nothing, done or failed: no (a new failure is a request first).
    """
    if entry is None:
        return False
    if entry.state is State.REQUESTED:
        return True
    if entry.state is not State.CLAIMED:
        return False
    return entry.by == by or holder_gone or now - entry.at >= claim_expiry


def next_entry(current: LedgerEntry | None, wanted: State, now: datetime, by: str,
               claim_expiry: timedelta, *, evacuated: int | None = None,
               failed: int | None = None, note: str = "") -> LedgerEntry:
    """The entry after moving ``current`` to ``wanted``, or :class:`LedgerError` naming the
    refused transition. ``prior`` is carried over in every transition.

    * none, done or failed → requested: a new failure.
    * requested → requested, claimed → requested: unchanged (the fence agent retrying, or
      fencing again while the evacuation runs: the request is already recorded or served),
      except claimed → requested by the engine holding the claim: a release, so that
      another engine can take over at once.
    * requested → claimed; claimed → claimed by the same engine (renewal) or by another once
      the claim is ``claim_expiry`` old (takeover after that engine died or its node failed).
    * claimed → done or failed, by the engine holding the claim; done/failed → done/failed
      by the same engine (a retried finish whose first answer was lost).
    """
    state = current.state if current else None
    refused = LedgerError(f"ledger: {state or 'nothing'} → {wanted} by {by} refused"
                          + (f" (entry by {current.by} at {current.at:%Y-%m-%dT%H:%M:%SZ})"
                             if current else ""))
    carried = {"prior": current.prior if current else None}
    if wanted is State.REQUESTED:
        if state is State.CLAIMED and current is not None and current.by == by:
            # the engine holding the claim hands it back (it is stopping)
            return LedgerEntry(State.REQUESTED, now, by, note=note, **carried)
        if current is not None and state in (State.REQUESTED, State.CLAIMED):
            return current
        return LedgerEntry(State.REQUESTED, now, by, note=note, **carried)
    if current is None:
        raise refused
    if wanted is State.CLAIMED:
        if claimable(current, by, now, claim_expiry):
            return LedgerEntry(State.CLAIMED, now, by, note=note, **carried)
        raise refused
    if (state is State.CLAIMED or state in FINISHED) and current.by == by:
        return LedgerEntry(wanted, now, by, evacuated=evacuated, failed=failed, note=note,
                           **carried)
    raise refused


# ---------------------------------------------------------------------------- I/O


class NovaServices(Protocol):
    """The part of :class:`nova_evacuate.nova.Nova` the ledger uses."""

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService: ...

    def disable(self, service_id: str, reason: str | None) -> ComputeService: ...


@dataclass(frozen=True)
class AttributeMirror:
    """Writes the ``evacuate`` node attribute: ``set(name, value, node)`` and
    ``delete(name, node)``, e.g. ``openstack_ha.pacemaker.set_node_attribute`` and
    ``delete_node_attribute``."""

    set: Callable[[str, str, str], None]
    delete: Callable[[str, str], None]
    name: str = ATTRIBUTE


def pacemaker_mirror() -> AttributeMirror | None:
    """The mirror written through attrd, the one fence_nova, the worker and ``nova-evacuate``
    use; None where Pacemaker is not installed (``nova-evacuate`` run on a workstation).

    A write that fails is logged as a warning and the ledger call goes on. Nova holds the
    truth; the mirror is a fast wake-up for the worker and the input of the reference
    location rule, and the worker puts it right wherever it disagrees with Nova on every
    scan (:meth:`nova_evacuate.worker.Worker.scan`). Failing a fence or an evacuation
    because attrd did not answer would trade a delay of one scan for an outage.
    """
    if shutil.which("attrd_updater") is None or not os.path.exists("/var/lib/pacemaker"):
        return None

    def set_or_warn(name: str, value: str, node: str) -> None:
        try:
            pacemaker.set_node_attribute(name, value, node)
        except pacemaker.PacemakerError as exc:
            LOG.warning("node attribute %s=%s on %s not written (%s): the worker writes it"
                        " at its next scan", name, value, node, exc)

    def delete_or_warn(name: str, node: str) -> None:
        try:
            pacemaker.delete_node_attribute(name, node)
        except pacemaker.PacemakerError as exc:
            LOG.warning("node attribute %s on %s not removed (%s): the worker removes it at"
                        " its next scan", name, node, exc)

    return AttributeMirror(set=set_or_warn, delete=delete_or_warn)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """The ledger over Nova (the truth) and an optional node-attribute mirror.

    ``host`` is the node name as the cluster knows it: the mirror is written there, and
    Nova's record is found with ``domain`` as :meth:`Nova.compute_service` does. Nova is
    written first, then the mirror (whose failure behaviour is the mirror's own: see
    :func:`pacemaker_mirror`); repeating a call is safe. None of these calls forces a host
    down or enables it: that is the caller's separate, verified step.
    """

    def __init__(self, nova: NovaServices, mirror: AttributeMirror | None = None, *,
                 domain: str | None = None, clock: Callable[[], datetime] = _utcnow) -> None:
        self._nova = nova
        self._mirror = mirror
        self._domain = domain
        self._clock = clock

    def read(self, host: str) -> LedgerEntry | None:
        return parse_marker(self._service(host).disabled_reason)

    def request(self, host: str, now: datetime | None = None, *, by: str = FENCE_AGENT,
                note: str = "", service: ComputeService | None = None) -> LedgerEntry:
        """Record that ``host`` needs evacuation, disabling its service with the marker.

        ``service``: the record as the caller read it in this same action (fence_nova's
        force-down answer), so it is not looked up again; read afresh when not given."""
        service = service or self._service(host)
        current = parse_marker(service.disabled_reason)
        entry = next_entry(current, State.REQUESTED, now or self._clock(), by, timedelta(0),
                           note=note)
        if current is None and service.disabled_reason:
            entry = replace(entry, prior=service.disabled_reason)  # an operator's own reason
        if entry != current or service.status != "disabled":
            self._write(service, entry)
        self._mirror_set(host, entry)
        return entry

    def claim(self, host: str, by: str, now: datetime | None,
              claim_expiry: timedelta) -> LedgerEntry:
        """Take (or renew) the evacuation of ``host`` for engine ``by``; LedgerError when it
        is not ours to take, or when the record read back afterwards names another engine."""
        service = self._service(host)
        entry = next_entry(parse_marker(service.disabled_reason), State.CLAIMED,
                           now or self._clock(), by, claim_expiry)
        self._write(service, entry)
        # No compare-and-set in Nova: read back, so the later of two racing claims wins.
        found = parse_marker(self._service(host).disabled_reason)
        if found is None or found.state is not State.CLAIMED or found.by != by:
            now_says = format_marker(found) if found else "no marker"
            raise LedgerError(f"claim of {host} by {by} lost: the record now says {now_says}")
        self._mirror_set(host, entry)
        return entry

    def release(self, host: str, by: str, now: datetime | None = None) -> LedgerEntry:
        """Hand the claim of ``by`` back (requested again), so another engine takes over
        without waiting for the claim to expire. Refused unless ``by`` holds it."""
        service = self._service(host)
        current = parse_marker(service.disabled_reason)
        if current is None or current.state is not State.CLAIMED or current.by != by:
            raise LedgerError(f"release of {host} by {by} refused: the record says "
                              + (format_marker(current) if current else "no marker"))
        entry = next_entry(current, State.REQUESTED, now or self._clock(), by, timedelta(0))
        self._write(service, entry)
        self._mirror_set(host, entry)
        return entry

    def finish(self, host: str, ok: bool, evacuated: int, failed: int, note: str = "", *,
               by: str, now: datetime | None = None) -> LedgerEntry:
        """Record the end of the evacuation claimed by ``by``: done when ``ok``, else failed."""
        service = self._service(host)
        entry = next_entry(parse_marker(service.disabled_reason),
                           State.DONE if ok else State.FAILED, now or self._clock(), by,
                           timedelta(0), evacuated=evacuated, failed=failed, note=note)
        self._write(service, entry)
        self._mirror_set(host, entry)
        return entry

    def clear(self, host: str, *, service: ComputeService | None = None) -> None:
        """The host is back and its evacuation finished: remove our marker.

        The service stays disabled (enabling is host return's decision, ARCHITECTURE.md invariant 4),
        with the operator's reason from before the failure if there was one, else none, and
        the node attribute is deleted. Refused while an evacuation is pending. ``service``
        as for :meth:`request`.
        """
        service = service or self._service(host)
        entry = parse_marker(service.disabled_reason)
        if entry is not None and entry.state not in FINISHED:
            raise LedgerError(f"not clearing {host}: its evacuation is {entry.state}")
        if entry is not None:  # else nothing of ours in Nova (never fenced, or enabled since)
            answer = self._nova.disable(service.id, entry.prior)
            if parse_marker(answer.disabled_reason) is not None:
                raise LedgerError(f"clearing {host}: Nova still shows {answer.disabled_reason!r}")
        if self._mirror is not None:
            self._mirror.delete(self._mirror.name, host)

    # ------------------------------------------------------------------ plumbing

    def _service(self, host: str) -> ComputeService:
        return self._nova.compute_service(host, self._domain)

    def _write(self, service: ComputeService, entry: LedgerEntry) -> None:
        marker = format_marker(entry)
        answer = self._nova.disable(service.id, marker)
        # The PUT's answer is the saved record: check it carries what was written.
        if answer.status != "disabled" or answer.disabled_reason != marker:
            raise LedgerError(f"Nova did not keep the marker for {service.host}: "
                              f"{answer.status} {answer.disabled_reason!r}")

    def _mirror_set(self, host: str, entry: LedgerEntry) -> None:
        if self._mirror is not None:
            self._mirror.set(self._mirror.name, attribute_value(entry), host)
