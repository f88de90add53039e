"""Host return: the one decision (nova_evacuate.host_return), and the worker's part of it
over in-memory fakes of the Nova port and of Pacemaker's unfencing."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nova_evacuate import engine as engine_module
from nova_evacuate.engine import Settings
from nova_evacuate.host_return import HostState, next_step
from nova_evacuate.ledger import LedgerEntry, State, format_marker
from nova_evacuate.nova import ComputeService, ForceUpRefused
from nova_evacuate.worker import UNFENCE_RETRY_SECONDS, Worker

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def entry(state: State, prior: str | None = None) -> LedgerEntry:
    by = "fence_nova" if state is State.REQUESTED else "ctl1/42"
    return LedgerEntry(state, T0, by, prior=prior)


# ---------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("state", [State.REQUESTED, State.CLAIMED])
@given(forced_down=st.booleans(), reports_up=st.booleans(), leave_disabled=st.booleans())
def test_a_pending_evacuation_keeps_the_host_off_whatever_nova_shows(
        state, forced_down, reports_up, leave_disabled) -> None:
    step = next_step(HostState(entry(state), forced_down, reports_up),
                     leave_disabled=leave_disabled)
    assert not step.may_power_on
    assert not (step.clear_force_down or step.clear_marker or step.enable)
    assert "stays powered off" in step.why


@pytest.mark.parametrize("state", [State.DONE, State.FAILED])
def test_a_finished_evacuation_returns_the_host_in_order(state) -> None:
    finished = entry(state)
    forced = next_step(HostState(finished, True, True), leave_disabled=False)
    assert forced.may_power_on and forced.clear_force_down and not forced.clear_marker
    not_up = next_step(HostState(finished, False, False), leave_disabled=False)
    assert not_up.may_power_on and not (not_up.clear_marker or not_up.enable)
    up = next_step(HostState(finished, False, True), leave_disabled=False)
    assert up.clear_marker and up.enable and not up.clear_force_down


def test_leave_disabled_and_an_operators_own_reason_keep_the_service_disabled() -> None:
    done = entry(State.DONE)
    assert not next_step(HostState(done, False, True), leave_disabled=True).enable
    prior = entry(State.DONE, prior="RMA 4711")
    step = next_step(HostState(prior, False, True), leave_disabled=False)
    assert step.clear_marker and not step.enable and "RMA 4711" in step.why


def test_a_host_with_nothing_of_ours_may_be_powered_on_and_is_not_enabled() -> None:
    step = next_step(HostState(None, False, True), leave_disabled=False)
    assert step.may_power_on and not (step.clear_marker or step.enable)


# ---------------------------------------------------------------------------- the worker


@dataclass
class FakeNova:
    """The Nova port the worker's host return uses; one host, compute1."""

    service: ComputeService
    refuse_force_up: bool = False
    calls: list[str] = field(default_factory=list)

    def compute_services(self) -> list[ComputeService]:
        return [self.service]

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        return self.service

    def force_down(self, service_id: str, forced: bool) -> ComputeService:
        self.calls.append(f"force_down={forced}")
        if not forced and self.refuse_force_up:
            raise ForceUpRefused("refused", "evacuation migrations still 'done'")
        self.service = replace(self.service, forced_down=forced)
        return self.service

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        self.calls.append(f"disable={reason}")
        self.service = replace(self.service, status="disabled", disabled_reason=reason)
        return self.service

    def enable(self, service_id: str) -> ComputeService:
        self.calls.append("enable")
        self.service = replace(self.service, status="enabled", disabled_reason=None)
        return self.service


def fenced(state: State, *, up: bool = False) -> FakeNova:
    reason = format_marker(entry(state))
    return FakeNova(ComputeService("id-1", "compute1", "up" if up else "down", "disabled",
                                   True, reason, None))


class Unfencer:
    def __init__(self, fail: bool = False) -> None:
        self.asked: list[str] = []
        self.fail = fail
        self.called = threading.Event()

    def __call__(self, node: str) -> None:
        self.asked.append(node)
        self.called.set()
        if self.fail:
            raise RuntimeError("stonith_admin exited 1: no route to the BMC")


def worker(nova: FakeNova, unfence: Unfencer, rejoined: bool = False) -> Worker:
    return Worker(lambda: nova, Settings(), unfence=unfence,  # type: ignore[arg-type]
                  rejoined=lambda node: rejoined)


def scan(w: Worker, unfence: Unfencer) -> None:
    unfence.called.clear()
    w.scan()
    for thread in threading.enumerate():
        if thread.name.startswith("unfence-"):
            thread.join(5)


