"""The lab's Consul face (lab/consul_face.py) read by the suite's own client
(openstack_ha/consul.py), over four real serf agents on loopback: gossip states seen through
Consul's API, registered checks, and Consul's error answers. Real processes, no mocks."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab import serf
from openstack_ha.consul import (
    AgentCheck,
    CheckStatus,
    ConsulClient,
    ConsulError,
    MemberStatus,
    NetworkView,
    read_node,
)

REPO = Path(__file__).resolve().parents[2]
NODES = ("node-a", "node-b", "node-c", "node-d")  # on 127.0.0.11 .. 127.0.0.14
LOCAL = "node-a"  # the node whose agent the faces read, and whose local agent they stand for
STOPPED = "node-b"  # SIGSTOPped then continued
KILLED = "node-d"  # SIGKILLed, in the last test
TOKEN = "0b7e3c1a-55f2-4d8e-9a61-2f4c8d9e1b37"
DETECTION_LIMIT = 20.0  # serf's lan profile takes 6-7 s here to call a silent member failed
_Read = TypeVar("_Read")


def free_port(address: str, udp: bool = False) -> int:
    """A port free on ``address`` for TCP (and UDP too with ``udp``: serf gossips on both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind((address, 0))
            port = tcp.getsockname()[1]
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
                try:
                    datagram.bind((address, port))
                except OSError:
                    continue
                return port


def until(read: Callable[[], _Read], want: _Read, timeout: float) -> float:
    """Seconds until ``read()`` gives ``want``; fails after ``timeout`` with the last reading."""
    start = time.monotonic()
    while (seen := read()) != want:
        if time.monotonic() - start > timeout:
            pytest.fail(f"still {seen!r}, not {want!r}, after {timeout:g}s")
        time.sleep(0.1)
    return time.monotonic() - start


@dataclass
class Face:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One raw request: status, headers, body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


@dataclass
class Pool:
    agents: dict[str, serf.SerfAgent]
    processes: dict[str, subprocess.Popen[bytes]]
    checks_file: Path
    face: Face  # ACLs off, with the checks file
    acl_face: Face  # --token-file
    dead_face: Face  # its serf RPC address has no agent

    def write_checks(self, checks: list[dict[str, Any]] | str) -> None:
        # written whole then renamed, as the lab does: the face never reads half a file
        scratch = self.checks_file.with_suffix(".new")
        scratch.write_text(checks if isinstance(checks, str) else json.dumps(checks))
        scratch.replace(self.checks_file)


def start_face(tmp: Path, name: str, serf_rpc: str, *extra: str) -> Face:
    port = free_port("127.0.0.1")
    log = tmp / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lab.consul_face", "--listen", f"127.0.0.1:{port}",
             "--serf-rpc", serf_rpc, "--node", LOCAL, "--debug", *extra],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return Face(port, process, log)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the face {name} did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)


def stop_face(face: Face) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(face.process.pid, signal.SIGKILL)
    face.process.wait(5)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, require_lab) -> Iterator[Pool]:
    require_lab("serf")  # skipped without it, a failure in CI (scripts/lib.sh installs it)
    tmp = tmp_path_factory.mktemp("consul-face")
    agents = {}
    for number, node in enumerate(NODES, start=11):
        address = f"127.0.0.{number}"
        agents[node] = serf.SerfAgent(node, address, serf.host_port(address, free_port(address)),
                                      bind_port=free_port(address, udp=True))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    faces: list[Face] = []
    try:
        first = agents[LOCAL]
        for node, agent in agents.items():
            retry = () if agent is first else (first.bind,)
            processes[node] = serf.start_agent(agent, tmp / f"{node}.log", retry_join=retry)
        serf.wait_for_members(first.rpc_addr, NODES, "alive", timeout=20)
        checks_file = tmp / "checks.json"
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        faces.append(start_face(tmp, "face", first.rpc_addr, "--checks-file", str(checks_file)))
        faces.append(start_face(tmp, "acl-face", first.rpc_addr, "--checks-file",
                                str(checks_file), "--token-file", str(token_file)))
        nobody = f"127.0.0.1:{free_port('127.0.0.1')}"
        faces.append(start_face(tmp, "dead-face", nobody))
        yield Pool(agents, processes, checks_file, *faces)
    finally:
        for face in faces:
            stop_face(face)
        for process in processes.values():
            serf.stop_agent(process)


