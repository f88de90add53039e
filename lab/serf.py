"""Serf agents for the lab: the gossip failure detector Consul is built on.

Consul cannot be installed here; Debian's ``serf`` can, and Consul's ``/v1/agent/members`` is
serf's member list. The lab runs one agent per node per network (``lab/consul_face.py`` serves
Consul's API from them). These are plain helpers: describe an agent (`SerfAgent`), build its
command line (`agent_argv`), start it (`start_agent`), stop it (`stop_agent`), read its member
list (`members`) and wait for a state (`wait_for_members`).

The ``lan`` profile is what a real Consul LAN pool uses (memberlist's LAN timings: probe every
second, suspicion scaled by the pool's size), so failure detection measured here is what a
Consul deployment would see. ``local`` is memberlist's loopback profile, faster still.

Standard library only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lab.commands import LabError, daemon_env, run

SERF = "serf"
DEFAULT_BIND_PORT = 7946
PROFILES = ("lan", "local")
# serf's MemberStatus names, in the order of its integer codes (0 none ... 4 failed)
STATUSES = ("none", "alive", "leaving", "left", "failed")
# a rebooted node's agent retries its join this often, instead of serf's 30 s default
RETRY_INTERVAL = "1s"


class SerfError(LabError):
    """A serf agent could not be read or started; the message is one line."""


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets as serf and Go expect."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(text: str) -> tuple[str, int]:
    """``"10.0.0.1:7946"`` or ``"[::1]:7946"`` as (host, port); ValueError otherwise."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"{text!r} is not ADDRESS:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass(frozen=True)
class SerfAgent:
    """One serf agent: ``node`` is its member name, ``bind_addr``:``bind_port`` where it gossips
    (TCP and UDP), ``rpc_addr`` (``ADDRESS:PORT``) where ``serf members`` reads it; ``netns``
    the network namespace it runs in (``ip netns exec``), None for this one."""

    node: str
    bind_addr: str
    rpc_addr: str
    bind_port: int = DEFAULT_BIND_PORT
    netns: str | None = None
    profile: str = "lan"

    def __post_init__(self) -> None:
        if not self.node or any(c.isspace() or not c.isprintable() for c in self.node):
            raise ValueError(f"serf node name {self.node!r} is empty or holds spaces")
        ipaddress.ip_address(self.bind_addr)  # ValueError names the bad address
        if not 0 < self.bind_port < 65536:
            raise ValueError(f"serf bind port {self.bind_port} is out of range")
        _split_host_port(self.rpc_addr)
        if self.profile not in PROFILES:
            raise ValueError(f"serf profile {self.profile!r} is not one of {', '.join(PROFILES)}")

    @property
    def bind(self) -> str:
        """``bind_addr:bind_port``, what other agents join."""
        return host_port(self.bind_addr, self.bind_port)


def _in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def agent_argv(agent: SerfAgent, join: Iterable[str] = (), retry_join: Iterable[str] = ()) -> list[str]:
    """The command line that runs ``agent``: ``join`` addresses must answer at start (serf exits
    otherwise), ``retry_join`` addresses are retried every `RETRY_INTERVAL` until one does."""
    argv = [SERF, "agent", f"-node={agent.node}", f"-bind={agent.bind}",
            f"-rpc-addr={agent.rpc_addr}", f"-profile={agent.profile}", "-log-level=warn"]
    argv += [f"-join={address}" for address in join]
    retry = [f"-retry-join={address}" for address in retry_join]
    if retry:
        argv += [*retry, f"-retry-interval={RETRY_INTERVAL}"]
    return _in_netns(agent.netns, argv)


def start_agent(agent: SerfAgent, log_path: Path | str, join: Iterable[str] = (),
                retry_join: Iterable[str] = ()) -> subprocess.Popen[bytes]:
    """Start ``agent`` in a session (and process group) of its own, its output appended to
    ``log_path``; it is not waited for (see `wait_for_members`)."""
    argv = agent_argv(agent, join, retry_join)
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=daemon_env(), cwd="/", start_new_session=True)
        except FileNotFoundError as error:
            raise SerfError(f"{argv[0]}: command not found") from error