@pytest.mark.parametrize("state", [State.REQUESTED, State.CLAIMED])
def test_the_worker_never_unfences_a_host_whose_evacuation_is_pending(state, monkeypatch) -> None:
    nova, unfence = fenced(state), Unfencer()
    w = worker(nova, unfence)
    monkeypatch.setattr(w, "_start", lambda host, services: None)  # the engine: not here
    scan(w, unfence)
    assert unfence.asked == [] and nova.calls == []


def test_the_engine_starts_from_the_service_list_of_the_scan_that_found_the_request(
        monkeypatch) -> None:
    """One read of the service list between the request and the claim, not two: at 1,000
    hosts each read is 0.2 s of every recovery."""
    nova, unfence = fenced(State.REQUESTED), Unfencer()
    reads: list[str] = []
    listed = nova.compute_services
    monkeypatch.setattr(nova, "compute_services", lambda: reads.append("list") or listed())
    started: list[object] = []

    class Engine:
        def __init__(self, nova: object, ledger: object, settings: object, **kwargs) -> None:
            pass

        def run(self, host: str, *, services: list[ComputeService]) -> None:
            started.append((host, services))
            raise RuntimeError("the engine itself is not under test here")

    monkeypatch.setattr(engine_module, "Engine", Engine)
    w = worker(nova, unfence)
    w.nova.adopt_token = lambda other: None  # type: ignore[attr-defined]
    monkeypatch.setattr(w, "_reap", lambda: None)  # the engine's thread may end at once
    w.scan()
    w.running["compute1"].join(5)
    assert started == [("compute1", [nova.service])] and reads == ["list"]


def test_a_finished_evacuation_is_unfenced_once_and_the_return_completes() -> None:
    nova, unfence = fenced(State.DONE), Unfencer()
    w = worker(nova, unfence, rejoined=False)
    scan(w, unfence)
    scan(w, unfence)
    assert unfence.asked == ["compute1"]  # one request per finished evacuation
    assert nova.calls == []  # not back in the cluster: nothing cleared yet

    w.rejoined = lambda node: True
    nova.refuse_force_up = True  # the returning nova-compute has not cleaned up yet
    scan(w, unfence)
    assert nova.calls == ["force_down=False"] and nova.service.forced_down
    nova.refuse_force_up = False
    nova.service = replace(nova.service, state="up")
    scan(w, unfence)
    # force-up accepted, then at once (Nova sees it up) the marker removed and enabled
    assert nova.calls[1:] == ["force_down=False", "disable=None", "enable"]
    assert nova.service.status == "enabled" and not nova.service.forced_down
    assert nova.service.disabled_reason is None


def test_what_a_stalled_return_waits_for_is_said_once_each_time_it_changes(caplog) -> None:
    nova, unfence = fenced(State.DONE), Unfencer()
    w = worker(nova, unfence, rejoined=False)
    caplog.set_level("INFO", logger="nova_evacuate.worker")

    def waits() -> list[str]:
        return [r.getMessage() for r in caplog.records if "its return waits" in r.getMessage()]

    scan(w, unfence)
    scan(w, unfence)
    assert waits() == ["compute1: its return waits: not back in the cluster yet (Pacemaker"
                       " has no connection to it): nothing cleared until it is"]
    w.rejoined = lambda node: True
    nova.refuse_force_up = True
    scan(w, unfence)
    scan(w, unfence)
    assert len(waits()) == 2 and "cleaned up the evacuated servers" in waits()[1]
    nova.refuse_force_up = False
    scan(w, unfence)  # force-down cleared; Nova does not see it up yet
    assert len(waits()) == 3 and "waiting for nova-compute to report up" in waits()[2]
    nova.service = replace(nova.service, state="up")
    scan(w, unfence)
    assert len(waits()) == 3 and w.return_waits == {}
    assert nova.service.status == "enabled"


def test_a_failed_unfencing_is_asked_again_only_after_the_retry_delay(monkeypatch) -> None:
    nova, unfence = fenced(State.FAILED), Unfencer(fail=True)
    w = worker(nova, unfence)
    clock = [1000.0]
    monkeypatch.setattr("nova_evacuate.worker.time.monotonic", lambda: clock[0])
    scan(w, unfence)
    scan(w, unfence)
    assert unfence.asked == ["compute1"]
    clock[0] += UNFENCE_RETRY_SECONDS + 1
    scan(w, unfence)
    assert unfence.asked == ["compute1", "compute1"]
