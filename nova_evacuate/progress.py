"""One planned server's way through an evacuation, as a pure transition function.

:func:`advance` takes a server's :class:`ServerProgress`, one event the engine observed and
the time, and returns the server's next progress and the actions the engine carries out, in
order. Nothing here reads Nova, the clock or the ledger, or logs: :mod:`nova_evacuate.engine`
reads Nova, turns its answers into events, calls :func:`advance` and executes the actions.
What needs several servers at once (batches within the bounds, one list call per poll for
all of them) stays in the engine.

The rules, by event:

- :class:`Resumed`, at the start, with the server's newest evacuation migration since
  shortly before the request: one under way elsewhere, or done with the server moved, is an
  earlier run's and is followed (``evacuating``), never sent again. A request sent *to* this
  run's host from another failed host and never started is the other host's evacuation's to
  send on: the engine is asked whether that one still runs (:class:`AskIfEvacuating`,
  answered by :class:`HostEvacuating`); if it does, this run only follows the server
  (:attr:`ServerProgress.waits_for`) and sends it itself once that one is over and left it
  on its first host. Anything else (failed, rebuilt onto this host) is evacuated anew.
- :class:`Picked`: the bounds let a pending server go. Its request: lock it (unless it is
  locked; with ``lock_servers = when_needed`` only when its lock must carry its original
  status: :func:`needs_lock`), reset it to error (a task or a transitional state blocks
  evacuation, or its last destination died before starting), with ``[storage]`` check
  that the failed host let go of its disk (:class:`CheckDisk`; :class:`DiskHeld` puts it
  back, checked again every few seconds for ``disk_release_wait``, then ends it failed with
  the reason), evacuate it, to the planned target on the first try while that host is live, else to the
  scheduler's pick. Each call's answer comes back as :class:`Locked`, :class:`ResetDone`,
  :class:`EvacuateAccepted` or :class:`CallFailed`.
- :class:`CallFailed`: refused (400, 409) or not found (404) ends the server failed; any
  other failure may have been accepted before the answer was lost, so the server counts as
  sent (``evacuating``, ``uncertain``) and is sent again only once a later poll lists no
  migration of it, after a backoff; one failure more than ``api_retries`` ends it failed.
- :class:`MigrationSeen`, each poll: a new migration under way or done is followed (its
  destination watched: :class:`WatchDestination`); a failed one is evacuated again, to the
  scheduler's pick, up to ``migration_retries`` times, then the server has failed.
- :class:`DestinationDied` (the destination fenced, i.e. forced down): a rebuild that never
  started there, with the server still on the failed host, is sent elsewhere after a reset;
  else the server has failed (the dead destination's own evacuation takes it over).
- :class:`ServerRead`, once :func:`rebuilt` says its migration is done: done only in its
  final state (:func:`plan.final_status <nova_evacuate.plan.final_status>`) on its
  destination; rebuilt running where it is meant to be stopped or paused, it is stopped or
  paused first (:class:`Stop`, :class:`Pause`, answered by :class:`RestoreAccepted`:
  ``restoring``); any other state, or ERROR, has failed.
- :class:`WaitedServerRead`, each poll, for a server another evacuation sends on: settled
  once on a live host other than both failed hosts with no task.
- :class:`Tick`: a server unfinished ``instance_timeout`` after its first request has timed
  out.

An end is final: every end unlocks what this run locked (:class:`Unlock`; the engine tries
again at exit, :func:`unlock_at_exit`) and is recorded (:class:`End`).
"""

from __future__ import annotations

import enum
from collections.abc import Set
from dataclasses import dataclass, replace
from typing import Literal

from nova_evacuate.plan import Migration, Planned, Server, final_status


class Progress(enum.StrEnum):
    """Where one planned server is. The values are what the timeline, the CLI and its JSON
    report show: they do not change."""

    PENDING = "pending"  # not sent yet, or to be sent again
    SUBMITTED = "evacuating"  # its evacuation was requested (or the answer was lost)
    RESTORING = "restoring"  # rebuilt running: being stopped or paused to its final state
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed out"


