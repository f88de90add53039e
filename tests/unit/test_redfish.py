"""The Redfish power driver (fence_compute.redfish) and how fence_nova builds it.

Two layers.  The driver's own logic (system discovery, PowerState mapping, a refused reset read
back, dropping a hung client, close, secrets) runs against a fake :class:`RedfishClient`.  The
status-code mapping runs through the real sushy against :class:`FakeRedfish`, a minimal Redfish
service (service root, SessionService, Systems, ComputerSystem.Reset) on HTTPS on loopback, so
the exceptions classified are sushy's and requests' own.  The TLS material is a throwaway CA and
a certificate for 127.0.0.1, made with ``cryptography``.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tls_helpers import Tls, make_tls

from fence_compute import redfish
from fence_compute.actions import power_driver
from fence_compute.fence_nova import FENCE_NOVA
from fence_compute.ipmi import IpmiPower
from fence_compute.power import (
    CREDENTIALS,
    PROTOCOL,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    PowerError,
    power_confirmed,
)
from fence_compute.protocol import FenceError, Options
from fence_compute.redfish import RedfishCredentials, RedfishPower, bmc_url, system_path

PASSWORD = "rf-Sup3rSecret-pw"
USER = "admin"
URL = "https://10.0.0.11:443"
CREDS = RedfishCredentials(URL, USER, PASSWORD)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


# ----------------------------------------------------------------------- the driver, fake client


@dataclass
class FakeClient:
    """A RedfishClient in memory: ``states`` per system path, ``fail[call]`` exceptions to raise
    first (a callable instead is run: it may block), ``after_reset`` the state a reset leaves."""

    states: dict[str, object] = field(default_factory=lambda: {"/redfish/v1/Systems/1": "On"})
    fail: dict[str, list[Any]] = field(default_factory=dict)
    token: str = "tok-0123456789abcdef"
    resets: list[tuple[str, str]] = field(default_factory=list)
    closed: int = 0
    forgotten: int = 0
    deadlines: list[float] = field(default_factory=list)

    def _enter(self, call: str) -> None:
        queue = self.fail.get(call) or []
        if queue:
            failure = queue.pop(0)
            if isinstance(failure, BaseException):
                raise failure
            failure()

    def set_deadline(self, deadline: float) -> None:
        self.deadlines.append(deadline)

    def session_token(self) -> str:
        return self.token

    def system_paths(self) -> list[str]:
        self._enter("system_paths")
        return list(self.states)

    def power_state(self, path: str) -> object:
        self._enter("power_state")
        return self.states[path]

    def reset(self, path: str, reset_type: str) -> None:
        self._enter("reset")
        self.resets.append((path, reset_type))
        self.states[path] = "Off" if reset_type == "ForceOff" else "On"

    def close(self) -> None:
        self._enter("close")
        self.closed += 1

    def forget(self) -> None:
        self.forgotten += 1


def fake_driver(*clients: Any, creds: RedfishCredentials = CREDS) -> tuple[RedfishPower, list]:
    """A RedfishPower whose logins give ``clients`` in turn (a client, a callable, an exception);
    also the list of (creds, deadline) each login was given."""
    queue, logins = list(clients), []

    def connect(given: RedfishCredentials, deadline: float) -> Any:
        logins.append((given, deadline))
        client = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(client, BaseException):
            raise client
        return client() if callable(client) else client

    return RedfishPower(creds, connect=connect), logins


@pytest.mark.parametrize(("raw", "state"), [("Off", "off"), ("On", "on"), ("PoweringOn", "on"),
                                            ("PoweringOff", "on"), ("Paused", "on")])
def test_only_off_is_off(raw: str, state: str):
    drv, _ = fake_driver(FakeClient({"/redfish/v1/Systems/1": raw}))
    assert drv.power_state(soon()) == state


@pytest.mark.parametrize("raw", [None, "off", "Standby", "", 0, ["Off"]])
def test_an_unknown_or_missing_power_state_is_a_protocol_error(raw: object):
    drv, _ = fake_driver(FakeClient({"/redfish/v1/Systems/1": raw}))
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    assert err.value.kind == PROTOCOL
    assert err.value.message.startswith(f"BMC {URL}: /redfish/v1/Systems/1 reports ")


def test_the_only_system_is_found_once_and_the_session_is_reused_and_closed_once():
    client = FakeClient()
    drv, logins = fake_driver(client)
    assert drv.power_state(soon()) == "on"
    drv.set_power("off", soon())
    assert drv.power_state(soon()) == "off"
    drv.set_power("on", soon())
    assert client.resets == [("/redfish/v1/Systems/1", "ForceOff"), ("/redfish/v1/Systems/1", "On")]
    assert len(logins) == 1 and len(client.deadlines) == 3  # the login call got its deadline
    drv.close(soon())
    drv.close(soon())
    assert client.closed == 1


@pytest.mark.parametrize(("paths", "message"), [
    ([], f"BMC {URL} lists no system; set redfish_system"),
    (["/redfish/v1/Systems/1", "/redfish/v1/Systems/2"],
     f"BMC {URL} has 2 systems (/redfish/v1/Systems/1, /redfish/v1/Systems/2); set redfish_system"),
])
def test_zero_or_several_systems_need_redfish_system(paths: list[str], message: str):
    drv, _ = fake_driver(FakeClient(dict.fromkeys(paths, "On")))
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    assert err.value.kind == PROTOCOL and err.value.message == message


@pytest.mark.parametrize("system", ["2", "/redfish/v1/Systems/2", "/redfish/v1/Systems/2/"])
def test_redfish_system_picks_one_of_several(system: str):
    client = FakeClient({"/redfish/v1/Systems/1": "On", "/redfish/v1/Systems/2": "Off"})
    drv, _ = fake_driver(client, creds=RedfishCredentials(URL, USER, PASSWORD, system=system))
    assert drv.power_state(soon()) == "off"


@pytest.mark.parametrize(("value", "path"), [
    ("1", "/redfish/v1/Systems/1"), ("System.Embedded.1", "/redfish/v1/Systems/System.Embedded.1"),
    ("/redfish/v1/Systems/437XR1138R2/", "/redfish/v1/Systems/437XR1138R2"),
    (" /redfish/v1/Systems/1 ", "/redfish/v1/Systems/1"),
])
def test_system_path_takes_a_path_or_an_id(value: str, path: str):
    assert system_path(value) == path


@pytest.mark.parametrize("value", ["", " ", "Systems/1", "/redfish/v1/Systems/../1", "1 2",
                                   "/redfish//v1", "1?x", "1#x", "..", "a\\b", "a\x00"])
def test_system_path_refuses_what_is_neither(value: str):
    with pytest.raises(ValueError):
        system_path(value)


@pytest.mark.parametrize("status", ["Off", "PoweringOff"])
def test_a_refused_reset_is_read_back_and_taken_as_acknowledged_only_when_off(status, caplog):
    refusal = PowerError(REFUSED, f"BMC {URL} refused power off: HTTP 409 Already off")
    client = FakeClient({"/redfish/v1/Systems/1": status}, fail={"reset": [refusal]})
    drv, _ = fake_driver(client)
    caplog.set_level(logging.INFO, logger="fence_compute.redfish")
    if status == "Off":
        drv.set_power("off", soon())
        assert (f"BMC {URL} refused power off: HTTP 409 Already off; it reports off already, so"
                " the request counts as acknowledged") in caplog.text
    else:
        with pytest.raises(PowerError) as err:
            drv.set_power("off", soon())
        assert err.value is refusal


@pytest.mark.parametrize("kind", [CREDENTIALS, PROTOCOL, UNREACHABLE])
def test_only_a_refusal_is_read_back(kind: str):
    client = FakeClient({"/redfish/v1/Systems/1": "Off"},
                        fail={"reset": [PowerError(kind, "BMC x: no")]})
    drv, _ = fake_driver(client)
    with pytest.raises(PowerError) as err:
        drv.set_power("off", soon())
    assert err.value.kind == kind


def test_a_hung_login_times_out_at_the_deadline_and_the_next_call_logs_in_again():
    release = threading.Event()
    client = FakeClient()
    drv, logins = fake_driver(lambda: release.wait(30) and client, client)
    t0 = time.monotonic()
    with pytest.raises(PowerError) as err:
        drv.power_state(t0 + 0.3)
    assert err.value.kind == TIMEOUT and 0.3 <= time.monotonic() - t0 < 0.3 + 1.5
    assert err.value.message.startswith(f"BMC {URL} login and get power state: no answer within")
    drv.close(soon())  # nothing to close, nothing waited for
    assert drv.power_state(soon()) == "on" and len(logins) == 2
    release.set()


def test_a_call_that_hangs_drops_the_client_which_forgets_its_session():
    release = threading.Event()
    first = FakeClient(fail={"power_state": [lambda: None, lambda: release.wait(30)]})
    second = FakeClient()
    drv, logins = fake_driver(first, second)
    assert drv.power_state(soon()) == "on"  # logged in; the next read hangs
    t0 = time.monotonic()
    with pytest.raises(PowerError) as err:
        drv.power_state(t0 + 0.3)
    assert err.value.kind == TIMEOUT and time.monotonic() - t0 < 0.3 + 1.5
    assert first.forgotten == 1 and first.closed == 0
    assert drv.power_state(soon()) == "on" and len(logins) == 2
    drv.close(soon())
    assert second.closed == 1
    release.set()


def test_close_never_raises_and_does_not_wait_past_its_deadline():
    release = threading.Event()
    hangs = FakeClient(fail={"close": [lambda: release.wait(30)]})
    drv, _ = fake_driver(hangs)
    drv.power_state(soon())
    t0 = time.monotonic()
    drv.close(t0 + 0.2)
    assert time.monotonic() - t0 < 0.2 + 1.5 and hangs.forgotten == 1
    release.set()
    broken = FakeClient(fail={"close": [OSError(104, "Connection reset by peer")]})
    drv, _ = fake_driver(broken)
    drv.power_state(soon())
    drv.close(soon())


def test_messages_never_carry_the_password_or_the_session_token():
    client = FakeClient(fail={"power_state": [RuntimeError(f"odd {PASSWORD} and tok-0123456789abcdef")]})
    drv, _ = fake_driver(client)
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    assert err.value.kind == PROTOCOL
    assert PASSWORD not in str(err.value) and "tok-0123456789abcdef" not in str(err.value)
    assert "***" in str(err.value)
    assert PASSWORD not in repr(CREDS) and PASSWORD not in repr(drv)


def test_credentials_refuse_http_and_unknown_auth_and_name_the_bmc_without_secrets():
    with pytest.raises(ValueError, match="https"):
        RedfishCredentials("http://10.0.0.11", USER, PASSWORD)
    with pytest.raises(ValueError, match="auth"):
        RedfishCredentials(URL, USER, PASSWORD, auth="digest")
    with pytest.raises(ValueError):
        RedfishCredentials(URL, USER, PASSWORD, system="a b")
    assert CREDS.where == "BMC https://10.0.0.11:443"
    assert bmc_url("10.0.0.11") == "https://10.0.0.11:443"
    assert bmc_url("fd00::11", 8443) == "https://[fd00::11]:8443"
    assert bmc_url("bmc-1.example.org", 443) == "https://bmc-1.example.org:443"


def _sushy_connection_error(cause: BaseException) -> BaseException:
    """What sushy raises for a failed request: its ConnectionError, in the context of requests'."""
    from sushy import exceptions

    wrapped = exceptions.ConnectionError(url="https://10.0.0.11/redfish/v1/", error=cause)
    wrapped.__context__ = cause  # sushy raises it inside "except ... as e"
    return wrapped


