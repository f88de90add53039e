"""fence_kdump's message: a host that crashed into its kdump kernel says so, and is harmless.

A host configured with ``fence_kdump_send`` in its kdump initramfs (kexec-tools' ``fence_kdump_nodes``
in kdump.conf) sends, once its crash kernel has network, one UDP datagram every few seconds
to port 7410 of the cluster's nodes: two 32-bit unsigned integers in the sender's byte order,
the magic number 0x1B302A40 and the version 1 (fence-agents' ``agents/kdump/message.h``).
A host that is running its crash kernel runs none of its instances any more; powering it off
would only lose the dump that explains the crash.

fence-agents' ``fence_kdump`` is a fence device built on that (success once a message from
the host arrives). ``fence_nova``'s ``kdump_wait`` does the same wait itself before the power-off
(:func:`fence_compute.actions.off`): :func:`wait_for_kdump` listens, and only a message from one
of the host's own addresses counts, as ``fence_kdump`` accepts one only from the address its
``nodename`` resolves to. :func:`parse_message` reads a datagram strictly: exactly 8 bytes, the
magic and the version in this machine's byte order (as ``fence_kdump`` compares them), anything
else is not a message.

Standard library only, and cheap to import: ``fence_nova``'s option checks import it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

KDUMP_PORT = 7410  # fence_kdump's and fence_kdump_send's default
MAGIC = 0x1B302A40
VERSION_1 = 0x1
_MESSAGE = struct.Struct("=II")  # two uint32 in host byte order, no padding: 8 bytes
MESSAGE_SIZE = _MESSAGE.size
# Larger than any datagram, so that a long one is seen whole (and refused) rather than cut to 8.
_RECEIVE_BYTES = 65536


@dataclass(frozen=True)
class KdumpMessage:
    """A valid fence_kdump message (version 1 is the only one there is)."""

    version: int


@dataclass(frozen=True)
class KdumpSeen:
    """A valid message arrived from one of the host's addresses: it runs its crash kernel.
    ``source``: the address it came from; ``elapsed``: seconds waited."""

    source: str
    elapsed: float


class KdumpError(Exception):
    """Cannot wait for the host's message (the port is taken, its name does not resolve);
    one line, naming what and where."""


def parse_message(data: bytes) -> KdumpMessage | None:
    """The fence_kdump message ``data`` holds, or None when it is not exactly one. Never
    raises, whatever ``data`` is."""
    if len(data) != MESSAGE_SIZE:
        return None
    magic, version = _MESSAGE.unpack(data)
    if magic != MAGIC or version != VERSION_1:
        return None
    return KdumpMessage(version)


def message(magic: int = MAGIC, version: int = VERSION_1) -> bytes:
    """A datagram as fence_kdump_send packs it (for tests and a hand-made check)."""
    return _MESSAGE.pack(magic, version)


def normal_address(text: str) -> str:
    """An IP literal in one canonical spelling: an IPv4-mapped IPv6 address as IPv4, an IPv6
    zone (``%eth0``) dropped, IPv6 compressed and in lower case. ValueError if not one."""
    address = ipaddress.ip_address(text.split("%", 1)[0].strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_addresses(text: str) -> tuple[str, ...]:
    """``kdump_address``: IP literals separated by commas, each once. ValueError naming the
    one that is not an address."""
    addresses: list[str] = []
    for item in text.split(","):
        if not item.strip():
            raise ValueError("needs IP addresses separated by commas, none empty")
        try:
            address = normal_address(item)
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not an IP address") from None
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)


def resolve(nodename: str) -> tuple[str, ...]:
    """Every address ``nodename`` resolves to (getaddrinfo, as fence_kdump resolves its
    nodename). KdumpError when it resolves to none."""
    try:
        infos = socket.getaddrinfo(nodename, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise KdumpError(f"cannot resolve {nodename} to the addresses its fence_kdump messages"
                         f" come from ({exc}); set kdump_address") from None
    addresses: list[str] = []
    for _, _, _, _, sockaddr in infos:
        address = normal_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise KdumpError(f"{nodename} resolves to no address; set kdump_address")
    return tuple(addresses)


def listen_address(host_addresses: Iterable[str]) -> str:
    """Where to listen for messages from these addresses: every IPv4 address, or every
    address of both families when one of them is IPv6 (a dual-stack socket)."""
    if any(":" in address for address in host_addresses):
        return "::"
    return "0.0.0.0"  # noqa: S104 - the crash kernel sends to whichever address it was given


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise KdumpError(f"cannot open a UDP socket to listen for fence_kdump messages:"
                         f" {exc.strerror or exc}") from None
    try:
        if family == socket.AF_INET6 and address == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        hint = (" (another fence_kdump or fence_nova is listening there now)"
                if exc.errno == errno.EADDRINUSE else "")
        raise KdumpError(f"cannot listen for fence_kdump messages on UDP {address} port"
                         f" {port}: {exc.strerror or exc}{hint}") from None
    return sock


def wait_for_kdump(
    host_addresses: Iterable[str],
    listen_address: str,
    port: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> KdumpSeen | None:
    """Listen on UDP ``listen_address``:``port`` for up to ``timeout`` seconds; the first
    valid message from one of ``host_addresses`` ends the wait (KdumpSeen), the timeout gives
    None. Datagrams from other addresses, and ones that are not a fence_kdump message, are
    counted and ignored. KdumpError when the port cannot be bound (another fence_kdump is
    listening there at the same time, say)."""

    wanted = {normal_address(a) for a in host_addresses}
    started = clock()
    deadline = started + max(timeout, 0.0)
    other_source: set[str] = set()
    not_a_message = 0
    sock = _bind(listen_address, port)
    try:
        while True:
            left = deadline - clock()
            if left <= 0:
                break
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                continue  # the loop's deadline check ends it
            try:
                data, sender = sock.recvfrom(_RECEIVE_BYTES)
            except OSError as exc:  # an ICMP error queued on the socket, say
                LOG.debug("fence_kdump listener: %s", exc)
                continue
            source = normal_address(str(sender[0]))
            if source not in wanted:
                other_source.add(source)
                LOG.debug("datagram from %s ignored: not an address of the host", source)
                continue
            if parse_message(data) is None:
                not_a_message += 1
                LOG.debug("datagram from %s ignored: not a fence_kdump message (%d bytes)",
                          source, len(data))
                continue
            return KdumpSeen(source, clock() - started)
    finally:
        sock.close()
    if other_source or not_a_message:
        # Worth the operator's eye: a sender whose address the host's list lacks (NAT, another
        # interface) would explain a crash kernel that was powered off all the same.
        LOG.info("no fence_kdump message from %s within %gs; ignored: %d datagram(s) that"
                 " were no fence_kdump message, datagrams from %s", ", ".join(sorted(wanted)),
                 timeout, not_a_message, ", ".join(sorted(other_source)) or "no other address")
    return None
