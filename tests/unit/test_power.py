"""The verified power sequence (fence_compute.power) and the IPMI driver's own logic (fence_compute.ipmi).

The sequence runs against an in-memory BMC on a fake clock, so "stuck on for 20 s" takes no time
and every deadline is checked exactly.  The IPMI driver runs against a fake pyghmi client (the
real one is exercised against the lab's BMCs in tests/functional/test_ipmi_power.py); the error
texts below are the ones pyghmi 1.6.19 really produced there.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from pyghmi.exceptions import IpmiException

from fence_compute import ipmi, power
from fence_compute.ipmi import BmcCredentials, IpmiPower
from fence_compute.power import (
    CREDENTIALS,
    DELEGATED,
    PROTOCOL,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    NoPowerDriver,
    PowerError,
    power_confirmed,
)

PASSWORD = "s3cret-Pa55word"
CREDS = BmcCredentials("10.0.0.11", 6231, "admin", PASSWORD)
T0 = 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class FakeBmc:
    """A PowerDriver in memory.  Each call costs ``latency``; ``fail[call]`` is a queue of errors
    to raise first; TIMEOUT in it means the call hangs until the deadline, as call_before would."""

    verifies = True
    where = "BMC fake"

    def __init__(self, clock: Clock, state: str = "on", *, latency: float = 0.01,
                 transition: float = 0.0, stuck: bool = False,
                 fail: dict[str, list[str | None]] | None = None) -> None:
        self.clock, self.state, self.latency = clock, state, latency
        self.transition, self.stuck, self.fail = transition, stuck, fail or {}
        self.pending: tuple[float, str] | None = None
        self.calls: list[str] = []

    def _enter(self, call: str, deadline: float, cost: float | None = None) -> None:
        self.calls.append(call)
        kinds = self.fail.get(call, [])
        kind = kinds.pop(0) if kinds else None
        cost = self.latency if cost is None else cost
        if kind == TIMEOUT or self.clock() + cost > deadline:
            self.clock.now = max(self.clock(), deadline)
            raise PowerError(TIMEOUT, f"BMC fake {call}: no answer within the deadline")
        self.clock.sleep(cost)
        if kind is not None:
            raise PowerError(kind, f"BMC fake {call}: {kind}")

    def power_state(self, deadline: float) -> str:
        self._enter("power_state", deadline)
        if self.pending and self.clock() >= self.pending[0]:
            self.state, self.pending = self.pending[1], None
        return self.state

    def set_power(self, state: str, deadline: float) -> None:
        self._enter(f"set_power {state}", deadline)
        if not self.stuck:
            self.pending = (self.clock() + self.transition, state)

    def close(self, deadline: float) -> None:
        self.calls.append("close")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def off(bmc: FakeBmc, clock: Clock, within: float = 10.0, **kw: Any) -> power.PowerOutcome:
    return power_confirmed(bmc, "off", T0 + within, clock=clock, sleep=clock.sleep, **kw)


# ---------------------------------------------------------------------------- the sequence


def test_already_off_is_success_without_sending_off(clock: Clock):
    bmc = FakeBmc(clock, "off")
    outcome = off(bmc, clock)
    assert (outcome.confirmed, outcome.already, outcome.kind) == (True, True, "")
    assert bmc.calls == ["power_state"]


def test_off_is_confirmed_only_when_the_bmc_reports_it(clock: Clock):
    bmc = FakeBmc(clock, transition=1.0)
    outcome = off(bmc, clock, poll_interval=0.25)
    assert outcome.confirmed and not outcome.already and outcome.reason == "BMC fake reports off"
    assert bmc.calls[:2] == ["power_state", "set_power off"] and bmc.calls.count("set_power off") == 1
    assert 1.0 <= outcome.elapsed < 1.4
    assert "close" not in bmc.calls  # the caller owns the session


def test_stuck_on_until_the_deadline_is_not_confirmed(clock: Clock):
    bmc = FakeBmc(clock, stuck=True)
    outcome = off(bmc, clock, within=6.0)
    assert (outcome.confirmed, outcome.kind) == (False, TIMEOUT)
    assert outcome.reason == "BMC fake: power off acknowledged, but it still reports on at the deadline"
    assert 5.5 < outcome.elapsed <= 6.0 and clock() <= T0 + 6.0
    assert bmc.calls.count("power_state") > 10 and bmc.state == "on"


@pytest.mark.parametrize(("call", "kind"), [("set_power off", REFUSED), ("power_state", CREDENTIALS),
                                            ("power_state", PROTOCOL)])
def test_a_bmc_that_said_no_is_never_retried(clock: Clock, call: str, kind: str):
    bmc = FakeBmc(clock, fail={call: [kind] * 3})
    outcome = off(bmc, clock, attempts=3)
    assert (outcome.confirmed, outcome.kind, outcome.attempts) == (False, kind, 1)
    assert outcome.reason == f"BMC fake {call}: {kind}" and bmc.state == "on"
    assert bmc.calls.count(call) == 1


def test_unreachable_is_retried_only_when_attempts_allow(clock: Clock):
    once = off(FakeBmc(clock, fail={"power_state": [UNREACHABLE]}), clock)
    assert (once.confirmed, once.kind, once.attempts) == (False, UNREACHABLE, 1)
    bmc = FakeBmc(clock, fail={"power_state": [UNREACHABLE]})
    outcome = off(bmc, clock, within=20.0, attempts=2)
    assert (outcome.confirmed, outcome.attempts, outcome.kind) == (True, 2, "")
    assert bmc.calls == ["power_state", "power_state", "set_power off", "power_state"]


def test_retries_stop_at_the_deadline(clock: Clock):
    # Each unanswered login costs pyghmi about 5 s; the third attempt meets the deadline.
    class SlowDeath(FakeBmc):
        def power_state(self, deadline: float) -> str:
            self._enter("power_state", deadline, cost=5.0)
            raise PowerError(UNREACHABLE, "BMC fake did not answer")

    bmc = SlowDeath(clock)
    outcome = off(bmc, clock, within=12.0, attempts=5)
    assert (outcome.confirmed, outcome.kind, outcome.attempts) == (False, TIMEOUT, 3)
    assert clock() == T0 + 12.0 and outcome.elapsed == 12.0


def test_a_hang_after_off_was_acknowledged_says_so(clock: Clock):
    bmc = FakeBmc(clock, stuck=True, fail={"power_state": [None, TIMEOUT]})
    outcome = off(bmc, clock, within=6.0)
    assert (outcome.confirmed, outcome.kind) == (False, TIMEOUT)
    assert outcome.reason.startswith("BMC fake power_state: no answer")
    assert outcome.reason.endswith("(after power off was acknowledged)")
    assert clock() == T0 + 6.0


def test_power_timeout_bounds_each_attempt(clock: Clock):
    bmc = FakeBmc(clock, stuck=True)
    outcome = off(bmc, clock, within=30.0, attempts=2, power_timeout=5.0)
    assert (outcome.confirmed, outcome.kind, outcome.attempts) == (False, TIMEOUT, 2)
    assert bmc.calls.count("set_power off") == 2  # fence-agents' retry_on: the whole sequence again
    assert 9.5 < outcome.elapsed <= 10.5


def test_polls_soon_at_first_then_every_interval(clock: Clock):
    """A BMC that reports off 0.1 s after the command is confirmed then, not after a whole
    interval; one that takes longer is read every poll_interval, no more often."""
    bmc = FakeBmc(clock, transition=0.1, latency=0.0)
    outcome = off(bmc, clock, poll_interval=1.0)
    assert outcome.confirmed and outcome.elapsed < 0.2
    reads: list[float] = []

    class Timed(FakeBmc):
        def power_state(self, deadline: float) -> str:
            reads.append(clock() - T0)
            return super().power_state(deadline)

    clock.now = T0
    assert off(Timed(clock, transition=5.0, latency=0.0), clock, poll_interval=1.0).confirmed
    polls = [round(b - a, 3) for a, b in itertools.pairwise(reads[1:])]  # after the command
    assert polls[:5] == [0.05, 0.1, 0.2, 0.4, 0.8] and set(polls[5:]) == {1.0}


def test_retry_finds_the_host_already_off(clock: Clock):
    # The first attempt's off took effect after its window: the second one sends nothing.
    bmc = FakeBmc(clock, transition=5.05)
    outcome = off(bmc, clock, within=30.0, attempts=2, power_timeout=5.0)
    assert (outcome.confirmed, outcome.already, outcome.attempts) == (True, True, 2)
    assert bmc.calls.count("set_power off") == 1


def test_power_wait_sleeps_before_the_first_poll_but_not_past_the_deadline(clock: Clock):
    bmc = FakeBmc(clock)
    outcome = off(bmc, clock, power_wait=2.0)
    assert outcome.confirmed and 2.0 <= outcome.elapsed < 2.1
    assert bmc.calls == ["power_state", "set_power off", "power_state"]
    clock.now = T0
    outcome = off(FakeBmc(clock), clock, within=3.0, power_wait=10.0)
    assert (outcome.confirmed, outcome.kind) == (False, TIMEOUT) and clock() == T0 + 3.0


def test_a_deadline_already_past_sends_nothing(clock: Clock):
    bmc = FakeBmc(clock)
    outcome = off(bmc, clock, within=0.0)
    assert (outcome.confirmed, outcome.kind) == (False, TIMEOUT)
    assert "set_power off" not in bmc.calls


def test_power_on_is_confirmed_the_same_way(clock: Clock):
    bmc = FakeBmc(clock, "off", transition=0.5)
    outcome = power_confirmed(bmc, "on", T0 + 10, clock=clock, sleep=clock.sleep)
    assert outcome.confirmed and not outcome.already and bmc.state == "on"
    assert power_confirmed(bmc, "on", T0 + 20, clock=clock, sleep=clock.sleep).already


def test_power_driver_none_never_claims_a_verified_power_off():
    outcome = power_confirmed(NoPowerDriver(), "off", time.monotonic() + 5)
    assert (outcome.confirmed, outcome.already, outcome.kind) == (False, False, DELEGATED)
    assert outcome.may_proceed and "not verified" in outcome.reason
    assert power_confirmed(NoPowerDriver(), "on", time.monotonic() + 5).kind == DELEGATED
    with pytest.raises(PowerError) as err:
        NoPowerDriver().power_state(time.monotonic() + 5)
    assert err.value.kind == PROTOCOL


def test_only_confirmed_or_delegated_outcomes_may_proceed():
    assert power.PowerOutcome(True, False, "reported off", 1.0).may_proceed
    for kind in power.KINDS:
        assert not power.PowerOutcome(False, False, "x", 1.0, kind).may_proceed
    with pytest.raises(ValueError):
        PowerError("flaky", "not a kind")


# ---------------------------------------------------------------------------- call_before


def test_call_before_returns_raises_and_abandons():
    assert power.call_before(time.monotonic() + 5, lambda: 42, "answer") == 42
    with pytest.raises(KeyError):
        power.call_before(time.monotonic() + 5, lambda: {}["x"], "missing")
    release = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(PowerError) as err:
        power.call_before(t0 + 0.2, release.wait, "BMC x get power")
    release.set()
    assert err.value.kind == TIMEOUT and 0.2 <= time.monotonic() - t0 < 0.5
    assert err.value.message.startswith("BMC x get power: no answer within")
    with pytest.raises(PowerError, match="no time left"):
        power.call_before(time.monotonic() - 1, lambda: 1, "late")


# ---------------------------------------------------------------------------- the IPMI driver


class FakeSession:
    """pyghmi's Session as IpmiPower uses it: raw_command and logout."""

    def __init__(self, answers: dict[int, dict[str, Any]] | None = None) -> None:
        self.answers = answers or {}
        self.sent: list[tuple[int, int, tuple[int, ...]]] = []
        self.logouts = 0

    def raw_command(self, netfn: int, command: int, data: tuple[int, ...] = ()) -> dict[str, Any]:
        self.sent.append((netfn, command, tuple(data)))
        return self.answers.get(command, {"code": 0, "data": [0x01]})

    def logout(self) -> None:
        self.logouts += 1


