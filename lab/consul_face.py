"""The lab's stand-in for Consul's HTTP API, answered from a real serf agent.

Consul cannot be installed on the lab's machines; Debian's ``serf``, the gossip failure
detector Consul is built on, can. This face serves, GET only, the three Consul endpoints the
suite reads (``openstack_ha/consul.py``), with Consul's documented shapes, status codes and
error bodies, so that the suite's client cannot tell it from a Consul agent:

- ``/v1/agent/members``: ``serf members`` of ``--serf-rpc``, read at each request, as Consul's
  list of ``{"Name", "Addr", "Port", "Tags", "Status", "ProtocolMin"...}`` (``Status`` serf's
  integer: 0 none, 1 alive, 2 leaving, 3 left, 4 failed).
- ``/v1/health/node/<node>``: the ``serfHealth`` check Consul's leader derives from the
  member's status (alive or leaving: passing, "Agent alive and reachable"; failed or none:
  critical, "Agent not live or unreachable"), then the node's checks from ``--checks-file``.
  A node serf does not list, or lists as left (Consul deregisters a member that left), is not
  in the catalog: ``[]`` with 200, as Consul answers. With ``X-Consul-Index``,
  ``X-Consul-KnownLeader`` and ``X-Consul-LastContact``, as Consul's catalog reads have.
- ``/v1/agent/checks``: the checks of ``--checks-file`` registered for ``--node`` (this face is
  that node's local agent), a map of ``CheckID`` to check.

The checks file (read at each request; missing means no registered checks) is a JSON list of
``{"CheckID", "Name", "Status"}`` objects, with optional ``"Node"`` (default ``--node``),
``"ServiceID"``, ``"ServiceName"``, ``"Output"``, ``"Notes"`` (text, default ``""``) and
``"ServiceTags"`` (a list of text). ``Status`` is passing, warning or critical; ``CheckID`` is
unique per node and is not ``serfHealth``. A malformed file answers 500 with one line.

Errors are Consul's: 404 ``Invalid URL path: ...`` for a path it does not serve, 405
``method X not allowed`` (with ``Allow``) for another method on a served path, 400 ``Missing
node name``, 500 with one line when serf cannot be read. With ``--token-file`` ACLs are on,
default policy deny, and the file holds the one token that may read everything (read once at
start): a request naming another token (``X-Consul-Token``, ``Authorization: Bearer`` or
``?token=``) gets 403 ``ACL not found``; a request naming none is the anonymous token, which
may read nothing, so its answers are filtered empty (``[]``, ``{}``) with 200, as Consul's are.
The token never reaches the log.

Run: ``python -m lab.consul_face --listen ADDR:PORT --serf-rpc ADDR:PORT --node NAME
[--checks-file PATH] [--token-file PATH] [--serf-timeout S] [--debug]``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lab import serf

LOG = logging.getLogger("consul_face")

SERF_HEALTH = "serfHealth"
CHECK_STATUSES = ("passing", "warning", "critical")
_STATUS_CODE = {name: code for code, name in enumerate(serf.STATUSES)}
# memberlist's protocol range as serf 0.8 runs it (Consul's ProtocolMin/Max/Cur); `serf
# members` prints only serf's own versions, which Consul calls DelegateMin/Max/Cur
_MEMBERLIST_PROTOCOL = (1, 5, 2)
_CHECK_FIELDS = {"Node", "CheckID", "Name", "Status", "ServiceID", "ServiceName", "Output",
                 "Notes", "ServiceTags"}
_NOT_AN_ENDPOINT = "Invalid URL path: not a recognized HTTP API endpoint\n"
_NOT_THE_API = "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n"
_INDEX_TEXT = ("Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent"
               " configuration and restart.")


class ChecksFileError(Exception):
    """The checks file is not the documented format; one line."""


def read_checks(path: Path | None, local_node: str) -> list[dict[str, Any]]:
    """The registered checks in ``path`` (none if it is None or missing), each with every field
    filled; ChecksFileError naming the file and entry otherwise."""
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ChecksFileError(f"checks file {path}: cannot be read: {error}") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ChecksFileError(f"checks file {path}: not JSON: {error}") from None
    if not isinstance(document, list):
        raise ChecksFileError(f"checks file {path}: not a list of checks")
    checks: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(document):
        where = f"checks file {path}: entry {index}"
        if not isinstance(entry, dict):
            raise ChecksFileError(f"{where} is not an object")
        unknown = sorted(set(entry) - _CHECK_FIELDS)
        if unknown:
            raise ChecksFileError(f"{where} has unknown fields {', '.join(unknown)}")
        check = {"Node": local_node, "ServiceID": "", "ServiceName": "", "Output": "", "Notes": "",
                 "ServiceTags": [], **entry}
        for name in ("Node", "CheckID", "Name", "Status", "ServiceID", "ServiceName", "Output",
                     "Notes"):
            if not isinstance(check.get(name), str):
                raise ChecksFileError(f"{where}: {name} is missing or not text")
        if not check["CheckID"] or not check["Node"]:
            raise ChecksFileError(f"{where}: CheckID and Node must not be empty")
        if check["CheckID"] == SERF_HEALTH:
            raise ChecksFileError(f"{where}: serfHealth is derived from serf, not registered")
        if check["Status"] not in CHECK_STATUSES:
            raise ChecksFileError(f"{where}: Status {check['Status']!r} is not passing, warning"
                                  " or critical")
        tags = check["ServiceTags"]
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise ChecksFileError(f"{where}: ServiceTags is not a list of text")
        key = (check["Node"].casefold(), check["CheckID"])
        if key in seen:
            raise ChecksFileError(f"{where}: check {check['CheckID']!r} of {check['Node']} is"
                                  " registered twice")
        seen.add(key)
        checks.append(check)
    return checks


class _Indexes:
    """Raft-like indexes for the checks served: one counter, raised whenever a check is first
    seen or its status or output changes, so ``ModifyIndex`` and ``X-Consul-Index`` move as
    Consul's do when something changes (and only then)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 1  # Consul never answers index 0
        self._known: dict[tuple[str, str], tuple[tuple[str, str], int, int]] = {}

    def stamp(self, check: dict[str, Any]) -> tuple[int, int]:
        """``check``'s (CreateIndex, ModifyIndex)."""
        key = (check["Node"].casefold(), check["CheckID"])
        state = (check["Status"], check["Output"])
        with self._lock:
            known = self._known.get(key)
            if known is None or known[0] != state:
                self._last += 1
                known = (state, known[1] if known else self._last, self._last)
                self._known[key] = known
        return known[1], known[2]

    @property
    def last(self) -> int:
        with self._lock:
            return self._last


