"""The OpenStack lab's processes: started in sessions of their own, recorded in a JSON file.

Each service runs as the leader of its own session and process group (uWSGI's workers,
PostgreSQL's backends and RabbitMQ's helpers are in that group), so stopping a service signals
the group and leaves nothing behind. The record keeps the pid together with the process's start
time from /proc, so a pid the kernel has given to another process is never signalled; a zombie
counts as dead (PID 1 here reaps late).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22: start time in clock ticks since boot


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group PGID."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def listening(ports: set[int]) -> set[int]:
    """Which of PORTS have a listening TCP socket in this network namespace."""
    found = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "0A" and port in ports:
                    found.add(port)
    return found


class Procs:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Popen objects of the processes this instance started, reaped once they are stopped
        # (a long-lived test process would otherwise collect zombies).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- the record

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.load()
            yield data
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)

    def update(self, **changes: Any) -> None:
        with self._locked() as data:
            data.update(changes)

    def _entry(self, name: str) -> dict[str, Any] | None:
        entry = self.load().get("pids", {}).get(name)
        return entry if isinstance(entry, dict) else None

    def pid(self, name: str) -> int | None:
        entry = self._entry(name)
        if entry is None or _start_ticks(entry["pid"]) != entry["ticks"]:
            return None
        return int(entry["pid"])

    def _pgid(self, name: str) -> int | None:
        """The service's process group: its leader's pid while the leader runs, or while the
        leader is gone but members of its group live on."""
        entry = self._entry(name)
        if entry is None:
            return None
        ticks = _start_ticks(entry["pid"])
        if ticks == entry["ticks"] or (ticks is None and _group(entry["pid"])):
            return int(entry["pid"])
        return None

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def running(self) -> bool:
        return any(self._pgid(n) for n in self.load().get("pids", {}))

    def started_at(self, name: str) -> float:
        entry = self._entry(name)
        return float(entry["started_at"]) if entry else 0.0

    # ---------------------------------------------------------------- start / stop

    def start(self, name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str],
              user: str | None = None, path_prefix: str = "") -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {"PATH": f"{path_prefix}:{_DAEMON_PATH}" if path_prefix else _DAEMON_PATH,
                    "LC_ALL": "C.UTF-8", **env}
        with open(log, "ab") as out:
            out.write(f"\n==== {time.strftime('%F %T')} start {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=full_env, start_new_session=True, user=user, cwd="/",
                # the user's own group too: with root's gid, a root-owned directory's group
                # bits (none, on pytest's tmp dirs) would apply instead of the others' bits
                group=user, extra_groups=[] if user else None,
            )
        self._children[proc.pid] = proc
        ticks = None
        while ticks is None and proc.poll() is None:
            ticks = _start_ticks(proc.pid)
        with self._locked() as data:
            data.setdefault("pids", {})[name] = {
                "pid": proc.pid, "ticks": ticks or -1,
                "started_at": _boot_time() + (ticks or 0) / _TICKS,
            }
        return proc.pid

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def stop(self, names: Sequence[str], *, sigs: Mapping[str, int] | None = None,
             timeout: float = 10.0) -> None:
        """Signal each service's process group (SIGTERM unless SIGS says otherwise), SIGKILL
        what is left after TIMEOUT, and wait until all of it is gone."""
        groups = {}
        for name in names:
            pid = self._pgid(name)
            if pid is not None:
                groups[name] = pid
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, (sigs or {}).get(name, signal.SIGTERM))
        deadline = time.monotonic() + timeout
        while any(_group(p) for p in groups.values()) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for pid in groups.values():
            if _group(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        while any(_group(p) for p in groups.values()):
            self._reap()
            time.sleep(0.05)
        self._reap()

    def kill(self, name: str) -> None:
        """SIGKILL the service's whole process group, as a crash would; wait until it is gone."""
        pid = self._pgid(name)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _group(pid):
            time.sleep(0.02)
        self._reap()

    # ---------------------------------------------------------------- inspection

    @staticmethod
    def listening(ports: set[int]) -> set[int]:
        return listening(ports)

    def pss(self, name: str) -> int:
        """Proportional set size of the service's process group, in bytes."""
        pid = self.pid(name)
        total = 0
        for member in _group(pid) if pid else []:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        return total
