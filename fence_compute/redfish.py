"""Power control over Redfish (DMTF DSP0266) with sushy, in-process, under the agent's deadline.

The driver reads ``PowerState`` of one ``ComputerSystem`` and posts ``ComputerSystem.Reset``
(``ForceOff`` / ``On``); :mod:`fence_compute.power` does the rest.  The choices:

* **Time.**  sushy's ``Connector`` retries a connection error 3 times with 2 s pauses (it
  makes ``server_side_retries or 3`` attempts, so 0 does not switch it off) and a GET answered
  5xx ``server_side_retries`` times, and its default request timeout is 60 s: any of these can
  outlast the deadline.  Our connector (:func:`_deadline_connector`) makes one attempt per
  request, with the connect timeout ``min(remaining, 5 s)`` and the read timeout the remaining
  time, and replaces sushy's 5xx retries by one rule: 503 (busy) is asked again after its
  ``Retry-After`` (or 0.5 s) while time remains, and at the deadline it is TIMEOUT ("busy
  (HTTP 503)"): the BMC answered, so UNREACHABLE would send the operator to the network, and
  the request was still pending when the time ran out, which is TIMEOUT's meaning.  Every call
  also runs in :func:`~fence_compute.power.call_before`'s worker thread, so nothing sushy does
  can outlast the deadline; a call that hung (or met a dead connection) drops its client, and
  the next call logs in again.
* **Only ``Off`` is off.**  ``On``, ``PoweringOn``, ``PoweringOff`` and ``Paused`` all mean the
  host still has power; any other value, or none, is PROTOCOL.
* **A refused reset is read back.**  Dell iDRAC answers ForceOff with 409 and HPE iLO with 400
  when the system already is off.  The sequence reads the state before it sends anything, so
  this matters when the host went off between that read and the reset: after any refusal
  (an HTTP error other than 401/403) the driver reads the state once more, and if it already
  is the wanted one the reset counts as acknowledged (logged at INFO); the sequence's poll
  then confirms it as for any other acknowledgement.  Otherwise REFUSED, with the status and
  the BMC's Redfish message.
* **TLS.**  A certificate that cannot be verified is PROTOCOL (never retried), with one line
  that says so and names ``ssl_ca_file`` / ``ssl_insecure``: it is a configuration to fix,
  not a BMC to wait for.  ``http://`` is refused (:class:`RedfishCredentials`): the BMC
  password would cross the network in clear text.  With ``verify=False`` sushy silences
  urllib3's InsecureRequestWarning; the driver logs once that verification is off.
* **Authentication.**  ``auto`` (sushy's ``SessionOrBasicAuth``): a session (``X-Auth-Token``),
  or HTTP basic when the BMC offers no session service; ``session`` and ``basic`` force one.
  :meth:`RedfishPower.close` deletes the session (BMCs allow few at a time).  A client dropped
  after a hang or a dead connection forgets its session instead (the BMC expires it): sushy
  would otherwise delete it from the garbage collector, with a request at an odd moment.
* **Secrets.**  sushy masks ``Password`` and ``X-Auth-Token`` in its DEBUG log of requests
  (``utils.sanitize``) and logs no response headers (tests/unit/test_redfish.py checks a
  session login logged at DEBUG); every message here has the password and the session token
  replaced by ``***``.

Errors become :class:`~fence_compute.power.PowerError` (:func:`classify`): 401/403 CREDENTIALS,
other HTTP errors REFUSED, no connection (refused, reset, unknown name, connect timeout)
UNREACHABLE, no answer by the deadline TIMEOUT, an answer we cannot use PROTOCOL.

sushy is imported on first use (about 0.2 s), never at module import: ``fence_nova``'s
``metadata`` and ``validate-all`` import this module for its checks.
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

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

DEFAULT_PORT = 443
AUTH_MODES = ("session", "basic", "auto")
SYSTEMS_PATH = "/redfish/v1/Systems/"
CONNECT_TIMEOUT = 5.0  # seconds; the read timeout is whatever the deadline leaves
BUSY_PAUSE = 0.5  # seconds before asking a busy (503) BMC again, when it names no Retry-After

# PowerState (Redfish Resource.PowerState): only Off is off.
_POWER_STATES: dict[str, PowerState] = {
    "Off": "off", "On": "on", "PoweringOn": "on", "PoweringOff": "on", "Paused": "on",
}
_RESET_TYPES: dict[PowerState, str] = {"off": "ForceOff", "on": "On"}
_MAX_DETAIL = 200  # characters of a BMC's message kept in ours
_NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


@dataclass(frozen=True)
class RedfishCredentials:
    """One Redfish service and how to log in to it.

    ``url``: ``https://address:port`` (no path; the service root is ``/redfish/v1/``).
    ``system``: the ComputerSystem's path (``/redfish/v1/Systems/1``) or bare id (``1``);
    None: the one system the service lists.  ``auth``: one of :data:`AUTH_MODES`.
    ``verify``: True (the system's trust store), False (no verification) or a CA file's path.
    """

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    system: str | None = None
    auth: str = "auto"
    verify: bool | str = True

    def __post_init__(self) -> None:
        if not self.url.lower().startswith("https://"):
            raise ValueError("a Redfish URL must be https://: the BMC password would otherwise"
                             " cross the network in clear text")
        if self.auth not in AUTH_MODES:
            raise ValueError(f"Redfish auth must be one of {', '.join(AUTH_MODES)}")
        if self.system is not None:
            system_path(self.system)

    @property
    def where(self) -> str:
        return f"BMC {self.url}"


def bmc_url(address: str, port: int | None = None) -> str:
    """``https://address:port`` for a bare address (IPv6 in brackets), port 443 by default."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"https://{host}:{port or DEFAULT_PORT}"


def system_path(value: str) -> str:
    """``redfish_system`` as a path: a path as given (without a trailing ``/``), a bare id
    under ``/redfish/v1/Systems/``.  ValueError when it is neither."""
    text = value.strip()
    if not text or any(c.isspace() or not c.isprintable() or c in "?#\\" for c in text):
        raise ValueError("must be a Redfish path (/redfish/v1/Systems/1) or a system id (1),"
                         " without white space, '?', '#' or '\\'")
    if text.startswith("/"):
        segments = text.strip("/").split("/")
        if any(s in ("", ".", "..") for s in segments):
            raise ValueError("must be a Redfish path without empty, '.' or '..' segments")
        return "/" + "/".join(segments)
    if "/" in text or text in (".", ".."):
        raise ValueError("must be a path starting with / (/redfish/v1/Systems/1) or a bare"
                         " system id (1)")
    return SYSTEMS_PATH + text


class RedfishClient(Protocol):
    """What :class:`RedfishPower` asks of one logged-in Redfish service (tests fake it).

    ``set_deadline`` bounds every request that follows; the others may raise sushy's, requests'
    or any exception, for :func:`classify`.
    """

    def set_deadline(self, deadline: float) -> None: ...

    def session_token(self) -> str:
        """The session's X-Auth-Token ("" without one), to keep it out of messages."""

    def system_paths(self) -> list[str]: ...

    def power_state(self, path: str) -> object:
        """The raw ``PowerState`` of the system at ``path``, read now (None when missing)."""

    def reset(self, path: str, reset_type: str) -> None: ...

    def close(self) -> None:
        """Log out (delete the session) and close the connections."""

    def forget(self) -> None:
        """Drop the session without a request (the BMC expires it): a client given up on."""


def _retry_after(value: str | None) -> float:
    """Seconds a 503's ``Retry-After`` asks for; its HTTP-date form is not worth parsing."""
    text = (value or "").strip()
    seconds = float(text) if text.isascii() and text.isdigit() else 0.0
    return seconds or BUSY_PAUSE  # "Retry-After: 0" would make a tight loop


@functools.cache
def _deadline_connector() -> type:
    """sushy's Connector bounded by a deadline (see the module doc), made on first use."""
    from sushy import connector, exceptions

    class DeadlineConnector(connector.Connector):
        def __init__(self, url: str, *, verify: bool | str, where: str) -> None:
            # server_side_retries=1: sushy then makes one attempt at a connection error.
            super().__init__(url, verify=verify, server_side_retries=1,
                             server_side_retries_delay=0, response_callback=self._remember)
            self.deadline = 0.0
            self.where = where
            self._retry_after: str | None = None

        def _remember(self, response: Any) -> None:
            self._retry_after = response.headers.get("Retry-After")

        def _op(self, method: str, path: str = "", data: Any = None, headers: Any = None,
                blocking: bool = False, timeout: Any = None, **kwargs: Any) -> Any:
            kwargs["server_side_retries_left"] = 0  # sushy's 5xx retries: ours below instead
            while True:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise PowerError(TIMEOUT, f"{self.where} {method} {path}: no time left")
                try:
                    return super()._op(method, path, data=data, headers=headers,
                                       blocking=blocking,
                                       timeout=(min(remaining, CONNECT_TIMEOUT), remaining),
                                       **kwargs)
                except exceptions.ServerSideError as exc:
                    if exc.status_code != 503:
                        raise
                    pause = min(_retry_after(self._retry_after), self.deadline - time.monotonic())
                    if time.monotonic() + pause >= self.deadline:
                        raise PowerError(TIMEOUT, f"{self.where} busy (HTTP 503) until the"
                                         f" deadline: {method} {path}") from None
                    LOG.debug("%s busy (HTTP 503) at %s %s; asking again in %.1fs",
                              self.where, method, path, pause)
                    time.sleep(pause)

    return DeadlineConnector


class SushyClient:
    """:class:`RedfishClient` on sushy: one service root, logged in by the constructor."""

    def __init__(self, creds: RedfishCredentials, deadline: float) -> None:
        import sushy  # 0.2 s, so only when power is really touched
        from sushy import auth

        self._reset_type = sushy.ResetType
        self.connector = _deadline_connector()(creds.url, verify=creds.verify, where=creds.where)
        self.connector.deadline = deadline
        auth_class = {"session": auth.SessionAuth, "basic": auth.BasicAuth,
                      "auto": auth.SessionOrBasicAuth}[creds.auth]
        self.auth = auth_class(username=creds.username, password=creds.password)
        # Reads the service root, then logs in (a session POST; basic sends nothing yet).
        self.root = sushy.Sushy(creds.url, auth=self.auth, connector=self.connector)

    def set_deadline(self, deadline: float) -> None:
        self.connector.deadline = deadline

    def session_token(self) -> str:
        get_key = getattr(self.auth, "get_session_key", None)
        return (get_key() if get_key else None) or ""

    def system_paths(self) -> list[str]:
        return list(self.root.get_system_collection().members_identities)

    def power_state(self, path: str) -> object:
        return self.root.get_system(path).json.get("PowerState")

    def reset(self, path: str, reset_type: str) -> None:
        self.root.get_system(path).reset_system(self._reset_type(reset_type))

    def close(self) -> None:
        try:
            self.auth.close()  # DELETE the session; basic: nothing
        finally:
            self.forget()
            self.connector.close()

    def forget(self) -> None:
        reset = getattr(self.auth, "reset_session_attrs", None)  # SessionAuth and its kin
        if reset is not None:
            reset()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: __cause__, __context__, urllib3's ``reason``, and
    exceptions passed as arguments (requests wraps urllib3's that way)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))


def _one_line(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."


def _http_detail(exc: Any) -> str:
    """``HTTP 409 <the BMC's Redfish message>`` of a sushy HTTPError."""
    detail = exc.detail or (exc.code if exc.body else "") or ""
    return f"HTTP {exc.status_code} {detail}".strip()


def classify(exc: BaseException, where: str, what: str, secrets: tuple[str, ...] = ()) -> PowerError:
    """Map what sushy (or requests under it) raised to a PowerError naming the BMC.

    ``secrets`` (the password, the session token) never reach the message.
    """
    if isinstance(exc, PowerError):
        return exc
    from requests import exceptions as http_errors
    from sushy import exceptions as sushy_errors

    def error(kind: str, text: str) -> PowerError:
        return PowerError(kind, _one_line(text, secrets))

    if isinstance(exc, sushy_errors.MissingXAuthToken):
        return error(PROTOCOL, f"{where} gave no X-Auth-Token for the session ({what});"
                     " try redfish_auth=basic")
    if isinstance(exc, sushy_errors.AccessError):
        return error(CREDENTIALS, f"{where} refused {what}: {_http_detail(exc)}")
    if isinstance(exc, sushy_errors.HTTPError):
        return error(REFUSED, f"{where} refused {what}: {_http_detail(exc)}")
    if isinstance(exc, sushy_errors.ConnectionError):
        return _connection_error(exc, where, what, error, http_errors)
    if isinstance(exc, sushy_errors.SushyError):
        return error(PROTOCOL, f"{where}: unusable answer to {what}: {exc.message or exc}")
    return error(PROTOCOL, f"{where}: unusable answer to {what}: {type(exc).__name__}: {exc}")


def _connection_error(exc: BaseException, where: str, what: str,
                      error: Callable[[str, str], PowerError], http_errors: Any) -> PowerError:
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "no detail"
            fix = ("use an address the certificate names" if cause.verify_code in _NAME_MISMATCH
                   else "set ssl_ca_file to the CA that signed it")
            return error(PROTOCOL, f"{where}: its TLS certificate could not be verified ({reason});"
                         f" {fix} (or ssl_insecure)")
    for cause in causes:
        if isinstance(cause, ssl.SSLError):  # "[SSL: WRONG_VERSION_NUMBER] wrong version number"
            text = str(cause.args[1] if len(cause.args) > 1 else cause)
            reason = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
            return error(PROTOCOL, f"{where}: TLS failed for {what}: {reason}")
    if any(isinstance(c, http_errors.SSLError) for c in causes):
        return error(PROTOCOL, f"{where}: TLS failed for {what}")
    if any(isinstance(c, http_errors.ConnectTimeout) for c in causes):
        return error(UNREACHABLE, f"{where} did not answer {what} (connect timeout)")
    if any(isinstance(c, http_errors.ReadTimeout) for c in causes):
        return error(TIMEOUT, f"{where} {what}: no answer within the deadline")
    for cause in reversed(causes):  # the innermost socket error says it best
        if isinstance(cause, OSError) and cause.strerror:
            return error(UNREACHABLE, f"{where} is unreachable: {cause.strerror}")
    innermost = causes[-1]
    return error(UNREACHABLE, f"{where} did not answer {what}: {type(innermost).__name__}:"
                 f" {innermost}")


class RedfishPower:
    """One Redfish service, one login (at the first call), each call bounded by a deadline."""

    verifies = True

    def __init__(self, credentials: RedfishCredentials, *,
                 connect: Callable[[RedfishCredentials, float], RedfishClient] = SushyClient) -> None:
        self.credentials = credentials
        self._connect = connect  # tests put a fake client here
        self._client: RedfishClient | None = None
        self._system = system_path(credentials.system) if credentials.system else None
        if credentials.verify is False:
            LOG.warning("%s: its TLS certificate is not verified (ssl_insecure)", self.where)

    @property
    def where(self) -> str:
        return self.credentials.where

    def __repr__(self) -> str:
        return f"RedfishPower({self.where})"

    def _secrets(self, *clients: RedfishClient | None) -> tuple[str, ...]:
        return (self.credentials.password, *(c.session_token() for c in clients if c is not None))

    def _call(self, what: str, call: Callable[[RedfishClient, str], T], deadline: float) -> T:
        where, done = self.where, what
        if self._client is None:  # the login is part of this call (and where a BMC may hang)
            what = f"login and {what}"
        fresh: list[RedfishClient] = []

        def work() -> T:
            client = self._client
            if client is None:
                client = self._connect(self.credentials, deadline)
                fresh.append(client)
            else:
                client.set_deadline(deadline)
            if self._system is None:
                self._system = self._discover_system(client)
            return call(client, self._system)

        try:
            result = call_before(deadline, work, f"{where} {what}")
        except Exception as exc:
            # Once logged in, an answer is about the request itself ("refused power off").
            error = classify(exc, where, done if fresh else what,
                             self._secrets(self._client, *fresh))
            if error.kind in (UNREACHABLE, TIMEOUT):
                # A dead connection is useless and a hung one still belongs to its thread: the
                # next call logs in again, and close() does not wait for a BMC that went silent.
                for client in (self._client, *fresh):
                    if client is not None:
                        client.forget()
                self._client = None
            elif fresh:
                self._client = fresh[0]  # logged in: close() ends the session
            raise error from None
        if fresh:
            self._client = fresh[0]
        return result

    def _discover_system(self, client: RedfishClient) -> str:
        paths = client.system_paths()
        if len(paths) == 1:
            LOG.debug("%s: the system is %s", self.where, paths[0])
            return paths[0]
        if not paths:
            raise PowerError(PROTOCOL, f"{self.where} lists no system; set redfish_system")
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise PowerError(PROTOCOL, f"{self.where} has {len(paths)} systems ({shown});"
                         " set redfish_system")

    def power_state(self, deadline: float) -> PowerState:
        """``on`` or ``off``, as the BMC reports the system's ``PowerState`` (only Off is off)."""
        raw = self._call("get power state", lambda client, path: client.power_state(path), deadline)
        state = _POWER_STATES.get(raw) if isinstance(raw, str) else None
        if state is None:
            said = "no PowerState" if raw is None else f"PowerState {str(raw)[:40]!r}"
            raise PowerError(PROTOCOL, f"{self.where}: {self._system} reports {said}, not a"
                             " Redfish power state")
        LOG.debug("%s reports PowerState %s (%s)", self.where, raw, state)
        return state

    def set_power(self, state: PowerState, deadline: float) -> None:
        """Post ComputerSystem.Reset (ForceOff / On); returns once the BMC acknowledged it, or
        refused it while already reporting ``state`` (see the module doc)."""
        reset_type = _RESET_TYPES[state]
        try:
            self._call(f"power {state}", lambda client, path: client.reset(path, reset_type),
                       deadline)
        except PowerError as refused:
            if refused.kind != REFUSED:
                raise
            try:
                seen = self.power_state(deadline)
            except PowerError:
                raise refused from None
            if seen != state:
                raise refused from None
            LOG.info("%s; it reports %s already, so the request counts as acknowledged",
                     refused.message, state)
            return
        LOG.debug("%s acknowledged power %s (%s)", self.where, state, reset_type)

    def close(self, deadline: float) -> None:
        """Delete the session, or it stays open on the BMC until it expires.  Never raises."""
        client, self._client = self._client, None
        if client is None:
            return

        def logout() -> None:
            client.set_deadline(deadline)
            client.close()

        try:
            call_before(deadline, logout, f"{self.where} logout")
        except Exception as exc:  # the BMC expires the session itself; nothing is at stake
            client.forget()
            LOG.debug("%s: logout failed: %s", self.where,
                      classify(exc, self.where, "logout", self._secrets(client)))
