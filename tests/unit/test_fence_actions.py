"""fence_nova's fencing path (fence_compute/actions.py) over in-memory fakes of its ports.

Each test runs the agent as Pacemaker does: its parameters on stdin, through the real
protocol parser with fence_nova's declaration and :data:`actions.HANDLERS`. What actions.py
reaches out to is replaced at its seams: the power driver factory (a fake BMC), the Nova
client factory (a fake Nova), the timeline, Pacemaker (the brake's view, the connection
hold) and the ``evacuate`` attribute mirror. Every fake writes to one call log, so a test
asserts the exact order of the side effects across them. Nothing reaches the live system:
Pacemaker's command runner and the Nova connection refuse to run.

``off`` reads Nova in a daemon thread while the BMC powers the host off. Most tests run that
read in the agent's own thread, when the agent first needs its answer (:class:`Deferred`),
so the call log has one order; the tests under "off: concurrency" run the real thread and
assert what must happen before what whatever the interleaving.

The behaviour asserted is the one the lab tests (tests/functional/test_fence_nova.py,
tests/cluster/test_fence_nova_stonith.py) prove against real services.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from fence_compute import actions
from fence_compute import power as power_module
from fence_compute.background import Background
from fence_compute.fence_nova import FENCE_NOVA
from fence_compute.power import NoPowerDriver, PowerDriver, PowerError
from fence_compute.protocol import ExitCode, Options, run
from fence_compute.storage import StorageOutcome
from nova_evacuate import ledger
from nova_evacuate import nova as nova_module
from nova_evacuate.ledger import AttributeMirror, LedgerEntry, State, format_marker, parse_marker
from nova_evacuate.nova import ComputeService, ForceUpRefused, NovaError
from openstack_ha import pacemaker, timeline
from openstack_ha.pacemaker import NoCluster, PacemakerError

REAL_ADMIT_REPEATED = timeline.admit_repeated  # the world fixture replaces it

HOST = "compute1"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
# A configuration check_config accepts; the BMC address and the cloud are never reached.
BASE = {"port": HOST, "cloud": "lab", "ip": "192.0.2.11", "bmc_username": "admin",
        "bmc_password": "bmc-secret"}
REAL_POWER_DRIVER = actions.power_driver
REAL_PACEMAKER_MIRROR = ledger.pacemaker_mirror


# ---------------------------------------------------------------------------- the fakes


def described(reason: str | None) -> str:
    """A disable reason as the call log shows it: our marker by its state (it holds the
    time of writing), anything else as written."""
    entry = parse_marker(reason)
    return f"marker={entry.state}" if entry else repr(reason)


@dataclass
class FakeNova:
    """The Nova port fence_nova uses, over one compute service. ``failures``: the error
    each named call raises instead of answering."""

    log: list[str]
    service: ComputeService
    keeps_forced_down: bool = True  # False: answers a force-down with forced_down still off
    keeps_marker: bool = True  # False: answers a disable without the reason it was given
    refuse_force_up: bool = False  # the evacuation's migration records are still 'done'
    failures: dict[str, Exception] = field(default_factory=dict)
    hosts: tuple[str, ...] = (HOST, "compute2.example.org")

    def _called(self, name: str, detail: str = "") -> None:
        self.log.append(f"nova:{name}" + (f" {detail}" if detail else ""))
        if name in self.failures:
            raise self.failures[name]

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        self._called("compute_service", host)
        return self.service

    def force_down(self, service_id: str, forced: bool) -> ComputeService:
        self._called("force_down", str(forced))
        if not forced and self.refuse_force_up:
            raise ForceUpRefused("refused", "clear forced_down of service: evacuation"
                                 " migration records remain")
        if forced and not self.keeps_forced_down:
            return self.service
        self.service = replace(self.service, forced_down=forced)
        return self.service

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        self._called("disable", described(reason))
        kept = reason if self.keeps_marker else None
        self.service = replace(self.service, status="disabled", disabled_reason=kept)
        return self.service

    def enable(self, service_id: str) -> ComputeService:
        self._called("enable")
        self.service = replace(self.service, status="enabled", disabled_reason=None)
        return self.service

    def ping(self) -> None:
        self._called("ping")

    def compute_hosts(self) -> list[str]:
        self._called("compute_hosts")
        return sorted(self.hosts)


@dataclass
class FakeBmc:
    """A host's power as its BMC reports it. ``stuck``: acknowledges a change and never
    makes it (the lab's ``stuck-on``). ``failure`` is raised at the ``fail_at`` call:
    "read" (the first status read), "set" or "poll" (a status read after the set)."""

    log: list[str]
    state: str = "on"
    stuck: bool = False
    failure: PowerError | None = None
    fail_at: str = "read"
    reads: int = 0
    verifies: bool = True
    where: str = "BMC 192.0.2.11:623"
    # called with "read", "set" or "poll" before each answer: a concurrency test's gate
    before: Callable[[str], None] = lambda call: None

    def power_state(self, deadline: float) -> str:
        self.log.append("power:state")
        self.reads += 1
        self.before("read" if self.reads == 1 else "poll")
        self._maybe_fail("read" if self.reads == 1 else "poll")
        return self.state

    def set_power(self, state: str, deadline: float) -> None:
        self.log.append(f"power:set {state}")
        self.before("set")
        self._maybe_fail("set")
        if not self.stuck:
            self.state = state

    def close(self, deadline: float) -> None:
        self.log.append("power:close")

    def _maybe_fail(self, at: str) -> None:
        if self.failure is not None and self.fail_at == at:
            raise self.failure


@dataclass
class World:
    """Everything fence_nova reaches, faked, and the one call log they all write."""

    log: list[str]
    nova: FakeNova
    bmcs: dict[str, FakeBmc]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)  # each record's ``at``
    # Pacemaker's view for the brake: pacemaker_remote node → looks down
    down: dict[str, bool] = field(default_factory=lambda: {HOST: True, "compute2": False,
                                                           "compute3": False})
    held: set[str] = field(default_factory=set)
    returning: set[str] = field(default_factory=set)  # released, not back yet
    cluster_failure: PacemakerError | None = None  # raised by the brake's reads
    release_failure: PacemakerError | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    test_over: threading.Event = field(default_factory=threading.Event)  # set at teardown

    @property
    def bmc(self) -> FakeBmc:
        return self.bmcs[HOST]

    def timeline(self) -> list[str]:
        return [event for event, _ in self.events]

    def fields(self, event: str) -> dict[str, Any]:
        (found,) = [f for e, f in self.events if e == event]
        return found


def service(*, state: str = "up", status: str = "enabled", forced_down: bool = False,
            reason: str | None = None) -> ComputeService:
    return ComputeService("id-1", HOST, state, status, forced_down, reason, None)


def fenced(state: State, *, prior: str | None = None, up: bool = False,
           forced_down: bool = True) -> ComputeService:
    """The service as fence_nova off leaves it, its evacuation now in ``state``."""
    by = "fence_nova" if state is State.REQUESTED else "ctl1/42"
    marker = format_marker(LedgerEntry(state, T0, by, prior=prior))
    return service(state="up" if up else "down", status="disabled", forced_down=forced_down,
                   reason=marker)


class VirtualClock:
    """Monotonic time that moves only when slept: the real power sequence waits out a BMC
    that never reports off without costing the test run that time."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class Deferred:
    """:class:`Background` that runs its call in the thread asking for the answer, when it
    first asks: each read then appears in the call log where the sequential agent made it,
    and a call whose answer is never asked for (a refused fence's read) never runs."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._fn: Callable[[], Any] | None = fn
        self._value: Any = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        if self._fn is not None:
            fn, self._fn = self._fn, None
            try:
                self._value = fn()
            except BaseException as exc:
                self._error = exc

    def wait(self, timeout: float | None = None) -> bool:
        self._run()
        return True

    def result(self) -> Any:
        self._run()
        if self._error is not None:
            raise self._error
        return self._value


def _forbidden(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{what} reached in a unit test")
    return refuse


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    log: list[str] = []
    w = World(log, FakeNova(log, service()), {HOST: FakeBmc(log), "compute2": FakeBmc(log)})

    # The last line of defence: no Pacemaker tool is run, no cloud connected.
    monkeypatch.setattr(pacemaker, "_exec", _forbidden("a Pacemaker tool"))
    monkeypatch.setattr(nova_module, "connect", _forbidden("a Nova connection"))

    def power_driver(options: Options, host: str) -> PowerDriver:
        log.append(f"power:driver {host}")
        if options.text("power_driver") == "none":
            return NoPowerDriver()  # reads and changes nothing
        return w.bmcs[host]

    def nova_client(options: Options, target: actions.Target) -> FakeNova:
        log.append("nova:connect")
        if "connect" in w.nova.failures:
            raise w.nova.failures["connect"]
        return w.nova

    def record(event: str, host: str, *, at: float | None = None, **fields: Any) -> None:
        assert host == HOST
        log.append(f"timeline:{event}")
        w.events.append((event, fields))
        w.times.append(at)

    def remote_nodes_down(timeout: float = 10) -> dict[str, bool]:
        log.append("pacemaker:remote_nodes_down")
        if w.cluster_failure is not None:
            raise w.cluster_failure
        return dict(w.down)

    def handled_connections(now: float, timeout: float = 10) -> set[str]:
        log.append("pacemaker:handled_connections")
        return set(w.held) | set(w.returning)

    def end_return(node: str, timeout: float = 10) -> bool:
        log.append(f"pacemaker:end_return {node}")
        was = node in w.returning and not w.down.get(node, False)
        if was:
            w.returning.discard(node)
        return was

    def hold_connection(node: str, since: int, timeout: float = 10) -> bool:
        log.append(f"pacemaker:hold_connection {node}")
        w.held.add(node)
        return True

    def drop_hold(node: str, timeout: float = 10) -> None:
        log.append(f"pacemaker:drop_hold {node}")
        w.held.discard(node)

    def release_connection(node: str, timeout: float = 10) -> bool:
        log.append(f"pacemaker:release_connection {node}")
        if w.release_failure is not None:
            raise w.release_failure
        was_held = node in w.held
        w.held.discard(node)
        if was_held:
            w.returning.add(node)
        return was_held

    def set_attribute(name: str, value: str, node: str) -> None:
        log.append(f"attribute:set {name}={value} {node}")
        w.attributes[node] = value

    def delete_attribute(name: str, node: str) -> None:
        log.append(f"attribute:delete {name} {node}")
        w.attributes.pop(node, None)

    # The real power sequence (status, set, poll), only on the virtual clock.
    clock = VirtualClock()
    monkeypatch.setattr(actions, "power_confirmed", functools.partial(
        power_module.power_confirmed, clock=clock, sleep=clock.sleep))
    monkeypatch.setattr(actions, "power_driver", power_driver)
    monkeypatch.setattr(actions, "_nova", nova_client)
    monkeypatch.setattr(actions, "Background", Deferred)  # the real thread: `threaded`
    monkeypatch.setattr(actions.timeline, "record", record)  # _record's redaction stays real
    # every refused attempt is written (the limit has tests of its own, on a real file)
    monkeypatch.setattr(actions.timeline, "admit_repeated", lambda key, host: 0)
    monkeypatch.setattr(actions.pacemaker, "remote_nodes_down", remote_nodes_down)
    monkeypatch.setattr(actions.pacemaker, "handled_connections", handled_connections)
    monkeypatch.setattr(actions.pacemaker, "end_return", end_return)
    monkeypatch.setattr(actions.pacemaker, "hold_connection", hold_connection)
    monkeypatch.setattr(actions.pacemaker, "drop_hold", drop_hold)
    monkeypatch.setattr(actions.wake, "nudge", lambda: log.append("worker:nudge") or True)
    monkeypatch.setattr(actions.pacemaker, "release_connection", release_connection)
    monkeypatch.setattr(actions, "pacemaker_mirror",
                        lambda: AttributeMirror(set=set_attribute, delete=delete_attribute))
    return w


@dataclass
class Outcome:
    rc: int
    errors: list[str]
    warnings: list[str]


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def fence(action: str, caplog: pytest.LogCaptureFixture, **options: str | None) -> Outcome:
    """fence_nova with ``action`` and BASE (``name=None`` leaves a parameter out), its
    parameters on stdin and its handlers the real ones, as pacemaker-fenced runs it."""
    given = {**BASE, "action": action, **options}
    stdin = "".join(f"{k}={v}\n" for k, v in given.items() if v is not None)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = run(FENCE_NOVA, actions.HANDLERS, [], _Stdin(stdin), stdout=io.StringIO(),
                 sleep=lambda _: None, setup_logging=None)
    records = caplog.records
    return Outcome(rc,
                   [r.getMessage() for r in records if r.levelno >= logging.ERROR],
                   [r.getMessage() for r in records if r.levelno == logging.WARNING])


def collapsed(log: list[str]) -> list[str]:
    """The log with runs of one entry shown once (a BMC polled until the deadline)."""
    return [e for i, e in enumerate(log) if i == 0 or e != log[i - 1]]


# An unfencing of a host that is not held (Pacemaker's, once the node rejoined): the
# returning mark goes if there is one
RELEASE_NOTHING_HELD = ["pacemaker:release_connection compute1", "pacemaker:end_return compute1"]
# The brake's reads: which nodes are handled is read only when a node other than the
# target is down (BRAKE_READS_OTHERS_DOWN).
BRAKE_READS = ["pacemaker:remote_nodes_down"]
BRAKE_READS_OTHERS_DOWN = ["pacemaker:remote_nodes_down", "pacemaker:handled_connections"]
POWER_OFF = ["power:driver compute1", "power:state", "power:set off", "power:state", "power:close"]
POWER_ON = ["power:driver compute1", "power:state", "power:set on", "power:state", "power:close"]
POWER_ALREADY = ["power:driver compute1", "power:state", "power:close"]
MARKED = ["nova:connect", "nova:compute_service compute1", "nova:force_down True",
          "timeline:forced_down", "nova:disable marker=requested",
          "attribute:set evacuate=yes compute1", "timeline:evacuation_requested",
          "worker:nudge"]
OFF_SUCCESS = [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
               "timeline:power_off_confirmed", *MARKED, "pacemaker:hold_connection compute1"]
OFF_SUCCESS_OTHERS_DOWN = [*BRAKE_READS_OTHERS_DOWN, *OFF_SUCCESS[len(BRAKE_READS):]]
READ_NOVA = ["nova:connect", "nova:compute_service compute1"]
# The connection is held beside Nova's part (a thread of its own), and dropped again when
# the fence fails after all.
HOLD = ["pacemaker:hold_connection compute1"]
HOLD_DROPPED = [*HOLD, "pacemaker:drop_hold compute1"]


def test_every_action_but_the_metadata_has_a_handler() -> None:
    # validate-all's only says what the configuration does not use (the checks ran before)
    declared = {a.name for a in FENCE_NOVA.actions} - {"metadata"}
    assert set(actions.HANDLERS) == declared


# ---------------------------------------------------------------------------- off: the brake


def test_off_with_the_brake_engaged_touches_neither_power_nor_nova(world, caplog) -> None:
    world.down = {HOST: True, "compute2": True, "compute3": False}
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS_OTHERS_DOWN, "timeline:fence_start", "timeline:fence_failed"]
    assert "2 of 3 compute nodes look down" in world.fields("fence_failed")["reason"]
    assert "power and Nova left untouched" in outcome.errors[0]
    assert world.bmc.state == "on" and not world.nova.service.forced_down


def test_while_the_brake_holds_a_host_gets_one_attempt_a_minute_in_the_timeline(
        world, caplog, monkeypatch, tmp_path) -> None:
    """Pacemaker retries the refused fence: the second attempt within the minute writes no
    line (the real limit, on a file beside a real timeline path)."""
    monkeypatch.setenv("OPENSTACK_HA_TIMELINE", str(tmp_path / "timeline.jsonl"))
    monkeypatch.setattr(actions.timeline, "admit_repeated", REAL_ADMIT_REPEATED)
    world.down = {HOST: True, "compute2": True, "compute3": False}
    assert fence("off", caplog).rc == ExitCode.FAILURE
    assert fence("off", caplog).rc == ExitCode.FAILURE
    assert world.timeline() == ["fence_start", "fence_failed"]
    assert world.bmc.state == "on" and not world.nova.service.forced_down


def test_off_when_the_cluster_view_cannot_be_read_refuses(world, caplog) -> None:
    world.cluster_failure = PacemakerError("crm_mon exited 1: timeout")
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == ["pacemaker:remote_nodes_down", "timeline:fence_start",
                         "timeline:fence_failed"]
    assert "cannot read the cluster's view" in world.fields("fence_failed")["reason"]


def test_a_node_already_fenced_and_held_is_not_counted_by_the_brake(world, caplog) -> None:
    # a second failure during a recovery: compute2 is off and held, compute1 fails now
    world.down = {HOST: True, "compute2": True, "compute3": False}
    world.held = {"compute2"}
    assert fence("off", caplog).rc == ExitCode.SUCCESS
    assert world.log == OFF_SUCCESS_OTHERS_DOWN


@pytest.mark.parametrize("brake", ["no cluster", "max_down_percent=100"])
def test_without_a_cluster_or_with_the_brake_off_nothing_holds_the_fence_back(
        world, caplog, brake) -> None:
    world.down = {HOST: True, "compute2": True}
    extra = {}
    if brake == "no cluster":
        world.cluster_failure = NoCluster("crm_mon exited 102: could not connect")
        reads = ["pacemaker:remote_nodes_down"]
    else:
        extra, reads = {"max_down_percent": "100"}, []
    assert fence("off", caplog, **extra).rc == ExitCode.SUCCESS
    assert world.log == [*reads, "timeline:fence_start", *OFF_SUCCESS[len(BRAKE_READS) + 1:]]


# ---------------------------------------------------------------------------- off: the power


@pytest.mark.parametrize("fail_at", ["read", "set", "poll"])
@pytest.mark.parametrize("kind", power_module.KINDS)
def test_off_whose_power_off_fails_never_touches_nova(world, caplog, kind, fail_at) -> None:
    # invariant 1: a host whose power-off was not confirmed is never forced down
    world.bmc.failure = PowerError(kind, f"BMC 192.0.2.11:623: {kind}")
    world.bmc.fail_at = fail_at
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    power_calls = {"read": ["power:state"], "set": ["power:state", "power:set off"],
                   "poll": ["power:state", "power:set off", "power:state"]}[fail_at]
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "power:driver compute1",
                         *power_calls, "power:close", "timeline:fence_failed"]
    assert world.fields("fence_failed")["reason"].startswith("power-off not confirmed: ")
    assert "Nova left untouched" in outcome.errors[0]


def test_off_whose_bmc_acknowledges_but_stays_on_never_touches_nova(world, caplog) -> None:
    world.bmc.stuck = True
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.bmc.reads > 2  # polled until the deadline
    assert collapsed(world.log) == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                                    "timeline:fence_failed"]
    assert "still reports on at the deadline" in world.fields("fence_failed")["reason"]


def test_off_for_a_host_without_a_bmc_never_touches_nova(world, caplog, monkeypatch) -> None:
    # the real factory: it refuses before it builds a driver
    monkeypatch.setattr(actions, "power_driver", REAL_POWER_DRIVER)
    outcome = fence("off", caplog, ip=None, bmc_map="compute2=192.0.2.12")
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute1 has no BMC in bmc_map"]
    assert world.log[:len(BRAKE_READS) + 1] == [*BRAKE_READS, "timeline:fence_start"]
    assert not any(e.startswith(("nova:", "power:")) for e in world.log)


def test_off_for_a_host_without_a_bmc_records_fence_failed(world, caplog, monkeypatch) -> None:
    monkeypatch.setattr(actions, "power_driver", REAL_POWER_DRIVER)
    fence("off", caplog, ip=None, bmc_map="compute2=192.0.2.12")
    assert world.timeline() == ["fence_start", "fence_failed"]


# ---------------------------------------------------------------------------- off: Nova


def test_off_powers_off_then_forces_down_then_requests_the_evacuation(world, caplog) -> None:
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == OFF_SUCCESS  # the service record is read once: the force-down answer
    assert world.timeline() == ["fence_start", "power_off_confirmed", "forced_down",
                                "evacuation_requested"]
    assert world.fields("fence_start") == {"by": "fence_nova"}
    # written once the brake agreed, dated when the fence began
    assert world.times[0] is not None and world.times[0] <= time.time()
    assert world.fields("power_off_confirmed") == {"how": "BMC 192.0.2.11:623 reports off"}
    assert world.fields("evacuation_requested") == {"state": "requested"}
    svc = world.nova.service
    assert svc.forced_down and svc.status == "disabled"
    entry = parse_marker(svc.disabled_reason)
    assert entry is not None and entry.state is State.REQUESTED and entry.by == "fence_nova"
    assert entry.prior is None
    assert world.bmc.state == "off" and world.held == {HOST}
    assert world.attributes == {HOST: "yes"}


def test_off_keeps_an_operators_own_disable_reason_in_the_marker(world, caplog) -> None:
    world.nova.service = service(status="disabled", reason="RMA 4711")
    assert fence("off", caplog).rc == ExitCode.SUCCESS
    assert world.log == OFF_SUCCESS
    entry = parse_marker(world.nova.service.disabled_reason)
    assert entry is not None and entry.prior == "RMA 4711"


def test_off_repeated_on_a_fenced_host_repeats_no_work(world, caplog) -> None:
    world.nova.service = fenced(State.REQUESTED)
    world.bmc.state = "off"
    world.held = {HOST}
    assert fence("off", caplog).rc == ExitCode.SUCCESS
    # read again after the power-off: the first read, made while the BMC was powering off,
    # may predate a return that cleared the force-down (see the concurrency tests)
    assert world.log == [*BRAKE_READS, "timeline:fence_start", *POWER_ALREADY,
                         "timeline:power_off_confirmed", *READ_NOVA,
                         "nova:compute_service compute1", "timeline:forced_down",
                         "attribute:set evacuate=yes compute1", "timeline:evacuation_requested",
                         "worker:nudge", "pacemaker:hold_connection compute1"]


def test_off_without_a_power_driver_trusts_the_topology_level(world, caplog) -> None:
    outcome = fence("off", caplog, power_driver="none", ip=None)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "power:driver compute1",
                         "timeline:power_off_confirmed", *MARKED,
                         "pacemaker:hold_connection compute1"]
    assert "not verified here" in world.fields("power_off_confirmed")["how"]


KEYSTONE_DOWN = NovaError("unreachable", "find compute service: cannot reach the cloud"
                          " (Unable to establish connection to https://keystone:5000/v3)")


@pytest.mark.parametrize(("failing", "error", "done", "message"), [
    ("connect", KEYSTONE_DOWN, ["nova:connect"],
     "compute1 is powered off, but Nova: find compute service: cannot reach the cloud"),
    ("compute_service", NovaError("not_found", "no compute service for compute1"),
     READ_NOVA, "compute1 is powered off, but Nova: no compute service for compute1"),
    ("force_down", NovaError("api", "force down service: HTTP 500"),
     [*READ_NOVA, "nova:force_down True"],
     "compute1 is powered off, but Nova: force down service: HTTP 500"),
    ("disable", NovaError("api", "disable service: HTTP 503"),
     MARKED[:5], "compute1 is powered off, but Nova: disable service: HTTP 503"),
])
def test_off_whose_nova_steps_fail_after_the_power_off_fails_with_one_reason(
        world, caplog, failing, error, done, message) -> None:
    world.nova.failures[failing] = error
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                         "timeline:power_off_confirmed", *done, "timeline:fence_failed",
                         *HOLD_DROPPED]
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith(message)
    assert world.fields("fence_failed")["reason"] == outcome.errors[0]
    assert not world.held and world.bmc.state == "off"  # the host stays off; a retry completes the rest


def test_off_whose_marker_nova_does_not_keep_fails(world, caplog) -> None:
    world.nova.keeps_marker = False
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                         "timeline:power_off_confirmed", *MARKED[:5], "timeline:fence_failed",
                         *HOLD_DROPPED]
    assert outcome.errors == ["compute1 is powered off, but LedgerError: Nova did not keep the"
                              " marker for compute1: disabled None"]
    assert world.bmc.state == "off" and world.attributes == {}


def test_off_whose_force_down_nova_does_not_keep_fails(world, caplog) -> None:
    world.nova.keeps_forced_down = False
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                         "timeline:power_off_confirmed", *READ_NOVA, "nova:force_down True",
                         "timeline:fence_failed", *HOLD_DROPPED]
    assert outcome.errors == ["Nova did not keep compute1 forced down"]
    assert world.nova.service.status == "enabled" and world.bmc.state == "off"


@pytest.mark.skipif(shutil.which("attrd_updater") is None
                    or not os.path.exists("/var/lib/pacemaker"),
                    reason="pacemaker_mirror() is None where Pacemaker is not installed")
def test_the_attribute_mirror_failing_does_not_fail_the_fence(world, caplog, monkeypatch) -> None:
    def attrd_down(name: str, value: str, node: str, timeout: float = 10) -> None:
        world.log.append(f"attrd:set {name}={value} {node}")
        raise PacemakerError("attrd_updater exited 102: could not connect to attrd")

    monkeypatch.setattr(actions, "pacemaker_mirror", REAL_PACEMAKER_MIRROR)
    monkeypatch.setattr(pacemaker, "set_node_attribute", attrd_down)
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [e.replace("attribute:set", "attrd:set") for e in OFF_SUCCESS]
    assert any("node attribute evacuate=yes on compute1 not written" in w
               for w in outcome.warnings)


# ---------------------------------------------------------------------------- off: concurrency
# off's Nova read (Keystone authenticating on it) in its real daemon thread. The call log's
# order then varies; what must hold whatever the interleaving: nothing is written (force-down,
# marker, node attribute, hold) before every fence is confirmed, nor ever by a fence that
# stops before, and the agent's own steps keep their order.

WRITES = ("nova:force_down", "nova:disable", "nova:enable", "attribute:", "pacemaker:hold",
          "pacemaker:drop")


def writes(log: list[str]) -> list[str]:
    return [e for e in log if e.startswith(WRITES)]


def main_thread(log: list[str]) -> list[str]:
    """The log without the background threads' entries: the Nova read's (the first connect
    and service read) and the connection hold's."""
    rest = list(log)
    for entry in [*READ_NOVA, *HOLD_DROPPED]:
        if entry in rest:
            rest.remove(entry)
    return rest


def writes_only_after(log: list[str], mark: str) -> bool:
    return mark in log and not writes(log[:log.index(mark)])


@pytest.fixture
def threaded(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The real daemon thread for off's Nova read; yields an event set once that read has
    ended (answered or failed). Every thread started has ended before the fakes are undone:
    one outliving its test would reach the real Nova factory."""
    started: list[Background[Any]] = []
    read_ended = threading.Event()
    read_nova = actions._read_nova

    def read_then_signal(options: Options, target: actions.Target) -> Any:
        try:
            return read_nova(options, target)
        finally:
            read_ended.set()

    def start(fn: Callable[[], Any], name: str) -> Background[Any]:
        started.append(Background(fn, name))
        return started[-1]

    monkeypatch.setattr(actions, "_read_nova", read_then_signal)
    monkeypatch.setattr(actions, "Background", start)
    yield read_ended
    world.test_over.set()
    assert all(b.wait(10) for b in started), "a background thread outlived its test"


def keystone(how: str, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Nova factory as Keystone behaves: "answers", "fails" (unreachable) or "hangs"
    (answers once the test is over)."""
    if how == "fails":
        world.nova.failures["connect"] = KEYSTONE_DOWN
    elif how == "hangs":
        factory = actions._nova

        def hanging(options: Options, target: actions.Target) -> FakeNova:
            world.test_over.wait(10)
            return factory(options, target)

        monkeypatch.setattr(actions, "_nova", hanging)


class Meeting:
    """Two calls that each wait for the other to have begun (``meet(who)``): made one after
    the other, in either order, the first waits its 5 s in vain, and ``met`` says so. Only
    the first call of each ``who`` meets."""

    def __init__(self) -> None:
        self._both_begun = threading.Barrier(2, timeout=5)
        self.met: dict[str, bool] = {}

    def __call__(self, who: str) -> None:
        if who in self.met:
            return
        try:
            self._both_begun.wait()
            self.met[who] = True
        except threading.BrokenBarrierError:
            self.met[who] = False


def test_off_authenticates_while_the_bmc_powers_off(world, caplog, monkeypatch,
                                                     threaded) -> None:
    # Keystone and the power-off meet: they run side by side
    meet = Meeting()
    met = meet.met
    factory = actions._nova

    def authenticate(options: Options, target: actions.Target) -> FakeNova:
        meet("keystone")
        return factory(options, target)

    def power_off(call: str) -> None:
        if call == "set":
            meet("power-off")

    monkeypatch.setattr(actions, "_nova", authenticate)
    world.bmc.before = power_off
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert met == {"keystone": True, "power-off": True}
    assert sorted(world.log) == sorted(OFF_SUCCESS)
    assert main_thread(world.log) == main_thread(OFF_SUCCESS)
    assert writes_only_after(world.log, "timeline:power_off_confirmed")
    assert world.nova.service.forced_down and world.held == {HOST}


def test_a_nova_read_whose_import_failed_is_read_again_in_the_fencing_thread(
        world, caplog, monkeypatch, threaded) -> None:
    """Seen once on the lab: the background read, importing keystoneauth while the power
    path imported its BMC library, failed with "No module named 'socketserver'". The fence
    does not fail for that: the read is made again once the power-off is confirmed."""
    factory = actions._nova
    threads: list[str] = []

    def authenticate(options: Options, target: actions.Target) -> FakeNova:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise ModuleNotFoundError("No module named 'socketserver'", name="socketserver")
        return factory(options, target)

    monkeypatch.setattr(actions, "_nova", authenticate)
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert threads == ["nova-read", threading.main_thread().name]
    assert any("failed to import" in w for w in outcome.warnings), outcome.warnings
    assert world.nova.service.forced_down and world.held == {HOST}
    assert writes_only_after(world.log, "timeline:power_off_confirmed")


@pytest.mark.parametrize("how", ["answers", "fails", "hangs"])
def test_a_refused_off_writes_nothing_and_waits_for_no_keystone(world, caplog, monkeypatch,
                                                                threaded, how) -> None:
    world.down = {HOST: True, "compute2": True, "compute3": False}
    keystone(how, world, monkeypatch)
    brake_read = actions.pacemaker.remote_nodes_down

    def after_the_nova_read(timeout: float = 10) -> dict[str, bool]:
        if how != "hangs":  # the read, authentication included, is over: still no write
            assert threaded.wait(5)
        return brake_read(timeout)

    monkeypatch.setattr(actions.pacemaker, "remote_nodes_down", after_the_nova_read)
    started = time.monotonic()
    outcome = fence("off", caplog)
    assert time.monotonic() - started < 5  # a hanging Keystone holds up no refusal
    assert outcome.rc == ExitCode.FAILURE
    assert len(outcome.errors) == 1 and "power and Nova left untouched" in outcome.errors[0]
    assert main_thread(world.log) == [*BRAKE_READS_OTHERS_DOWN, "timeline:fence_start",
                                      "timeline:fence_failed"]
    assert ("nova:compute_service compute1" in world.log) is (how == "answers")
    assert writes(world.log) == [] and world.bmc.state == "on"


@pytest.mark.parametrize("fail_at", ["read", "set", "poll", "stuck"])
def test_an_off_whose_power_off_fails_after_the_nova_read_writes_nothing(
        world, caplog, threaded, fail_at) -> None:
    if fail_at == "stuck":
        world.bmc.stuck = True
    else:
        world.bmc.failure = PowerError(power_module.UNREACHABLE, "BMC 192.0.2.11:623: gone")
        world.bmc.fail_at = fail_at
    waited: list[bool] = []

    def fail_once_nova_is_read(call: str) -> None:
        if call == ("set" if fail_at == "stuck" else fail_at):
            waited.append(threaded.wait(5))

    world.bmc.before = fail_once_nova_is_read
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert waited == [True] and "nova:compute_service compute1" in world.log
    assert len(outcome.errors) == 1 and "Nova left untouched" in outcome.errors[0]
    assert writes(world.log) == []
    assert collapsed(main_thread(world.log))[-2:] == ["power:close", "timeline:fence_failed"]


@pytest.mark.parametrize(("failing", "error", "message"), [
    ("connect", KEYSTONE_DOWN,
     "compute1 is powered off, but Nova: find compute service: cannot reach the cloud"),
    ("compute_service", NovaError("not_found", "no compute service for compute1"),
     "compute1 is powered off, but Nova: no compute service for compute1"),
])
def test_an_off_whose_nova_read_failed_fails_after_the_power_off_with_the_same_reason(
        world, caplog, threaded, failing, error, message) -> None:
    world.nova.failures[failing] = error
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith(message)
    assert world.fields("fence_failed")["reason"] == outcome.errors[0]
    assert main_thread(world.log) == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                                      "timeline:power_off_confirmed", "timeline:fence_failed"]
    assert writes(world.log) == HOLD_DROPPED and not world.held
    assert world.bmc.state == "off"


def test_an_off_whose_nova_read_outlasts_the_deadline_fails_without_writing(
        world, caplog, monkeypatch, threaded) -> None:
    monkeypatch.setattr(actions, "NOVA_BUDGET_SECONDS", -3600.0)  # a deadline long past
    keystone("hangs", world, monkeypatch)
    started = time.monotonic()
    outcome = fence("off", caplog)
    assert time.monotonic() - started < 5  # a second past the deadline, as _nova's timeouts
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute1 is powered off, but Nova: authenticate and find compute"
                              " service compute1: no answer before the fence's deadline"]
    assert writes(world.log) == HOLD_DROPPED and not world.held
    assert world.bmc.state == "off"


