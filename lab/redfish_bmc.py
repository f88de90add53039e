"""The Redfish face of a lab BMC: sushy-tools' emulator serving one host's power over HTTPS.

lab/bmc.py starts one per host with ``BmcLab.up(..., redfish=True)``, inside the BMC namespace, on
the address of the host's IPMI face (a real server's BMC speaks both on one address)::

    python -I lab/redfish_bmc.py STATE_DIR HOST ADDRESS PORT

Both faces share ``STATE_DIR/hosts/HOST/`` (lab/bmc_chassis.py): the power file, the hooks, the
fault file and ``power.lock``. A power-off through either runs the host's off hook before it is
answered, and both read Off afterwards. sushy-tools brings the Flask app and the resources; this
file adds what a lab BMC needs and sushy-tools has not:

- a systems driver with ONE system (the host, a stable UUID) whose power is the shared state;
- a SessionService (``POST /redfish/v1/SessionService/Sessions`` -> ``X-Auth-Token``), listed
  in the service root's ``Links.Sessions`` where sushy looks for it;
- authentication: a session token or HTTP Basic with the BMC's user and password (those of the
  IPMI face, from lab/bmc.py's state file); the service root and the session login need none;
- the fault modes, read from the fault file on every request (``python -m lab bmc-fault``):

    noreply               nothing is answered: the request waits until the mode changes, and then
                          the connection is dropped, unanswered (the client gave up long ago; a
                          power request it gave up on must not take effect late, and a real
                          unreachable BMC never receives it at all)
    hang-after-login      the service root and the session login are answered, the rest as noreply
    stuck-on              ForceOff (and ForceRestart) answered 204, nothing happens
    reject                ForceOff (and ForceRestart) answered 500, a Redfish error
    slow SECONDS          each request sleeps SECONDS first
    badcreds              the BMC's password is the lab's bad_password (as on the IPMI face, whose
                          password lab/bmc.py changes): the right one gets 401, sessions made with
                          it are no longer valid
    conflict-when-off     ForceOff on a host that is Off: 409, as an iDRAC answers
    badrequest-when-off   ForceOff on a host that is Off: 400, as an iLO answers
    busy SECONDS          every request gets 503 with Retry-After: 1, for SECONDS after the fault
                          was set (the fault file's mtime), then healthy
    late-off SECONDS      ForceOff answered 204 at once; the power goes off (the hook runs) SECONDS
                          later, and reads On meanwhile. Dropped if the fault changes before
                          then: a lab reset must not be followed by a stray power cut

The IPMI face treats the last four as healthy. Each request is logged to
``hosts/HOST/redfish.log`` (method, path, status, time; never a header or a body).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -I leaves the checkout off sys.path (as for bmc_chassis.py): put it back, for the lab's helpers.
# Not -S: flask and sushy-tools live in the venv's site-packages.
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flask
from sushy_tools import error as sushy_error
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver
from werkzeug import serving
from werkzeug.wrappers import Response

# Loads libc now, before any thread: a power hook's preexec_fn (lab/bmc_chassis.py) uses it.
import lab.namespaces  # noqa: F401
from lab.bmc_chassis import _log, _power, _switch, flocked, host_dir, read_fault

SERVICE_ROOT = "/redfish/v1/"
SESSION_SERVICE = "/redfish/v1/SessionService"
SESSIONS = f"{SESSION_SERVICE}/Sessions"
OPEN_PATHS = frozenset({"", "redfish", "redfish/v1"})  # stripped of "/": the service root
OFF_TYPES = frozenset({"ForceOff", "GracefulShutdown"})
ON_TYPES = frozenset({"On", "ForceOn"})
RESTART = "ForceRestart"
SESSION_TIMEOUT = 1800  # s of idleness, advertised in the SessionService
MAX_SESSIONS = 64  # a real BMC has a small table; the oldest goes first
HANG_STEP = 0.1  # s between two looks at the fault file while a request hangs
IDLE_CONNECTION = 60  # s a keep-alive connection may stay silent before it is closed
_REGISTRY = "Base.1.8"


# ------------------------------------------------------------------------------ errors


def error_body(message: str, message_id: str, *args: str) -> dict[str, Any]:
    """A DMTF Redfish error: ``error.code``, ``error.message`` and one ExtendedInfo message."""
    return {"error": {
        "code": f"{_REGISTRY}.GeneralError",
        "message": message,
        "@Message.ExtendedInfo": [{
            "@odata.type": "#Message.v1_1_1.Message",
            "MessageId": f"{_REGISTRY}.{message_id}",
            "Message": message,
            "MessageArgs": list(args),
            "Severity": "Critical",
            "Resolution": "None.",
        }],
    }}


# What two vendors answer a ForceOff with when the server is already off.
IDRAC_ALREADY_OFF = {"error": {
    "code": f"{_REGISTRY}.GeneralError",
    "message": "A general error has occurred. See ExtendedInfo for more information",
    "@Message.ExtendedInfo": [{
        "Message": "Server is already powered OFF.", "MessageArgs": [],
        "MessageArgs@odata.count": 0, "MessageId": "IDRAC.2.8.PSU502", "RelatedProperties": [],
        "RelatedProperties@odata.count": 0, "Resolution": "No response action is required.",
        "Severity": "Informational",
    }],
}}
ILO_ALREADY_OFF = {"error": {
    "code": "iLO.0.10.ExtendedInfo",
    "message": "See @Message.ExtendedInfo for more information.",
    "@Message.ExtendedInfo": [{"MessageArgs": ["Power is off"],
                               "MessageId": "iLO.2.15.InvalidOperationForSystemState"}],
}}


class RedfishError(Exception):
    """An answer other than success, with its Redfish error body; raised inside Flask views and
    the systems driver, rendered by the handler :meth:`LabBmc.install` registers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body["error"]["message"])
        self.status, self.body, self.headers = status, body, headers or {}

    def response(self) -> Response:
        return Response(json.dumps(self.body), self.status, self.headers,
                        content_type="application/json")


