"""``storage_map``: each compute host's addresses on the storage network.

``host=address[+address...][,host=address...]``, e.g.
``compute-1=10.0.1.11+10.0.2.11,compute-2=10.0.1.12``: ``,`` between hosts as in
``bmc_map``, ``+`` between one host's addresses (a host may reach Ceph over two networks).
Read by fence_nova (which addresses to blocklist) and by the evacuation engine (whose
watchers on a disk belong to the failed host), so it lives here, below both.

Pure: addresses are IP literals (v4 or v6), checked and normalised; anything else is a
ValueError whose message names the entry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

MAX_ENTRIES = 10000
MAX_TEXT = 65536


def parse_storage_map(text: str) -> dict[str, tuple[str, ...]]:
    """``{host: (address, ...)}`` in the order given; host names compared case-insensitively
    for duplicates. Raises ValueError naming the entry."""
    if len(text) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    result: dict[str, tuple[str, ...]] = {}
    seen: dict[str, int] = {}
    entries = [e.strip() for e in text.split(",")]
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"more than {MAX_ENTRIES} entries")
    for number, entry in enumerate(entries, 1):
        if not entry:
            continue  # a trailing or doubled comma
        host, sep, addresses = (part.strip() for part in entry.partition("="))
        if not sep or not host or not addresses:
            raise ValueError(f"entry {number} is not host=address[+address]")
        if any(c.isspace() or not c.isprintable() or c == "+" for c in host):
            raise ValueError(f"entry {number} has a malformed host name (white space, '+' or a"
                             " control character)")
        key = host.lower()
        if key in seen:
            raise ValueError(f"host {host!r} is mapped twice (entries {seen[key]} and {number})")
        seen[key] = number
        parsed: list[str] = []
        for word in addresses.split("+"):
            address = parse_address(word, f"entry {number}")
            if address not in parsed:
                parsed.append(address)
        result[host] = tuple(parsed)
    if not result:
        raise ValueError("no host=address entry")
    return result


def parse_address(text: str, where: str = "address") -> str:
    """An IP literal (IPv6 optionally in brackets), as Ceph prints it: ``10.0.1.011`` is
    refused, ``fd00::0011`` becomes ``fd00::11``."""
    word = text.strip()
    if word.startswith("[") and word.endswith("]"):
        word = word[1:-1]
    try:
        return ipaddress.ip_address(word).compressed
    except ValueError:
        shown = text if len(text) <= 64 and text.isprintable() else "(not shown)"
        raise ValueError(f"{where}: {shown!r} is not an IPv4 or IPv6 address") from None


def addresses_of(storage_map: Mapping[str, tuple[str, ...]], host: str,
                 domain: str | None = None) -> tuple[str, ...]:
    """``host``'s addresses: by its name, its short name, or its name without ``domain``
    (the cluster may name it short and Nova by FQDN, or the other way round)."""
    wanted = {host.lower(), host.split(".", 1)[0].lower()}
    if domain:
        wanted.add(f"{host.split('.', 1)[0]}.{domain}".lower())
    for name, addresses in storage_map.items():
        if name.lower() in wanted or name.split(".", 1)[0].lower() in wanted:
            return addresses
    return ()