def stop_agent(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop an agent `start_agent` started, and everything in its process group: SIGTERM (serf
    then quits without a graceful leave, so the others see it failed), SIGKILL after
    ``timeout``. A stopped (SIGSTOPped) agent is continued first so that it can die."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@dataclass(frozen=True)
class SerfMember:
    """One member as ``serf members`` lists it: ``addr`` is the address alone (no port),
    ``status`` one of `STATUSES`; ``protocol_*`` are serf's protocol versions (what Consul
    calls the delegate versions)."""

    name: str
    addr: str
    port: int
    status: str
    tags: Mapping[str, str] = field(default_factory=dict)
    protocol_min: int = 0
    protocol_max: int = 0
    protocol_cur: int = 0


def _member(entry: Any, index: int) -> SerfMember:
    what = f"serf members: entry {index}"
    if not isinstance(entry, dict):
        raise SerfError(f"{what} is not an object")
    name, addr, port = entry.get("name"), entry.get("addr"), entry.get("port")
    status, tags = entry.get("status"), entry.get("tags", {})
    protocol = entry.get("protocol", {})
    if not isinstance(name, str) or not name:
        raise SerfError(f"{what} has no name")
    if not isinstance(addr, str) or not isinstance(port, int) or isinstance(port, bool):
        raise SerfError(f"{what} ({name}) has no address and port")
    if status not in STATUSES:
        raise SerfError(f"{what} ({name}) has status {status!r}, not one of {', '.join(STATUSES)}")
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise SerfError(f"{what} ({name}) has tags that are not text")
    if not isinstance(protocol, dict):
        raise SerfError(f"{what} ({name}) has a protocol that is not an object")
    try:  # serf prints "ADDR:PORT" ("[v6]:PORT"); Consul gives the address alone
        host, _ = _split_host_port(addr)
    except ValueError:
        host = addr
    versions = [protocol.get(key, 0) for key in ("min", "max", "version")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
        raise SerfError(f"{what} ({name}) has protocol versions that are not integers")
    return SerfMember(name, host, port, status, MappingProxyType(dict(tags)), *versions)


def members(rpc_addr: str, timeout: float = 5.0, netns: str | None = None) -> list[SerfMember]:
    """The members the agent at ``rpc_addr`` knows, as ``serf members -format=json`` lists them
    (run in ``netns`` if given). SerfError on a timeout, a non-zero exit or output that is not
    serf's JSON."""
    argv = _in_netns(netns, [SERF, "members", "-format=json", f"-rpc-addr={rpc_addr}"])
    try:
        proc = run(argv, timeout=timeout, env=daemon_env(), what=f"serf members -rpc-addr={rpc_addr}")
    except LabError as error:
        raise SerfError(str(error)) from None
    try:
        document = json.loads(proc.stdout)
    except ValueError:
        raise SerfError(f"serf members -rpc-addr={rpc_addr}: the output is not JSON") from None
    entries = document.get("members") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise SerfError(f"serf members -rpc-addr={rpc_addr}: no list of members in the output")
    return [_member(entry, index) for index, entry in enumerate(entries)]


def wait_for_members(rpc_addr: str, names: Sequence[str], status: str = "alive",
                     timeout: float = 30.0, netns: str | None = None,
                     interval: float = 0.2) -> list[SerfMember]:
    """Poll the agent at ``rpc_addr`` until every one of ``names`` is listed with ``status``;
    the member list then. SerfError after ``timeout`` seconds, naming what was seen last (a
    failed read counts as not yet, until the deadline)."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    deadline = time.monotonic() + timeout
    last = "nothing read yet"
    while True:
        try:
            listed = members(rpc_addr, timeout=max(1.0, min(5.0, deadline - time.monotonic())),
                             netns=netns)
        except SerfError as error:
            last = str(error)
        else:
            seen = {member.name: member.status for member in listed}
            if all(seen.get(name) == status for name in names):
                return listed
            last = ", ".join(f"{name} {seen.get(name, 'absent')}" for name in names)
        if time.monotonic() >= deadline:
            raise SerfError(f"serf at {rpc_addr}: {', '.join(names)} not all {status}"
                            f" after {timeout:g}s (last: {last})")
        time.sleep(interval)
