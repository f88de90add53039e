"""The checks that define "alive" on a compute node, and the verdict they give.

An operator lists checks in one string, in order, separated by ``;`` or new lines::

    process:nova-compute; unit:libvirtd.service; socket:/run/libvirt/libvirt-sock;
    tcp:127.0.0.1:6640; net:storage=192.0.2.10; degraded cmd:/usr/local/bin/check-ceph

Each entry is ``[critical|degraded] KIND:ARGUMENT``; critical is the default. A
failed critical check makes the node not alive (the monitor fails, Pacemaker
recovers or fences as ``on-fail`` says); a failed degraded check is reported and
published but not fatal. Checks run in the order given and stop at the first
critical failure, so the published attribute names the first thing that broke.

Parsing and the verdict are pure; the probes below them do the little I/O there
is (``/proc``, a socket, a child process) under a per-check timeout. Nothing here
imports OpenStack libraries: this runs every few seconds on every compute node.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence

KINDS = ("process", "cmdline", "unit", "socket", "tcp", "net", "cmd")

DEFAULT_CHECKS = (
    "process:nova-compute; process:libvirtd; socket:/run/libvirt/libvirt-sock;"
    " degraded process:ovs-vswitchd"
)


@dataclasses.dataclass(frozen=True)
class Check:
    kind: str
    argument: str
    critical: bool = True

    @property
    def label(self) -> str:
        """Short, stable name used in the node attribute and in log lines."""
        if self.kind == "net":
            return f"net:{self.argument.partition('=')[0]}"
        if self.kind == "cmd":
            return f"cmd:{os.path.basename(shlex.split(self.argument)[0])}"
        return f"{self.kind}:{self.argument}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    check: Check
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``state`` is ok, degraded or failed; ``attribute`` is what we publish."""

    state: str
    attribute: str
    failing: tuple[CheckResult, ...]

    @property
    def alive(self) -> bool:
        return self.state != "failed"


def parse_checks(text: str) -> tuple[Check, ...]:
    """Parse the ``checks`` parameter; ``ValueError`` names the bad entry."""
    checks: list[Check] = []
    for entry in re.split(r"[;\n]", text):
        entry = entry.strip()
        if not entry:
            continue
        critical = True
        first, _, rest = entry.partition(" ")
        if first in ("critical", "degraded") and rest.strip():
            critical = first == "critical"
            entry = rest.strip()
        kind, sep, argument = entry.partition(":")
        kind, argument = kind.strip(), argument.strip()
        if not sep or kind not in KINDS:
            raise ValueError(
                f"check '{entry}': expected KIND:ARGUMENT with KIND one of {', '.join(KINDS)}"
            )
        if not argument:
            raise ValueError(f"check '{entry}': {kind} needs an argument")
        _validate_argument(kind, argument)
        checks.append(Check(kind, argument, critical))
    if not checks:
        raise ValueError("no checks given: at least one check must define 'alive'")
    labels = [c.label for c in checks]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"checks listed twice: {', '.join(duplicates)}")
    return tuple(checks)


def _validate_argument(kind: str, argument: str) -> None:
    if kind == "cmdline":
        try:
            re.compile(argument)
        except re.error as exc:
            raise ValueError(f"check 'cmdline:{argument}': bad regular expression: {exc}") from None
    elif kind == "socket" and not argument.startswith("/"):
        raise ValueError(f"check 'socket:{argument}': expected an absolute path")
    elif kind == "tcp":
        split_host_port(argument)
    elif kind == "net":
        name, sep, address = argument.partition("=")
        if not sep or not name.strip() or not address.strip():
            raise ValueError(f"check 'net:{argument}': expected net:NAME=ADDRESS")
        import ipaddress  # only net checks need it; every monitor pays for imports

        try:
            ipaddress.ip_address(address.strip())
        except ValueError:
            raise ValueError(f"check 'net:{argument}': '{address}' is not an IP address") from None
    elif kind == "cmd":
        try:
            argv = shlex.split(argument)
        except ValueError as exc:
            raise ValueError(f"check 'cmd:{argument}': {exc}") from None
        if not argv:
            raise ValueError(f"check 'cmd:{argument}': empty command")


def split_host_port(argument: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s]+):(\d+)", argument)
    if not match:
        raise ValueError(f"check 'tcp:{argument}': expected HOST:PORT or [IPV6]:PORT")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"check 'tcp:{argument}': port must be 1-65535")
    return host, port


def verdict(results: Sequence[CheckResult]) -> Verdict:
    """Turn check results into the node's liveness, and the attribute naming why."""
    failing = tuple(r for r in results if not r.ok)
    critical = [r for r in failing if r.check.critical]
    if critical:
        return Verdict("failed", f"failed:{critical[0].check.label}", failing)
    if failing:
        return Verdict("degraded", f"degraded:{failing[0].check.label}", failing)
    return Verdict("ok", "ok", ())


# --- probes ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    argv: tuple[str, ...]