PENDING, SUBMITTED, RESTORING = Progress.PENDING, Progress.SUBMITTED, Progress.RESTORING
DONE, FAILED, TIMED_OUT = Progress.DONE, Progress.FAILED, Progress.TIMED_OUT
ENDS = frozenset({DONE, FAILED, TIMED_OUT})


@dataclass(frozen=True)
class Limits:
    """Each server's own budget (the engine's settings of the same names)."""

    migration_retries: int = 1  # failed migrations evacuated again
    api_retries: int = 3  # failed Nova calls tried again
    instance_timeout: float = 600.0  # seconds from the first request to an end
    check_disk: bool = False  # before each evacuate request, ask who holds the disk
    # A disk still held is checked again for this long before the server fails: Ceph keeps a
    # dead client's watch until it times out (30 s) unless the client is blocklisted.
    disk_release_wait: float = 0.0
    # Lock every server before its request (``[evacuation] lock_servers = always``), not only
    # those the lock is needed for (:func:`needs_lock`).
    lock_all: bool = False


@dataclass(frozen=True)
class ServerProgress:
    """What the engine knows of one planned server's evacuation. Times are the engine's
    monotonic clock."""

    move: Planned  # the plan's server (as read before anything moved) and its target
    original_status: str  # before the failure; decides its final status
    failed_host: str  # the host this run evacuates
    state: Progress = PENDING
    reason: str = ""  # why it ended
    dest: str | None = None  # the host it is (being) rebuilt on, once known: watched
    attempts: int = 0  # evacuate requests Nova accepted
    api_failures: int = 0
    last_migration_id: int = 0  # migrations up to this id are from before our last request
    started: float | None = None  # the first request's time (the timeout counts from it)
    not_before: float = 0.0  # no new request before this time
    uncertain: bool = False  # the last request failed without an answer; look before resending
    held_since: float | None = None  # when its disk was first found still held
    we_locked: bool = False
    reset_done: bool = False
    # its last request went to a destination that died before starting the rebuild: Nova
    # still shows it rebuilding on the failed host, so the next request resets it first
    stuck: bool = False
    # sent to this run's host and never started: the evacuation of the host it was sent
    # from (named here) sends it on; this run waits until it is settled (see Resumed)
    waits_for: str | None = None


def initial_progress(move: Planned, failed_host: str, our_lock: str | None) -> ServerProgress:
    """A planned server before this run sent anything. ``our_lock``: the original status a
    lock of ours recorded (an earlier run's), None when the server carries no lock of ours.
    Such a server in ERROR was reset by that run already."""
    return ServerProgress(move, original_status=our_lock or move.server.status,
                          failed_host=failed_host, we_locked=our_lock is not None,
                          reset_done=our_lock is not None and move.server.status == "ERROR")


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Resumed:
    """At the start: the server's newest evacuation migration since shortly before the
    request (an earlier run's, or one onto the failed host)."""

    migration: Migration


@dataclass(frozen=True)
class HostEvacuating:
    """The answer to :class:`AskIfEvacuating`: whether ``host``'s evacuation is requested or
    under way (unknown counts as yes)."""

    host: str
    running: bool


@dataclass(frozen=True)
class Picked:
    """The run's bounds let this pending server's request go now. ``live_hosts``: the hosts
    Nova last showed up and not forced down (None: not read yet)."""

    live_hosts: Set[str] | None


@dataclass(frozen=True)
class Locked:
    """Nova locked the server (with this run's reason)."""


@dataclass(frozen=True)
class ResetDone:
    """Nova reset the server's state to error."""


@dataclass(frozen=True)
class EvacuateAccepted:
    """Nova accepted the evacuate request (``target``: the host named, None: the scheduler's)."""

    target: str | None


@dataclass(frozen=True)
class RestoreAccepted:
    """Nova accepted the stop or pause that brings the server to its final state."""


@dataclass(frozen=True)
class CallFailed:
    """A Nova call for this server failed (lock, reset, evacuate, stop, pause). ``kind``:
    :data:`nova_evacuate.nova.ErrorKind`; ``error``: its message."""

    kind: str
    error: str