def _consul_check(check: dict[str, Any], indexes: _Indexes) -> dict[str, Any]:
    """``check`` with Consul's full field set for a check, in Consul's order."""
    create, modify = indexes.stamp(check)
    return {"Node": check["Node"], "CheckID": check["CheckID"], "Name": check["Name"],
            "Status": check["Status"], "Notes": check["Notes"], "Output": check["Output"],
            "ServiceID": check["ServiceID"], "ServiceName": check["ServiceName"],
            "ServiceTags": list(check["ServiceTags"]), "Type": "", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {}, "CreateIndex": create, "ModifyIndex": modify}


def _consul_member(member: serf.SerfMember) -> dict[str, Any]:
    return {"Name": member.name, "Addr": member.addr, "Port": member.port,
            "Tags": dict(member.tags), "Status": _STATUS_CODE[member.status],
            "ProtocolMin": _MEMBERLIST_PROTOCOL[0], "ProtocolMax": _MEMBERLIST_PROTOCOL[1],
            "ProtocolCur": _MEMBERLIST_PROTOCOL[2], "DelegateMin": member.protocol_min,
            "DelegateMax": member.protocol_max, "DelegateCur": member.protocol_cur}


def _serf_health(member: serf.SerfMember) -> dict[str, Any]:
    """The check Consul's leader keeps for a member: passing while serf says alive (and while
    it is leaving: the leader only acts once it has left), critical once failed."""
    passing = member.status in ("alive", "leaving")
    return {"Node": member.name, "CheckID": SERF_HEALTH, "Name": "Serf Health Status",
            "Status": "passing" if passing else "critical", "Notes": "",
            "Output": "Agent alive and reachable" if passing else "Agent not live or unreachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": []}


