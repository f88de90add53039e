"""Storage fencing on Ceph: blocklist a failed host's client addresses, and confirm it.

A host whose power cannot be confirmed off (its BMC died with it, its BMC network is cut) may
still write its instances' RBD images. Blocklisting its storage addresses in the OSD map makes
every OSD refuse its clients, whatever state the host is in: that is a fence on its own
(``power_driver=none storage_fence=ceph``) or an extra one after the power-off.

Everything goes through the ``ceph`` CLI (``ceph-common``), one subprocess per command, no
shell, each bounded by the action's deadline. The key is a keyring *file* named on argv, never
the key itself. Only a read-back counts: an entry is fenced when ``osd blocklist ls`` lists it,
as Ceph prints it (``10.0.1.11:0/0``, ``[fd00::11]:0/0``: port 0 and nonce 0 block every client
of that address).

The storage map and the blocklist's JSON are parsed where the evacuation engine parses them
too (:mod:`nova_evacuate.storage_map`, :func:`nova_evacuate.disks.parse_blocklist`);
:mod:`fence_compute.actions` drives the rest.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from nova_evacuate.disks import parse_blocklist

LOG = logging.getLogger(__name__)

# Why a Ceph command failed. UNREACHABLE: no monitor answered (stopped, wrong address, network
# cut); TIMEOUT: the action's deadline came first; REFUSED: the monitor answered "permission
# denied" (EACCES: a wrong key, an unknown user, a key without the cap); PROTOCOL: an answer we
# cannot use, or no usable ceph CLI or conf here.
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
REFUSED = "refused"
PROTOCOL = "protocol"
KINDS = (UNREACHABLE, TIMEOUT, REFUSED, PROTOCOL)

EACCES, ETIMEDOUT, ECONNREFUSED = 13, 110, 111
# The longest one command waits for a monitor before giving up (less when the deadline is near).
CONNECT_TIMEOUT = 10
# Ceph's default blocklist expiry is one hour: too short, a stale writer would come back.
DEFAULT_EXPIRE_SECONDS = 31536000


class StorageError(Exception):
    """A Ceph command failed; ``message`` is one line, never a secret."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown storage error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class StorageOutcome:
    """What :meth:`CephBlocklist.fence` or ``unfence`` established: ``confirmed`` once the
    read-back shows every address listed (fence) or none (unfence); else ``kind`` and
    ``reason`` (one line)."""

    confirmed: bool
    reason: str
    kind: str = ""
    elapsed: float = 0.0


# --- parsing --------------------------------------------------------------------------------


def blocklist_entry(address: str) -> str:
    """``address`` as an ``osd blocklist`` entry and as ``ls`` prints it: every client of it."""
    ip = ipaddress.ip_address(address)
    return f"[{ip.compressed}]:0/0" if ip.version == 6 else f"{ip.compressed}:0/0"


# --- the ceph CLI ---------------------------------------------------------------------------


Runner = Callable[..., subprocess.CompletedProcess]