@dataclass(frozen=True)
class Unlocked:
    """Nova unlocked the server."""


@dataclass(frozen=True)
class MigrationSeen:
    """A poll's newest evacuation migration of the server (None: none listed)."""

    migration: Migration | None


@dataclass(frozen=True)
class DestinationDied:
    """The server's destination is forced down (fenced: its power-off confirmed; down by its
    heartbeat alone does not count, as it may still run the rebuild).
    ``still_on_failed_host``: Nova still places the server on the failed host (asked only
    where :func:`rebuild_unseen`)."""

    migration: Migration | None  # the poll's newest migration of the server
    still_on_failed_host: bool


@dataclass(frozen=True)
class ServerRead:
    """The server as Nova shows it now (None: deleted), once :func:`rebuilt`."""

    server: Server | None


@dataclass(frozen=True)
class WaitedServerRead:
    """The server as Nova shows it now (None: deleted), while another evacuation sends it
    on (:attr:`ServerProgress.waits_for`). ``live_hosts``: up and not forced down."""

    server: Server | None
    live_hosts: Set[str]


@dataclass(frozen=True)
class Tick:
    """The engine looks at the time (each poll)."""


@dataclass(frozen=True)
class DiskHeld:
    """:class:`CheckDisk`'s answer when the failed host still holds the server's disk, or
    Ceph could not tell (``reason`` says which)."""

    reason: str


Event = (Resumed | HostEvacuating | Picked | Locked | ResetDone | EvacuateAccepted
         | RestoreAccepted | CallFailed | Unlocked | MigrationSeen | DestinationDied
         | ServerRead | WaitedServerRead | Tick | DiskHeld)


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Lock:
    """Lock the server, with a reason naming the failed host and its original status."""


@dataclass(frozen=True)
class ResetToError:
    """Reset the server's state to error (Nova evacuates only ACTIVE, SHUTOFF or ERROR
    servers with no task)."""


@dataclass(frozen=True)
class CheckDisk:
    """Ask Ceph whether the failed host still holds the server's disk (``[storage]``);
    answered by :class:`DiskHeld`, or by nothing when it is free."""


@dataclass(frozen=True)
class Evacuate:
    """Send the evacuate request (``target`` None: the scheduler picks)."""

    target: str | None


@dataclass(frozen=True)
class Stop:
    """Stop the server (rebuilt running, meant to be stopped)."""


@dataclass(frozen=True)
class Pause:
    """Pause the server (rebuilt running, meant to be paused)."""


@dataclass(frozen=True)
class AskIfEvacuating:
    """Read the ledger: is ``host``'s evacuation running? Answer with :class:`HostEvacuating`."""

    host: str


@dataclass(frozen=True)
class WatchDestination:
    """Follow the server this poll: is its destination still live, is its rebuild done
    (:func:`rebuilt`)?"""


@dataclass(frozen=True)
class Unlock:
    """Unlock the server (this run locked it); answer with :class:`Unlocked`."""


@dataclass(frozen=True)
class End:
    """The server reached an end: log it and record it in the timeline."""

    state: Progress
    reason: str


@dataclass(frozen=True)
class Log:
    """A line for the engine's log."""

    level: Literal["info", "warning"]
    text: str


@dataclass(frozen=True)
class Show:
    """Show the server's progress (the CLI's display)."""


# Calls to Nova: the engine stops at the first that fails (after a CallFailed).
Call = Lock | ResetToError | Evacuate | Stop | Pause
Action = Call | CheckDisk | AskIfEvacuating | WatchDestination | Unlock | End | Log | Show

# Nova will not, and asking again does not change that: 400/409 (the host looks up again,
# a task is under way) and 404 (the server is gone).
REFUSALS = frozenset({"refused", "not_found"})
DISK_RECHECK_SECONDS = 2.0  # between two checks of a disk still held
# What brings a server rebuilt running to the final status it was not rebuilt in.
RESTORE: dict[str, Call] = {"SHUTOFF": Stop(), "PAUSED": Pause()}


# ---------------------------------------------------------------------------- the transitions