def driver(*clients: Any) -> IpmiPower:
    """An IpmiPower whose logins give ``clients`` in turn: a client, a callable, or an exception."""
    queue = list(clients)

    def connect(creds: BmcCredentials) -> Any:
        client = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(client, BaseException):
            raise client
        return client() if callable(client) else client

    return IpmiPower(CREDS, connect=connect)


def soon() -> float:
    return time.monotonic() + 5


def test_ipmi_reads_and_sets_chassis_power_and_logs_out_once():
    cmd = FakeSession({1: {"code": 0, "data": [0x00, 0x10, 0x40]}})
    drv = driver(cmd)
    assert drv.power_state(soon()) == "off"
    drv.set_power("on", soon())
    drv.set_power("off", soon())
    assert cmd.sent == [(0, 1, ()), (0, 2, (1,)), (0, 2, (0,))]  # one session for all
    drv.close(soon())
    drv.close(soon())
    assert cmd.logouts == 1


@pytest.mark.parametrize(("code", "kind"), [(0xFF, REFUSED), (0xD5, REFUSED), (0xD4, CREDENTIALS),
                                            (0xFFFF, UNREACHABLE)])
def test_ipmi_completion_codes_are_classified(code: int, kind: str):
    drv = driver(FakeSession({2: {"code": code, "error": "Unspecified error"}}))
    with pytest.raises(PowerError) as err:
        drv.set_power("off", soon())
    assert err.value.kind == kind and err.value.message.startswith("BMC 10.0.0.11:6231 ")
    if kind in (REFUSED, CREDENTIALS):
        assert f"completion code 0x{code:02x}" in err.value.message