# ------------------------------------------------------------------------------ sessions


@dataclass
class Session:
    id: str
    token: str
    username: str
    password: str  # the BMC password it was opened with: valid only while that one is current
    used: float = field(default_factory=time.monotonic)

    def resource(self) -> dict[str, Any]:
        return {"@odata.type": "#Session.v1_3_0.Session", "@odata.id": f"{SESSIONS}/{self.id}",
                "Id": self.id, "Name": "User Session", "Description": "Manager User Session",
                "UserName": self.username}


# ------------------------------------------------------------------------------ the BMC


class LabSystems(AbstractSystemsDriver):
    """sushy-tools' view of the host: one system, its power the lab's shared state."""

    def __init__(self, bmc: LabBmc) -> None:
        self._bmc = bmc

    @property
    def driver(self) -> str:
        return "<openstack-ha lab BMC>"

    @property
    def systems(self) -> list[str]:
        return [self._bmc.system]

    def uuid(self, identity: str) -> str:
        if identity != self._bmc.system:
            raise sushy_error.NotFound(f"no system {identity!r}")
        return identity

    def name(self, identity: str) -> str:
        self.uuid(identity)
        return self._bmc.host

    def get_power_state(self, identity: str) -> str:
        self.uuid(identity)
        return "On" if _power(self._bmc.hdir) else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        self.uuid(identity)
        self._bmc.reset(state)

    def get_boot_device(self, identity: str) -> str:
        return "Hdd"

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        raise sushy_error.NotSupportedError("a lab BMC boots its host from disk only")