def advance(progress: ServerProgress, event: Event, now: float,
            limits: Limits) -> tuple[ServerProgress, list[Action]]:
    """The server's progress after ``event`` at time ``now``, and what the engine does, in
    order. An ended server stays as it ended (only :class:`Unlocked` is still noted)."""
    p = progress
    if p.state in ENDS and not isinstance(event, Unlocked):
        return p, []
    match event:
        case Resumed(migration=m):
            return _resumed(p, m, now)
        case HostEvacuating(host=host, running=running):
            return _host_evacuating(p, host, running, now)
        case Picked(live_hosts=live):
            return p, _request(p, live, limits)
        case DiskHeld(reason=reason):
            return _disk_held(p, reason, now, limits)
        case Locked():
            return replace(p, we_locked=True), []
        case ResetDone():
            return replace(p, reset_done=True, stuck=False), []
        case EvacuateAccepted(target=target):
            text = f"{p.failed_host}: evacuating {_name(p)} ({p.move.server.id})" + (
                f" to {target}" if target else "")
            p = replace(p, attempts=p.attempts + 1, uncertain=False, state=SUBMITTED,
                        # Watched from now on: Nova's changes-since misses a migration never
                        # updated since its creation, which a destination that hangs before
                        # it starts leaves.
                        dest=target, started=now if p.started is None else p.started)
            return p, [Log("info", text), Show()]
        case RestoreAccepted():
            return replace(p, state=RESTORING), [Show()]
        case CallFailed(kind=kind, error=error):
            return _call_failed(p, kind, error, now, limits)
        case Unlocked():
            return replace(p, we_locked=False), []
        case MigrationSeen(migration=m):
            return _migration_seen(p, m, now, limits)
        case DestinationDied(migration=m, still_on_failed_host=still_on):
            return _destination_died(p, m, still_on, limits)
        case ServerRead(server=server):
            return _server_read(p, server)
        case WaitedServerRead(server=server, live_hosts=live):
            return _waited_server_read(p, server, live)
        case Tick():
            if p.started is not None and now - p.started > limits.instance_timeout:
                return _end(p, TIMED_OUT, f"not finished after {limits.instance_timeout:.0f}s")
            return p, []
    raise TypeError(f"not an event: {event!r}")


def rebuild_unseen(progress: ServerProgress, migration: Migration | None) -> bool:
    """No migration of our last request listed yet, or one still as created: the rebuild
    may never have started on its destination."""
    m = migration
    return m is None or m.id <= progress.last_migration_id or m.status == "accepted"


def rebuilt(progress: ServerProgress, migration: Migration | None) -> bool:
    """The migration of our last request is done (or the server is being restored): the
    server itself is read next (:class:`ServerRead`)."""
    m = migration
    return progress.state is RESTORING or (
        m is not None and m.id > progress.last_migration_id and m.succeeded)


def needs_lock(progress: ServerProgress) -> bool:
    """Whether the server's lock carries something a resumed run needs: its original status,
    when that decides a final status other than ACTIVE (SHUTOFF, PAUSED, SUSPENDED). Its
    state reset, a failed rebuild (Nova sets ERROR) or the rebuild itself (REBUILD) hide that
    status from the next run, and only the lock's reason keeps it. Every other server comes
    back ACTIVE whatever status a resumed run reads (ERROR, REBUILD, ACTIVE: all end ACTIVE),
    so its lock would only keep its owner's hands off it, which Nova's own task state does
    while the rebuild runs."""
    return final_status(progress.original_status) != "ACTIVE"


def unlock_at_exit(progress: ServerProgress) -> bool:
    """Whether the run unlocks the server on its way out, whatever the way: locked by this
    run and ended or not sent (one under way stays locked: its rebuild goes on in Nova)."""
    return progress.we_locked and (progress.state in ENDS or progress.state is PENDING)


def _name(p: ServerProgress) -> str:
    return p.move.server.name


def _end(p: ServerProgress, state: Progress, reason: str) -> tuple[ServerProgress, list[Action]]:
    p = replace(p, state=state, reason=reason)
    return p, [End(state, reason), *([Unlock()] if p.we_locked else []), Show()]