# What pyghmi 1.6.19 raised against the lab's BMCs (fault in the comment), and a few from its source.
@pytest.mark.parametrize(("exc", "kind"), [
    (IpmiException(None), UNREACHABLE),  # noreply: nothing answers the login
    (IpmiException("Incorrect password provided"), CREDENTIALS),  # badcreds
    (IpmiException("Unauthorized name in RAKP2"), CREDENTIALS),  # unknown user
    (IpmiException("Session no longer connected"), UNREACHABLE),  # went silent after login
    (IpmiException("Invalid RAKP4 integrity code (wrong Kg?)"), CREDENTIALS),
    (IpmiException("No Cipher suite match with proposed security algorithms"), PROTOCOL),
    (socket.gaierror(-2, "Name or service not known"), UNREACHABLE),
    (ValueError("unpack requires a buffer of 4 bytes"), PROTOCOL),
])
def test_ipmi_login_failures_are_classified(exc: BaseException, kind: str):
    with pytest.raises(PowerError) as err:
        driver(exc).power_state(soon())
    assert err.value.kind == kind and "BMC 10.0.0.11:6231" in err.value.message


def test_ipmi_messages_never_carry_the_password():
    with pytest.raises(PowerError) as err:
        driver(IpmiException(f"bad auth for {PASSWORD!r}")).power_state(soon())
    assert PASSWORD not in str(err.value) and "***" in str(err.value)
    assert PASSWORD not in repr(CREDS) and PASSWORD not in repr(driver(FakeSession()))


