"""Before a rebuild: does the failed host still hold the server's disk?

A server whose disk is an RBD image (``<pool>/<server uuid>_disk``, Nova's libvirt naming) is
rebuilt elsewhere from that same image. If the failed host's hypervisor still has it open
(its power cut did not happen, or a second path keeps it alive), two hosts write one disk.
Ceph shows who has an image open as its *watchers*; a watcher whose address is one of the
failed host's storage addresses and that Ceph has not blocklisted means "still held". The
engine refuses that server (FAILED, with the reason) and evacuates the others.

Ceph removes a blocklisted client's watches at once (measured on 16.2: the watcher list is
empty right after ``osd blocklist add``); the blocklist is read anyway, so a watch Ceph has
not dropped yet is not taken for a live writer.

:func:`holder` is the pure decision; :class:`RbdDisks` reads Ceph through the ``rbd`` and
``ceph`` command-line tools (the engine's Python environment has no librados bindings),
with the key of ``[storage] ceph_user``: ``mon 'profile rbd' osd 'profile rbd-read-only
pool=<pool>'`` is enough.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class DiskCheckError(Exception):
    """Ceph could not say who holds a disk: the server is not rebuilt (fail closed)."""


@dataclass(frozen=True)
class Watcher:
    address: str  # as Ceph prints it: ``10.0.1.11:0/3265823451`` or ``[fd00::11]:0/1``

    @property
    def ip(self) -> str:
        return address_ip(self.address)


def address_ip(entity_address: str) -> str:
    """The IP of a Ceph entity address (``ip:port/nonce``, v6 in brackets), normalised."""
    host_port = entity_address.rsplit("/", 1)[0]
    host = (host_port[1:].split("]", 1)[0] if host_port.startswith("[")
            else host_port.rsplit(":", 1)[0])
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def holder(watchers: Iterable[Watcher], blocklist: Iterable[str],
           failed_addresses: Sequence[str]) -> Watcher | None:
    """The watcher that shows the failed host still holding the disk, or None.

    A watcher counts when its IP is one of ``failed_addresses`` and neither its own address
    nor its whole IP (``ip:0/0``, which Ceph applies to every client there) is blocklisted.
    With no ``failed_addresses`` (the host is missing from ``storage_map``), which watcher is
    the failed host's cannot be told: every watcher not blocklisted counts (fail closed).
    """
    blocked = set(blocklist)
    blocked_ips = {address_ip(a) for a in blocked if a.rsplit("/", 1)[-1] == "0"
                   and a.rsplit("/", 1)[0].rsplit(":", 1)[-1] == "0"}
    failed = {str(ipaddress.ip_address(a)) for a in failed_addresses}
    for watcher in watchers:
        if (watcher.ip in failed or not failed) and watcher.address not in blocked \
                and watcher.ip not in blocked_ips:
            return watcher
    return None


def parse_watchers(text: str) -> list[Watcher]:
    """``rbd status --format json``'s watchers. ValueError on anything else."""
    try:
        data = json.loads(text)
        return [Watcher(str(w["address"])) for w in data.get("watchers", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not rbd status JSON ({type(exc).__name__})") from None


def parse_blocklist(text: str) -> dict[str, str]:
    """``ceph osd blocklist ls --format json``: each listed address → its expiry as printed.

    Pacific (16.2.15) prints the address list and then the range list, two JSON arrays back to
    back: ``[{"addr": "10.0.1.11:0/0", "until": "2027-..."}][]``; both are read (a range entry
    names its range in ``addr`` too). Raises ValueError, and only ValueError, on anything else.
    """
    decoder = json.JSONDecoder()
    entries: dict[str, str] = {}
    position, lists = 0, 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position == len(text):
            break
        try:
            data, position = decoder.raw_decode(text, position)
        except RecursionError:
            raise ValueError("blocklist: nested too deeply") from None
        # json.JSONDecodeError is a ValueError already
        if not isinstance(data, list):
            raise ValueError(f"blocklist: expected a JSON list, got {type(data).__name__}")
        lists += 1
        for number, item in enumerate(data, 1):
            if not isinstance(item, dict) or not isinstance(item.get("addr"), str):
                raise ValueError(f"blocklist entry {number}: no 'addr' text")
            until = item.get("until", "")
            entries[item["addr"]] = until if isinstance(until, str) else str(until)
    if not lists:
        raise ValueError("blocklist: empty answer")
    return entries


@dataclass(frozen=True)
class RbdDisks:
    """Reads watchers and the blocklist with the engine's Ceph key."""

    pool: str
    ceph_conf: str
    ceph_user: str
    keyring_file: str | None = None
    timeout: float = 10.0

    def watchers(self, server_id: str) -> list[Watcher] | None:
        """Who has ``<pool>/<server_id>_disk`` open; None when there is no such image (the
        server's disk is elsewhere: a volume, or a local disk)."""
        done = self._run("rbd", "status", "--format", "json", f"{self.pool}/{server_id}_disk")
        if done.returncode != 0:
            if "(2) No such file or directory" in done.stderr:
                return None
            raise DiskCheckError(f"rbd status: {_last_line(done.stderr)}")
        try:
            return parse_watchers(done.stdout)
        except ValueError as exc:
            raise DiskCheckError(f"rbd status: {exc}") from None

    def blocklist(self) -> list[str]:
        done = self._run("ceph", "osd", "blocklist", "ls", "--format", "json")
        if done.returncode != 0:
            raise DiskCheckError(f"ceph osd blocklist ls: {_last_line(done.stderr)}")
        try:
            return list(parse_blocklist(done.stdout))
        except ValueError as exc:
            raise DiskCheckError(f"ceph osd blocklist ls: {exc}") from None

    def held_by(self, server_id: str, failed_addresses: Sequence[str]) -> Watcher | None:
        """The failed host's live watcher on the server's disk, or None (free, or no RBD
        disk). :class:`DiskCheckError` when Ceph cannot tell."""
        watchers = self.watchers(server_id)
        if not watchers:
            return None
        return holder(watchers, self.blocklist(), failed_addresses)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [tool, "--conf", self.ceph_conf, "--id", self.ceph_user]
        if self.keyring_file:
            argv += ["--keyring", self.keyring_file]
        if tool == "ceph":
            argv += ["--connect-timeout", str(max(1, int(self.timeout)))]
        try:
            return subprocess.run([*argv, *args], capture_output=True, text=True,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            raise DiskCheckError(f"{tool} not found: is ceph-common installed?") from None
        except subprocess.TimeoutExpired:
            raise DiskCheckError(f"{tool} gave no answer within {self.timeout:g}s") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "failed")[:300]