def client(face: Face, token: str | None = None) -> ConsulClient:
    return ConsulClient(face.url, token=token, timeout=5)


# ---- gossip states through Consul's API --------------------------------------------------


def test_every_member_alive_reads_alive(pool: Pool) -> None:
    consul = client(pool.face)
    assert consul.members() == dict.fromkeys(NODES, MemberStatus.ALIVE)
    for node in NODES:
        assert consul.node_health(node) is CheckStatus.PASSING
        assert read_node(consul, node) is NetworkView.ALIVE


def test_members_have_consuls_fields(pool: Pool) -> None:
    status, headers, body = pool.face.get("/v1/agent/members")
    assert status == 200 and headers["Content-Type"] == "application/json"
    by_name = {member["Name"]: member for member in json.loads(body)}
    agent = pool.agents[STOPPED]
    assert by_name[STOPPED] == {
        "Name": STOPPED, "Addr": agent.bind_addr, "Port": agent.bind_port, "Tags": {},
        "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 5}


def test_node_health_has_consuls_fields_and_headers(pool: Pool) -> None:
    pool.write_checks([])
    status, headers, body = pool.face.get(f"/v1/health/node/{STOPPED}")
    assert status == 200
    assert int(headers["X-Consul-Index"]) >= 1
    assert headers["X-Consul-KnownLeader"] == "true"
    assert headers["X-Consul-LastContact"] == "0"
    [check] = json.loads(body)
    assert {key: value for key, value in check.items() if not key.endswith("Index")} == {
        "Node": STOPPED, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
        "Timeout": "", "ExposedPort": 0, "Definition": {}}
    assert check["ModifyIndex"] >= check["CreateIndex"] >= 1


def test_a_stopped_member_reads_failed_then_alive_once_continued(pool: Pool) -> None:
    consul = client(pool.face)
    process = pool.processes[STOPPED]
    os.kill(process.pid, signal.SIGSTOP)
    try:
        took = until(lambda: read_node(consul, STOPPED), NetworkView.FAILED, DETECTION_LIMIT)
        assert consul.members()[STOPPED] is MemberStatus.FAILED
        assert consul.node_health(STOPPED) is CheckStatus.CRITICAL
        status, _, body = pool.face.get(f"/v1/health/node/{STOPPED}")
        assert status == 200
        assert json.loads(body)[0]["Output"] == "Agent not live or unreachable"
        # the others are untouched
        assert read_node(consul, "node-c") is NetworkView.ALIVE
    finally:
        os.kill(process.pid, signal.SIGCONT)
    print(f"serf (lan profile, 4 members) called a SIGSTOPped member failed in {took:.1f}s")
    until(lambda: read_node(consul, STOPPED), NetworkView.ALIVE, DETECTION_LIMIT)


# ---- registered checks -------------------------------------------------------------------


def test_agent_checks_follow_the_checks_file_at_once(pool: Pool) -> None:
    consul = client(pool.face)
    pool.write_checks([
        {"CheckID": "service:nova-compute", "Name": "nova-compute", "Status": "passing",
         "ServiceID": "nova-compute", "ServiceName": "nova-compute"},
        {"CheckID": "mem", "Name": "memory", "Status": "warning"},
        {"Node": "node-c", "CheckID": "disk", "Name": "disk", "Status": "critical"},
    ])
    assert consul.agent_checks() == [
        AgentCheck("mem", "memory", "", CheckStatus.WARNING),
        AgentCheck("service:nova-compute", "nova-compute", "nova-compute", CheckStatus.PASSING),
    ]
    pool.write_checks([{"CheckID": "service:nova-compute", "Name": "nova-compute",
                        "Status": "critical", "ServiceName": "nova-compute"}])
    assert consul.agent_checks() == [
        AgentCheck("service:nova-compute", "nova-compute", "nova-compute", CheckStatus.CRITICAL)]
    pool.checks_file.unlink()
    assert consul.agent_checks() == []


def test_a_critical_registered_check_shows_in_node_health(pool: Pool) -> None:
    consul = client(pool.face)
    pool.write_checks([{"Node": "node-c", "CheckID": "service:nova-compute",
                        "Name": "nova-compute", "Status": "critical", "Output": "down",
                        "ServiceID": "nova-compute", "ServiceName": "nova-compute"}])
    status, headers, body = pool.face.get("/v1/health/node/node-c")
    assert status == 200
    checks = {check["CheckID"]: check for check in json.loads(body)}
    assert checks["service:nova-compute"]["Status"] == "critical"
    assert checks["service:nova-compute"]["Output"] == "down"
    assert int(headers["X-Consul-Index"]) == max(c["ModifyIndex"] for c in checks.values())
    # the gossip view is serfHealth alone
    assert consul.node_health("node-c") is CheckStatus.PASSING
    assert read_node(consul, "node-c") is NetworkView.ALIVE


def test_a_malformed_checks_file_is_a_500(pool: Pool) -> None:
    consul = client(pool.face)
    for bad in ("[{", '{"CheckID": "x"}', '[{"CheckID": "x", "Name": "x", "Status": "ok"}]',
                '[{"CheckID": "serfHealth", "Name": "x", "Status": "passing"}]'):
        pool.write_checks(bad)
        with pytest.raises(ConsulError, match="HTTP 500: checks file"):
            consul.agent_checks()
    pool.write_checks([])
    assert consul.agent_checks() == []


# ---- Consul's answers to what it does not serve -------------------------------------------


def test_an_unknown_node_is_an_empty_list(pool: Pool) -> None:
    consul = client(pool.face)
    status, _, body = pool.face.get("/v1/health/node/no-such-node")
    assert (status, json.loads(body)) == (200, [])
    assert consul.node_health("no-such-node") is None
    assert read_node(consul, "no-such-node") is NetworkView.UNKNOWN


def test_an_unknown_path_is_a_404_and_another_method_a_405(pool: Pool) -> None:
    status, _, body = pool.face.get("/v1/agent/self")
    assert (status, body) == (404, b"Invalid URL path: not a recognized HTTP API endpoint\n")
    status, headers, body = pool.face.get("/v1/agent/members", method="POST")
    assert (status, body) == (405, b"method POST not allowed")
    assert headers["Allow"] == "OPTIONS,GET"
    status, _, body = pool.face.get("/v1/health/node/")
    assert (status, body) == (400, b"Missing node name")


def test_acls_the_token_reads_another_is_refused_none_sees_nothing(pool: Pool) -> None:
    assert read_node(client(pool.acl_face, TOKEN), LOCAL) is NetworkView.ALIVE
    status, _, body = pool.acl_face.get("/v1/agent/members",
                                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and len(json.loads(body)) == len(NODES)
    with pytest.raises(ConsulError, match=r"HTTP 403 .*: ACL not found"):
        client(pool.acl_face, "not-the-token").members()
    # no token is Consul's anonymous token: under default-deny its answers are filtered empty
    anonymous = client(pool.acl_face)
    assert anonymous.members() == {}
    assert anonymous.node_health(LOCAL) is None
    assert read_node(anonymous, LOCAL) is NetworkView.UNKNOWN


def test_the_token_never_reaches_the_log(pool: Pool) -> None:
    pool.acl_face.get(f"/v1/agent/members?token={TOKEN}")
    pool.acl_face.get("/v1/agent/members", headers={"X-Consul-Token": TOKEN})
    with socket.create_connection(("127.0.0.1", pool.acl_face.port), 5) as raw:
        raw.sendall(f"GET /v1/agent/members?token={TOKEN} BAD/9.9\r\n\r\n".encode())
        raw.recv(4096)
    time.sleep(0.2)
    log = pool.acl_face.log.read_text()
    assert "GET /v1/agent/members 200" in log
    assert TOKEN not in log


def test_serf_unreachable_is_a_500_and_reads_unknown(pool: Pool) -> None:
    consul = client(pool.dead_face)
    with pytest.raises(ConsulError, match="HTTP 500: serf members"):
        consul.members()
    assert read_node(consul, LOCAL) is NetworkView.UNKNOWN


# ---- last: it leaves a member dead ---------------------------------------------------------


def test_a_killed_member_reads_failed(pool: Pool) -> None:
    consul = client(pool.face)
    pool.processes[KILLED].kill()
    until(lambda: read_node(consul, KILLED), NetworkView.FAILED, DETECTION_LIMIT)
    assert consul.node_health(KILLED) is CheckStatus.CRITICAL
    assert read_node(consul, STOPPED) is NetworkView.ALIVE
