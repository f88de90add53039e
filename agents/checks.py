"""The checks that define "alive" on a compute node, and the verdict they give.

An operator lists checks in one string, in order, separated by ``;`` or new lines::

    process:nova-compute; unit:libvirtd.service; socket:/run/libvirt/libvirt-sock;
    tcp:127.0.0.1:6640; net:storage=192.0.2.10; degraded cmd:/usr/local/bin/check-ceph;
    consul:service=nova-compute

Each entry is ``[critical|degraded] KIND:ARGUMENT``; critical is the default. A
failed critical check makes the node not alive (the monitor fails, Pacemaker
recovers or fences as ``on-fail`` says); a failed degraded check is reported and
published but not fatal. Checks run in the order given and stop at the first
critical failure, so the published attribute names the first thing that broke.

Parsing and the verdict are pure; the probes below them do the little I/O there
is (``/proc``, a socket, a child process, one GET to the local Consul agent) under a
per-check timeout. Nothing here imports OpenStack libraries: this runs every few
seconds on every compute node.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence

from openstack_ha.secret_files import open_regular_file, read_token_file

KINDS = ("process", "cmdline", "unit", "socket", "tcp", "net", "cmd", "consul")

# Only type checkers need these; importing openstack_ha.consul costs ~15 ms (ssl,
# http.client), which only monitors with a consul: check pay, inside the probe.
TYPE_CHECKING = False
if TYPE_CHECKING:

    from openstack_ha.consul import AgentCheck, ConsulClient

# Bounds on the ``checks`` text: far above any real list (the default is ~100 characters),
# low enough that parsing, and compiling a regular expression, stays instantaneous.
MAX_CHECKS_TEXT = 8192
MAX_CHECKS = 64

# Characters that have no business in a check: C0 controls other than the separator and
# blank (LF, tab; a CRLF line end counts as LF), DEL, C1 controls, and lone surrogates (how
# Python carries bytes that are not UTF-8 in the environment). They would reach argv, a
# socket path or the published node attribute, or make a log line lie.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

# systemd's unit name alphabet (unit-name.c: VALID_CHARS plus '@' for templates); a name
# starting with '-' would reach systemctl as an option.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_\\][A-Za-z0-9:_.\\@-]{0,254}", re.ASCII)
# RFC 1123 host name labels, ASCII only: getaddrinfo() would IDNA-encode anything else and
# raise UnicodeError at probe time (issue 11: a degraded check that failed the monitor).
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


class CheckSpecError(ValueError):
    """The one refusal of a ``checks`` text: its message names the bad entry, on one line."""


# consul:service=NAME selects the local agent's checks of a service, consul:check=ID one check.
CONSUL_SELECTORS = ("service", "check")
# Consul bounds neither; far above any real service name or check id.
MAX_CONSUL_NAME = 256
DEFAULT_CONSUL_URL = "http://127.0.0.1:8500"
# Consul's timeout bound (openstack_ha.consul.ConsulClient); check_timeout goes up to 3600.
MAX_CONSUL_TIMEOUT = 600.0
# The failing checks a consul: detail names before "and N more".
_CONSUL_SHOWN = 5


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
    """Parse the ``checks`` parameter.

    The one place a check is read: every entry is validated here (a regular expression
    compiled, a host name checked) so that probing cannot fail on its text. Whatever is
    wrong, the only exception is :class:`CheckSpecError` (a ``ValueError``) naming the bad
    entry; ``re`` alone can raise ``OverflowError`` (``a{4294967296}``) or
    ``RecursionError`` (deep nesting), and those are turned into that refusal too.
    """
    if len(text) > MAX_CHECKS_TEXT:
        raise CheckSpecError(f"checks: {len(text)} characters, at most {MAX_CHECKS_TEXT}")
    text = text.replace("\r\n", "\n")
    bad = _FORBIDDEN.search(text)
    if bad:
        raise CheckSpecError(
            f"checks: control character or invalid UTF-8 {bad.group()!a} at offset {bad.start()}"
        )
    checks: list[Check] = []
    for entry in re.split(r"[;\n]", text):
        entry = entry.strip()
        if not entry:
            continue
        if len(checks) == MAX_CHECKS:
            raise CheckSpecError(f"checks: more than {MAX_CHECKS} entries")
        checks.append(_parse_entry(entry))
    if not checks:
        raise CheckSpecError("no checks given: at least one check must define 'alive'")
    labels = [c.label for c in checks]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise CheckSpecError(f"checks listed twice: {', '.join(duplicates)}")
    return tuple(checks)


def _parse_entry(entry: str) -> Check:
    critical = True
    first, _, rest = entry.partition(" ")
    if first in ("critical", "degraded") and rest.strip():
        critical = first == "critical"
        entry = rest.strip()
    kind, sep, argument = entry.partition(":")
    kind, argument = kind.strip(), argument.strip()
    if not sep or kind not in KINDS:
        raise CheckSpecError(
            f"check '{_shown(entry)}': expected KIND:ARGUMENT with KIND one of {', '.join(KINDS)}"
        )
    if not argument:
        raise CheckSpecError(f"check '{_shown(entry)}': {kind} needs an argument")
    try:
        _validate_argument(kind, argument)
    except CheckSpecError:
        raise
    except (ValueError, OverflowError, RecursionError, re.error) as exc:
        # re.error is not a ValueError; the others come from re's compiler or shlex
        raise CheckSpecError(f"check '{kind}:{_shown(argument)}': {exc}") from None
    return Check(kind, argument, critical)


def _validate_argument(kind: str, argument: str) -> None:
    if kind == "cmdline":
        compile_cmdline(argument)
    elif kind == "unit":
        if not _UNIT_NAME.fullmatch(argument):
            raise CheckSpecError(
                f"check 'unit:{_shown(argument)}': not a systemd unit name (letters, digits and"
                " ':_.\\@-', not starting with '-' or '.', at most 255 characters)"
            )
    elif kind == "socket" and not argument.startswith("/"):
        raise CheckSpecError(f"check 'socket:{_shown(argument)}': expected an absolute path")
    elif kind == "tcp":
        split_host_port(argument)
    elif kind == "net":
        name, sep, address = argument.partition("=")
        if not sep or not name.strip() or not address.strip():
            raise CheckSpecError(f"check 'net:{_shown(argument)}': expected net:NAME=ADDRESS")
        import ipaddress  # only net checks need it; every monitor pays for imports

        try:
            ipaddress.ip_address(address.strip())
        except ValueError:
            raise CheckSpecError(
                f"check 'net:{_shown(argument)}': '{_shown(address)}' is not an IP address"
            ) from None
    elif kind == "cmd":
        try:
            argv = shlex.split(argument)
        except ValueError as exc:
            raise CheckSpecError(f"check 'cmd:{_shown(argument)}': {exc}") from None
        if not argv:
            raise CheckSpecError(f"check 'cmd:{_shown(argument)}': empty command")
    elif kind == "consul":
        selector, sep, name = argument.partition("=")
        if not sep or selector not in CONSUL_SELECTORS or not name:
            raise CheckSpecError(f"check 'consul:{_shown(argument)}': expected"
                                 " consul:service=NAME or consul:check=ID")
        # compared with what Consul answers, and published in the node attribute: no blanks
        # (which the entry's own grammar trims) and nothing a log line cannot show
        if len(name) > MAX_CONSUL_NAME or any(c.isspace() or not c.isprintable() for c in name):
            raise CheckSpecError(
                f"check 'consul:{_shown(argument)}': the {selector} must be 1 to"
                f" {MAX_CONSUL_NAME} printable characters without white space"
            )


def compile_cmdline(pattern: str) -> re.Pattern[str]:
    """A ``cmdline:`` regular expression, or the refusal saying why it is not one."""
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise CheckSpecError(
            f"check 'cmdline:{_shown(pattern)}': bad regular expression: {exc}"
        ) from None


def split_host_port(argument: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``, the host an IP address or an ASCII host name."""
    match = re.fullmatch(r"\[([^\]]+)\]:([0-9]{1,5})|([^:\s]+):([0-9]{1,5})", argument)
    if not match:
        raise CheckSpecError(f"check 'tcp:{_shown(argument)}': expected HOST:PORT or [IPV6]:PORT")
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise CheckSpecError(f"check 'tcp:{_shown(argument)}': port must be 1-65535")
    import ipaddress

    if match.group(1) is not None:
        host = match.group(1)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CheckSpecError(
                f"check 'tcp:{_shown(argument)}': '{_shown(host)}' is not an IPv6 address"
            ) from None
        return host, port
    host = match.group(3)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if len(host) > 253 or not all(
            _HOST_LABEL.fullmatch(label) for label in host.removesuffix(".").split(".")
        ):
            raise CheckSpecError(
                f"check 'tcp:{_shown(argument)}': '{_shown(host)}' is neither an IP address nor a host name"
                " (ASCII letters, digits and '-' in dot-separated labels of 1 to 63)"
            ) from None
    return host, port


