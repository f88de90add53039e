"""``bmc_map``: which BMC answers for which host, for a fence device that serves many.

``host=address[:port][,host=address[:port]...]``, as in ``pcs stonith create fence-nova
fence_nova bmc_map="compute-1=10.0.0.11,compute-2=10.0.0.12:6230"``. Read by the
interface's validation (:mod:`fence_compute.fence_nova`) and by the fencing path
(:mod:`fence_compute.fencing`), so it is a module of its own that imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BmcAddress:
    """Where one host's BMC answers: ``address`` and, when given, ``port``."""

    address: str
    port: int | None = None


def parse_bmc_map(text: str) -> dict[str, BmcAddress]:
    """Parse ``host=address[:port][,host=address[:port]...]``.

    An IPv6 address takes a port only in brackets (``[fd00::11]:623``).  A host
    named twice (compared case-insensitively) is refused, naming it: which BMC
    to power off must never be a guess.  Raises ValueError with a message that
    names the entry.
    """
    result: dict[str, BmcAddress] = {}
    seen: dict[str, str] = {}
    entries = [e.strip() for e in text.split(",")]
    for number, entry in enumerate(entries, 1):
        if not entry:
            continue  # a trailing or doubled comma
        host, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not host or not target:
            raise ValueError(f"entry {number} ({entry!r}) is not host=address[:port]")
        if any(c.isspace() for c in host + target):
            raise ValueError(f"entry {number} ({entry!r}) contains white space")
        address, port = _split_address(target, number, entry)
        key = host.lower()
        if key in seen:
            raise ValueError(f"host {host!r} is mapped twice (entries {seen[key]} and {number})")
        seen[key] = str(number)
        result[host] = BmcAddress(address, port)
    if not result:
        raise ValueError("no host=address entry")
    return result


def _split_address(target: str, number: int, entry: str) -> tuple[str, int | None]:
    port_text = None
    if target.startswith("["):
        address, bracket, rest = target[1:].partition("]")
        if not bracket or not address or (rest and not rest.startswith(":")):
            raise ValueError(f"entry {number} ({entry!r}) has a malformed [IPv6] address")
        port_text = rest[1:] if rest else None
    elif target.count(":") == 1:
        address, _, port_text = target.partition(":")
    else:
        address = target  # a name, an IPv4 address, or a bare IPv6 address without port
    if not address:
        raise ValueError(f"entry {number} ({entry!r}) has no address")
    if port_text is None:
        return address, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"entry {number} ({entry!r}) has a port outside 1-65535")
    return address, int(port_text)