def test_ipmi_hung_login_times_out_at_the_deadline_and_close_does_not_wait():
    release = threading.Event()
    drv = driver(lambda: release.wait(30) and FakeSession())
    t0 = time.monotonic()
    with pytest.raises(PowerError) as err:
        drv.power_state(t0 + 0.3)
    assert err.value.kind == TIMEOUT and 0.3 <= time.monotonic() - t0 < 0.7
    assert err.value.message.startswith("BMC 10.0.0.11:6231 login and get power status: no answer within")
    drv.close(time.monotonic() + 5)
    assert time.monotonic() - t0 < 0.7
    release.set()


def test_ipmi_logs_in_again_after_an_unreachable_bmc():
    drv = driver(IpmiException(None), FakeSession())
    with pytest.raises(PowerError, match="did not answer"):
        drv.power_state(soon())
    assert drv.power_state(soon()) == "on"


def test_ipmi_refuses_what_pyghmi_cannot_speak():
    with pytest.raises(ValueError, match="lanplus"):
        IpmiPower(CREDS, lanplus=False)
    with pytest.raises(ValueError, match="cipher=1"):
        IpmiPower(CREDS, cipher=1)
    for cipher in (None, 3, 17):
        IpmiPower(CREDS, cipher=cipher)
    assert ipmi.config_errors(True, 3) == []
    assert BmcCredentials("fd00::11", 623).where == "BMC [fd00::11]:623"


def test_ipmi_gives_pyghmi_bytes_credentials(monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, Any] = {}
    monkeypatch.setattr("fence_compute.ipmi._session_class",
                        lambda: lambda **kw: seen.update(kw) or FakeSession())
    IpmiPower(CREDS).power_state(soon())
    assert seen == {"bmc": "10.0.0.11", "port": 6231, "userid": b"admin", "password": PASSWORD.encode()}


def test_a_power_action_loads_pyghmis_session_but_not_its_command_layer():
    """Command's OEM handlers (Lenovo's, a Redfish client) cost about 50 ms and change
    nothing for the two chassis commands sent."""
    code = ("import sys\n"
            "from pyghmi.ipmi.private import session\n"
            "class Offline:  # no BMC here\n"
            "    def __init__(self, **kw): pass\n"
            "session.Session = Offline\n"
            "from fence_compute.ipmi import BmcCredentials, _pyghmi_session\n"
            "print(isinstance(_pyghmi_session(BmcCredentials('192.0.2.1')), Offline),"
            " 'pyghmi.ipmi.command' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["True", "False"]


def test_importing_the_driver_does_not_import_pyghmi():
    code = "import sys, fence_compute.ipmi, fence_compute.power; print('pyghmi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