def _classify_cases() -> list[tuple[BaseException, str, str]]:
    from requests import exceptions as http
    from sushy import exceptions

    return [
        (_sushy_connection_error(http.ConnectTimeout("connect timed out")), UNREACHABLE,
         f"BMC {URL} did not answer get power state (connect timeout)"),
        (_sushy_connection_error(http.ReadTimeout("read timed out")), TIMEOUT,
         f"BMC {URL} get power state: no answer within the deadline"),
        (_sushy_connection_error(http.ConnectionError(ConnectionResetError(104, "Connection reset"
                                                                           " by peer"))),
         UNREACHABLE, f"BMC {URL} is unreachable: Connection reset by peer"),
        (_sushy_connection_error(http.ConnectionError(socket.gaierror(-2, "Name or service not"
                                                                      " known"))),
         UNREACHABLE, f"BMC {URL} is unreachable: Name or service not known"),
        (exceptions.MissingActionError(action="#ComputerSystem.Reset", resource="/x"), PROTOCOL,
         f"BMC {URL}: unusable answer to get power state: The action #ComputerSystem.Reset is"
         " missing from the resource /x"),
        (ValueError("Expecting value: line 1 column 1 (char 0)"), PROTOCOL,
         f"BMC {URL}: unusable answer to get power state: ValueError: Expecting value: line 1"
         " column 1 (char 0)"),
    ]