def test_off_reads_a_forced_down_service_again_after_the_power_off(world, caplog,
                                                                   threaded) -> None:
    # compute1 returning from its last failure (its evacuation done, still forced down) fails
    # again; while its BMC powers it off, the worker finishes its return
    world.nova.service = fenced(State.DONE, up=True)
    waited: list[bool] = []

    def return_finished_meanwhile(call: str) -> None:
        if call == "set":
            waited.append(threaded.wait(5))
            world.nova.service = service()

    world.bmc.before = return_finished_meanwhile
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert waited == [True]
    assert main_thread(world.log) == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                                      "timeline:power_off_confirmed",
                                      "nova:compute_service compute1", *MARKED[2:]]
    svc = world.nova.service  # skipped on the first read, the host would not be forced down
    assert svc.forced_down and parse_marker(svc.disabled_reason).state is State.REQUESTED


def test_off_keeps_a_reason_given_while_the_bmc_powers_off(world, caplog, threaded) -> None:
    # not forced down when read: the force-down's answer is the record the marker builds on
    waited: list[bool] = []

    def operator_disables_meanwhile(call: str) -> None:
        if call == "set":
            waited.append(threaded.wait(5))
            world.nova.service = service(status="disabled", reason="RMA 4711")

    world.bmc.before = operator_disables_meanwhile
    assert fence("off", caplog).rc == ExitCode.SUCCESS
    assert waited == [True] and main_thread(world.log) == main_thread(OFF_SUCCESS)
    entry = parse_marker(world.nova.service.disabled_reason)
    assert entry is not None and entry.prior == "RMA 4711"