@dataclass
class CephBlocklist:
    """The ``osd blocklist`` of one cluster, as ``client.USER`` with the keyring in ``keyring``.

    ``runner`` is :func:`subprocess.run` (a seam for tests); ``clock`` the monotonic clock the
    deadlines are in.
    """

    conf: str
    user: str
    keyring: str
    expire: int = DEFAULT_EXPIRE_SECONDS
    runner: Runner = subprocess.run
    clock: Callable[[], float] = time.monotonic

    def fence(self, addresses: Sequence[str], deadline: float) -> StorageOutcome:
        """Blocklist every address, then confirm each is listed. Never raises StorageError."""
        start = self.clock()
        try:
            for address in addresses:
                self._ceph(["osd", "blocklist", "add", blocklist_entry(address), str(self.expire)],
                           deadline)
            listed = self.state(addresses, deadline)
        except StorageError as exc:
            return StorageOutcome(False, exc.message, exc.kind, self.clock() - start)
        missing = [a for a, present in listed.items() if not present]
        if missing:
            return StorageOutcome(False, f"Ceph accepted the blocklisting of {', '.join(missing)}"
                                  " but does not list it", PROTOCOL, self.clock() - start)
        entries = ", ".join(blocklist_entry(a) for a in addresses)
        return StorageOutcome(True, f"Ceph lists {entries} as blocklisted", "",
                              self.clock() - start)

    def unfence(self, addresses: Sequence[str], deadline: float) -> StorageOutcome:
        """Remove every address from the blocklist, then confirm none is listed."""
        start = self.clock()
        try:
            for address in addresses:
                # Removing an entry that is not listed succeeds: a repeated `on` repeats no harm.
                self._ceph(["osd", "blocklist", "rm", blocklist_entry(address)], deadline)
            listed = self.state(addresses, deadline)
        except StorageError as exc:
            return StorageOutcome(False, exc.message, exc.kind, self.clock() - start)
        left = [a for a, present in listed.items() if present]
        if left:
            return StorageOutcome(False, f"Ceph still lists {', '.join(left)} as blocklisted",
                                  PROTOCOL, self.clock() - start)
        return StorageOutcome(True, f"Ceph no longer lists {', '.join(addresses)}", "",
                              self.clock() - start)

    def state(self, addresses: Iterable[str], deadline: float) -> dict[str, bool]:
        """Whether each address is blocklisted now (raises StorageError when Ceph cannot say)."""
        listed = self.entries(deadline)
        return {address: blocklist_entry(address) in listed for address in addresses}

    def entries(self, deadline: float) -> dict[str, str]:
        """The whole blocklist (also the reachability check of ``monitor``)."""
        out = self._ceph(["osd", "blocklist", "ls", "--format", "json"], deadline)
        try:
            return parse_blocklist(out)
        except ValueError as exc:
            raise StorageError(PROTOCOL, f"Ceph's blocklist is unreadable: {exc}") from None

    def _ceph(self, args: list[str], deadline: float) -> str:
        what = "ceph " + " ".join(args[:3])
        remaining = deadline - self.clock()
        if remaining <= 1:
            raise StorageError(TIMEOUT, f"{what}: no time left before the deadline")
        # The CLI gives up on the monitor after --connect-timeout (whole seconds) and says so;
        # the subprocess timeout is the backstop for a CLI hung after connecting.
        # It needs a second or so beyond that to start and to report, within the deadline.
        connect = max(1, min(CONNECT_TIMEOUT, int(remaining - 2)))
        argv = ["ceph", "--conf", self.conf, "--id", self.user, "--keyring", self.keyring,
                "--connect-timeout", str(connect), *args]
        try:
            proc = self.runner(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=remaining, check=False)
        except subprocess.TimeoutExpired:
            raise StorageError(TIMEOUT, f"{what}: no answer within {remaining:.1f}s") from None
        except OSError as exc:  # no ceph CLI (ceph-common) on this host
            raise StorageError(PROTOCOL, f"{what}: cannot run the ceph CLI: {exc}") from None
        if proc.returncode != 0:
            raise StorageError(*_classify(proc.returncode, proc.stderr or "", what))
        return proc.stdout or ""


def _classify(rc: int, stderr: str, what: str) -> tuple[str, str]:
    """The kind of a failed ``ceph`` command, from its exit code (an errno, or 1 for most
    failures: Pacific's CLI exits 1 with "timed out" when no monitor answered) and its text."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else f"exit status {rc}"
    lowered = stderr.lower()
    if rc == EACCES or "permission denied" in lowered or "access denied" in lowered:
        return REFUSED, f"{what}: refused by Ceph (wrong key or user, or no 'osd blocklist' cap): {last}"
    if rc in (ETIMEDOUT, ECONNREFUSED) or "timed out" in lowered or "connection refused" in lowered:
        return UNREACHABLE, f"{what}: no Ceph monitor answered: {last}"
    return PROTOCOL, f"{what} failed (exit {rc}): {last}"