def test_classify_maps_what_sushy_and_requests_raise():
    for exc, kind, message in _classify_cases():
        error = redfish.classify(exc, f"BMC {URL}", "get power state")
        assert (error.kind, error.message) == (kind, message)


def test_retry_after_is_read_in_seconds_or_defaults():
    assert redfish._retry_after("3") == 3.0
    for value in (None, "", "0", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5", "\u0663"):
        assert redfish._retry_after(value) == redfish.BUSY_PAUSE


def test_importing_the_driver_does_not_import_sushy():
    code = ("import sys, fence_compute.redfish, fence_compute.fence_nova;"
            " print('sushy' in sys.modules, 'requests' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# -------------------------------------------------------------------- fence_nova builds the driver


def _options(**values: Any) -> Options:
    base = {"cloud": "overcloud", "bmc_username": USER, "bmc_password": PASSWORD,
            "power_driver": "redfish"}
    return Options.for_agent(FENCE_NOVA, {**base, **values})


@pytest.mark.parametrize(("values", "host", "url"), [
    ({"ip": "10.0.0.11"}, "c1", "https://10.0.0.11:443"),
    ({"ip": "10.0.0.11", "ipport": "8443"}, "c1", "https://10.0.0.11:8443"),
    ({"ip": "fd00::11"}, "c1", "https://[fd00::11]:443"),
    ({"bmc_map": "c1=https://bmc1:8443,c2=10.0.0.12"}, "c1", "https://bmc1:8443"),
    ({"bmc_map": "c1=https://bmc1:8443,c2=10.0.0.12"}, "c2", "https://10.0.0.12:443"),
    ({"bmc_map": "c1=https://[fd00::11]/", "ipport": "9443"}, "c1", "https://[fd00::11]:9443"),
])
def test_fence_nova_builds_a_redfish_driver_from_ip_or_bmc_map(values, host, url):
    drv = power_driver(_options(**values), host)
    assert isinstance(drv, RedfishPower)
    assert drv.credentials == RedfishCredentials(url, USER, PASSWORD)


@pytest.mark.parametrize(("values", "verify"), [
    ({}, True), ({"ssl_insecure": "1"}, False), ({"ssl_ca_file": "/etc/bmc-ca.pem"}, "/etc/bmc-ca.pem"),
])
def test_fence_nova_passes_the_tls_choice(values, verify):
    drv = power_driver(_options(ip="10.0.0.11", **values), "c1")
    assert drv.credentials.verify == verify


def test_fence_nova_passes_system_and_auth():
    drv = power_driver(_options(ip="10.0.0.11", redfish_system="2", redfish_auth="Session"), "c1")
    assert (drv.credentials.system, drv.credentials.auth) == ("2", "session")


def test_ipmi_keeps_its_port_and_refuses_a_redfish_url():
    drv = power_driver(_options(ip="10.0.0.11", power_driver="ipmi"), "c1")
    assert isinstance(drv, IpmiPower) and drv.credentials.port == 623
    with pytest.raises(FenceError, match="bmc_map entry for c1 is a Redfish URL but power_driver=ipmi"):
        power_driver(_options(bmc_map="c1=https://bmc1", power_driver="ipmi"), "c1")


# ------------------------------------------------------------------ real sushy, fake Redfish service


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway CA and a certificate for 127.0.0.1 it signed."""
    return make_tls(tmp_path_factory.mktemp("tls"), "test BMC CA")


@dataclass
class Answer:
    """A scripted answer to the next request matching ``method`` and ``path``."""

    method: str
    path: str
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many requests it answers; -1: all


def redfish_error(message: str, code: str = "Base.1.0.GeneralError") -> dict[str, Any]:
    return {"error": {"code": code, "message": message,
                      "@Message.ExtendedInfo": [{"MessageId": code, "Message": message,
                                                 "Severity": "Warning"}]}}


class FakeRedfish:
    """The Redfish a fence needs, on HTTPS at 127.0.0.1: service root, sessions, systems, reset.

    ``systems``: id -> PowerState.  A reset changes the state at once, or (``off_after``) after
    that many more reads of the system.  ``answers`` override the next matching requests;
    ``hang`` makes every request after the login wait (until the server stops).
    """

    def __init__(self, tls: Tls) -> None:
        self.systems: dict[str, str] = {"1": "On"}
        self.sessions_enabled = True
        self.answers: list[Answer] = []
        self.hang = False
        self.off_after = 0
        self.pending_off: int | None = None
        self.tokens: dict[str, str] = {}  # token -> session path
        self.deleted: list[str] = []
        self.requests: list[tuple[str, str, str]] = []  # method, path, how authenticated
        self.connections = 0
        self.stopped = threading.Event()
        self.ca_file = tls.ca_file
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self.context = context
        self.server = _Server(self)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def creds(self, **more: Any) -> RedfishCredentials:
        fields = {"url": self.url, "username": USER, "password": PASSWORD,
                  "verify": str(self.ca_file), **more}
        return RedfishCredentials(**fields)

    # what the handler asks

    def authenticated(self, headers: Any) -> str | None:
        token = headers.get("X-Auth-Token")
        if token is not None:
            return "session" if token in self.tokens else None
        basic = headers.get("Authorization", "")
        expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return "basic" if basic == f"Basic {expected}" else None

    def scripted(self, method: str, path: str) -> Answer | None:
        for answer in self.answers:
            if answer.method == method and path.startswith(answer.path):
                if answer.times > 0:
                    answer.times -= 1
                    if answer.times == 0:
                        self.answers.remove(answer)
                return answer
        return None

    def system(self, ident: str) -> dict[str, Any]:
        if self.pending_off is not None:
            if self.pending_off <= 0:
                self.systems[ident], self.pending_off = "Off", None
            else:
                self.pending_off -= 1
        path = f"/redfish/v1/Systems/{ident}"
        return {"@odata.id": path, "Id": ident, "Name": f"system {ident}",
                "PowerState": self.systems[ident],
                "Actions": {"#ComputerSystem.Reset": {
                    "target": f"{path}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown"]}}}

    def root(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"@odata.id": "/redfish/v1/", "Id": "RootService", "Name": "Root",
                               "RedfishVersion": "1.6.0",
                               "Systems": {"@odata.id": "/redfish/v1/Systems"}}
        if self.sessions_enabled:
            doc["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
            doc["Links"] = {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
        return doc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeRedfish) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        self.fake.connections += 1
        try:  # the handshake here, not in accept(): a client refusing our certificate is quiet
            wrapped = self.fake.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(wrapped, client_address, self)
        finally:
            wrapped.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (the driver gave up on a hung request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _handle(self, method: str) -> None:
        fake, path = self.server.fake, self.path.rstrip("/") or "/"
        body = self._body() if method in ("POST", "PATCH") else {}
        how = fake.authenticated(self.headers)
        fake.requests.append((method, path, how or "-"))
        if fake.hang and path != "/redfish/v1" and "Sessions" not in path:
            fake.stopped.wait(30)
            return
        answer = fake.scripted(method, path)
        if answer is not None:
            return self._send(answer.status, answer.body, answer.headers)
        if path == "/redfish/v1" and method == "GET":
            return self._send(200, fake.root())
        if path == "/redfish/v1/SessionService/Sessions" and method == "POST":
            if not fake.sessions_enabled:
                return self._send(404, redfish_error("no session service"))
            if body != {"UserName": USER, "Password": PASSWORD}:
                return self._send(401, redfish_error("Invalid user name or password",
                                                     "Base.1.0.NoValidSession"))
            token = "tok-" + secrets.token_hex(16)
            location = f"/redfish/v1/SessionService/Sessions/{len(fake.tokens) + 1}"
            fake.tokens[token] = location
            return self._send(201, {"@odata.id": location, "UserName": USER},
                              {"X-Auth-Token": token, "Location": location})
        if how is None:
            return self._send(401, redfish_error("authentication needed",
                                                 "Base.1.0.InsufficientPrivilege"))
        if path.startswith("/redfish/v1/SessionService/Sessions/") and method == "DELETE":
            fake.deleted.append(path)
            return self._send(204)
        if path == "/redfish/v1/Systems" and method == "GET":
            members = [{"@odata.id": f"/redfish/v1/Systems/{i}"} for i in fake.systems]
            return self._send(200, {"@odata.id": "/redfish/v1/Systems", "Name": "Systems",
                                    "Members": members, "Members@odata.count": len(members)})
        parts = path.split("/")
        if len(parts) >= 5 and parts[:4] == ["", "redfish", "v1", "Systems"] \
                and parts[4] in fake.systems:
            ident = parts[4]
            if len(parts) == 5 and method == "GET":
                return self._send(200, fake.system(ident))
            if parts[5:] == ["Actions", "ComputerSystem.Reset"] and method == "POST":
                reset = body.get("ResetType")
                if reset == "ForceOff" and fake.off_after:
                    fake.pending_off = fake.off_after
                elif reset in ("ForceOff", "On"):
                    fake.systems[ident] = "Off" if reset == "ForceOff" else "On"
                return self._send(204)
        return self._send(404, redfish_error(f"{path} not found"))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@pytest.fixture
def bmc(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRedfish]:
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                  "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(redfish, "BUSY_PAUSE", 0.05)
    fake = FakeRedfish(tls)
    yield fake
    fake.stop()


def test_sushy_reads_and_resets_over_a_session_and_deletes_it(bmc: FakeRedfish):
    drv = RedfishPower(bmc.creds(auth="session"))
    assert drv.power_state(soon()) == "on"
    drv.set_power("off", soon())
    assert drv.power_state(soon()) == "off"
    drv.close(soon())
    assert bmc.deleted == ["/redfish/v1/SessionService/Sessions/1"]
    login = [("GET", "/redfish/v1", "-"), ("POST", "/redfish/v1/SessionService/Sessions", "-")]
    assert bmc.requests[:2] == login
    assert {how for _, _, how in bmc.requests[2:]} == {"session"}


def test_basic_auth_sends_no_session_and_auto_falls_back_to_it(bmc: FakeRedfish):
    drv = RedfishPower(bmc.creds(auth="basic"))
    assert drv.power_state(soon()) == "on"
    drv.close(soon())
    assert not bmc.tokens and ("GET", "/redfish/v1/Systems/1", "basic") in bmc.requests
    bmc.sessions_enabled = False
    drv = RedfishPower(bmc.creds(auth="auto"))
    drv.set_power("off", soon())
    drv.close(soon())
    assert not bmc.tokens and bmc.systems["1"] == "Off" and not bmc.deleted


@pytest.mark.parametrize("status", [409, 400])
def test_a_refused_force_off_on_a_system_already_off_is_acknowledged(bmc: FakeRedfish, status, caplog):
    bmc.systems["1"] = "Off"
    bmc.answers.append(Answer("POST", "/redfish/v1/Systems/1/Actions", status,
                              redfish_error("The system is already powered off")))
    caplog.set_level(logging.INFO, logger="fence_compute.redfish")
    drv = RedfishPower(bmc.creds())
    drv.set_power("off", soon())
    drv.close(soon())
    assert f"refused power off: HTTP {status} The system is already powered off" in caplog.text
    assert "it reports off already, so the request counts as acknowledged" in caplog.text


def test_a_refused_force_off_on_a_system_still_on_is_refused(bmc: FakeRedfish):
    bmc.answers.append(Answer("POST", "/redfish/v1/Systems/1/Actions", 409,
                              redfish_error("A conflicting operation is in progress")))
    drv = RedfishPower(bmc.creds())
    with pytest.raises(PowerError) as err:
        drv.set_power("off", soon())
    drv.close(soon())
    assert err.value.kind == REFUSED
    assert err.value.message == (f"BMC {bmc.url} refused power off: HTTP 409 A conflicting"
                                 " operation is in progress")


@pytest.mark.parametrize("auth", ["session", "auto", "basic"])
def test_a_wrong_password_is_a_credentials_error(bmc: FakeRedfish, auth: str, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + PASSWORD
    drv = RedfishPower(bmc.creds(auth=auth, password=wrong))
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    drv.close(soon())
    # a session is refused at the login; basic credentials at the first request they are sent with
    refused = "login and get power state" if auth == "session" else "get power state"
    assert err.value.kind == CREDENTIALS
    assert err.value.message.startswith(f"BMC {bmc.url} refused {refused}: HTTP 401 ")
    assert wrong not in str(err.value) and wrong not in caplog.text


def test_a_busy_bmc_is_asked_again_until_it_answers(bmc: FakeRedfish):
    bmc.answers.append(Answer("POST", "/redfish/v1/Systems/1/Actions", 503,
                              redfish_error("busy"), {"Retry-After": "0"}, times=2))
    drv = RedfishPower(bmc.creds())
    drv.set_power("off", soon())
    drv.close(soon())
    resets = [r for r in bmc.requests if r[0] == "POST" and "Reset" in r[1]]
    assert len(resets) == 3 and bmc.systems["1"] == "Off"


def test_a_bmc_busy_until_the_deadline_is_a_timeout_that_says_so(bmc: FakeRedfish):
    bmc.answers.append(Answer("GET", "/redfish/v1/Systems/1", 503, None, times=-1))
    drv = RedfishPower(bmc.creds())
    t0 = time.monotonic()
    # 3 s: the login (TLS, a session) must be over before the deadline on a loaded machine,
    # so that the deadline finds the driver waiting on the busy BMC
    with pytest.raises(PowerError) as err:
        drv.power_state(t0 + 3.0)
    elapsed = time.monotonic() - t0
    drv.close(soon())
    assert err.value.kind == TIMEOUT and "busy (HTTP 503) until the deadline" in err.value.message
    assert elapsed < 3.0 + 1.5


def test_a_certificate_that_cannot_be_verified_is_one_protocol_line_never_retried(bmc: FakeRedfish):
    drv = RedfishPower(bmc.creds(verify=True))  # the system's trust store: not our CA
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    assert err.value.kind == PROTOCOL and "\n" not in err.value.message
    assert err.value.message.startswith(f"BMC {bmc.url}: its TLS certificate could not be verified (")
    assert err.value.message.endswith("set ssl_ca_file to the CA that signed it (or ssl_insecure)")
    handshakes = bmc.connections
    outcome = power_confirmed(RedfishPower(bmc.creds(verify=True)), "off", soon(), attempts=3)
    assert outcome.kind == PROTOCOL and outcome.attempts == 1
    assert bmc.connections == handshakes + 1  # neither sushy nor the sequence tried again


def test_a_certificate_for_another_name_says_so(bmc: FakeRedfish):
    creds = bmc.creds(url=bmc.url.replace("127.0.0.1", "localhost"))
    with pytest.raises(PowerError) as err:
        RedfishPower(creds).power_state(soon())
    assert err.value.kind == PROTOCOL
    assert err.value.message == (
        f"BMC {creds.url}: its TLS certificate could not be verified (Hostname mismatch,"
        " certificate is not valid for 'localhost'.); use an address the certificate names"
        " (or ssl_insecure)")


def test_tls_to_a_port_that_speaks_plain_http_is_a_protocol_error(bmc: FakeRedfish):
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=plain.serve_forever, args=(0.02,), daemon=True).start()
    try:
        with pytest.raises(PowerError) as err:
            RedfishPower(bmc.creds(url=f"https://127.0.0.1:{plain.server_address[1]}")
                         ).power_state(soon())
    finally:
        plain.shutdown()
        plain.server_close()
    assert err.value.kind == PROTOCOL and "TLS failed for login and get power state: [SSL:" \
        in err.value.message


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_with_the_ca_file_or_without_verification_it_works(bmc: FakeRedfish, caplog):
    drv = RedfishPower(bmc.creds())
    assert drv.power_state(soon()) == "on"
    drv.close(soon())
    caplog.set_level(logging.WARNING, logger="fence_compute.redfish")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drv = RedfishPower(bmc.creds(verify=False))
        assert drv.power_state(soon()) == "on"
        drv.close(soon())
    assert not [w for w in caught if "Insecure" in w.category.__name__]
    assert f"BMC {bmc.url}: its TLS certificate is not verified (ssl_insecure)" in caplog.text


def test_two_systems_without_redfish_system_are_listed(bmc: FakeRedfish):
    bmc.systems = {"1": "On", "2": "Off"}
    drv = RedfishPower(bmc.creds())
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    assert err.value.kind == PROTOCOL
    assert err.value.message == (f"BMC {bmc.url} has 2 systems (/redfish/v1/Systems/1,"
                                 " /redfish/v1/Systems/2); set redfish_system")
    drv.close(soon())
    drv = RedfishPower(bmc.creds(system="2"))
    assert drv.power_state(soon()) == "off"
    drv.close(soon())
    assert len(bmc.deleted) == 2


def test_a_hanging_bmc_is_a_timeout_within_the_deadline(bmc: FakeRedfish):
    bmc.hang = True
    drv = RedfishPower(bmc.creds())
    t0 = time.monotonic()
    with pytest.raises(PowerError) as err:
        drv.power_state(t0 + 0.5)
    assert err.value.kind == TIMEOUT and time.monotonic() - t0 < 0.5 + 1.5
    drv.close(time.monotonic() + 0.3)
    assert time.monotonic() - t0 < 0.5 + 0.3 + 2.0


def test_nothing_listening_is_unreachable_at_once():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    drv = RedfishPower(RedfishCredentials(f"https://127.0.0.1:{port}", USER, PASSWORD))
    t0 = time.monotonic()
    with pytest.raises(PowerError) as err:
        drv.power_state(soon())
    assert time.monotonic() - t0 < 1.9  # less than one of sushy's 2 s pauses between retries
    assert err.value.kind == UNREACHABLE
    assert err.value.message == f"BMC https://127.0.0.1:{port} is unreachable: Connection refused"


def test_the_whole_sequence_confirms_off_when_the_state_flips(bmc: FakeRedfish):
    bmc.off_after = 2  # still On for two reads after the reset
    drv = RedfishPower(bmc.creds())
    try:
        outcome = power_confirmed(drv, "off", soon(), poll_interval=0.01)
    finally:
        drv.close(soon())
    assert outcome.confirmed and not outcome.already, outcome.reason
    assert outcome.reason == f"BMC {bmc.url} reports off"
    assert bmc.deleted == ["/redfish/v1/SessionService/Sessions/1"]


def test_neither_the_password_nor_the_token_reaches_a_debug_log_or_an_error(bmc: FakeRedfish, caplog):
    caplog.set_level(logging.DEBUG)
    drv = RedfishPower(bmc.creds(auth="session"))
    drv.power_state(soon())
    bmc.answers.append(Answer("POST", "/redfish/v1/Systems/1/Actions", 500,
                              redfish_error("internal error")))
    with pytest.raises(PowerError) as err:
        drv.set_power("off", soon())
    drv.close(soon())
    basic = RedfishPower(bmc.creds(auth="basic"))
    basic.power_state(soon())
    basic.close(soon())
    token = next(iter(bmc.tokens))
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "HTTP request: POST" in logged  # sushy did log the session login at DEBUG
    for secret in (PASSWORD, token, encoded):
        assert secret not in logged and secret not in str(err.value)
    assert err.value.kind == REFUSED and "HTTP 500 internal error" in err.value.message


class _NovaAnswers:
    def ping(self) -> None:
        return None


def test_monitor_reads_every_redfish_bmc_of_the_map(bmc: FakeRedfish, monkeypatch):
    from fence_compute import actions

    monkeypatch.setattr(actions, "_nova", lambda options, target: _NovaAnswers())
    values = {"cloud": "overcloud", "power_driver": "redfish", "bmc_username": USER,
              "bmc_password": PASSWORD, "ssl_ca_file": str(bmc.ca_file),
              "bmc_map": f"c1={bmc.url},c2=127.0.0.1:{bmc.port}"}
    assert actions.monitor(Options.for_agent(FENCE_NOVA, values)) == 0
    assert len(bmc.deleted) == 2  # each BMC's session ended
    values["bmc_password"] = "Wr0ng-" + PASSWORD
    with pytest.raises(FenceError) as err:
        actions.monitor(Options.for_agent(FENCE_NOVA, values))
    assert err.value.reason.startswith(f"c1: credentials: BMC {bmc.url} refused get power state:"
                                      " HTTP 401")  # auto: the session, then basic, refused