def test_off_holds_the_connection_while_it_tells_nova(world, caplog, monkeypatch,
                                                     threaded) -> None:
    # the hold and the force-down meet: they run side by side
    meet = Meeting()
    met = meet.met
    hold, force_down = actions.pacemaker.hold_connection, world.nova.force_down

    def holding(node: str, since: int, timeout: float = 10) -> bool:
        meet("hold")
        return hold(node, since, timeout)

    def forcing_down(service_id: str, forced: bool) -> ComputeService:
        meet("force-down")
        return force_down(service_id, forced)

    monkeypatch.setattr(actions.pacemaker, "hold_connection", holding)
    monkeypatch.setattr(world.nova, "force_down", forcing_down)
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert met == {"hold": True, "force-down": True}
    assert world.log.index("pacemaker:hold_connection compute1") > world.log.index(
        "timeline:power_off_confirmed")
    assert world.held == {HOST}


def test_a_hold_that_fails_leaves_the_fence_standing(world, caplog, monkeypatch) -> None:
    def refused(node: str, since: int, timeout: float = 10) -> bool:
        raise PacemakerError("crm_resource exited 1: CIB busy")

    monkeypatch.setattr(actions.pacemaker, "hold_connection", refused)
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS and outcome.errors == []
    assert outcome.warnings == ["compute1: its cluster connection is not held (crm_resource"
                                " exited 1: CIB busy): Pacemaker retries it while the host is"
                                " off"]
    assert world.nova.service.forced_down and world.attributes == {HOST: "yes"}


