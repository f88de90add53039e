"""Processes as /proc shows them: what every part of the lab asks about its daemons.

Read straight from /proc, which is cheaper than forking ps, pgrep or ip once per poll, and
answers what they cannot: which network namespace a process is in, the sockets of another
namespace, when a process started (so that a reused pid is never taken for the old one).

A zombie counts as dead everywhere here (pitfall P1 of research/pacemaker-lab.md): PID 1 on
this machine is not an init system and reaps orphans only every few seconds, so ``kill -0``
would keep answering yes. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# One process


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself contain spaces or parentheses.
    return data[data.rindex(")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    """One-letter state of PID ("R", "S", "Z"...), or None if there is no such process."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


def pid_alive(pid: int | None) -> bool:
    """True if PID runs; a zombie counts as dead."""
    if not pid or pid <= 0:
        return False
    return proc_state(pid) not in (None, "Z", "X")


def start_ticks(pid: int) -> int | None:
    """When PID started, in clock ticks since boot (field 22 of its stat): with the pid, it names
    one process and never another that got the same pid later. None if PID is gone or a zombie."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_time() -> float:
    """When this machine booted, in seconds since the epoch."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def comm(pid: int) -> str:
    """The kernel's name of PID (its first 15 characters), "" if there is no such process."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[bytes]:
    """PID's argv, [] if there is no such process or it is a zombie."""
    try:
        data = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return data.removesuffix(b"\0").split(b"\0") if data else []


def nspids(pid: int) -> list[int]:
    """PID's number in each pid namespace it is in, outermost first (``NSpid`` of its status);
    [] if there is no such process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(n) for n in line.split()[1:]]
    return []


def pss(pid: int) -> int:
    """Proportional set size of PID, in bytes; 0 if there is no such process."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


# --------------------------------------------------------------------------------------------
# Finding processes


def all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def pids_named(name: str) -> list[int]:
    """Live processes whose kernel name (15 characters at most) is exactly NAME."""
    return [pid for pid in all_pids() if comm(pid) == name[:15] and pid_alive(pid)]


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, read before signalling: once the parent is gone its
    children are reparented and can no longer be told apart from anybody else's."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [pid for pid in found if pid_alive(pid)]


def process_group(pgid: int) -> list[int]:
    """Live processes of process group PGID."""
    found = []
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(pid)
    return found


def netns_pids(netns: str) -> list[int]:
    """Pids whose network namespace is /run/netns/NETNS: what ``ip netns pids`` prints, without
    forking ``ip`` on every poll. Zombies have left their namespaces and are not listed."""
    try:
        target = os.stat(f"/run/netns/{netns}")
    except FileNotFoundError:
        return []
    found = []
    for pid in all_pids():
        try:
            ns = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            found.append(pid)
    return found


# --------------------------------------------------------------------------------------------
# Sockets. /proc/PID/net/* shows the sockets of PID's network namespace, so no process has to
# enter it, and nothing connects (a bare TCP probe would make remoted log a failed TLS handshake).


def listening(ports: Iterable[int], pid: int | str = "self") -> set[int]:
    """Which of PORTS have a listening TCP socket in the network namespace of PID (by default
    this process's)."""
    wanted = set(ports)
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "0A" and port in wanted:  # 0A: TCP_LISTEN
                found.add(port)
    return found


def udp_bound(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every IPv4 UDP socket bound in the network namespace of PID."""
    with contextlib.suppress(OSError):
        rows = [line.split()[1].split(":") for line in
                Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]]
        return {(socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16))
                for ip, port in rows}
    return set()


# --------------------------------------------------------------------------------------------
# Signals


def send_signal(pid: int, sig: int) -> None:
    """Signal PID; a process that is already gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_dead(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of PIDS runs; False if some still do after TIMEOUT seconds."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_until_gone(find: Callable[[], Iterable[int]], timeout: float) -> list[int]:
    """SIGKILL every process FIND lists, and again until it lists none: a process may fork
    between the listing and the kill. Returns what FIND still lists after TIMEOUT seconds, []
    once everything is gone."""
    deadline = time.monotonic() + timeout
    while pids := list(find()):
        if time.monotonic() > deadline:
            return pids
        for pid in pids:
            send_signal(pid, signal.SIGKILL)
        time.sleep(0.02)
    return []
