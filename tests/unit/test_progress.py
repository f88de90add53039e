"""One server's way through an evacuation (nova_evacuate/progress.py), as plain data.

Each test feeds :func:`advance` the events the engine would observe and checks the state
and the actions it returns; tests/unit/test_engine.py runs the same rules against FakeNova.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from nova_evacuate import engine
from nova_evacuate.plan import Migration, Planned, Server
from nova_evacuate.progress import (
    DONE,
    ENDS,
    FAILED,
    PENDING,
    RESTORING,
    SUBMITTED,
    TIMED_OUT,
    Action,
    AskIfEvacuating,
    CallFailed,
    CheckDisk,
    DestinationDied,
    DiskHeld,
    End,
    Evacuate,
    EvacuateAccepted,
    Event,
    HostEvacuating,
    Limits,
    Lock,
    Locked,
    Log,
    MigrationSeen,
    Pause,
    Picked,
    Progress,
    ResetDone,
    ResetToError,
    RestoreAccepted,
    Resumed,
    ServerProgress,
    ServerRead,
    Show,
    Stop,
    Tick,
    Unlock,
    Unlocked,
    WaitedServerRead,
    WatchDestination,
    advance,
    initial_progress,
    needs_lock,
    rebuild_unseen,
    rebuilt,
    unlock_at_exit,
)

HOST = "compute1"  # the failed host this run evacuates
# lock_servers = always: the lock's own rules; when_needed is tested apart
LIMITS = Limits(migration_retries=1, api_retries=3, instance_timeout=600.0, lock_all=True)
LIVE = frozenset({"compute2", "compute3"})
WATCH = WatchDestination()


def vm(status: str = "ACTIVE", host: str | None = HOST, **kw: object) -> Server:
    return Server(id="id-vm", name="vm", status=status, host=host, **kw)  # type: ignore[arg-type]


def planned(status: str = "ACTIVE", *, target: str | None = "compute2", reset_first: bool = False,
            our_lock: str | None = None, **kw: object) -> ServerProgress:
    move = Planned(vm(status, **kw), phase=0, target=target, reset_first=reset_first)
    return initial_progress(move, HOST, our_lock)


def migration(mid: int, status: str, dest: str | None = "compute2",
              source: str = HOST) -> Migration:
    return Migration(mid, "id-vm", status, source, dest, 0.0)


def step(p: ServerProgress, event: Event, now: float = 10.0,
         limits: Limits = LIMITS) -> tuple[ServerProgress, list[Action]]:
    return advance(p, event, now, limits)


def sent(p: ServerProgress, target: str | None = "compute2", now: float = 10.0) -> ServerProgress:
    """``p`` after Nova accepted an evacuate request."""
    return step(p, EvacuateAccepted(target), now)[0]


def locked_and_sent(status: str = "ACTIVE") -> ServerProgress:
    """A server this run locked and sent to its planned target, at 10.0."""
    return sent(step(planned(status), Locked())[0])


def ended(actions: list[Action], state: Progress, reason: str, *, unlock: bool) -> bool:
    return actions == [End(state, reason), *([Unlock()] if unlock else []), Show()]


# ---------------------------------------------------------------------------- states


def test_the_states_keep_the_values_the_timeline_and_the_reports_show():
    assert [p.value for p in Progress] == [
        "pending", "evacuating", "restoring", "done", "failed", "timed out"]
    assert sorted(ENDS) == ["done", "failed", "timed out"]
    # the engine's names are these very values
    assert (engine.PENDING, engine.SUBMITTED, engine.RESTORING, engine.DONE, engine.FAILED,
            engine.TIMED_OUT, engine.ENDS) == (PENDING, SUBMITTED, RESTORING, DONE, FAILED,
                                               TIMED_OUT, ENDS)
    assert f"{TIMED_OUT}" == str(TIMED_OUT) == "timed out"


def test_a_planned_server_starts_pending_and_an_earlier_runs_lock_is_taken_as_ours():
    fresh = planned("SHUTOFF")
    assert (fresh.state, fresh.original_status, fresh.we_locked, fresh.reset_done) == (
        PENDING, "SHUTOFF", False, False)
    # an earlier run locked it (recording PAUSED) and reset it to ERROR
    resumed = planned("ERROR", our_lock="PAUSED", locked=True)
    assert (resumed.original_status, resumed.we_locked, resumed.reset_done) == (
        "PAUSED", True, True)
    assert not planned("ACTIVE", our_lock="ACTIVE", locked=True).reset_done


def test_the_module_is_pure():
    """No I/O, no Nova, no clock, no logging: it imports only plain data."""
    import nova_evacuate.progress as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "enum", "collections.abc", "dataclasses", "typing",
                        "nova_evacuate.plan"}


# ---------------------------------------------------------------------------- submitted


def test_the_first_request_locks_the_server_and_names_the_planned_target():
    p = planned()
    assert step(p, Picked(LIVE)) == (p, [Lock(), Evacuate("compute2")])
    assert step(p, Picked(None))[1] == [Lock(), Evacuate("compute2")]  # liveness not read yet


@pytest.mark.parametrize(("status", "reset_first", "locked"), [
    ("ACTIVE", False, False), ("ERROR", False, False), ("SHUTOFF", False, True),
    ("PAUSED", True, True), ("SUSPENDED", True, True), ("BUILD", True, False),
])
def test_when_needed_only_a_server_meant_to_end_other_than_active_is_locked(
        status, reset_first, locked):
    """Its lock's reason is all a resumed run has of its original status; any other server
    comes back ACTIVE whatever a resumed run reads."""
    when_needed = replace(LIMITS, lock_all=False)
    p = planned(status, reset_first=reset_first)
    assert needs_lock(p) is locked
    assert (Lock() in step(p, Picked(LIVE), limits=when_needed)[1]) is locked
    assert Lock() in step(p, Picked(LIVE))[1]  # always: every one
    # a destination that died before starting: reset, and a SHUTOFF one locked first
    stuck = replace(planned(status), stuck=True, attempts=1)
    assert step(stuck, Picked(LIVE), limits=when_needed)[1] == [
        *([Lock()] if locked else []), ResetToError(), Evacuate(None)]


def test_when_needed_is_the_default():
    assert Limits().lock_all is False


def test_a_server_that_needs_it_is_reset_first_and_only_once():
    p = planned("BUILD", task_state="spawning", reset_first=True)
    assert step(p, Picked(LIVE))[1] == [Lock(), ResetToError(), Evacuate("compute2")]
    p, _ = step(step(p, Locked())[0], ResetDone())
    assert (p.we_locked, p.reset_done) == (True, True)
    assert step(p, Picked(LIVE))[1] == [Evacuate("compute2")]


def test_a_server_locked_by_someone_else_is_not_locked_and_not_unlocked():
    p = planned(locked=True, locked_reason="the operator's")
    assert step(p, Picked(LIVE))[1] == [Evacuate("compute2")]
    p, actions = step(sent(p), CallFailed("refused", "no"))
    assert Unlock() not in actions and not unlock_at_exit(p)


def test_a_dead_planned_target_or_a_retry_is_the_schedulers_pick():
    assert step(planned(), Picked(frozenset({"compute3"})))[1][-1] == Evacuate(None)
    assert step(planned(target=None), Picked(LIVE))[1][-1] == Evacuate(None)
    retry = replace(planned(), attempts=1)
    assert step(retry, Picked(LIVE))[1][-1] == Evacuate(None)


def test_with_the_disk_check_each_request_asks_who_holds_the_disk_after_the_lock():
    checking = replace(LIMITS, check_disk=True)
    p = planned("BUILD", task_state="spawning", reset_first=True)
    assert step(p, Picked(LIVE), limits=checking)[1] == [
        Lock(), ResetToError(), CheckDisk(), Evacuate("compute2")]
    retry = replace(planned(), attempts=1, we_locked=True)
    assert step(retry, Picked(LIVE), limits=checking)[1] == [CheckDisk(), Evacuate(None)]
    assert CheckDisk() not in step(planned(), Picked(LIVE))[1]  # off by default


def test_a_disk_the_failed_host_still_holds_fails_the_server_with_the_reason():
    p, _ = step(planned(), Locked())
    reason = "still held by compute1 (10.0.1.11:0/42)"
    p, actions = step(p, DiskHeld(reason))
    assert (p.state, p.reason, p.attempts) == (FAILED, reason, 0)
    assert ended(actions, FAILED, reason, unlock=True)


def test_a_disk_still_held_is_checked_again_while_the_release_wait_lasts_then_fails():
    """A power-only fence leaves the dead host's watch for Ceph's watch timeout: the server
    waits (never sent meanwhile), then fails with the reason if the disk is still held."""
    waiting = replace(LIMITS, check_disk=True, disk_release_wait=45.0)
    reason = "still held by compute1 (10.0.1.11:0/42)"
    p, _ = step(planned(), Locked(), limits=waiting)
    p, actions = step(p, DiskHeld(reason), now=10.0, limits=waiting)
    assert (p.state, p.held_since, p.not_before) == (PENDING, 10.0, 12.0)
    assert actions == [Log("info", f"vm: {reason}; checking again for up to 45 s")]
    assert step(p, Picked(LIVE), now=12.0, limits=waiting)[1] == [CheckDisk(), Evacuate("compute2")]
    p, actions = step(p, DiskHeld(reason), now=30.0, limits=waiting)
    assert (p.state, p.held_since, p.not_before, actions) == (PENDING, 10.0, 32.0, [])
    p, actions = step(p, DiskHeld(reason), now=55.0, limits=waiting)
    assert (p.state, p.reason) == (FAILED, reason)
    assert ended(actions, FAILED, reason, unlock=True)


def test_an_accepted_request_is_evacuating_and_its_destination_watched():
    p, actions = step(planned(), EvacuateAccepted("compute2"), now=5.0)
    assert (p.state, p.attempts, p.dest, p.started, p.uncertain) == (
        SUBMITTED, 1, "compute2", 5.0, False)
    assert actions == [Log("info", f"{HOST}: evacuating vm (id-vm) to compute2"), Show()]
    again, _ = step(replace(p, state=PENDING), EvacuateAccepted(None), now=50.0)
    assert (again.attempts, again.dest, again.started) == (2, None, 5.0)  # timed from the first


# ---------------------------------------------------------------------------- API failures


@pytest.mark.parametrize("kind", ["refused", "not_found"])
def test_a_refused_request_fails_the_server_at_once_and_unlocks_it(kind):
    p, _ = step(planned(), Locked())
    p, actions = step(p, CallFailed(kind, "cannot 'evacuate' while in BUILD"))
    reason = "Nova refused the evacuation: cannot 'evacuate' while in BUILD"
    assert (p.state, p.reason) == (FAILED, reason)
    assert ended(actions, FAILED, reason, unlock=True)
    assert not step(p, Unlocked())[0].we_locked


def test_an_api_error_with_no_answer_looks_for_a_migration_before_sending_again():
    p, actions = step(planned(), CallFailed("unreachable", "evacuate: timed out"), now=10.0)
    assert (p.state, p.uncertain, p.api_failures, p.started, p.not_before) == (
        SUBMITTED, True, 1, 10.0, 12.0)
    assert actions == [Log("warning", "vm: evacuate: timed out; trying again (1 of 3)")]
    # no migration listed: nothing is sent before the backoff is over...
    assert step(p, MigrationSeen(None), now=11.0) == (p, [])
    # ...then it is pending again, for the same request
    again, actions = step(p, MigrationSeen(None), now=12.0)
    assert (again.state, actions) == (PENDING, [])
    assert step(again, Picked(LIVE))[1] == [Lock(), Evacuate("compute2")]


def test_an_api_error_whose_request_nova_had_accepted_is_followed_not_sent_again():
    p, _ = step(planned(), CallFailed("unreachable", "evacuate: timed out"), now=10.0)
    p, actions = step(p, MigrationSeen(migration(7, "accepted", None)), now=20.0)
    assert (p.state, p.uncertain, actions) == (SUBMITTED, False, [WATCH])
    p, actions = step(p, MigrationSeen(migration(7, "rebuilding", "compute3")), now=22.0)
    assert (p.dest, actions) == ("compute3", [WATCH])
    assert rebuilt(p, migration(7, "done", "compute3"))


def test_api_errors_back_off_up_to_30_s_and_end_after_api_retries():
    p, backoff = planned(), []
    for _ in range(6):
        p, _ = step(p, CallFailed("unreachable", "x"), now=100.0, limits=Limits(api_retries=6))
        backoff.append(p.not_before - 100.0)
    assert backoff == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]

    p = planned()
    for _ in range(3):
        p, _ = step(p, CallFailed("server_error", "evacuate: 503"))
    p, actions = step(p, CallFailed("server_error", "evacuate: 503"))
    assert (p.state, p.reason) == (FAILED, "API failed 4 times: evacuate: 503")
    assert ended(actions, FAILED, p.reason, unlock=False)


# ---------------------------------------------------------------------------- migrations


def test_a_migration_under_way_or_done_is_followed_and_its_destination_watched():
    p = sent(planned(target=None), target=None)
    assert step(p, MigrationSeen(None)) == (p, [])  # no destination known yet: nothing to watch
    p, actions = step(p, MigrationSeen(migration(3, "pre-migrating", "compute3")))
    assert (p.dest, actions) == ("compute3", [WATCH])
    assert not rebuilt(p, migration(3, "pre-migrating", "compute3"))
    p, actions = step(p, MigrationSeen(migration(3, "done", "compute3")))
    assert actions == [WATCH] and rebuilt(p, migration(3, "done", "compute3"))
    # a destination named in the request is watched before any migration is listed
    named = sent(planned())
    assert step(named, MigrationSeen(None)) == (named, [WATCH])


def test_a_failed_migration_is_evacuated_again_then_the_server_fails():
    p = locked_and_sent()
    p, actions = step(p, MigrationSeen(migration(4, "error")))
    assert (p.state, p.dest, p.last_migration_id) == (PENDING, None, 4)
    assert actions == [Log("warning", f"{HOST}: evacuation migration of vm error;"
                                      f" evacuating again"), Show()]
    assert step(p, Picked(LIVE))[1] == [Evacuate(None)]  # locked already; the scheduler picks
    p = sent(p, target=None)
    # the failed one is from before this request: not read as this one's end
    assert step(p, MigrationSeen(migration(4, "error"))) == (p, [])
    p, actions = step(p, MigrationSeen(migration(9, "failed", "compute3")))
    assert (p.state, p.reason, p.last_migration_id) == (
        FAILED, "evacuation migration failed (2 attempts)", 9)
    assert ended(actions, FAILED, p.reason, unlock=True)


def test_with_no_migration_retries_the_first_failed_migration_fails_the_server():
    p, _ = step(sent(planned()), MigrationSeen(migration(2, "cancelled")),
                limits=Limits(migration_retries=0))
    assert (p.state, p.reason) == (FAILED, "evacuation migration cancelled (1 attempts)")


def test_a_server_being_restored_is_watched_whatever_the_migrations_say():
    p = replace(sent(planned("SHUTOFF")), state=RESTORING)
    assert step(p, MigrationSeen(None)) == (p, [WATCH])
    assert rebuilt(p, None)


# ---------------------------------------------------------------------------- destination died


def test_a_destination_that_died_before_the_rebuild_started_is_replaced():
    p = locked_and_sent("SHUTOFF")
    assert rebuild_unseen(p, None) and rebuild_unseen(p, migration(5, "accepted"))
    p, actions = step(p, DestinationDied(migration(5, "accepted"), still_on_failed_host=True))
    assert (p.state, p.dest, p.stuck, p.last_migration_id) == (PENDING, None, True, 5)
    assert actions == [Log("warning", f"{HOST}: destination compute2 of vm died before the"
                                      f" rebuild started; evacuating again"), Show()]
    # the next request resets it first (Nova shows it rebuilding on the failed host)
    assert step(p, Picked(LIVE))[1] == [ResetToError(), Evacuate(None)]
    assert not step(p, ResetDone())[0].stuck


@pytest.mark.parametrize(("m", "still_on", "retries"), [
    (migration(5, "rebuilding"), True, 1),  # the rebuild started there
    (migration(5, "accepted"), False, 1),  # Nova places it on the dead destination
    (None, True, 0),  # no retry left
], ids=["started", "moved", "no-retry-left"])
def test_a_destination_that_died_during_the_rebuild_fails_the_server_naming_it(
        m, still_on, retries):
    p, actions = step(locked_and_sent(), DestinationDied(m, still_on_failed_host=still_on),
                      limits=Limits(migration_retries=retries))
    reason = ("destination compute2 died during the rebuild (fenced: forced down); its"
              " evacuation takes the server over")
    assert (p.state, p.reason) == (FAILED, reason)
    assert ended(actions, FAILED, reason, unlock=True)


# ---------------------------------------------------------------------------- the server read


@pytest.mark.parametrize(("before", "after", "restore"), [
    ("ACTIVE", "ACTIVE", None),
    ("SHUTOFF", "SHUTOFF", Stop()),
    ("PAUSED", "PAUSED", Pause()),
    ("SUSPENDED", "SHUTOFF", Stop()),
    ("ERROR", "ACTIVE", None),
    ("BUILD", "ACTIVE", None),
])
def test_a_server_is_done_only_in_its_final_state(before, after, restore):
    p = locked_and_sent(before)
    p, actions = step(p, ServerRead(vm(after, host="compute2")))
    assert (p.state, p.reason) == (DONE, f"{after} on compute2")
    assert ended(actions, DONE, p.reason, unlock=True)
    if restore is None:
        return
    # rebuilt running (after a state reset): stopped or paused first
    p = locked_and_sent(before)
    p, actions = step(p, ServerRead(vm("ACTIVE", host="compute2")))
    assert (p.state, actions) == (SUBMITTED, [restore])
    p, actions = step(p, RestoreAccepted())
    assert (p.state, actions) == (RESTORING, [Show()])
    assert step(p, ServerRead(vm("ACTIVE", host="compute2"))) == (p, [])  # under way
    assert step(p, ServerRead(vm(after, host="compute2")))[0].state == DONE


def test_a_restore_that_fails_without_an_answer_is_tried_again_after_a_look():
    p, _ = step(locked_and_sent("PAUSED"), ServerRead(vm("ACTIVE", host="compute2")))
    p, _ = step(p, CallFailed("unreachable", "pause: timed out"), now=30.0)
    assert (p.state, p.uncertain, p.not_before) == (SUBMITTED, True, 32.0)
    # the poll finds its migration done (again): read again, restored again
    p, actions = step(p, MigrationSeen(migration(1, "done")), now=32.0)
    assert actions == [WATCH] and not p.uncertain and rebuilt(p, migration(1, "done"))
    assert step(p, ServerRead(vm("ACTIVE", host="compute2")))[1] == [Pause()]


@pytest.mark.parametrize(("server", "reason"), [
    (None, "the server was deleted during its evacuation"),
    (vm("ERROR", host="compute2"), "ended in ERROR on compute2"),
    (vm("SHUTOFF", host="compute2"), "came back SHUTOFF on compute2, not ACTIVE"),
    (vm("SUSPENDED", host="compute2"), "came back SUSPENDED on compute2, not ACTIVE"),
])
def test_a_server_deleted_or_in_another_state_has_failed(server, reason):
    p, actions = step(locked_and_sent("ACTIVE"), ServerRead(server))
    assert (p.state, p.reason) == (FAILED, reason)
    assert ended(actions, FAILED, reason, unlock=True)


@pytest.mark.parametrize("server", [
    vm("ACTIVE", host="compute2", task_state="rebuild_spawning"),
    vm("ACTIVE", host=HOST),
    vm("ACTIVE", host=None),
    vm("ACTIVE", host="compute3"),  # not the destination its migration names
])
def test_a_server_nova_has_not_finished_saving_on_its_destination_is_read_again(server):
    p = locked_and_sent()
    assert step(p, ServerRead(server)) == (p, [])


# ---------------------------------------------------------------------------- timed out


def test_a_server_unfinished_after_the_instance_timeout_has_timed_out():
    p = locked_and_sent()  # sent at 10.0
    assert step(p, Tick(), now=610.0) == (p, [])
    p, actions = step(p, Tick(), now=610.5)
    assert (p.state, p.reason) == (TIMED_OUT, "not finished after 600s")
    assert ended(actions, TIMED_OUT, "not finished after 600s", unlock=True)
    # never sent: no clock runs
    assert step(planned(), Tick(), now=1e9) == (planned(), [])


def test_an_end_is_final():
    p, _ = step(locked_and_sent(), Tick(), now=1e9)
    for event in (Tick(), MigrationSeen(migration(9, "done")), ServerRead(vm(host="compute2")),
                  CallFailed("refused", "x"), Picked(LIVE), EvacuateAccepted("compute3")):
        assert step(p, event, now=2e9) == (p, [])
    assert unlock_at_exit(p)
    p, actions = step(p, Unlocked())
    assert (p.state, p.we_locked, actions) == (TIMED_OUT, False, [])
    assert not unlock_at_exit(p)


@pytest.mark.parametrize(("state", "unlock"), [
    (PENDING, True), (SUBMITTED, False), (RESTORING, False),
    (DONE, True), (FAILED, True), (TIMED_OUT, True)])
def test_on_the_way_out_what_this_run_locked_is_unlocked_unless_under_way(state, unlock):
    assert unlock_at_exit(replace(planned(), we_locked=True, state=state)) is unlock
    assert not unlock_at_exit(replace(planned(), state=state))


# ---------------------------------------------------------------------------- resumed


@pytest.mark.parametrize(("status", "dest", "server_host", "followed"), [
    ("accepted", "compute3", HOST, "evacuating"),  # an earlier run's last request
    ("pre-migrating", "compute3", HOST, "evacuating"),
    ("rebuilding", "compute3", "compute3", "evacuating"),
    ("done", "compute3", "compute3", "evacuated"),
    ("completed", "compute3", "compute3", "evacuated"),
    ("done", "compute3", HOST, None),  # done, yet Nova places it here: evacuated anew
    ("error", "compute3", HOST, None),
    ("failed", "compute3", HOST, None),
    ("cancelled", None, HOST, None),
    ("rebuilding", HOST, "compute0", None),  # being rebuilt onto this host when it failed
    ("done", HOST, HOST, None),
])
def test_a_migration_found_at_start_is_followed_or_the_server_evacuated_anew(
        status, dest, server_host, followed):
    p = planned(host=server_host, our_lock="ACTIVE", locked=True)
    m = migration(6, status, dest)
    p, actions = step(p, Resumed(m), now=3.0)
    if followed is None:
        assert (p.state, p.last_migration_id, actions) == (PENDING, 6, [])
        # sent anew; that migration, whatever its status, is not read as the new request's
        p = sent(p)
        assert step(p, MigrationSeen(m)) == (p, [WATCH])
        return
    assert (p.state, p.attempts, p.dest, p.started, p.last_migration_id) == (
        SUBMITTED, 1, dest, 3.0, 5)
    assert actions == [Log("info", f"{HOST}: vm already {followed} by an earlier run")]
    # never sent again: that very migration is the one followed
    assert step(p, MigrationSeen(m))[1] == [WATCH] and rebuilt(p, m) is m.succeeded


def test_a_request_sent_here_and_never_started_asks_whether_its_first_host_is_evacuating():
    p = planned(host="compute0", our_lock="ACTIVE", locked=True, task_state="rebuilding")
    m = migration(6, "accepted", HOST, source="compute0")
    waiting, actions = step(p, Resumed(m), now=3.0)
    assert (waiting.state, waiting.last_migration_id, actions) == (
        PENDING, 6, [AskIfEvacuating("compute0")])
    # that evacuation is over: this run evacuates it like any other
    assert step(waiting, HostEvacuating("compute0", running=False)) == (waiting, [])
    # it runs: followed from here, never sent from here while it runs
    waiting, actions = step(waiting, HostEvacuating("compute0", running=True), now=4.0)
    assert (waiting.state, waiting.waits_for, waiting.started) == (SUBMITTED, "compute0", 4.0)
    assert actions == [Log("info", f"{HOST}: vm was sent here and never started; compute0's"
                                   f" evacuation sends it on, followed from here")]
    # a request this host took for a server already on it is not another host's to send on
    on_here = planned(our_lock="ACTIVE", locked=True)
    assert step(on_here, Resumed(migration(6, "accepted", HOST)))[1] == []


def waiting_on_compute0() -> ServerProgress:
    p = planned(host="compute0", our_lock="ACTIVE", locked=True, task_state="rebuilding")
    p, _ = step(p, Resumed(migration(6, "accepted", HOST, source="compute0")), now=3.0)
    return step(p, HostEvacuating("compute0", running=True), now=3.0)[0]


def test_a_server_another_evacuation_sends_on_is_done_once_settled_on_a_live_host():
    p = waiting_on_compute0()
    for not_yet in (vm(host="compute3", task_state="rebuilding"),  # still rebuilding
                    vm(host="compute4"),  # not known to be live
                    vm(host=HOST)):  # on this run's host
        assert step(p, WaitedServerRead(not_yet, LIVE)) == (p, [])
    p, actions = step(p, WaitedServerRead(vm(host="compute3"), LIVE))
    assert (p.state, p.reason, p.dest, p.waits_for) == (DONE, "ACTIVE on compute3", "compute3",
                                                        None)
    assert ended(actions, DONE, "ACTIVE on compute3", unlock=True)


def test_a_server_another_evacuation_left_on_its_first_host_is_taken_over():
    p = waiting_on_compute0()
    on_first_host = WaitedServerRead(vm(host="compute0"), LIVE)
    assert step(p, on_first_host) == (p, [AskIfEvacuating("compute0")])
    assert step(p, HostEvacuating("compute0", running=True)) == (p, [])  # still its own
    p, actions = step(p, HostEvacuating("compute0", running=False))
    assert (p.state, p.waits_for, p.stuck) == (PENDING, None, True)
    assert actions == [Log("warning", f"{HOST}: compute0's evacuation is over and left vm"
                                      f" there; evacuating it from here"), Show()]
    assert step(p, Picked(LIVE))[1] == [ResetToError(), Evacuate("compute2")]


def test_a_server_deleted_while_another_evacuation_sends_it_on_has_failed():
    p, actions = step(waiting_on_compute0(), WaitedServerRead(None, LIVE))
    assert (p.state, p.reason) == (FAILED, "the server was deleted during its evacuation")
    assert ended(actions, FAILED, p.reason, unlock=True)


def test_a_server_another_evacuation_sends_on_times_out_like_any_other():
    p, _ = step(waiting_on_compute0(), Tick(), now=603.5)
    assert (p.state, p.reason) == (TIMED_OUT, "not finished after 600s")