def _shown(text: str) -> str:
    """Enough of an operator's text to recognise it in a one-line refusal."""
    return text if len(text) <= 80 else f"{text[:77]}..."


def consul_verdict(argument: str, agent_checks: Sequence[AgentCheck]) -> tuple[bool, str]:
    """Whether the local agent's checks selected by ``argument`` (``service=NAME`` or
    ``check=ID``, as parsed) say alive, and the detail.

    Alive when at least one check matches and none is critical. A warning is alive, as
    Consul itself counts it (not failing), but the detail says so. No matching check is
    not alive: nothing registered tells us the service is up (fail closed). Names and ids
    are compared exactly, as Consul registers them.
    """
    selector, _, name = argument.partition("=")
    if selector == "service":
        what = f"service {name}"
        matching = [c for c in agent_checks if c.service_name == name]
    else:
        what = f"check {name}"
        matching = [c for c in agent_checks if c.check_id == name]
    if not matching:
        return False, f"{what}: no such check registered with the local consul agent"
    critical = [c for c in matching if c.status.value == "critical"]
    warning = [c for c in matching if c.status.value == "warning"]
    if critical:
        return False, f"{what}: not passing in consul: {_consul_statuses([*critical, *warning])}"
    if warning:
        return True, f"{what}: alive, with a warning in consul: {_consul_statuses(warning)}"
    return True, f"{what}: {len(matching)} consul check(s) passing"


