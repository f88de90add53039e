"""Power control over IPMI 2.0 (lanplus) with pyghmi, in-process, under the agent's deadline.

pyghmi's client needs four guards (research/ipmi-lab.md, "Pitfalls checklist"):

* It can block for a minute or forever (a BMC that goes silent after the session opens makes it
  log in again and again).  Every call runs in a worker thread that the agent abandons at its
  deadline (:func:`fence_compute.power.call_before`).
* A second session to one BMC in one process hangs when the credentials are ``str``
  (``Session.initting_sessions`` stores the key as str and deletes it as bytes): we pass bytes.
* ``set_power(wait=True)`` polls for five minutes with a 1 s delay per poll.  We send the bare
  Chassis Control and leave the polling to :mod:`fence_compute.power`.
* Nothing logs out at exit: :meth:`IpmiPower.close` does.
* ``Session.awaitresponse`` waits for the BMC's next packet before it reads the ones pyghmi's
  I/O thread has already queued. An answer that arrives before the caller starts waiting (a
  BMC that answers within a millisecond, a busy controller) is noticed only when the
  retransmit timer runs out: 0.5 to 1 s more per command. Seen on the lab in two of three
  fences while another node booted (tcpdump: the BMC had answered at once). The session
  class of :func:`_session_class` reads the queued answers first.

An abandoned login stays in pyghmi's class-level session cache, so a second login to that BMC in
the same process waits on the hung one: a retry after a TIMEOUT in one process only waits again
(bounded, harmless).  fence_nova runs one process per action, so the next fence starts clean.

The two chassis commands go straight through pyghmi's session (``Session.raw_command``, which
``Command.raw_command`` only forwards to) rather than ``Command.get_power`` / ``set_power``: those
first send Get Device ID for an OEM lookup that changes nothing for chassis power (no OEM handler
of pyghmi 1.6 overrides it), and they drop the completion code, which is what tells "the BMC
refused" from everything else.  It is what ``ipmitool chassis power`` sends.  Not importing
``pyghmi.ipmi.command`` at all spares its OEM handlers (Lenovo's, its Redfish client): about
50 ms of every fence.

Errors become :class:`~fence_compute.power.PowerError`; :func:`classify` holds the mapping, from
the messages pyghmi 1.6.19 really gives against the lab's BMCs (tests/functional/test_ipmi_power.py).

Cipher suites: pyghmi does not let the caller choose.  It proposes suite 17 (SHA-256, AES) and,
when the BMC answers the Open Session with any error, suite 3 (SHA-1, AES); it speaks no other.
So ``cipher`` may be 3 or 17 and means "negotiate" either way; any other value is refused rather
than silently ignored.  IPMI 1.5 (``lanplus=false``) is refused too: pyghmi does not offer it.

pyghmi's session is imported on first use (about 30 ms, most of it ``cryptography``), never at
module import.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fence_compute.power import (
    CREDENTIALS,
    PROTOCOL,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    PowerError,
    PowerState,
    call_before,
)

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# IPMI 2.0 Chassis commands (netfn 0x00): Get Chassis Status, Chassis Control (section 28).
_NETFN_CHASSIS = 0x00
_GET_STATUS, _CONTROL = 0x01, 0x02
_CONTROL_DATA = {"off": 0x00, "on": 0x01}  # power down, power up
_CC_INSUFFICIENT_PRIVILEGE = 0xD4
# pyghmi's own marker for "retransmitted until it gave up", not a code from the BMC.
_CC_PYGHMI_TIMEOUT = 0xFFFF
SUPPORTED_CIPHERS = (3, 17)

# Login failures pyghmi reports as text (RAKP status codes, its HMAC checks).  Lower case.
_CREDENTIAL_WORDS = (
    "incorrect password",  # RAKP2 HMAC mismatch: the usual wrong password
    "unauthorized name",  # RMCP+ status 0x0d: unknown user
    "unauthorized role",  # 0x0a: the user may not have the privilege
    "invalid role",  # 0x09
    "invalid integrity check value",  # 0x0f: the BMC rejected our RAKP3 HMAC
    "rakp4 integrity",  # wrong Kg
    "password is too long",
    "username too long",
    "invalid username length",
)
_UNREACHABLE_WORDS = ("session no longer connected", "unable to transmit", "session failed to initialize")


@dataclass(frozen=True)
class BmcCredentials:
    address: str
    port: int = 623
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"BMC {host}:{self.port}"


def config_errors(lanplus: bool, cipher: int | None) -> list[str]:
    """Why pyghmi cannot honour these options (for validate-all); empty when it can."""
    errors = []
    if not lanplus:
        errors.append("power_driver=ipmi speaks IPMI 2.0 (lanplus) only; lanplus=false (IPMI 1.5,"
                      " no encryption) is not supported")
    if cipher is not None and cipher not in SUPPORTED_CIPHERS:
        errors.append(f"cipher={cipher} is not possible: pyghmi negotiates suite 17, then 3, and"
                      " offers no other")
    return errors


def classify(exc: BaseException, where: str, secret: str = "") -> PowerError:
    """Map what pyghmi raised to a PowerError kind with one line naming the BMC.

    pyghmi raises ``IpmiException`` for nearly everything, told apart only by its text; an
    unanswered login gives no text at all (``IpmiException(None)``).
    """
    if isinstance(exc, PowerError):
        return exc
    text = " ".join(str(exc.args[0] if exc.args else "").split())
    if secret:
        text = text.replace(secret, "***")  # no pyghmi message carries it; never let one slip
    lowered = text.lower()
    if not exc.args or exc.args[0] is None or any(w in lowered for w in _UNREACHABLE_WORDS):
        detail = f" ({text})" if text and text != "None" else ""
        return PowerError(UNREACHABLE, f"{where} did not answer{detail}")
    if any(w in lowered for w in _CREDENTIAL_WORDS):
        return PowerError(CREDENTIALS, f"{where} refused the login: {text}")
    if isinstance(exc, OSError):
        return PowerError(UNREACHABLE, f"{where} is unreachable: {exc.strerror or text}")
    return PowerError(PROTOCOL, f"{where}: {type(exc).__name__}: {text or 'no detail'}")


def _check_response(response: dict[str, Any], what: str, where: str) -> dict[str, Any]:
    """A raw_command answer: completion code 0, or a PowerError that names the code."""
    if not isinstance(response, dict):
        raise PowerError(PROTOCOL, f"{where}: no usable answer to {what}: {response!r:.80}")
    code = response.get("code", 0)
    if "error" not in response and not code:
        return response
    text = response.get("error") or "no detail"
    if code == _CC_PYGHMI_TIMEOUT:
        raise PowerError(UNREACHABLE, f"{where} stopped answering {what}")
    if code == _CC_INSUFFICIENT_PRIVILEGE:
        raise PowerError(CREDENTIALS, f"{where} refused {what}: {text} (completion code 0x{code:02x})")
    if code:
        raise PowerError(REFUSED, f"{where} refused {what}: {text} (completion code 0x{code:02x})")
    raise classify(Exception(text), where)  # an error without a code: a session-level failure


@functools.cache
def _session_class() -> type:
    """pyghmi's session, reading the answers already received before it waits for more
    (see the module's doc). Built on first use: pyghmi is imported only then."""
    from pyghmi.ipmi.private import session  # only when power is really touched

    class PromptSession(session.Session):
        def awaitresponse(self, retry: Any, netfn: int, command: int) -> None:
            self.process_pktqueue()  # the answer may be queued already
            super().awaitresponse(retry, netfn, command)

    return PromptSession


def _pyghmi_session(creds: BmcCredentials) -> Any:
    """Log in: ``Session()`` opens the session before it returns (as ``Command()`` does,
    with the same arguments)."""
    # bytes: with str, a second session to this BMC in this process hangs (see module doc).
    return _session_class()(bmc=creds.address, userid=creds.username.encode(),
                            password=creds.password.encode(), port=creds.port)


class IpmiPower:
    """One BMC, one pyghmi session (opened at the first call), each call bounded by a deadline."""

    verifies = True

    def __init__(self, credentials: BmcCredentials, *, lanplus: bool = True, cipher: int | None = None,
                 connect: Callable[[BmcCredentials], Any] = _pyghmi_session) -> None:
        errors = config_errors(lanplus, cipher)
        if errors:
            raise ValueError("; ".join(errors))
        self.credentials = credentials
        self._connect = connect  # tests put a fake client here
        self._session: Any = None

    @property
    def where(self) -> str:
        return self.credentials.where

    def __repr__(self) -> str:
        return f"IpmiPower({self.where})"

    def _call(self, what: str, call: Callable[[Any], T], deadline: float) -> T:
        creds = self.credentials
        if self._session is None:  # the login is part of this call, and where pyghmi hangs
            what = f"login and {what}"

        def work() -> T:
            if self._session is None:
                self._session = self._connect(creds)
            return call(self._session)

        try:
            return call_before(deadline, work, f"{creds.where} {what}")
        except Exception as exc:
            error = classify(exc, creds.where, creds.password)
            if error.kind in (UNREACHABLE, TIMEOUT):
                # A broken session is useless and a hung one still belongs to its thread: the next
                # call opens a new one, and close() does not wait for a BMC that went silent.
                self._session = None
            raise error from None

    def _raw(self, what: str, command: int, data: tuple[int, ...], deadline: float) -> dict[str, Any]:
        where = self.credentials.where

        def send(session: Any) -> dict[str, Any]:
            return _check_response(session.raw_command(netfn=_NETFN_CHASSIS, command=command, data=data),
                                   what, where)

        return self._call(what, send, deadline)

    def power_state(self, deadline: float) -> PowerState:
        """``on`` or ``off``, as the BMC reports it (Get Chassis Status, byte 1 bit 0)."""
        data = self._raw("get power status", _GET_STATUS, (), deadline).get("data") or []
        if not data:
            raise PowerError(PROTOCOL, f"{self.credentials.where}: empty chassis status")
        state: PowerState = "on" if data[0] & 1 else "off"
        LOG.debug("%s reports power %s", self.credentials.where, state)
        return state

    def set_power(self, state: PowerState, deadline: float) -> None:
        """Send Chassis Control (power down / up); returns once the BMC acknowledged it."""
        self._raw(f"power {state}", _CONTROL, (_CONTROL_DATA[state],), deadline)
        LOG.debug("%s acknowledged power %s", self.credentials.where, state)

    def close(self, deadline: float) -> None:
        """Log out, or the session stays open on the BMC until it expires (pyghmi never does)."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            call_before(deadline, session.logout, f"{self.credentials.where} logout")
        except Exception as exc:  # the BMC expires the session itself; nothing is at stake
            LOG.debug("%s: logout failed: %s", self.credentials.where,
                      classify(exc, self.credentials.where, self.credentials.password))