class LabBmc:
    """One host's Redfish BMC: credentials, sessions, faults and power, around sushy-tools' app."""

    def __init__(self, hdir: Path, host: str, system: str, username: str, password: str,
                 bad_password: str) -> None:
        self.hdir, self.host, self.system = hdir, host, system
        self.username, self._password, self._bad_password = username, password, bad_password
        self._sessions: dict[str, Session] = {}  # by token
        self._lock = threading.Lock()
        self._late_off_pending = False
        self._log_lock = threading.Lock()

    # -------------------------------------------------------------- faults and credentials

    def _fault(self) -> tuple[str, float, int]:
        """(mode, seconds, when it was set in ns): lab/bmc.py replaces the file on every change."""
        mode, seconds = read_fault(self.hdir)
        try:
            return mode, seconds, (self.hdir / "fault").stat().st_mtime_ns
        except OSError:
            return mode, seconds, 0

    def password(self) -> str:
        """The password the BMC accepts now."""
        return self._bad_password if read_fault(self.hdir)[0] == "badcreds" else self._password

    def _credentials_ok(self, username: str, password: str) -> bool:
        return hmac.compare_digest(username.encode(), self.username.encode()) and \
            hmac.compare_digest(password.encode(), self.password().encode())

    def _basic_ok(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and self._credentials_ok(username, password)

    def _session(self, token: str) -> Session | None:
        """The live session of TOKEN, touched; None if there is none (expired, or opened with a
        password that is no longer the BMC's)."""
        with self._lock:
            found = self._sessions.get(token)
            if found is None:
                return None
            if time.monotonic() - found.used > SESSION_TIMEOUT or found.password != self.password():
                del self._sessions[token]
                return None
            found.used = time.monotonic()
            return found

    def authorized(self, environ: dict[str, Any]) -> bool:
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        return bool(token and self._session(token)) or \
            self._basic_ok(environ.get("HTTP_AUTHORIZATION", ""))

    # -------------------------------------------------------------- power

    def reset(self, reset_type: str) -> None:
        """ComputerSystem.Reset, through the hooks and the lock the IPMI face uses."""
        if reset_type not in OFF_TYPES | ON_TYPES | {RESTART}:
            raise RedfishError(400, error_body(
                f"The value '{reset_type}' for the parameter ResetType in the action "
                "ComputerSystem.Reset is not in the list of acceptable values.",
                "ActionParameterValueNotInList", reset_type, "ResetType", "ComputerSystem.Reset"))
        mode, seconds, _ = self._fault()
        cuts_power = reset_type not in ON_TYPES  # a hard restart cuts power too (as on IPMI)
        if cuts_power and mode == "stuck-on":
            _log(self.hdir, f"redfish {reset_type} ignored (stuck-on)")
            return
        if cuts_power and mode == "reject":
            _log(self.hdir, f"redfish {reset_type} refused (reject)")
            raise RedfishError(500, error_body(
                "The request failed due to an internal service error.  The service is still "
                "operational.", "InternalError"))
        if reset_type in OFF_TYPES:
            if mode == "conflict-when-off" and not _power(self.hdir):
                raise RedfishError(409, IDRAC_ALREADY_OFF)
            if mode == "badrequest-when-off" and not _power(self.hdir):
                raise RedfishError(400, ILO_ALREADY_OFF)
            if mode == "late-off":
                self._power_off_later(seconds)
                return
        with flocked(self.hdir / "power.lock"):
            if reset_type == RESTART:  # off then on, for a host that is on; nothing when off
                done = not _power(self.hdir) or (_switch(self.hdir, 0) and _switch(self.hdir, 1))
            else:
                done = _switch(self.hdir, 0 if cuts_power else 1)
        if not done:  # "Off" must mean the host's processes are dead: refuse rather than lie
            raise RedfishError(500, error_body(
                "The power hook failed (see chassis.log); the power state is unchanged.",
                "InternalError"))

    def _power_off_later(self, seconds: float) -> None:
        with self._lock:
            if self._late_off_pending:
                return
            self._late_off_pending = True
        _log(self.hdir, f"redfish power off in {seconds:g}s (late-off)")
        threading.Thread(target=self._late_off, args=(seconds, self._fault()), daemon=True).start()

    def _late_off(self, seconds: float, fault: tuple[str, float, int]) -> None:
        try:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.05))
                if self._fault() != fault:
                    _log(self.hdir, "redfish late power off dropped: the fault changed")
                    return
            with flocked(self.hdir / "power.lock"):
                _switch(self.hdir, 0)
        finally:
            with self._lock:
                self._late_off_pending = False

    # -------------------------------------------------------------- SessionService views

    def _session_service(self) -> Response:
        return flask.jsonify({
            "@odata.type": "#SessionService.v1_1_8.SessionService", "@odata.id": SESSION_SERVICE,
            "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
            "SessionTimeout": SESSION_TIMEOUT, "Status": {"State": "Enabled", "Health": "OK"},
            "Sessions": {"@odata.id": SESSIONS},
        })

    def _sessions_view(self) -> Response:
        if flask.request.method == "POST":
            return self._login()
        with self._lock:
            ids = [s.id for s in self._sessions.values()]
        return flask.jsonify({
            "@odata.type": "#SessionCollection.SessionCollection", "@odata.id": SESSIONS,
            "Name": "Session Collection", "Members@odata.count": len(ids),
            "Members": [{"@odata.id": f"{SESSIONS}/{i}"} for i in ids],
        })

    def _login(self) -> Response:
        body = flask.request.get_json(silent=True, force=True)
        username = body.get("UserName") if isinstance(body, dict) else None
        password = body.get("Password") if isinstance(body, dict) else None
        if not isinstance(username, str) or not isinstance(password, str):
            raise RedfishError(400, error_body(
                "The create operation failed because the required properties UserName and "
                "Password were missing from the request.", "CreateFailedMissingReqProperties",
                "UserName", "Password"))
        if not self._credentials_ok(username, password):
            raise self.unauthorized()
        session = Session(secrets.token_hex(8), secrets.token_urlsafe(24), username, password)
        with self._lock:
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[min(self._sessions.values(), key=lambda s: s.used).token]
            self._sessions[session.token] = session
        answer = flask.jsonify(session.resource())
        answer.status_code = 201
        answer.headers["X-Auth-Token"] = session.token
        answer.headers["Location"] = f"{SESSIONS}/{session.id}"
        return answer

    def _one_session(self, session_id: str) -> Response:
        with self._lock:
            found = next((s for s in self._sessions.values() if s.id == session_id), None)
            if found is not None and flask.request.method == "DELETE":
                del self._sessions[found.token]
        if found is None:
            raise RedfishError(404, error_body(
                f"The requested resource of type Session named '{session_id}' was not found.",
                "ResourceNotFound", "Session", session_id))
        return Response(status=204) if flask.request.method == "DELETE" else \
            flask.jsonify(found.resource())

    def unauthorized(self) -> RedfishError:
        return RedfishError(401, error_body(
            "There is no valid session established with the implementation.", "NoValidSession"),
            {"WWW-Authenticate": f'Basic realm="openstack-ha lab BMC {self.host}"'})

    # -------------------------------------------------------------- the app

    def install(self, app: emulator.Application) -> None:
        """Make sushy-tools' app this BMC: our systems driver, the SessionService, the service
        root pointing at it, our errors, and the middleware (faults, authentication, log)."""
        # Application.systems picks one of sushy-tools' drivers (libvirt, nova, ironic, fake) from
        # the configuration and memoizes it; none of them is ours, and there is no setting for a
        # driver of one's own. The property lives on the class, and this process serves one app
        # and one host: replace it there, before any request reads it.
        driver = LabSystems(self)
        type(app).systems = property(lambda _app: driver)  # type: ignore[assignment]
        # sushy-tools' indicator and media drivers keep state in SQLite, by default in /tmp for
        # every emulator on the machine: this host's own place instead.
        app.config["SUSHY_EMULATOR_STATE_DIR"] = str(self.hdir / "sushy")
        app.register_error_handler(RedfishError, RedfishError.response)
        app.add_url_rule(SESSION_SERVICE, "lab_session_service", self._session_service)
        app.add_url_rule(SESSIONS, "lab_sessions", self._sessions_view, methods=["GET", "POST"])
        app.add_url_rule(f"{SESSIONS}/<session_id>", "lab_session", self._one_session,
                         methods=["GET", "DELETE"])
        sushy_root = app.view_functions["root_resource"]

        def root() -> Response:
            answer = json.loads(sushy_root().get_data())
            answer["SessionService"] = {"@odata.id": SESSION_SERVICE}
            answer.setdefault("Links", {})["Sessions"] = {"@odata.id": SESSIONS}
            answer["UUID"] = str(uuidlib.uuid5(uuidlib.UUID(self.system), "service-root"))
            return flask.jsonify(answer)

        app.view_functions["root_resource"] = root
        app.wsgi_app = Front(app.wsgi_app, self)  # type: ignore[method-assign]

    def log(self, text: str) -> None:
        with self._log_lock:
            print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# ------------------------------------------------------------------------------ middleware