def _resumed(p: ServerProgress, m: Migration, now: float) -> tuple[ServerProgress, list[Action]]:
    host, first_host = p.failed_host, p.move.server.host
    moved_away = first_host != host
    if m.dest_host != host and (not m.finished or (m.succeeded and moved_away)):
        # An earlier run's: this migration is the one to follow (attempts: it counts)
        p = replace(p, state=SUBMITTED, started=now, dest=m.dest_host, attempts=1,
                    last_migration_id=m.id - 1)
        done = "evacuated" if m.finished else "evacuating"
        return p, [Log("info", f"{host}: {_name(p)} already {done} by an earlier run")]
    p = replace(p, last_migration_id=m.id)  # an old or failed one: evacuate anew...
    if m.dest_host == host and m.status == "accepted" and first_host not in (host, None):
        # ...unless it is a request this host took and never started, for a server still on
        # the host it was evacuated from: while that host's evacuation runs, it sends the
        # server on (it sees this destination dead), and sending it from here as well would
        # race that one (and reset a server it is rebuilding). Whether it runs decides.
        return p, [AskIfEvacuating(first_host)]
    return p, []


def _host_evacuating(p: ServerProgress, host: str, running: bool,
                     now: float) -> tuple[ServerProgress, list[Action]]:
    if p.waits_for is None:  # asked by Resumed
        if p.state is not PENDING or host != p.move.server.host or not running:
            return p, []
        # Followed until settled on a live host, read as a server (Nova's later evacuation
        # reuses this very migration record, and its own may never be updated).
        text = (f"{p.failed_host}: {_name(p)} was sent here and never started; {host}'s"
                f" evacuation sends it on, followed from here")
        return replace(p, state=SUBMITTED, started=now, waits_for=host), [Log("info", text)]
    if host != p.waits_for or running:  # asked by WaitedServerRead
        return p, []
    text = (f"{p.failed_host}: {host}'s evacuation is over and left {_name(p)} there;"
            f" evacuating it from here")
    return replace(p, waits_for=None, state=PENDING, stuck=True), [Log("warning", text), Show()]


def _request(p: ServerProgress, live_hosts: Set[str] | None, limits: Limits) -> list[Action]:
    target = p.move.target if p.attempts == 0 else None  # a retry: the scheduler's pick
    if target is not None and live_hosts is not None and target not in live_hosts:
        target = None  # the planned host died since the plan: the scheduler picks
    calls: list[Action] = []
    if not p.move.server.locked and not p.we_locked and (limits.lock_all or needs_lock(p)):
        calls.append(Lock())
    if (p.move.reset_first and not p.reset_done) or p.stuck:
        calls.append(ResetToError())
    # Just before the request, after the lock: a disk the failed host still writes must
    # not be opened by a second host (the check is one read per request, in the sender).
    check = [CheckDisk()] if limits.check_disk else []
    return [*calls, *check, Evacuate(target)]


def _disk_held(p: ServerProgress, reason: str, now: float,
               limits: Limits) -> tuple[ServerProgress, list[Action]]:
    """Checked again every few seconds while ``disk_release_wait`` lasts (a dead host's watch
    that Ceph has not timed out yet), then failed with the reason; never sent meanwhile."""
    since = now if p.held_since is None else p.held_since
    if now - since >= limits.disk_release_wait:
        return _end(p, FAILED, reason)
    log = [Log("info", f"{_name(p)}: {reason}; checking again for up to"
                       f" {limits.disk_release_wait:.0f} s")] if p.held_since is None else []
    return replace(p, held_since=since, not_before=now + DISK_RECHECK_SECONDS), log


def _call_failed(p: ServerProgress, kind: str, error: str, now: float,
                 limits: Limits) -> tuple[ServerProgress, list[Action]]:
    if kind in REFUSALS:
        return _end(p, FAILED, f"Nova refused the evacuation: {error}")
    p = replace(p, api_failures=p.api_failures + 1)
    if p.api_failures > limits.api_retries:
        return _end(p, FAILED, f"API failed {p.api_failures} times: {error}")
    # The request may have been accepted before the answer was lost: the next poll looks for
    # a migration before anything is sent again.
    p = replace(p, uncertain=True, state=SUBMITTED,
                started=now if p.started is None else p.started,
                not_before=now + min(30.0, 2.0 ** p.api_failures))
    text = f"{_name(p)}: {error}; trying again ({p.api_failures} of {limits.api_retries})"
    return p, [Log("warning", text)]