def _consul_statuses(agent_checks: Sequence[AgentCheck]) -> str:
    """``id status, id status`` for the first few checks; ids are Consul's text, made printable."""
    shown = [
        f"{''.join(c if c.isprintable() else '?' for c in check.check_id[:64])}"
        f" {check.status.value}"
        for check in agent_checks[:_CONSUL_SHOWN]
    ]
    more = len(agent_checks) - _CONSUL_SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


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


@dataclasses.dataclass(frozen=True)
class ConsulAgent:
    """Where the local Consul agent listens and how to read it (ComputeLiveness's
    ``consul_url``, ``consul_token_file`` and ``consul_ca_file``; "" for no file)."""

    url: str = DEFAULT_CONSUL_URL
    token_file: str = ""
    ca_file: str = ""

    def client(self, timeout: float) -> ConsulClient:
        """A client of the agent, the token read from its file now (so a rotated token is
        used at the next check). :class:`~openstack_ha.secret_files.FileUnusable` when a file cannot be read,
        ValueError when its contents (or the URL) cannot be used; one line, never the token.
        """
        from openstack_ha.consul import ConsulClient

        token = read_token_file(self.token_file, "consul_token_file") if self.token_file else None
        if self.ca_file:
            # ssl would block on a FIFO and read a device without end
            open_regular_file(self.ca_file, "consul_ca_file").close()
        return ConsulClient(self.url, token=token, ca_file=self.ca_file or None,
                            timeout=min(timeout, MAX_CONSUL_TIMEOUT))


