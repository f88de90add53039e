"""The Consul client against a real HTTP server in this process, its parsers on any JSON,
the per-network view of a node, and sampling."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tls_helpers import Tls, make_tls

from openstack_ha import consul
from openstack_ha.consul import (
    AgentCheck,
    CheckStatus,
    ConsulClient,
    ConsulError,
    MemberStatus,
    NetworkView,
    parse_networks,
    read_node,
    sampled,
)

TOKEN = "9f3c1e52-7d1a-4c3b-a1e0-5b6c7d8e9f00"

# Shapes from HashiCorp's API documentation (agent/members, health/node, agent/checks).
MEMBERS = [
    {"Name": "compute-1", "Addr": "10.0.0.21", "Port": 8301,
     "Tags": {"dc": "management", "role": "node"}, "Status": 1,
     "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
     "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4},
    {"Name": "compute-2", "Addr": "10.0.0.22", "Port": 8301, "Tags": {}, "Status": 4},
    {"Name": "compute-3", "Addr": "10.0.0.23", "Port": 8301, "Tags": {}, "Status": 3},
    {"Name": "compute-4", "Addr": "10.0.0.24", "Port": 8301, "Tags": {}, "Status": 2},
    {"Name": "compute-5", "Addr": "10.0.0.25", "Port": 8301, "Tags": {}, "Status": 0},
]


def serf_check(node: str, status: str) -> dict[str, Any]:
    return {"ID": "", "Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": status, "Notes": "", "Output": "Agent alive and reachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Namespace": "default"}


def service_check(node: str, service: str, status: str) -> dict[str, Any]:
    return {"Node": node, "CheckID": f"service:{service}", "Name": f"Service '{service}' check",
            "Status": status, "Notes": "", "Output": "", "ServiceID": service,
            "ServiceName": service, "ServiceTags": []}


AGENT_CHECKS = {
    "service:nova-compute": service_check("compute-1", "nova-compute", "passing"),
    "service:libvirtd": service_check("compute-1", "libvirtd", "critical"),
    "serfHealth": serf_check("compute-1", "passing"),
}


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # before the status line
    trickle: float = 0.0  # between body bytes
    length: bool = True  # send Content-Length (else the body ends when the connection closes)
    headers: dict[str, str] = field(default_factory=dict)


def as_json(document: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(document).encode())


class FakeConsul(ThreadingHTTPServer):
    """Answers GETs from ``answers`` (path → Answer), 404 otherwise; 403 when a token is
    expected and a different one (or none) is sent, its body echoing the token it got."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.expected_token: str | None = None
        self.stopping = threading.Event()
        self.context = context

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.server_address[1]}"

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout, refused certificate)

    def answer(self, path: str) -> Answer:
        """The answer to a GET of ``path`` that passed the token check."""
        return self.answers.get(path, Answer(404, b"Not Found"))


class _Handler(BaseHTTPRequestHandler):
    server: FakeConsul

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server
        fake.requests.append((self.path, dict(self.headers.items())))
        got = self.headers.get("X-Consul-Token")
        if fake.expected_token is not None and got != fake.expected_token:
            # Consul's own 403 text, echoing what it was given: the client must cut it out
            answer = Answer(403, f"Permission denied: token {got} lacks node:read".encode())
        else:
            answer = fake.answer(self.path)
        if answer.delay and fake.stopping.wait(answer.delay):
            return
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json" if answer.status == 200 else "text/plain")
        for key, value in answer.headers.items():
            self.send_header(key, value)
        if answer.length:
            self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if not answer.trickle:
            self.wfile.write(answer.body)
            return
        for index in range(len(answer.body)):
            self.wfile.write(answer.body[index:index + 1])
            self.wfile.flush()
            if fake.stopping.wait(answer.trickle):
                return


def _serve(server: FakeConsul) -> Iterator[FakeConsul]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fake() -> Iterator[FakeConsul]:
    yield from _serve(FakeConsul())


def client_of(fake: FakeConsul, **kwargs: Any) -> ConsulClient:
    kwargs.setdefault("timeout", 2.0)
    return ConsulClient(fake.url, **kwargs)


