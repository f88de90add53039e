"""Consul as a second health channel: a small read-only client, and a node's view per network.

One Consul datacenter (or serf pool) per network, as masakari-monitors' Consul driver has it:
``management``, ``storage``, ``tenant``... each read through its own agent URL. For a node, each
network gives one `NetworkView`:

- ``ALIVE``: its gossip member status is ``alive`` and its ``serfHealth`` check is ``passing``;
- ``FAILED``: its member status is ``failed`` (or ``left``) and ``serfHealth`` is ``critical``
  or absent;
- ``UNKNOWN``: anything else: a mixed answer, a node Consul does not list, Consul unreachable
  or answering nonsense. Unreachable never reads as *down*.

The client speaks plain HTTP through the standard library (``http.client`` and ``ssl``, which
``urllib.request`` itself sits on) rather than ``py-consul`` and ``requests``: fence_nova's
``off`` path imports it before touching power, and must stay quick to start; and three GETs
need no more. ``http.client`` directly rather than ``urllib.request`` so that nothing is done
behind our back: no redirect is followed (it would carry the token to whatever host a 3xx
names) and no proxy is taken from the environment (a health channel on the node's own
networks must not go through one).

Every answer is bounded (`MAX_ANSWER_BYTES`; `timeout` for connecting and for each read of
the status line and headers, and for the body as a whole), parsed into typed values and its
fields checked. Every failure is a `ConsulError` whose message is one line and never holds
the token: the token travels only in the ``X-Consul-Token`` header, never in a URL, and is cut
out of anything a server sends back.

Consul's documented API (developer.hashicorp.com/consul/api-docs) as read here:

- ``GET /v1/agent/members``: a list of ``{"Name", "Addr", "Port", "Tags", "Status", ...}``;
  ``Status`` is serf's ``MemberStatus`` as an integer: 0 none, 1 alive, 2 leaving, 3 left,
  4 failed. ACL ``node:read``.
- ``GET /v1/health/node/:node``: a list of checks ``{"Node", "CheckID", "Name", "Status",
  "ServiceID", "ServiceName", ...}``; the node's gossip check has ``CheckID`` ``serfHealth``;
  ``Status`` is ``passing``, ``warning`` or ``critical``. A node Consul does not know gives an
  empty list. ACL ``node:read,service:read``.
- ``GET /v1/agent/checks``: the local agent's checks, a map of ``CheckID`` to a check as above.
- Errors: a status other than 200 with a plain-text body, e.g. 403 ``ACL not found`` for a
  token Consul does not know. A known token that lacks the ACL is no error: the answer is
  filtered (members and checks it may not read left out) and says so in the header
  ``X-Consul-Results-Filtered-By-ACLs: true``; read here as a ConsulError, since a list
  missing the node would otherwise pass for "not a member".
"""

from __future__ import annotations

import enum
import http.client
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

MAX_ANSWER_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT = 5.0

_NETWORK_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# Consul tokens are UUIDs; anything sent in a header must at least be visible ASCII, or
# http.client refuses it with a message that quotes the value.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_READ_CHUNK = 64 * 1024
_SHOWN_BODY = 160  # characters of an error body quoted in a ConsulError
_SERF_HEALTH = "serfHealth"
_Parsed = TypeVar("_Parsed")


class ConsulError(Exception):
    """Consul could not be read, or said something that is not Consul's API; one line, no token."""


class MemberStatus(enum.Enum):
    """A gossip member's status, serf's ``MemberStatus`` (its integer in `SERF_CODES`)."""

    NONE = "none"
    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    FAILED = "failed"


SERF_CODES: dict[int, MemberStatus] = {
    0: MemberStatus.NONE,
    1: MemberStatus.ALIVE,
    2: MemberStatus.LEAVING,
    3: MemberStatus.LEFT,
    4: MemberStatus.FAILED,
}


class CheckStatus(enum.Enum):
    """A Consul health check's status."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


class NetworkView(enum.Enum):
    """What one network says of a node."""

    ALIVE = "alive"
    FAILED = "failed"
    UNKNOWN = "unknown"


def views_text(views: Mapping[str, NetworkView]) -> str:
    """``management=failed storage=alive``: a node's views as every message shows them."""
    return " ".join(f"{network}={view.value}" for network, view in views.items())