def list_processes(proc: str = "/proc") -> list[Process]:
    """Live processes (zombies excluded: a killed daemon is not alive)."""
    found = []
    own = os.getpid()
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"{proc}/{name}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # exited while we looked
        # stat is "pid (comm) state ...": comm may contain spaces and parentheses
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
        if state in ("Z", "X"):
            continue
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        found.append(Process(int(name), comm, argv))
    return found


def process_matches(name: str, process: Process) -> bool:
    """nova-compute runs as ``python3 /usr/bin/nova-compute``: look past the interpreter."""
    if process.comm == name[:15]:
        return True
    if not process.argv:
        return False
    first = os.path.basename(process.argv[0])
    if first == name:
        return True
    return (
        first.startswith("python") and len(process.argv) > 1
        and os.path.basename(process.argv[1]) == name
    )


class Prober:
    """Runs checks against this node; the process table is read at most once."""

    def __init__(self, timeout: float, processes: Callable[[], list[Process]] = list_processes):
        self.timeout = timeout
        self._read_processes = processes
        self._processes: list[Process] | None = None

    def processes(self) -> list[Process]:
        if self._processes is None:
            self._processes = self._read_processes()
        return self._processes

    def run(self, checks: Iterable[Check], deadline: float) -> list[CheckResult]:
        """Run checks in order until the first critical failure or the deadline."""
        results = []
        for check in checks:
            left = deadline - time.monotonic()
            if left <= 0:
                results.append(CheckResult(check, False, "no time left before the action timeout"))
                break
            result = self.probe(check, min(self.timeout, left))
            results.append(result)
            if not result.ok and check.critical:
                break
        return results

    def probe(self, check: Check, timeout: float) -> CheckResult:
        probe = getattr(self, f"_probe_{check.kind}")
        try:
            ok, detail = probe(check.argument, timeout)
        except OSError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc.strerror or exc}"
        return CheckResult(check, ok, detail)

    def _probe_process(self, name: str, timeout: float) -> tuple[bool, str]:
        pids = [p.pid for p in self.processes() if process_matches(name, p)]
        if pids:
            return True, f"running as pid {', '.join(map(str, pids[:5]))}"
        return False, f"no process named '{name}'"

    def _probe_cmdline(self, pattern: str, timeout: float) -> tuple[bool, str]:
        regex = re.compile(pattern)
        pids = [p.pid for p in self.processes() if regex.search(" ".join(p.argv))]
        if pids:
            return True, f"running as pid {', '.join(map(str, pids[:5]))}"
        return False, f"no process whose command line matches '{pattern}'"

    def _probe_unit(self, unit: str, timeout: float) -> tuple[bool, str]:
        return _run_command(["systemctl", "is-active", "--quiet", unit], timeout, f"unit {unit}")

    def _probe_socket(self, path: str, timeout: float) -> tuple[bool, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(path)
            except TimeoutError:
                return False, f"{path}: no answer within {timeout:.1f}s"
        return True, f"{path} accepts connections"

    def _probe_tcp(self, argument: str, timeout: float) -> tuple[bool, str]:
        host, port = split_host_port(argument)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except TimeoutError:
            return False, f"{argument}: no answer within {timeout:.1f}s"
        return True, f"{argument} accepts connections"

    def _probe_net(self, argument: str, timeout: float) -> tuple[bool, str]:
        name, _, address = argument.partition("=")
        if icmp_echo(address.strip(), timeout):
            return True, f"{address.strip()} on network {name} answers"
        return False, f"{address.strip()} on network {name} did not answer within {timeout:.1f}s"

    def _probe_cmd(self, command: str, timeout: float) -> tuple[bool, str]:
        return _run_command(shlex.split(command), timeout, command)


def _run_command(argv: list[str], timeout: float, what: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"{what}: no result within {timeout:.1f}s"
    except FileNotFoundError:
        return False, f"{what}: {argv[0]} not found"
    if done.returncode == 0:
        return True, f"{what}: exit 0"
    tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return False, f"{what}: exit {done.returncode} {tail[0][:200]}".rstrip()


def icmp_echo(address: str, timeout: float) -> bool:
    """One ICMP echo request; True when the matching reply arrives in time.

    Uses a raw socket (agents run as root), so no ``ping`` binary is needed.
    """
    import ipaddress

    ip = ipaddress.ip_address(address)
    v6 = ip.version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    request, reply = (128, 129) if v6 else (8, 0)
    ident, seq = os.getpid() & 0xFFFF, 1
    payload = b"openstack-ha"
    header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
    if not v6:  # the kernel fills in the ICMPv6 checksum, not the ICMPv4 one
        header = struct.pack("!BBHHH", request, 0, _checksum(header + payload), ident, seq)
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_RAW, proto) as s:
        s.sendto(header + payload, (address, 0))
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, peer = s.recvfrom(2048)
            except TimeoutError:
                return False
            if peer[0] != address:
                continue
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]  # v4 raw includes the IP header
            if len(icmp) >= 8:
                kind, _, _, r_ident, r_seq = struct.unpack("!BBHHH", icmp[:8])
                if kind == reply and r_ident == ident and r_seq == seq:
                    return True
    return False


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