def consul_error(call: Callable[[], Any]) -> str:
    with pytest.raises(ConsulError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert TOKEN not in message
    # nothing chained that a traceback would print (a header, a request)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    return message


# -- reading Consul ---------------------------------------------------------------------------

def test_members_are_read_with_serf_statuses(fake: FakeConsul) -> None:
    fake.answers["/v1/agent/members"] = as_json(MEMBERS)
    assert client_of(fake).members() == {
        "compute-1": MemberStatus.ALIVE, "compute-2": MemberStatus.FAILED,
        "compute-3": MemberStatus.LEFT, "compute-4": MemberStatus.LEAVING,
        "compute-5": MemberStatus.NONE}


def test_node_health_is_the_serf_health_check(fake: FakeConsul) -> None:
    fake.answers["/v1/health/node/compute-1"] = as_json(
        [service_check("compute-1", "nova-compute", "critical"), serf_check("compute-1", "passing")])
    fake.answers["/v1/health/node/compute-2"] = as_json([serf_check("compute-2", "critical")])
    fake.answers["/v1/health/node/compute-3"] = as_json([])  # a node Consul does not know
    fake.answers["/v1/health/node/compute-4"] = as_json(
        [service_check("compute-4", "nova-compute", "passing")])
    client = client_of(fake)
    assert client.node_health("compute-1") is CheckStatus.PASSING
    assert client.node_health("compute-2") is CheckStatus.CRITICAL
    assert client.node_health("compute-3") is None
    assert client.node_health("compute-4") is None


def test_node_names_are_quoted_into_the_path(fake: FakeConsul) -> None:
    fake.answers["/v1/health/node/a%2Fb%20c%3Fx"] = as_json([serf_check("a/b c?x", "warning")])
    assert client_of(fake).node_health("a/b c?x") is CheckStatus.WARNING
    with pytest.raises(ValueError):
        client_of(fake).node_health("")


def test_agent_checks_are_read(fake: FakeConsul) -> None:
    fake.answers["/v1/agent/checks"] = as_json(AGENT_CHECKS)
    assert client_of(fake).agent_checks() == [
        AgentCheck("serfHealth", "Serf Health Status", "", CheckStatus.PASSING),
        AgentCheck("service:libvirtd", "Service 'libvirtd' check", "libvirtd", CheckStatus.CRITICAL),
        AgentCheck("service:nova-compute", "Service 'nova-compute' check", "nova-compute",
                   CheckStatus.PASSING),
    ]


def test_the_token_goes_in_the_header_only(fake: FakeConsul) -> None:
    fake.expected_token = TOKEN
    fake.answers["/v1/agent/members"] = as_json(MEMBERS)
    client_of(fake, token=TOKEN).members()
    path, headers = fake.requests[-1]
    assert headers["X-Consul-Token"] == TOKEN
    assert TOKEN not in path and "token" not in path


def test_a_wrong_token_is_an_error_without_either_token(fake: FakeConsul) -> None:
    fake.expected_token = "the-right-one"
    wrong = ConsulClient(fake.url, token=TOKEN, timeout=2.0)
    message = consul_error(wrong.members)  # the server's body quoted the token: cut out
    assert "HTTP 403" in message and "unknown to Consul" in message
    assert "Permission denied" in message and "<token>" in message
    assert "the-right-one" not in message


def test_an_answer_filtered_by_acls_is_an_error_not_an_empty_list(fake: FakeConsul) -> None:
    """A known token without node:read gets 200 and the members left out: read as an empty
    pool, the node would pass for "not a member"."""
    fake.answers["/v1/agent/members"] = Answer(
        200, b"[]", headers={"X-Consul-Results-Filtered-By-ACLs": "true"})
    message = consul_error(client_of(fake, token=TOKEN).members)
    assert "filtered by ACLs" in message and "node:read,service:read" in message
    assert read_node(client_of(fake, token=TOKEN), "compute-1") is NetworkView.UNKNOWN


@pytest.mark.parametrize(("answer", "expected"), [
    (Answer(404, b"Not Found"), "HTTP 404: Not Found"),
    (Answer(500, b"rpc error making call: No cluster leader\n\nmore"), "HTTP 500: rpc error"),
    (Answer(301, b"", headers={"Location": "http://198.51.100.1/v1/agent/members"}), "HTTP 301"),
    (Answer(200, b"<html>not json</html>"), "not JSON"),
    (Answer(200, b"\xff\xfe\x00garbage"), "not UTF-8"),
    (Answer(200, b"[" * 100_000), "nested too deep"),
    (Answer(200, b"9" * 10_000), "not JSON"),
    (Answer(200, b'{"Name": "compute-1"}'), "not a list"),
    (Answer(200, b'[{"Name": "compute-1", "Status": "alive"}]'), "not serf's 0-4"),
    (Answer(200, b'[{"Name": "compute-1", "Status": 7}]'), "not serf's 0-4"),
    (Answer(200, b'[{"Name": "compute-1", "Status": true}]'), "not serf's 0-4"),
    (Answer(200, b'[{"Status": 1}]'), "no text field 'Name'"),
    (Answer(200, json.dumps([MEMBERS[0], MEMBERS[0]]).encode()), "listed twice"),
    (Answer(200, b"[1, 2]"), "not an object"),
    (Answer(200, b"[]", length=False, headers={"Content-Length": "100"}), "cut short, 98 bytes"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_every_failure_is_one_consul_error(fake: FakeConsul, answer: Answer, expected: str) -> None:
    fake.answers["/v1/agent/members"] = answer
    message = consul_error(client_of(fake, token=TOKEN).members)
    assert message.startswith(f"consul {fake.url}/v1/agent/members: ")
    assert expected in message


def test_a_redirect_is_not_followed(fake: FakeConsul) -> None:
    fake.answers["/v1/agent/members"] = Answer(
        307, b"", headers={"Location": f"{fake.url}/elsewhere"})
    fake.answers["/elsewhere"] = as_json(MEMBERS)
    consul_error(client_of(fake, token=TOKEN).members)
    assert [path for path, _ in fake.requests] == ["/v1/agent/members"]


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_huge_answer_is_refused(fake: FakeConsul, length: bool) -> None:
    body = b"[" + b'"x",' * (consul.MAX_ANSWER_BYTES // 4 + 10) + b'"x"]'
    fake.answers["/v1/agent/members"] = Answer(200, body, length=length)
    assert "larger than 4 MiB" in consul_error(client_of(fake).members)


def test_an_answer_just_under_the_cap_is_read(fake: FakeConsul) -> None:
    padding = consul.MAX_ANSWER_BYTES - 1000
    body = json.dumps([dict(MEMBERS[0], Pad="p" * padding)]).encode()
    assert len(body) <= consul.MAX_ANSWER_BYTES
    fake.answers["/v1/agent/members"] = Answer(200, body, length=False)
    assert client_of(fake).members() == {"compute-1": MemberStatus.ALIVE}


def test_a_slow_answer_times_out(fake: FakeConsul) -> None:
    fake.answers["/v1/agent/members"] = Answer(200, json.dumps(MEMBERS).encode(), delay=5)
    started = time.monotonic()
    message = consul_error(client_of(fake, token=TOKEN, timeout=0.3).members)
    assert time.monotonic() - started < 2
    assert "no answer within 0.3s" in message


def test_a_trickled_body_is_bounded_by_the_timeout_as_a_whole(fake: FakeConsul) -> None:
    # each byte well within the timeout, the whole far beyond it
    fake.answers["/v1/agent/members"] = Answer(200, json.dumps(MEMBERS).encode(), trickle=0.05)
    started = time.monotonic()
    message = consul_error(client_of(fake, timeout=0.5).members)
    assert time.monotonic() - started < 2
    assert "no answer within 0.5s" in message


def test_nobody_listening_is_a_consul_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = consul_error(ConsulClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout=1).members)
    assert f"consul http://127.0.0.1:{port}/v1/agent/members: " in message


@pytest.mark.parametrize("token", ["with space", "new\nline", "tab\there", "", "é"])
def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ValueError) as caught:
        ConsulClient("http://127.0.0.1:8500", token=token)
    assert token not in str(caught.value) or not token
    assert "not shown" in str(caught.value)


@pytest.mark.parametrize("timeout", [0, -1, 601, float("nan"), "5"])
def test_a_bad_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        ConsulClient("http://127.0.0.1:8500", timeout=timeout)


# -- TLS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway CA, a certificate for 127.0.0.1 it signed, and an unrelated CA."""
    return make_tls(tmp_path_factory.mktemp("consul-tls"), "test consul CA")


@pytest.fixture
def tls_fake(tls: Tls) -> Iterator[FakeConsul]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    yield from _serve(FakeConsul(context))


def test_https_with_the_ca_file(tls_fake: FakeConsul, tls: Tls) -> None:
    tls_fake.expected_token = TOKEN
    tls_fake.answers["/v1/agent/members"] = as_json(MEMBERS[:1])
    client = client_of(tls_fake, token=TOKEN, ca_file=str(tls.ca_file))
    assert client.members() == {"compute-1": MemberStatus.ALIVE}


def test_https_with_another_ca_is_a_consul_error(tls_fake: FakeConsul, tls: Tls) -> None:
    tls_fake.answers["/v1/agent/members"] = as_json(MEMBERS[:1])
    message = consul_error(client_of(tls_fake, token=TOKEN, ca_file=str(tls.other_ca_file)).members)
    assert "TLS failed" in message and "ca_file" in message


def test_an_unusable_ca_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ca_file"):
        ConsulClient("https://127.0.0.1:8501", ca_file=str(tmp_path / "missing.pem"))
    ConsulClient("http://127.0.0.1:8500", ca_file=str(tmp_path / "missing.pem"))  # not used


# -- parsers on anything ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)

# near misses: the right keys, any values
member_like = st.fixed_dictionaries({}, optional={
    "Name": json_values | st.sampled_from(["compute-1", "compute-2"]),
    "Status": json_values | st.integers(-1, 6), "Addr": json_values})
check_like = st.fixed_dictionaries({}, optional={
    "CheckID": json_values | st.sampled_from(["serfHealth", "service:nova-compute"]),
    "Node": json_values | st.sampled_from(["compute-1", "COMPUTE-1", "compute-2"]),
    "Name": json_values | st.just("Serf Health Status"),
    "ServiceName": json_values | st.just(""),
    "Status": json_values | st.sampled_from(["passing", "warning", "critical", "maintenance"])})


@settings(max_examples=300, deadline=None)
@given(document=json_values | st.lists(member_like, max_size=4))
def test_members_parser_gives_members_or_consul_error(document: Any) -> None:
    try:
        members = consul.parse_members(document)
    except ConsulError as error:
        assert "\n" not in str(error)
        return
    assert all(isinstance(name, str) and name for name in members)
    assert all(isinstance(status, MemberStatus) for status in members.values())


@settings(max_examples=300, deadline=None)
@given(document=json_values | st.lists(check_like, max_size=4))
def test_node_health_parser_gives_a_status_or_consul_error(document: Any) -> None:
    try:
        status = consul.parse_node_health(document, "compute-1")
    except ConsulError as error:
        assert "\n" not in str(error)
        return
    assert status is None or isinstance(status, CheckStatus)


@settings(max_examples=300, deadline=None)
@given(document=json_values | st.dictionaries(
    st.sampled_from(["serfHealth", "service:nova-compute"]) | st.text(max_size=5), check_like,
    max_size=3))
def test_agent_checks_parser_gives_checks_or_consul_error(document: Any) -> None:
    try:
        checks = consul.parse_agent_checks(document)
    except ConsulError as error:
        assert "\n" not in str(error)
        return
    assert all(isinstance(check.status, CheckStatus) for check in checks)
    assert [check.check_id for check in checks] == sorted(document)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64) | json_values.map(lambda value: json.dumps(value).encode()))
def test_decoding_any_bytes_gives_json_or_consul_error(body: bytes) -> None:
    try:
        consul.decode_answer(body)
    except ConsulError as error:
        assert "\n" not in str(error)


# -- parse_networks ---------------------------------------------------------------------------

def test_networks_are_parsed_in_order() -> None:
    assert parse_networks(" management=http://127.0.0.1:8500 , storage=https://10.0.0.1:8501/,"
                          "tenant_2=http://[::1]:8502") == {
        "management": "http://127.0.0.1:8500", "storage": "https://10.0.0.1:8501/",
        "tenant_2": "http://[::1]:8502"}


@pytest.mark.parametrize(("text", "expected"), [
    ("", "none given"),
    ("management=http://127.0.0.1:8500,", "item 2 is empty"),
    ("management", "item 1 'management' is not name=url"),
    ("Management=http://127.0.0.1:8500", "network name 'Management'"),
    ("9net=http://127.0.0.1:8500", "network name '9net'"),
    ("a" * 33 + "=http://127.0.0.1:8500", "network name"),
    ("m=http://127.0.0.1:8500,m=http://127.0.0.2:8500", "item 2: network 'm' is named twice"),
    ("m=ftp://127.0.0.1", "item 1 (m): agent URL 'ftp://127.0.0.1' must start with http"),
    ("m=127.0.0.1:8500", "must start with http"),
    ("m=http://", "names no host"),
    ("m=http://127.0.0.1:99999", "bad port"),
    ("m=http://127.0.0.1:0", "bad port"),
    ("m=http://127.0.0.1:8500/v1", "without a path"),
    ("m=http://127.0.0.1:8500?dc=x", "without a path, query"),
    ("m=http://127.0.0.1:8500#x", "fragment"),
    ("m=http://127.0.0.1:8500?", "query"),
    ("m=http://127.0.0.1:85 00", "white space"),
    ("m=http://[::1", "not a URL"),
], ids=lambda value: value if len(value) < 40 else value[:40])
def test_bad_networks_are_one_line_value_errors(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_networks(text)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["m=http://user:hunter2@127.0.0.1:8500",
                                  "m=http://hunter2@127.0.0.1:8500", "hunter2@127.0.0.1",
                                  "http://u:hunter2=x@127.0.0.1:8500", "M=http://u:hunter2@h"])
def test_user_info_is_refused_without_being_shown(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_networks(text)
    assert "hunter2" not in str(caught.value)
    assert "user info" in str(caught.value)
    with pytest.raises(ValueError) as caught:
        ConsulClient(text.partition("=")[2] or text)
    assert "hunter2" not in str(caught.value)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80) | st.lists(
    st.tuples(st.sampled_from(["management", "storage", "m", "Bad", ""]),
              st.sampled_from(["=", "", "=="]),
              st.sampled_from(["http://127.0.0.1:8500", "https://[::1]:1/", "http://h", "x://y",
                               "http://u@h", "http://h/p", "http://h:0"])),
    max_size=4).map(lambda items: ",".join(a + b + c for a, b, c in items)))
