"""Power drivers and the verified power sequence of ``fence_nova``, driver-neutral.

The sequence is fence-agents' (``fence_action`` in ``lib/fencing.py``): read the status first and
do nothing when the host already is where it should be ("Success: Already OFF"), otherwise ask
for the new state, wait ``power_wait``, and poll until the BMC *reports* that state.  Only a
report counts: an acknowledged "off" proves nothing (a BMC that acks and stays on exists, see the
lab's ``stuck-on``).  A driver supplies three calls (:class:`PowerDriver`); everything else,
including the retries and the time budget, lives here, pure except for those calls and an
injectable clock.

Every call takes an absolute ``deadline`` (``time.monotonic()`` seconds) and must return or raise
by then.  Failures are :class:`PowerError` with one of :data:`KINDS`; the sequence functions never
raise them, they return a :class:`PowerOutcome` with ``confirmed=False`` and the kind.

``power_driver=none`` (:class:`NoPowerDriver`) is for a fencing topology level where another
device (``fence_ipmilan``, a PDU) cuts the power and ``fence_nova`` follows it in the same level:
Pacemaker runs the devices of a level in order and fences only if all of them succeed, so by the
time ``fence_nova`` runs the power is off *by the topology's word*.  The driver reads and changes
nothing, and its outcome says so: ``confirmed`` stays False and ``kind`` is :data:`DELEGATED`.
The caller decides to trust the topology (:attr:`PowerOutcome.may_proceed`); nothing here ever
claims to have seen the power off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

LOG = logging.getLogger(__name__)

PowerState = Literal["on", "off"]
T = TypeVar("T")

# Why a power call failed.  Only UNREACHABLE and TIMEOUT are retried: a BMC that answered "no"
# (REFUSED, CREDENTIALS) or spoke something we do not understand (PROTOCOL) says the same again.
UNREACHABLE = "unreachable"  # no answer, or the BMC stopped answering and the client gave up
CREDENTIALS = "credentials"  # the BMC refused the login or the user's privilege
REFUSED = "refused"  # the BMC answered the command with an error (a completion code)
TIMEOUT = "timeout"  # the deadline came first: a call still pending, or the power never changed
PROTOCOL = "protocol"  # an answer we cannot use, a configuration the client cannot speak
KINDS = (UNREACHABLE, CREDENTIALS, REFUSED, TIMEOUT, PROTOCOL)
RETRYABLE = frozenset({UNREACHABLE, TIMEOUT})
# Not a failure kind: the outcome of power_driver=none, where another device owns the power.
DELEGATED = "delegated"


class PowerError(Exception):
    """A power call failed.  ``message`` is one line that names the BMC, never a secret."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown power error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class PowerDriver(Protocol):
    """What the sequence needs from a way of reaching a host's power.

    Each call returns or raises :class:`PowerError` by ``deadline`` (monotonic seconds).
    ``verifies`` is False for a driver that cannot observe the power (``none``); ``where`` names
    the device in messages ("BMC 10.0.0.11:623"), never with a secret.
    """

    verifies: bool
    where: str

    def power_state(self, deadline: float) -> PowerState: ...

    def set_power(self, state: PowerState, deadline: float) -> None:
        """Ask for ``state`` and return once the BMC acknowledged it; no waiting for the change."""

    def close(self, deadline: float) -> None:
        """Release the session (log out).  Never raises: nothing is at stake any more."""


class NoPowerDriver:
    """``power_driver=none``: another device at this topology level owns the power.

    It can neither read nor change anything, so both calls raise PROTOCOL (a bug if ever reached:
    the sequence functions check :attr:`verifies` first and answer :data:`DELEGATED`).
    """

    verifies = False
    where = "power_driver=none"

    def power_state(self, deadline: float) -> PowerState:
        raise PowerError(PROTOCOL, "power_driver=none cannot read the power state")

    def set_power(self, state: PowerState, deadline: float) -> None:
        raise PowerError(PROTOCOL, f"power_driver=none cannot power {state}")

    def close(self, deadline: float) -> None:
        return None


@dataclass(frozen=True)
class PowerOutcome:
    """What one ``power_*_confirmed`` call established.

    ``confirmed``: the driver *reported* the wanted state before the deadline.  ``already``: it
    did so at the first read, and nothing was sent.  ``kind``: empty when confirmed, else one of
    :data:`KINDS` or :data:`DELEGATED`.  ``reason``: one line for the log and the operator.
    """

    confirmed: bool
    already: bool
    reason: str
    elapsed: float
    kind: str = ""
    attempts: int = 1

    @property
    def may_proceed(self) -> bool:
        """Confirmed by the BMC, or vouched for by another device of the topology level."""
        return self.confirmed or self.kind == DELEGATED


