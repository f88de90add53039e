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
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.commands import DAEMON_PATH
from lab.files import write_atomic
from lab.procs import CLOCK_TICKS, boot_time, listening, process_group, pss, start_ticks


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
            write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o600)

    def update(self, **changes: Any) -> None:
        with self._locked() as data:
            data.update(changes)

    def _entry(self, name: str) -> dict[str, Any] | None:
        entry = self.load().get("pids", {}).get(name)
        return entry if isinstance(entry, dict) else None

    def pid(self, name: str) -> int | None:
        entry = self._entry(name)
        if entry is None or start_ticks(entry["pid"]) != entry["ticks"]:
            return None
        return int(entry["pid"])

    def _pgid(self, name: str) -> int | None:
        """The service's process group: its leader's pid while the leader runs, or while the
        leader is gone but members of its group live on."""
        entry = self._entry(name)
        if entry is None:
            return None
        ticks = start_ticks(entry["pid"])
        if ticks == entry["ticks"] or (ticks is None and process_group(entry["pid"])):
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
        full_env = {"PATH": f"{path_prefix}:{DAEMON_PATH}" if path_prefix else DAEMON_PATH,
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
            ticks = start_ticks(proc.pid)
        with self._locked() as data:
            data.setdefault("pids", {})[name] = {
                "pid": proc.pid, "ticks": ticks or -1,
                "started_at": boot_time() + (ticks or 0) / CLOCK_TICKS,
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
        while any(process_group(p) for p in groups.values()) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for pid in groups.values():
            if process_group(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        while any(process_group(p) for p in groups.values()):
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
        while process_group(pid):
            time.sleep(0.02)
        self._reap()

    # ---------------------------------------------------------------- inspection

    @staticmethod
    def listening(ports: set[int]) -> set[int]:
        return listening(ports)

    def pss(self, name: str) -> int:
        """Proportional set size of the service's process group, in bytes."""
        pid = self.pid(name)
        return sum(pss(member) for member in (process_group(pid) if pid else []))