def test_a_failed_fence_leaves_a_connection_it_could_not_hold_alone(world, caplog,
                                                                    monkeypatch) -> None:
    monkeypatch.setattr(actions.pacemaker, "hold_connection",
                        lambda node, since, timeout=10: False)  # no such resource
    world.nova.failures["force_down"] = NovaError("http", "force down service: HTTP 500")
    assert fence("off", caplog).rc == ExitCode.FAILURE
    assert "pacemaker:drop_hold compute1" not in world.log


def test_a_failed_fence_whose_hold_cannot_be_dropped_says_how_to_release_it(
        world, caplog, monkeypatch) -> None:
    def refused(node: str, timeout: float = 10) -> None:
        raise PacemakerError("crm_resource exited 1: CIB busy")

    monkeypatch.setattr(actions.pacemaker, "drop_hold", refused)
    world.nova.failures["force_down"] = NovaError("http", "force down service: HTTP 500")
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute1 is powered off, but Nova: force down service: HTTP 500"]
    assert outcome.warnings == ["compute1: the fence failed, and its cluster connection stays"
                                " held (crm_resource exited 1: CIB busy): pcs resource meta"
                                " compute1 target-role= openstack-ha-hold= releases it"]


@dataclass
class SlowCeph:
    """A Ceph blocklist that answers once off's Nova read has ended."""

    log: list[str]
    read_ended: threading.Event
    confirms: bool

    def fence(self, addresses: tuple[str, ...], deadline: float) -> StorageOutcome:
        self.log.append("ceph:fence " + " ".join(addresses))
        assert self.read_ended.wait(5)
        return StorageOutcome(self.confirms, "Ceph lists them" if self.confirms else "timeout")