def test_parse_networks_gives_networks_or_a_value_error(text: str) -> None:
    try:
        networks = parse_networks(text)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert networks
    for name, url in networks.items():
        ConsulClient(url)  # every URL it accepts makes a client
        assert consul._NETWORK_NAME.fullmatch(name)


# -- a node's view -----------------------------------------------------------------------------

class ScriptedClient:
    """Stands in for ConsulClient in read_node: given members and a serfHealth status, or errors."""

    def __init__(self, member: int | None, health: CheckStatus | None,
                 members_fail: bool = False, health_fails: bool = False) -> None:
        self.member, self.health = member, health
        self.members_fail, self.health_fails = members_fail, health_fails

    def members(self) -> dict[str, MemberStatus]:
        if self.members_fail:
            raise ConsulError("consul: refused")
        return {} if self.member is None else {"compute-1": consul.SERF_CODES[self.member]}

    def node_health(self, node: str) -> CheckStatus | None:
        if self.health_fails:
            raise ConsulError("consul: timed out")
        return self.health


P, W, C = CheckStatus.PASSING, CheckStatus.WARNING, CheckStatus.CRITICAL


@pytest.mark.parametrize(("member", "health", "view"), [
    (1, P, NetworkView.ALIVE),
    (1, W, NetworkView.UNKNOWN),
    (1, C, NetworkView.UNKNOWN),
    (1, None, NetworkView.UNKNOWN),
    (4, C, NetworkView.FAILED),
    (4, None, NetworkView.FAILED),
    (3, C, NetworkView.FAILED),
    (3, None, NetworkView.FAILED),
    (4, P, NetworkView.UNKNOWN),  # gossip and the catalogue disagree: no view
    (4, W, NetworkView.UNKNOWN),
    (2, C, NetworkView.UNKNOWN),  # leaving
    (0, C, NetworkView.UNKNOWN),
    (None, C, NetworkView.UNKNOWN),  # not a member at all
    (None, None, NetworkView.UNKNOWN),
])
def test_read_node(member: int | None, health: CheckStatus | None, view: NetworkView) -> None:
    assert read_node(ScriptedClient(member, health), "compute-1") is view  # type: ignore[arg-type]