@dataclass(frozen=True)
class AgentCheck:
    """One of the local agent's checks (``/v1/agent/checks``); ``service_name`` is empty for a
    node-level check."""

    check_id: str
    name: str
    service_name: str
    status: CheckStatus


def _one_line(text: str, limit: int = _SHOWN_BODY) -> str:
    """``text`` with control characters and runs of white space made single spaces, cut short."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _shown(value: str) -> str:
    """A value from configuration, quoted for a one-line message (repr escapes new lines)."""
    return repr(value) if len(value) <= 120 else repr(value[:120]) + "..."


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port is not None else "")


def _endpoint(url: str) -> _Endpoint:
    """``url`` checked as a Consul agent's address: http or https, a host, an optional port,
    nothing else. ValueError (without the URL's user info, if it had some) otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the agent URL is empty")
    if "@" in url:  # nowhere valid in an agent's address, and user info may be a password
        raise ValueError("the agent URL must not carry user info (give the token in token_file)")
    if any(not c.isprintable() or c.isspace() for c in url):
        raise ValueError(f"agent URL {_shown(url)} holds white space or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:
        raise ValueError(f"agent URL {_shown(url)} is not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"agent URL {_shown(url)} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"agent URL {_shown(url)} names no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"agent URL {_shown(url)} has a bad port") from None
    if port == 0:
        raise ValueError(f"agent URL {_shown(url)} has a bad port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"agent URL {_shown(url)} must be scheme://host[:port] only,"
                         " without a path, query or fragment")
    return _Endpoint(parts.scheme, parts.hostname, port)


def parse_networks(text: str) -> dict[str, str]:
    """``management=http://127.0.0.1:8500,storage=https://10.0.0.1:8501`` as ``{name: url}``,
    in the order written.

    Names are ``[a-z][a-z0-9_-]{0,31}`` and unique; each URL is http or https with a host, an
    optional port, no user info, no path beyond ``/``, no query. ValueError, one line naming
    the item, otherwise.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("consul networks: none given (expected name=url,name=url...)")
    networks: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        name, equals, url = (part.strip() for part in item.partition("="))
        where = f"consul networks: item {number}"
        if not item.strip():
            raise ValueError(f"{where} is empty (expected name=url,name=url...)")
        if "@" in item:  # user info, maybe a password: not shown, not even in part
            raise ValueError(f"{where}: the agent URL must not carry user info"
                             " (give the token in token_file)")
        if not equals:
            raise ValueError(f"{where} {_shown(item.strip())} is not name=url")
        if not _NETWORK_NAME.fullmatch(name):
            raise ValueError(f"{where}: network name {_shown(name)} must be a lower-case letter"
                             " then up to 31 of a-z, 0-9, _ and -")
        if name in networks:
            raise ValueError(f"{where}: network {name!r} is named twice")
        try:
            _endpoint(url)
        except ValueError as error:
            raise ValueError(f"{where} ({name}): {error}") from None
        networks[name] = url
    return networks


def _check_fields(entry: Any, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConsulError(f"{what} is a {type(entry).__name__}, not an object")
    for name in names:
        if not isinstance(entry.get(name), str):
            raise ConsulError(f"{what} has no text field {name!r}")
    return entry


def _check_status(value: Any, what: str) -> CheckStatus:
    try:
        return CheckStatus(value)
    except (ValueError, TypeError):
        raise ConsulError(f"{what} has Status {_one_line(repr(value), 40)},"
                          " not passing, warning or critical") from None


def parse_members(document: Any) -> dict[str, MemberStatus]:
    """A ``/v1/agent/members`` answer as ``{member name: status}``; ConsulError if it is not
    a list of members each with a text ``Name`` and a serf ``Status`` (0-4), or names one
    member twice. Other fields are not read."""
    if not isinstance(document, list):
        raise ConsulError(f"members: the answer is a {type(document).__name__}, not a list")
    members: dict[str, MemberStatus] = {}
    for index, entry in enumerate(document):
        what = f"members: entry {index}"
        _check_fields(entry, what, ("Name",))
        name, code = entry["Name"], entry.get("Status")
        if not name:
            raise ConsulError(f"{what} has an empty Name")
        # bool is an int in Python, never in Consul's JSON
        if not isinstance(code, int) or isinstance(code, bool) or code not in SERF_CODES:
            raise ConsulError(f"{what} has Status {_one_line(repr(code), 40)}, not serf's 0-4")
        if name in members:
            raise ConsulError(f"members: {_one_line(name, 64)!r} is listed twice")
        members[name] = SERF_CODES[code]
    return members


def parse_node_health(document: Any, node: str) -> CheckStatus | None:
    """The ``serfHealth`` check's status in a ``/v1/health/node/<node>`` answer, None when the
    node has no such check (Consul answers an empty list for a node it does not know).
    ConsulError if the answer is not a list of checks, holds two ``serfHealth`` checks, or
    gives one for another node."""
    if not isinstance(document, list):
        raise ConsulError(f"health of {node}: the answer is a {type(document).__name__},"
                          " not a list")
    found: CheckStatus | None = None
    for index, entry in enumerate(document):
        what = f"health of {node}: check {index}"
        _check_fields(entry, what, ("CheckID",))
        if entry["CheckID"] != _SERF_HEALTH:
            continue
        if found is not None:
            raise ConsulError(f"health of {node}: two serfHealth checks")
        owner = entry.get("Node", node)
        if not isinstance(owner, str) or owner.casefold() != node.casefold():
            raise ConsulError(f"health of {node}: the serfHealth check is for another node"
                              f" ({_one_line(repr(owner), 64)})")
        found = _check_status(entry.get("Status"), what)
    return found


def parse_agent_checks(document: Any) -> list[AgentCheck]:
    """A ``/v1/agent/checks`` answer as checks sorted by id; ConsulError if it is not a map of
    check id to a check with text ``CheckID`` (the key), ``Name``, ``ServiceName`` and a
    ``Status`` of passing, warning or critical."""
    if not isinstance(document, dict):
        raise ConsulError(f"agent checks: the answer is a {type(document).__name__}, not an object")
    checks = []
    for key, entry in document.items():
        what = f"agent check {_one_line(repr(key), 64)}"
        _check_fields(entry, what, ("CheckID", "Name", "ServiceName"))
        if entry["CheckID"] != key:
            raise ConsulError(f"{what} has CheckID {_one_line(repr(entry['CheckID']), 64)}")
        checks.append(AgentCheck(key, entry["Name"], entry["ServiceName"],
                                 _check_status(entry.get("Status"), what)))
    return sorted(checks, key=lambda check: check.check_id)


def decode_answer(body: bytes) -> Any:
    """An answer's body as JSON; ConsulError if it is not (UTF-8) JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConsulError("the answer is not UTF-8") from None
    except RecursionError:  # "[[[[..." nested deeper than the parser goes
        raise ConsulError("the answer is JSON nested too deep") from None
    except ValueError as error:  # JSONDecodeError, or an integer too long to convert
        raise ConsulError(f"the answer is not JSON ({_one_line(str(error), 80)})") from None


class ConsulClient:
    """Read-only access to one Consul agent's HTTP API.

    ``token`` (an ACL token needing ``node:read,service:read``) goes in the
    ``X-Consul-Token`` header only; ``ca_file`` is the CA bundle an https agent's certificate
    is checked against (the system's when None); ``timeout`` bounds connecting, each read of
    the status line and headers, and the body as a whole.
    A bad URL, token or ``ca_file`` is ValueError here; failures to read are `ConsulError`.
    """

    def __init__(self, url: str, *, token: str | None = None, ca_file: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._endpoint = _endpoint(url)
        if token is not None and not _TOKEN.fullmatch(token):
            raise ValueError("the consul token must be visible ASCII without spaces"
                             " (its value is not shown)")
        if not (isinstance(timeout, int | float) and 0 < timeout <= 600):
            raise ValueError(f"consul timeout must be above 0 and at most 600 seconds, not {timeout!r}")
        self._token = token
        self._timeout = float(timeout)
        self._context: ssl.SSLContext | None = None
        if self._endpoint.scheme == "https":
            try:
                self._context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"consul ca_file {_shown(str(ca_file))} cannot be used:"
                                 f" {_one_line(str(error), 100)}") from None

    @property
    def url(self) -> str:
        """The agent's address, as checked (never with user info)."""
        return str(self._endpoint)

    def members(self) -> dict[str, MemberStatus]:
        """The gossip members this agent knows, by name (``/v1/agent/members``)."""
        return self._get("/v1/agent/members", parse_members)

    def node_health(self, node: str) -> CheckStatus | None:
        """The status of ``node``'s ``serfHealth`` check, None if Consul has none for it
        (``/v1/health/node/<node>``)."""
        if not isinstance(node, str) or not node or not node.isprintable():
            raise ValueError(f"node name {node!r} is empty or not printable")
        return self._get("/v1/health/node/" + urllib.parse.quote(node, safe=""),
                         lambda document: parse_node_health(document, node))

    def agent_checks(self) -> list[AgentCheck]:
        """The local agent's checks (``/v1/agent/checks``), sorted by check id."""
        return self._get("/v1/agent/checks", parse_agent_checks)

    def _connection(self) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection(self._endpoint.host, self._endpoint.port,
                                               timeout=self._timeout, context=self._context)
        return http.client.HTTPConnection(self._endpoint.host, self._endpoint.port,
                                          timeout=self._timeout)

    def _scrubbed(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def _get(self, path: str, parse: Callable[[Any], _Parsed]) -> _Parsed:
        """``path``'s answer, parsed by ``parse``; any failure a ConsulError naming the URL."""
        where = f"consul {self._endpoint}{path}"
        try:
            status, body = self._fetch(path)
        except ConsulError as error:
            raise ConsulError(f"{where}: {error}") from None
        except TimeoutError:  # socket.timeout is TimeoutError since 3.10
            raise ConsulError(f"{where}: no answer within {self._timeout:g}s") from None
        except ssl.SSLError as error:
            raise ConsulError(f"{where}: TLS failed ({_one_line(self._scrubbed(str(error)), 120)};"
                              " is ca_file the CA that signed the agent's certificate?)") from None
        except (OSError, http.client.HTTPException) as error:
            # ConnectionRefusedError, a reset, a name that does not resolve, a bad status line
            text = _one_line(self._scrubbed(str(error) or type(error).__name__), 120)
            raise ConsulError(f"{where}: {text}") from None
        if status != 200:
            hint = (" (the token is unknown to Consul)" if status == 403
                    else "")
            shown = _one_line(self._scrubbed(body.decode("utf-8", "replace")))
            raise ConsulError(f"{where}: HTTP {status}{hint}" + (f": {shown}" if shown else ""))
        try:
            return parse(decode_answer(body))
        except ConsulError as error:
            raise ConsulError(f"{where}: {error}") from None

    def _fetch(self, path: str) -> tuple[int, bytes]:
        """One GET: the status and the body (at most MAX_ANSWER_BYTES), within the timeout."""
        deadline = time.monotonic() + self._timeout
        connection = self._connection()
        try:
            headers = {"Accept": "application/json"}
            if self._token:
                headers["X-Consul-Token"] = self._token
            connection.request("GET", path, headers=headers)
            # kept: getresponse() hands the socket to the response and forgets it when the
            # server closes after answering (HTTP/1.0, "Connection: close")
            sock = connection.sock
            response = connection.getresponse()
            chunks: list[bytes] = []
            size = 0
            while not response.isclosed():  # closed once the whole body is read
                # a socket's timeout bounds each read only: a server trickling its body would
                # hold us as long as it liked without the deadline
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                if sock is not None:
                    sock.settimeout(remaining)
                chunk = response.read1(_READ_CHUNK)  # one recv: read() waits for all it asks
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise ConsulError(f"the answer is larger than {MAX_ANSWER_BYTES >> 20} MiB")
                chunks.append(chunk)
            if response.length:  # read1 takes a close before Content-Length for the end
                raise ConsulError(f"the answer was cut short, {response.length} bytes missing")
            filtered = response.getheader("X-Consul-Results-Filtered-By-ACLs", "")
            if response.status == 200 and filtered.strip().lower() == "true":
                raise ConsulError("the answer was filtered by ACLs: the token lacks"
                                  " node:read,service:read")
            return response.status, b"".join(chunks)
        finally:
            connection.close()


def read_node(client: ConsulClient, node: str) -> NetworkView:
    """What one network's Consul says of ``node``: ALIVE only when its member status is alive
    and its ``serfHealth`` is passing; FAILED only when its member status is failed or left
    and ``serfHealth`` is critical or absent; UNKNOWN for anything else, errors included."""
    try:
        member = client.members().get(node)
        if member not in (MemberStatus.ALIVE, MemberStatus.FAILED, MemberStatus.LEFT):
            return NetworkView.UNKNOWN  # leaving, none, or not a member at all
        health = client.node_health(node)
    except ConsulError:
        return NetworkView.UNKNOWN
    if member is MemberStatus.ALIVE and health is CheckStatus.PASSING:
        return NetworkView.ALIVE
    if member in (MemberStatus.FAILED, MemberStatus.LEFT) and health in (CheckStatus.CRITICAL, None):
        return NetworkView.FAILED
    return NetworkView.UNKNOWN


def sampled(read: Callable[[], NetworkView], samples: int, interval: float,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> NetworkView:
    """``read()`` taken ``samples`` times, ``interval`` seconds apart (from the first reading's
    start, so slow readings do not stretch the window): the common value when every reading
    agrees, else UNKNOWN (a mixed window is no view, as masakari learnt).

    It stops at the first UNKNOWN reading or the first disagreement, since the answer can no
    longer be anything but UNKNOWN: a fence waiting on Consul is not held longer than needed.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a whole number of at least 1, not {samples!r}")
    if not (isinstance(interval, int | float) and 0 <= interval <= 3600):
        raise ValueError(f"interval must be between 0 and 3600 seconds, not {interval!r}")
    start = clock()
    first = read()
    for index in range(1, samples):
        if first is NetworkView.UNKNOWN:
            break
        wait = start + index * interval - clock()
        if wait > 0:
            sleep(wait)
        if read() is not first:
            return NetworkView.UNKNOWN
    return first if isinstance(first, NetworkView) else NetworkView.UNKNOWN


def read_views(clients: dict[str, ConsulClient], node: str, samples: int, interval: float,
               settle: float = 0.0, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, NetworkView]:
    """Each network's `sampled` view of ``node``, the networks read at once (a thread each,
    so a slow network does not delay the others' window): network name → view.

    ``settle``: while every network still sees the node alive, read again (every
    ``interval``, at least every 0.5 s) up to this many seconds before sampling. The cluster
    often loses a node before gossip does (a connection reset is seen at once; serf's
    failure detection takes seconds), and a view taken before Consul has noticed anything
    would say nothing: the first network to see the node other than alive ends the wait.
    """
    deadline = clock() + settle
    while settle > 0:
        seen = _read_once(clients, node)
        if any(view is not NetworkView.ALIVE for view in seen.values()) or clock() >= deadline:
            break
        sleep(max(0.0, min(max(interval, 0.5), deadline - clock())))
    views = {name: NetworkView.UNKNOWN for name in clients}

    def read(name: str, client: ConsulClient) -> None:
        views[name] = sampled(lambda: read_node(client, node), samples, interval)

    _each(clients, read)
    return views


def _read_once(clients: dict[str, ConsulClient], node: str) -> dict[str, NetworkView]:
    views = {name: NetworkView.UNKNOWN for name in clients}

    def read(name: str, client: ConsulClient) -> None:
        views[name] = read_node(client, node)

    _each(clients, read)
    return views


def _each(clients: dict[str, ConsulClient], read: Callable[[str, ConsulClient], None]) -> None:
    """``read(name, client)`` for every network at once, a thread each, until all are done
    (bounded: each reading by the client's timeout, a window by its samples)."""
    threads = [threading.Thread(target=read, args=(name, client), daemon=True,
                                name=f"consul-{name}") for name, client in clients.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