@pytest.mark.parametrize("confirms", [True, False])
def test_off_writes_to_nova_only_once_the_storage_fence_is_confirmed(
        world, caplog, monkeypatch, threaded, tmp_path, confirms) -> None:
    conf, keyring = tmp_path / "ceph.conf", tmp_path / "keyring"
    conf.write_text("[global]\nmon host = 127.0.0.1\n")
    keyring.write_text("[client.openstack-ha]\n\tkey = AQ==\n")
    ceph = SlowCeph(world.log, threaded, confirms)
    monkeypatch.setattr(actions, "storage_blocklist", lambda options: ceph)
    outcome = fence("off", caplog, storage_fence="ceph", storage_address="10.0.1.11",
                    ceph_conf=str(conf), ceph_keyring_file=str(keyring))
    assert outcome.rc == (ExitCode.SUCCESS if confirms else ExitCode.FAILURE), outcome.errors
    assert "nova:compute_service compute1" in world.log
    if confirms:
        assert writes_only_after(world.log, "timeline:storage_fenced")
        assert sorted(writes(world.log)) == sorted(writes(OFF_SUCCESS))
    else:
        assert writes(world.log) == [] and "Nova left untouched" in outcome.errors[0]


# ---------------------------------------------------------------------------- on


@pytest.mark.parametrize("state", [State.REQUESTED, State.CLAIMED])
def test_on_while_the_evacuation_is_pending_refuses_at_once(world, caplog, state) -> None:
    # invariant 4: no power for a host whose instances may be rebuilt elsewhere
    world.nova.service = fenced(state)
    world.bmc.state = "off"
    world.held = {HOST}
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, "timeline:unfence_refused"]
    assert f"evacuation {state}" in outcome.errors[0]
    assert "stays powered off" in world.fields("unfence_refused")["reason"]
    assert world.bmc.state == "off" and world.held == {HOST}