def test_read_node_errors_are_unknown() -> None:
    for client in (ScriptedClient(4, C, members_fail=True), ScriptedClient(4, C, health_fails=True),
                   ScriptedClient(1, P, health_fails=True)):
        assert read_node(client, "compute-1") is NetworkView.UNKNOWN  # type: ignore[arg-type]


def test_read_node_through_http(fake: FakeConsul) -> None:
    fake.answers["/v1/agent/members"] = as_json(MEMBERS)
    fake.answers["/v1/health/node/compute-1"] = as_json([serf_check("compute-1", "passing")])
    fake.answers["/v1/health/node/compute-2"] = as_json([serf_check("compute-2", "critical")])
    client = client_of(fake)
    assert read_node(client, "compute-1") is NetworkView.ALIVE
    assert read_node(client, "compute-2") is NetworkView.FAILED
    assert read_node(client, "compute-9") is NetworkView.UNKNOWN
    fake.answers["/v1/agent/members"] = Answer(500, b"No cluster leader")
    assert read_node(client, "compute-2") is NetworkView.UNKNOWN


# -- sampling ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def script(clock: FakeClock, views: list[NetworkView], takes: float = 0.0
           ) -> tuple[Callable[[], NetworkView], list[float]]:
    """A read() giving ``views`` in turn, each taking ``takes`` seconds; and when each began."""
    began: list[float] = []
    remaining = list(views)

    def read() -> NetworkView:
        began.append(clock.now)
        clock.now += takes
        return remaining.pop(0)

    return read, began