@dataclass(frozen=True)
class FaceConfig:
    """What one face serves: the serf agent it reads, the node it is the local agent of, the
    checks file, the one ACL token (None: ACLs off), and how long a ``serf members`` may take."""

    serf_rpc: str
    node: str
    checks_file: Path | None = None
    token: str | None = None
    serf_timeout: float = 3.0


class _Answer(Exception):
    """An answer other than 200 JSON: status, plain-text body, extra headers."""

    def __init__(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}


class FaceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: FaceConfig) -> None:
        self.config = config
        self.indexes = _Indexes()
        super().__init__(address, FaceHandler)


class FaceHandler(BaseHTTPRequestHandler):
    server: FaceServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stalls mid-request frees its thread

    # ---- answers -------------------------------------------------------------------------

    def _members(self) -> list[serf.SerfMember]:
        config = self.server.config
        try:
            return serf.members(config.serf_rpc, timeout=config.serf_timeout)
        except serf.SerfError as error:
            raise _Answer(500, " ".join(str(error).split())) from None

    def _checks(self) -> list[dict[str, Any]]:
        try:
            return read_checks(self.server.config.checks_file, self.server.config.node)
        except ChecksFileError as error:
            raise _Answer(500, " ".join(str(error).split())) from None

    def _agent_members(self, allowed: bool) -> tuple[Any, dict[str, str]]:
        listed = self._members()
        return ([_consul_member(member) for member in listed] if allowed else []), {}

    def _agent_checks(self, allowed: bool) -> tuple[Any, dict[str, str]]:
        local = self.server.config.node.casefold()
        checks = [check for check in self._checks() if check["Node"].casefold() == local]
        if not allowed:
            return {}, {}
        return {check["CheckID"]: _consul_check(check, self.server.indexes) for check in checks}, {}

    def _health_node(self, node: str, allowed: bool) -> tuple[Any, dict[str, str]]:
        if not node:
            raise _Answer(400, "Missing node name")
        # Consul's catalog looks node names up without regard to case
        member = next((m for m in self._members() if m.name.casefold() == node.casefold()), None)
        checks: list[dict[str, Any]] = []
        if member is not None and member.status != "left" and allowed:
            checks = [_serf_health(member)]
            checks += [check for check in self._checks()
                       if check["Node"].casefold() == member.name.casefold()]
        body = [_consul_check(check, self.server.indexes) for check in checks]
        index = max((check["ModifyIndex"] for check in body), default=self.server.indexes.last)
        return body, {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true",
                      "X-Consul-LastContact": "0", "X-Consul-Effective-Consistency": "leader"}

    # ---- ACL -----------------------------------------------------------------------------

    def _request_token(self, query: dict[str, list[str]]) -> str:
        """The token the request names, as Consul reads it: ``?token=``, then
        ``X-Consul-Token``, then ``Authorization: Bearer``; "" for none (anonymous)."""
        if query.get("token", [""])[0]:
            return query["token"][0]
        if self.headers.get("X-Consul-Token"):
            return self.headers["X-Consul-Token"]
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.split()[0]
        return ""

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        """Whether the request may read (True when ACLs are off); 403 for an unknown token."""
        expected = self.server.config.token
        if expected is None:
            return True
        given = self._request_token(query)
        if not given:
            return False  # anonymous: may read nothing, so answers are filtered empty
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise _Answer(403, "ACL not found")
        return True

    # ---- HTTP ----------------------------------------------------------------------------

    def _route(self) -> tuple[str, str | None]:
        """(endpoint, node) for a served path, ("", None) otherwise."""
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/v1/agent/members", "/v1/agent/checks"):
            return path, None
        if path.startswith("/v1/health/node/"):
            return "/v1/health/node/", urllib.parse.unquote(path.removeprefix("/v1/health/node/"))
        return "", None

    def _handle(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        endpoint, node = self._route()
        headers: dict[str, str] = {}
        if self.server.config.token is not None:
            headers["X-Consul-Default-ACL-Policy"] = "deny"
        try:
            if not endpoint:
                if split.path == "/" and self.command == "GET":
                    raise _Answer(200, _INDEX_TEXT)
                raise _Answer(404, _NOT_AN_ENDPOINT if "/v1/" in split.path else _NOT_THE_API)
            if self.command == "OPTIONS":
                raise _Answer(200, "", {"Allow": "OPTIONS,GET"})
            if self.command != "GET":
                raise _Answer(405, f"method {self.command} not allowed", {"Allow": "OPTIONS,GET"})
            query = urllib.parse.parse_qs(split.query)
            allowed = self._allowed(query)
            if endpoint == "/v1/agent/members":
                document, extra = self._agent_members(allowed)
            elif endpoint == "/v1/agent/checks":
                document, extra = self._agent_checks(allowed)
            else:
                document, extra = self._health_node(node or "", allowed)
        except _Answer as answer:
            self._send(answer.status, answer.body.encode(), "text/plain; charset=utf-8",
                       {**headers, **answer.headers})
            return
        if "pretty" in urllib.parse.parse_qs(split.query, keep_blank_values=True):
            body = json.dumps(document, indent=4) + "\n"
        else:
            body = json.dumps(document, separators=(",", ":"))
        self._send(200, body.encode(), "application/json", {**headers, **extra})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if body or status != 200 or content_type == "application/json":
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def send_response(self, code: int, message: str | None = None) -> None:
        # as Go's net/http: a Date header, no Server header
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # the path only: a query may hold ?token=
        path = urllib.parse.urlsplit(self.path).path if hasattr(self, "path") else "-"
        LOG.debug("%s %s %s from %s", getattr(self, "command", "-"), path, code,
                  self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        # the stdlib's errors may quote the request line, which may hold a token
        text = format % args
        token = self.server.config.token
        if token:
            text = text.replace(token, "<token>")
        LOG.info("%s from %s", " ".join(text.split()), self.client_address[0])


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _rpc_address(text: str) -> str:
    _address(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.consul_face",
                                     description="Serve Consul's health API from a serf agent.")
    parser.add_argument("--listen", type=_address, required=True, help="ADDRESS:PORT to serve on")
    parser.add_argument("--serf-rpc", type=_rpc_address, required=True,
                        help="ADDRESS:PORT of the serf agent's RPC")
    parser.add_argument("--node", required=True, help="the node this face is the local agent of")
    parser.add_argument("--checks-file", type=Path, help="JSON list of registered checks")
    parser.add_argument("--token-file", type=Path, help="file holding the one ACL token")
    parser.add_argument("--serf-timeout", type=float, default=3.0,
                        help="seconds a `serf members` may take (default 3)")
    parser.add_argument("--debug", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s consul_face: %(message)s")
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"--token-file {args.token_file}: cannot be read ({type(error).__name__})")
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            parser.error(f"--token-file {args.token_file}: not one token of visible characters")
    config = FaceConfig(args.serf_rpc, args.node, args.checks_file, token, args.serf_timeout)
    try:
        server = FaceServer(args.listen, config)
    except OSError as error:
        LOG.error("cannot listen on %s:%s: %s", *args.listen, error.strerror or error)
        return 1
    LOG.info("serving Consul's API for node %s on %s:%s from serf at %s%s", args.node,
             *server.server_address[:2], args.serf_rpc, " (ACLs on)" if token else "")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