@pytest.mark.parametrize("failing", ["connect", "compute_service", "unreadable marker"])
def test_on_that_cannot_read_the_evacuation_keeps_the_power_off(world, caplog, failing) -> None:
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    if failing == "unreadable marker":
        world.nova.service = replace(world.nova.service,
                                     disabled_reason="openstack-ha:v9 evacuation=done")
        done = READ_NOVA
    else:
        world.nova.failures[failing] = KEYSTONE_DOWN
        done = READ_NOVA[:1] if failing == "connect" else READ_NOVA
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == done
    assert "cannot read its evacuation from Nova" in outcome.errors[0]
    assert world.bmc.state == "off"


@pytest.mark.parametrize("state", [State.DONE, State.FAILED])
def test_on_once_the_evacuation_is_done_powers_on_and_accepts_nova_refusing_force_up(
        world, caplog, state) -> None:
    world.nova.service = fenced(state)
    world.nova.refuse_force_up = True  # the returning nova-compute has not cleaned up yet
    world.bmc.state = "off"
    world.held = {HOST}
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*READ_NOVA, *POWER_ON, "pacemaker:release_connection compute1",
                         "nova:force_down False", "timeline:unfenced"]
    assert outcome.warnings == []  # Nova's refusal is the expected answer, not a problem
    assert "forced down" in world.fields("unfenced")["state"]
    assert world.bmc.state == "on" and world.held == set() and world.returning == {HOST}
    svc = world.nova.service
    assert svc.forced_down and parse_marker(svc.disabled_reason).state is state


def test_a_node_returning_after_its_evacuation_is_not_counted_until_it_is_back(
        world, caplog) -> None:
    """compute2 was powered on after its evacuation and is booting (offline, no longer
    held); compute1 fails now. One failure among three, not two: counted, compute1's fence
    would be refused for the minutes compute2 takes to boot. Pacemaker's unfencing once
    compute2 is back removes the mark."""
    world.down = {HOST: True, "compute2": True, "compute3": False}
    world.returning = {"compute2"}
    assert fence("off", caplog).rc == ExitCode.SUCCESS
    assert world.log == OFF_SUCCESS_OTHERS_DOWN


def test_the_returning_mark_lasts_from_the_power_on_until_the_node_is_back(
        world, caplog) -> None:
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    world.held = {HOST}
    assert fence("on", caplog).rc == ExitCode.SUCCESS  # the worker's: powered on
    assert world.held == set() and world.returning == {HOST}
    # Pacemaker unfences it again when it rejoins: no hold left, the node online
    world.down = {HOST: False, "compute2": False, "compute3": False}
    world.log.clear()
    assert fence("on", caplog).rc == ExitCode.SUCCESS
    assert "pacemaker:end_return compute1" in world.log
    assert world.returning == set()


@pytest.mark.parametrize(("leave_disabled", "prior", "enabled"), [
    ("0", None, True),
    ("1", None, False),
    ("0", "RMA 4711", False),
])
def test_on_when_nova_sees_the_host_up_clears_the_marker_and_enables_unless_told_not_to(
        world, caplog, leave_disabled, prior, enabled) -> None:
    # Pacemaker unfences the node again when it rejoins: powered, nova-compute up
    world.nova.service = fenced(State.DONE, prior=prior, up=True)
    outcome = fence("on", caplog, leave_disabled=leave_disabled)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*READ_NOVA, *POWER_ALREADY, *RELEASE_NOTHING_HELD,
                         "nova:force_down False", f"nova:disable {prior!r}",
                         "attribute:delete evacuate compute1",
                         *(["nova:enable"] if enabled else []), "timeline:unfenced"]
    svc = world.nova.service
    assert not svc.forced_down and parse_marker(svc.disabled_reason) is None
    assert svc.status == ("enabled" if enabled else "disabled")
    assert svc.disabled_reason == (None if enabled else prior)


def test_on_after_the_worker_cleared_force_down_only_clears_the_marker(world, caplog) -> None:
    world.nova.service = fenced(State.DONE, up=True, forced_down=False)
    assert fence("on", caplog).rc == ExitCode.SUCCESS
    assert world.log == [*READ_NOVA, *POWER_ALREADY, *RELEASE_NOTHING_HELD,
                         "nova:disable None", "attribute:delete evacuate compute1",
                         "nova:enable", "timeline:unfenced"]