A, F, U = NetworkView.ALIVE, NetworkView.FAILED, NetworkView.UNKNOWN


@pytest.mark.parametrize("view", [A, F])
def test_agreeing_samples_give_their_view(view: NetworkView) -> None:
    clock = FakeClock()
    read, began = script(clock, [view] * 3)
    assert sampled(read, 3, 1.0, sleep=clock.sleep, clock=clock.clock) is view
    assert began == [100.0, 101.0, 102.0]


@pytest.mark.parametrize("views", [[A, F, A], [F, F, A], [A, A, U]])
def test_a_mixed_window_is_unknown_and_stops_at_the_first_disagreement(views: list[NetworkView]) -> None:
    clock = FakeClock()
    read, began = script(clock, views)
    assert sampled(read, 3, 1.0, sleep=clock.sleep, clock=clock.clock) is U
    differs = next(index for index, view in enumerate(views) if view is not views[0])
    assert len(began) == differs + 1


def test_an_unknown_first_reading_is_unknown_at_once() -> None:
    clock = FakeClock()
    read, began = script(clock, [U, A, A])
    assert sampled(read, 3, 1.0, sleep=clock.sleep, clock=clock.clock) is U
    assert began == [100.0] and clock.sleeps == []


def test_slow_readings_do_not_stretch_the_window() -> None:
    clock = FakeClock()
    read, began = script(clock, [F] * 4, takes=0.7)
    assert sampled(read, 4, 0.5, sleep=clock.sleep, clock=clock.clock) is F
    assert began == pytest.approx([100.0, 100.7, 101.4, 102.1])  # late: no sleep at all
    assert clock.sleeps == []
    clock = FakeClock()
    read, began = script(clock, [A] * 3, takes=0.25)
    assert sampled(read, 3, 1.0, sleep=clock.sleep, clock=clock.clock) is A
    assert began == pytest.approx([100.0, 101.0, 102.0])


def test_one_sample_is_one_reading() -> None:
    clock = FakeClock()
    read, began = script(clock, [F])
    assert sampled(read, 1, 5.0, sleep=clock.sleep, clock=clock.clock) is F
    assert len(began) == 1 and clock.sleeps == []


@pytest.mark.parametrize(("samples", "interval"), [(0, 1.0), (-1, 1.0), (True, 1.0), (2.0, 1.0),
                                                   (3, -0.1), (3, float("nan")), (3, 1e9)])
def test_bad_sampling_is_a_value_error(samples: Any, interval: Any) -> None:
    with pytest.raises(ValueError):
        sampled(lambda: A, samples, interval, sleep=lambda _: None, clock=lambda: 0.0)