def _migration_seen(p: ServerProgress, m: Migration | None, now: float,
                    limits: Limits) -> tuple[ServerProgress, list[Action]]:
    if p.state is RESTORING:
        return p, [WatchDestination()]
    if m is None or m.id <= p.last_migration_id:
        if p.uncertain and now >= p.not_before:
            return replace(p, state=PENDING), []  # nothing was accepted: send it again
        # not listed yet (a migration as created, say): its destination is watched
        return p, [WatchDestination()] if p.dest else []
    p = replace(p, uncertain=False, dest=m.dest_host or p.dest)
    if not m.finished or m.succeeded:
        return p, [WatchDestination()]
    p = replace(p, last_migration_id=m.id)
    if p.attempts <= limits.migration_retries:
        text = f"{p.failed_host}: evacuation migration of {_name(p)} {m.status}; evacuating again"
        p = replace(p, state=PENDING, dest=None)  # the scheduler picks anew
        return p, [Log("warning", text), Show()]
    return _end(p, FAILED, f"evacuation migration {m.status} ({p.attempts} attempts)")


def _destination_died(p: ServerProgress, m: Migration | None, still_on_failed_host: bool,
                      limits: Limits) -> tuple[ServerProgress, list[Action]]:
    if still_on_failed_host and rebuild_unseen(p, m) and p.attempts <= limits.migration_retries:
        # Its rebuild never started there, and it is still on the host this run evacuates
        # (powered off, confirmed): sending it elsewhere is safe.
        text = (f"{p.failed_host}: destination {p.dest} of {_name(p)} died before the rebuild"
                f" started; evacuating again")
        last = max(p.last_migration_id, m.id if m is not None else 0)
        p = replace(p, state=PENDING, dest=None, stuck=True, last_migration_id=last)
        return p, [Log("warning", text), Show()]
    return _end(p, FAILED, f"destination {p.dest} died during the rebuild (fenced: forced"
                           f" down); its evacuation takes the server over")


def _server_read(p: ServerProgress,
                 server: Server | None) -> tuple[ServerProgress, list[Action]]:
    if server is None:
        return _end(p, FAILED, "the server was deleted during its evacuation")
    if server.task_state or server.host in (p.failed_host, None) or \
            (p.dest is not None and server.host != p.dest):
        return p, []  # Nova has not finished saving it on its destination yet
    if server.status == "ERROR":
        return _end(p, FAILED, f"ended in ERROR on {server.host}")
    return _settle(p, server)


def _waited_server_read(p: ServerProgress, server: Server | None,
                        live_hosts: Set[str]) -> tuple[ServerProgress, list[Action]]:
    first_host = p.waits_for or ""
    if server is None:
        return _end(p, FAILED, "the server was deleted during its evacuation")
    if server.host in live_hosts and server.host not in (p.failed_host, first_host) \
            and not server.task_state:
        return _settle(replace(p, waits_for=None), server)
    if server.host == first_host:  # this run's to send, once that evacuation is over
        return p, [AskIfEvacuating(first_host)]
    return p, []


def _settle(p: ServerProgress, server: Server) -> tuple[ServerProgress, list[Action]]:
    """``server``, rebuilt on its destination: done in its final state, else brought to it."""
    wanted = final_status(p.original_status)
    p = replace(p, dest=server.host)
    restore = RESTORE.get(wanted)
    if server.status == wanted:
        return _end(p, DONE, f"{wanted} on {server.host}")
    if p.state is RESTORING:
        return p, []  # the stop or pause is under way
    if server.status == "ACTIVE" and restore is not None:
        return p, [restore]  # rebuilt running (after a state reset)
    return _end(p, FAILED, f"came back {server.status} on {server.host}, not {wanted}")