def test_on_whose_power_on_is_not_confirmed_fails_and_changes_nothing_else(world, caplog) -> None:
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    world.bmc.failure = PowerError(power_module.REFUSED, "BMC 192.0.2.11:623: completion c1")
    world.bmc.fail_at = "set"
    world.held = {HOST}
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, *POWER_ON[:3], "power:close"]
    assert "power-on not confirmed" in outcome.errors[0]
    assert world.held == {HOST}


def test_on_whose_connection_stays_held_fails_so_that_it_is_asked_again(world, caplog) -> None:
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    world.release_failure = PacemakerError("crm_resource exited 1: CIB busy")
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, *POWER_ON, "pacemaker:release_connection compute1"]
    assert outcome.errors == ["compute1: powered on, but its cluster connection is not released:"
                              " crm_resource exited 1: CIB busy"]


def test_on_whose_nova_clearing_fails_still_unfences(world, caplog) -> None:
    # the host is powered, its evacuation finished: the worker finishes the return
    world.nova.service = fenced(State.DONE, up=True)
    world.nova.failures["enable"] = NovaError("api", "enable service: HTTP 500")
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.SUCCESS
    assert world.log[-2:] == ["nova:enable", "timeline:unfenced"]
    assert any("the evacuation worker finishes the return" in w for w in outcome.warnings)


def test_on_with_unfence_power_keep_off_only_reads_the_power(world, caplog) -> None:
    world.nova.service = fenced(State.DONE)
    world.nova.refuse_force_up = True
    world.bmc.state = "off"
    world.held = {HOST}
    outcome = fence("on", caplog, unfence_power="keep-off")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*READ_NOVA, *POWER_ALREADY, "nova:force_down False",
                         "timeline:unfenced"]
    assert world.bmc.state == "off" and world.held == {HOST}  # still off: still held

    # the operator powers it on after the inspection; the next unfencing releases it
    world.bmc.state, world.bmc.reads = "on", 0
    world.log.clear()
    assert fence("on", caplog, unfence_power="keep-off").rc == ExitCode.SUCCESS
    assert world.log == [*READ_NOVA, *POWER_ALREADY, "pacemaker:release_connection compute1",
                         "nova:force_down False", "timeline:unfenced"]
    assert world.held == set()


# ---------------------------------------------------------------------------- reboot


def test_reboot_fences_as_off_and_leaves_the_power_on_to_the_unfencing(world, caplog) -> None:
    outcome = fence("reboot", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == OFF_SUCCESS  # no power-on half: the host stays off
    assert world.bmc.state == "off"

    # and its power-on, the unfencing, refuses while the evacuation it requested is pending
    world.log.clear()
    refused = fence("on", caplog)
    assert refused.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, "timeline:unfence_refused"]
    assert world.bmc.state == "off"


def test_reboot_whose_off_fails_fails_without_powering_on(world, caplog) -> None:
    world.bmc.failure = PowerError(power_module.UNREACHABLE, "BMC 192.0.2.11:623: no answer")
    outcome = fence("reboot", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "power:driver compute1",
                         "power:state", "power:close", "timeline:fence_failed"]


def test_reboot_whose_nova_steps_fail_fails(world, caplog) -> None:
    world.nova.failures["connect"] = KEYSTONE_DOWN
    outcome = fence("reboot", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log[-4:] == ["nova:connect", "timeline:fence_failed", *HOLD_DROPPED]
    assert "power:set on" not in world.log and world.bmc.state == "off"


# ---------------------------------------------------------------------------- status


@pytest.mark.parametrize(("state", "rc"), [("on", ExitCode.SUCCESS), ("off", ExitCode.STATUS_OFF)])
def test_status_reads_the_bmc(world, caplog, state, rc) -> None:
    world.bmc.state = state
    assert fence("status", caplog).rc == rc
    assert world.log == POWER_ALREADY


def test_status_when_the_bmc_fails_is_unknown(world, caplog) -> None:
    world.bmc.failure = PowerError(power_module.UNREACHABLE, "BMC 192.0.2.11:623: no answer")
    outcome = fence("status", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute1: unreachable: BMC 192.0.2.11:623: no answer"]
    assert world.log == POWER_ALREADY


@pytest.mark.parametrize(("svc", "rc"), [
    (service(), ExitCode.SUCCESS),
    (service(state="down"), ExitCode.STATUS_OFF),
    (service(forced_down=True), ExitCode.STATUS_OFF),
])
def test_status_without_a_power_driver_reads_nova(world, caplog, svc, rc) -> None:
    world.nova.service = svc
    assert fence("status", caplog, power_driver="none", ip=None).rc == rc
    assert world.log == ["power:driver compute1", *READ_NOVA]


def test_status_without_a_power_driver_when_nova_fails_is_unknown(world, caplog) -> None:
    world.nova.failures["connect"] = KEYSTONE_DOWN
    outcome = fence("status", caplog, power_driver="none", ip=None)
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors[0].startswith("compute1: Nova: find compute service")


# ---------------------------------------------------------------------------- monitor, list

BMC_MAP = {"ip": None, "port": None, "bmc_map": "compute1=192.0.2.11,compute2=192.0.2.12"}


def test_monitor_checks_nova_then_every_bmc(world, caplog) -> None:
    assert fence("monitor", caplog, **BMC_MAP).rc == ExitCode.SUCCESS
    assert world.log == ["nova:connect", "nova:ping", "power:driver compute1", "power:state",
                         "power:close", "power:driver compute2", "power:state", "power:close"]
    assert world.bmc.state == "on" and world.bmcs["compute2"].state == "on"


def test_monitor_fails_on_a_silent_bmc(world, caplog) -> None:
    world.bmcs["compute2"].failure = PowerError(power_module.UNREACHABLE,
                                                "BMC 192.0.2.12:623 did not answer")
    outcome = fence("monitor", caplog, **BMC_MAP)
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute2: unreachable: BMC 192.0.2.12:623 did not answer"]
    assert world.log[-3:] == ["power:driver compute2", "power:state", "power:close"]


def test_monitor_fails_on_nova_without_reading_any_bmc(world, caplog) -> None:
    world.nova.failures["ping"] = KEYSTONE_DOWN
    outcome = fence("monitor", caplog, **BMC_MAP)
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors[0].startswith("Nova: find compute service")
    assert world.log == ["nova:connect", "nova:ping"]


@pytest.mark.parametrize(("domain", "printed"), [
    (None, "compute1,\ncompute2,\n"),
    ("example.org", "compute1.example.org,\ncompute2.example.org,\n"),
])
def test_list_prints_the_hosts_nova_knows(world, caplog, capsys, domain, printed) -> None:
    outcome = fence("list", caplog, port=None, domain=domain)
    assert outcome.rc == ExitCode.SUCCESS
    assert capsys.readouterr().out == printed  # list_hosts prints, as fence-agents' list does
    assert world.log == ["nova:connect", "nova:compute_hosts"]


# ---------------------------------------------------------------------------- record_only
# fence_compute's option, with its meaning: 1 leaves the power to another device of the
# topology level (no BMC is reached, whatever the power options say); disabled does nothing.

RECORDED = [*BRAKE_READS, "timeline:fence_start", "timeline:power_off_confirmed", *MARKED,
            "pacemaker:hold_connection compute1"]
REDFISH_MAP = {"power_driver": "redfish", "ip": None, "bmc_map": "compute1=https://192.0.2.11"}


def infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


@pytest.mark.parametrize("value", ["1", "yes", "True"])
@pytest.mark.parametrize("power", [{}, REDFISH_MAP, {"power_driver": "none", "ip": None}],
                         ids=["ipmi", "redfish", "none"])
@pytest.mark.parametrize("action", ["off", "reboot"])
def test_record_only_fences_in_nova_and_the_ledger_without_touching_power(
        world, caplog, value, power, action) -> None:
    outcome = fence(action, caplog, record_only=value, **power)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == RECORDED  # no power driver built, no BMC reached
    assert world.bmc.state == "on"
    assert "record_only" in world.fields("power_off_confirmed")["how"]
    assert "not verified here" in world.fields("power_off_confirmed")["how"]
    assert parse_marker(world.nova.service.disabled_reason).state is State.REQUESTED
    assert world.attributes == {HOST: "yes"}
    assert any("record_only: the host's power is left to another device" in line
               for line in infos(caplog))


def test_record_only_off_still_stops_at_the_mass_failure_brake(world, caplog) -> None:
    world.down = {HOST: True, "compute2": True, "compute3": False}
    outcome = fence("off", caplog, record_only="1")
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS_OTHERS_DOWN, "timeline:fence_start", "timeline:fence_failed"]
    assert not world.nova.service.forced_down


def test_record_only_off_still_fails_when_nova_does_not_keep_the_force_down(world,
                                                                            caplog) -> None:
    world.nova.keeps_forced_down = False
    outcome = fence("off", caplog, record_only="1")
    assert outcome.rc == ExitCode.FAILURE
    assert "did not keep compute1 forced down" in outcome.errors[0]
    assert not any(e.startswith("power:") for e in world.log)


def test_record_only_on_clears_nova_without_powering_on(world, caplog) -> None:
    world.nova.service = fenced(State.DONE, up=True)
    world.held = {HOST}
    outcome = fence("on", caplog, record_only="1")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*READ_NOVA, "pacemaker:release_connection compute1",
                         "nova:force_down False", "nova:disable None",
                         "attribute:delete evacuate compute1", "nova:enable",
                         "timeline:unfenced"]
    assert world.bmc.state == "on" and world.bmc.reads == 0