StartResponse = Callable[..., Any]


def is_login(method: str, path: str) -> bool:
    """The requests a client makes before it has credentials accepted: the service root, and
    the session login (which checks the credentials in its body itself)."""
    return path.strip("/") in OPEN_PATHS or (method == "POST" and path.rstrip("/") == SESSIONS)


class Dropped(ConnectionAbortedError):
    """The connection was closed unanswered (noreply): werkzeug treats it as a client gone."""


class Front:
    """WSGI middleware in front of sushy-tools' app: per request, the fault first (as a network
    or BMC failure comes before any login), then authentication, then the app; and a log line.
    Instead of sushy-tools' own htpasswd middleware, which knows neither tokens nor faults."""

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
                 bmc: LabBmc) -> None:
        self.app, self.bmc = app, bmc

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", "")
        status = ["-"]

        def recorded(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = line.split()[0]
            return start_response(line, headers, exc_info)

        start = time.monotonic()
        try:
            return self._serve(environ, recorded, method, path)
        except Dropped:
            status[0] = "dropped"
            raise
        finally:
            self.bmc.log(f"{method} {path} {status[0]} {time.monotonic() - start:.2f}s")

    def _hangs(self, method: str, path: str) -> bool:
        mode = read_fault(self.bmc.hdir)[0]
        return mode == "noreply" or (mode == "hang-after-login" and not is_login(method, path))

    def _serve(self, environ: dict[str, Any], start_response: StartResponse, method: str,
               path: str) -> Iterable[bytes]:
        mode, seconds, since = self.bmc._fault()
        if mode == "slow":
            time.sleep(seconds)
        if mode == "busy" and time.time_ns() < since + seconds * 1e9:
            return RedfishError(503, error_body(
                "The service is temporarily unavailable.  Retry in 1 seconds.",
                "ServiceTemporarilyUnavailable", "1"), {"Retry-After": "1"}).response()(
                    environ, start_response)
        if self._hangs(method, path):
            while self._hangs(method, path):
                time.sleep(HANG_STEP)
            connection: socket.socket = environ["werkzeug.socket"]
            connection.shutdown(socket.SHUT_RDWR)
            raise Dropped("noreply: dropped unanswered")
        if not is_login(method, path) and not self.bmc.authorized(environ):
            return self.bmc.unauthorized().response()(environ, start_response)
        return self.app(environ, start_response)


class Handler(serving.WSGIRequestHandler):
    timeout = IDLE_CONNECTION  # a silent client holds a thread, not the BMC

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Front logs every request itself, without the client's address and query string."""

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        # Read nothing more from it: what the client sent meanwhile (its TLS close alert) would
        # be taken for the next request on this keep-alive connection.
        self.close_connection = True


# ------------------------------------------------------------------------------ main


def serve(state_dir: Path, host: str, address: str, port: int) -> None:
    info = json.loads((state_dir / "state.json").read_text())["hosts"][host]
    bmc = LabBmc(host_dir(state_dir, host), host, info["system"], info["username"],
                 info["password"], info["bad_password"])
    bmc.install(emulator.app)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(state_dir / "redfish" / f"{host}.pem", state_dir / "redfish" / f"{host}.key")
    server = serving.make_server(address, port, emulator.app, threaded=True, request_handler=Handler)
    # TLS after make_server, without the handshake in accept(): werkzeug's own ssl_context does
    # it there, in the one thread that accepts, so a client that connects and sends nothing
    # would stall the whole BMC. Here each connection's handshake runs in its own thread.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.ssl_context = context
    bmc.log(f"redfish ready: https://{address}:{port}{SERVICE_ROOT} system {bmc.system}")
    server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) != 4 or not argv[3].isdigit():
        print("usage: redfish_bmc.py STATE_DIR HOST ADDRESS PORT", file=sys.stderr)
        return 2
    serve(Path(argv[0]), argv[1], argv[2], int(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