def call_before(deadline: float, call: Callable[[], T], what: str) -> T:
    """Run ``call`` in a worker thread and give up on it at ``deadline`` (TIMEOUT).

    For clients that cannot be interrupted or bounded (pyghmi can retry a login forever): the
    worker is a daemon thread, abandoned on timeout and gone with the process.  The fence agent
    is one process per action, so an abandoned call cannot pile up.  Exceptions other than
    PowerError come back as they are, for the driver to classify.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PowerError(TIMEOUT, f"{what}: no time left")
    result: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed over to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"power-{what}", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive():
        raise PowerError(TIMEOUT, f"{what}: no answer within {remaining:.1f}s")
    if failure:
        raise failure[0]
    return result[0]


# The first wait between status reads after the power command; each next one doubles, up to
# power_confirmed's poll_interval.
FIRST_POLL = 0.05


def power_confirmed(
    driver: PowerDriver,
    want: PowerState,
    deadline: float,
    *,
    power_wait: float = 0.0,
    poll_interval: float = 0.25,
    attempts: int = 1,
    power_timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PowerOutcome:
    """Bring the host to ``want`` and return once the driver reports it, or say why not.

    ``attempts`` (fence-agents' ``retry_on``): how many times the whole sequence runs while time
    remains, only after an UNREACHABLE or TIMEOUT failure.  ``power_timeout``: the longest one
    attempt may take, status read included (fence-agents counts only the polling; a BMC that
    hangs earlier must not take every attempt's time); None: until ``deadline``.  Never returns
    later than ``deadline`` plus one driver call's overrun, and never raises PowerError.
    ``clock`` and ``sleep`` are for tests; ``deadline`` is in the clock's time, and real drivers
    bound their calls with ``time.monotonic``.
    """
    start = clock()
    if not driver.verifies:
        return PowerOutcome(False, False, f"power_driver=none: power {want} is left to another"
                            " device of this topology level, not verified here", 0.0, DELEGATED)
    attempts, attempt = max(attempts, 1), 1
    while True:
        window = deadline if power_timeout is None else min(deadline, clock() + power_timeout)
        outcome = _attempt(driver, want, window, power_wait, poll_interval, clock, sleep)
        retry = not outcome.confirmed and outcome.kind in RETRYABLE and attempt < attempts
        pause = min(poll_interval, deadline - clock())  # not a tight loop on an instant failure
        if not retry or pause <= 0:
            break
        LOG.warning("power %s, attempt %d of %d failed (%s); retrying", want, attempt, attempts,
                    outcome.reason)
        sleep(pause)
        attempt += 1
    return PowerOutcome(outcome.confirmed, outcome.already, outcome.reason, clock() - start,
                        outcome.kind, attempt)


def _attempt(
    driver: PowerDriver,
    want: PowerState,
    deadline: float,
    power_wait: float,
    poll_interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> PowerOutcome:
    """One pass of status → set → wait → poll; ``elapsed`` and ``attempts`` are the caller's."""
    sent, state = False, None
    try:
        if driver.power_state(deadline) == want:
            return PowerOutcome(True, True, f"{driver.where} reports {want} already; nothing sent", 0.0)
        driver.set_power(want, deadline)
        sent = True
        LOG.info("%s acknowledged power %s; polling until it reports it", driver.where, want)
        if power_wait > 0:
            sleep(max(0.0, min(power_wait, deadline - clock())))
        polls = 0
        while True:
            started = clock()
            state = driver.power_state(deadline)
            if state == want:
                return PowerOutcome(True, False, f"{driver.where} reports {want}", 0.0)
            # Soon at first, then every poll_interval: a BMC that reports the change within a
            # fraction of a second is not left waiting a whole interval (a few status reads
            # more, never a tighter loop than FIRST_POLL).
            wait = min(poll_interval, FIRST_POLL * 2 ** polls)
            polls += 1
            # The next read must fit before the deadline, its own duration included: a read cut
            # off by the deadline says less than "still on".
            if clock() + wait + (clock() - started) >= deadline:
                return PowerOutcome(False, False, f"{driver.where}: power {want} acknowledged, but it"
                                    f" still reports {state} at the deadline", 0.0, TIMEOUT)
            sleep(wait)
    except PowerError as exc:
        if sent and exc.kind == TIMEOUT:
            seen = f"; it last reported {state}" if state else ""
            return PowerOutcome(False, False, f"{exc.message} (after power {want} was"
                                f" acknowledged{seen})", 0.0, TIMEOUT)
        return PowerOutcome(False, False, exc.message, 0.0, exc.kind)