def test_record_only_on_still_refuses_while_the_evacuation_is_pending(world, caplog) -> None:
    world.nova.service = fenced(State.REQUESTED)
    outcome = fence("on", caplog, record_only="1")
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, "timeline:unfence_refused"]


@pytest.mark.parametrize(("svc", "rc"), [
    (service(), ExitCode.SUCCESS),
    (service(forced_down=True), ExitCode.STATUS_OFF),
])
def test_record_only_status_reads_nova_not_the_bmc(world, caplog, svc, rc) -> None:
    world.nova.service = svc
    assert fence("status", caplog, record_only="1").rc == rc
    assert world.log == READ_NOVA


def test_record_only_monitor_checks_nova_and_no_bmc(world, caplog) -> None:
    assert fence("monitor", caplog, record_only="1", **BMC_MAP).rc == ExitCode.SUCCESS
    assert world.log == ["nova:connect", "nova:ping"]


@pytest.mark.parametrize("value", ["2", "disabled", "Disabled"])
@pytest.mark.parametrize("action", sorted(set(actions.HANDLERS) - {"validate-all"}))
def test_record_only_disabled_does_nothing_and_succeeds(world, caplog, capsys, value,
                                                        action) -> None:
    world.nova.service = fenced(State.REQUESTED)  # an on would refuse; a status would say off
    outcome = fence(action, caplog, record_only=value)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [] and world.events == []  # no BMC, Nova, ledger, Pacemaker, timeline
    assert capsys.readouterr().out == ""  # list: no host, as fence_compute
    if action != "monitor":  # every minute: at debug level
        (warning,) = outcome.warnings
        assert "record_only=disabled" in warning and "did nothing" in warning


def test_record_only_disabled_off_warns_that_the_cluster_counts_it_as_a_fence(world,
                                                                             caplog) -> None:
    outcome = fence("off", caplog, record_only="disabled")
    (warning,) = outcome.warnings
    assert "the cluster treats compute1 as fenced" in warning
    assert "only at a topology level where another device powers it off" in warning
    assert world.bmc.state == "on" and not world.nova.service.forced_down


def test_record_only_disabled_validate_all_says_what_the_device_does(world, caplog) -> None:
    outcome = fence("validate-all", caplog, record_only="disabled")
    assert outcome.rc == ExitCode.SUCCESS
    (warning,) = outcome.warnings
    assert "every action of this device does nothing and reports success" in warning
    assert world.log == []


def test_a_fence_compute_configuration_needs_no_bmc_with_record_only(world, caplog) -> None:
    # TripleO's fence-nova: Keystone options, domain, record_only=1; the power is fence_ipmilan's
    fence_compute = {"cloud": None, "ip": None, "bmc_username": None, "bmc_password": None,
                     "auth_url": "http://keystone:5000/v3", "login": "admin",
                     "passwd": "keystone-secret", "tenant_name": "admin", "record_only": "1"}
    outcome = fence("off", caplog, **fence_compute)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == RECORDED


# ---------------------------------------------------------------------------- options without effect


def test_a_compatibility_option_given_a_value_of_its_own_is_logged(world, caplog) -> None:
    outcome = fence("off", caplog, instance_filtering="0", shell_timeout="60")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    (warning,) = outcome.warnings  # what is evacuated is not what its operator expects
    assert warning.startswith("option instance_filtering has no effect in fence_nova:")
    assert "[evacuation] instance_filtering" in warning
    assert any(line.startswith("option shell_timeout has no effect in fence_nova:")
               for line in infos(caplog))


def test_a_compatibility_option_at_its_default_logs_nothing(world, caplog) -> None:
    outcome = fence("off", caplog, instance_filtering="1", shell_timeout="180")
    assert not any("has no effect" in line for line in [*infos(caplog), *outcome.warnings])


def test_monitor_logs_options_without_effect_at_debug_level_only(world, caplog) -> None:
    # the device's monitor runs every minute: a line each time would fill the log
    outcome = fence("monitor", caplog, no_shared_storage="1", **BMC_MAP)
    assert outcome.rc == ExitCode.SUCCESS
    assert not any("has no effect" in line for line in [*infos(caplog), *outcome.warnings])


@pytest.mark.parametrize(("extra", "named"), [
    ({"power_driver": "none"}, "ip, bmc_username, bmc_password (power_driver=none"),
    ({"record_only": "1"}, "ip, bmc_username, bmc_password (record_only"),
    ({"lanplus": "1"}, "lanplus (power_driver=redfish)"),
    ({"auth_url": "http://keystone:5000/v3", "tenant_name": "admin"},
     "auth_url, tenant_name (cloud is given"),
    ({"ceph_user": "admin"}, "ceph_user (storage_fence is not ceph)"),
])
def test_options_this_configuration_does_not_use_are_named(world, caplog, extra, named) -> None:
    if "lanplus" in extra:
        extra = {**extra, **REDFISH_MAP}
    outcome = fence("status", caplog, **extra)
    assert outcome.rc in (ExitCode.SUCCESS, ExitCode.STATUS_OFF), outcome.errors
    (line,) = [m for m in infos(caplog) if m.startswith("options given but not used")]
    assert named in line


def test_list_separates_with_the_separator_option(world, caplog, capsys) -> None:
    assert fence("list", caplog, port=None, separator=";").rc == ExitCode.SUCCESS
    assert capsys.readouterr().out == "compute1;\ncompute2;\n"