class Prober:
    """Runs checks against this node; the process table and the local Consul agent's checks
    are read at most once."""

    def __init__(self, timeout: float, processes: Callable[[], list[Process]] = list_processes,
                 consul: ConsulAgent | None = None):
        self.timeout = timeout
        self._read_processes = processes
        self._processes: list[Process] | None = None
        self._consul = consul or ConsulAgent()
        # the agent's checks, or the one line saying why they could not be read
        self._consul_checks: list[AgentCheck] | str | None = None

    def processes(self) -> list[Process]:
        if self._processes is None:
            self._processes = self._read_processes()
        return self._processes

    def consul_checks(self, timeout: float) -> list[AgentCheck] | str:
        """The local agent's checks (one GET per run, whatever the number of consul: entries),
        or why they cannot be read: the agent unreachable or answering what is not Consul's
        API, a token or CA file that cannot be used."""
        if self._consul_checks is None:
            from openstack_ha.consul import ConsulError

            try:
                self._consul_checks = self._consul.client(timeout).agent_checks()
            except (ConsulError, ValueError) as exc:
                self._consul_checks = str(exc)
        return self._consul_checks

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
        except Exception as exc:
            # A check that cannot even be run has failed, and only that check: a degraded
            # one must not turn into a failed monitor (parse_checks refuses every text we
            # know to fail here; this is the net under it).
            ok, detail = False, f"cannot run the check: {type(exc).__name__}: {exc}"
        return CheckResult(check, ok, detail)

    def _probe_process(self, name: str, timeout: float) -> tuple[bool, str]:
        pids = [p.pid for p in self.processes() if process_matches(name, p)]
        if pids:
            return True, f"running as pid {', '.join(map(str, pids[:5]))}"
        return False, f"no process named '{name}'"

    def _probe_cmdline(self, pattern: str, timeout: float) -> tuple[bool, str]:
        regex = compile_cmdline(pattern)
        pids = matching_pids(regex, self.processes(), timeout)
        if pids is None:
            return False, f"matching '{pattern}' gave no result within {timeout:.1f}s"
        if pids:
            return True, f"running as pid {', '.join(map(str, pids[:5]))}"
        return False, f"no process whose command line matches '{pattern}'"

    def _probe_unit(self, unit: str, timeout: float) -> tuple[bool, str]:
        # "--": parse_checks refuses names starting with '-', and this keeps any unit
        # name from ever being read as an option (issue 11: unit:-Hhost)
        return _run_command(
            ["systemctl", "is-active", "--quiet", "--", unit], timeout, f"unit {unit}"
        )

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

    def _probe_consul(self, argument: str, timeout: float) -> tuple[bool, str]:
        agent_checks = self.consul_checks(timeout)
        if isinstance(agent_checks, str):
            return False, agent_checks  # we cannot verify it: not alive
        return consul_verdict(argument, agent_checks)


def matching_pids(
    regex: re.Pattern[str], processes: Sequence[Process], timeout: float
) -> list[int] | None:
    """Pids whose command line ``regex`` matches, or None when that takes over ``timeout``.

    Python's ``re`` backtracks: ``(a+)+$`` against a long command line runs for hours, in C,
    holding the GIL, so no timer or thread in this process can stop it, and refusing such
    patterns at parse time cannot be done reliably. So the matching runs in a forked child
    (it inherits the process list; nothing is pickled or re-read) that the deadline kills
    with SIGKILL: check_timeout bounds the CPU a pattern can burn. The child also arms an
    alarm of its own, so it dies even if this agent is killed first (Pacemaker's timeout).
    Forking costs about a millisecond, paid only by ``cmdline:`` checks.
    """
    deadline = time.monotonic() + timeout
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child; its outcome is checked by the parent
        code = 1
        try:
            os.close(read_end)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(max(int(timeout) + 2, 2))
            found = [p.pid for p in processes if regex.search(" ".join(p.argv))]
            data = " ".join(map(str, found)).encode() + b"\n"
            while data:
                data = data[os.write(write_end, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([read_end], [], [], left)
            if not ready:
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    output = b"".join(chunks)
    if not output.endswith(b"\n"):  # the deadline passed first, or the child failed
        os.kill(child, signal.SIGKILL)  # not reaped yet, so it cannot be gone
        os.waitpid(child, 0)
        return None
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return None
    return [int(pid) for pid in output.split()]


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
