"""``bmc_map``: which BMC answers for which host, for a fence device that serves many.

``host=address[:port][,host=address[:port]...]``, as in ``pcs stonith create fence-nova
fence_nova bmc_map="compute-1=10.0.0.11,compute-2=10.0.0.12:6230"``. For Redfish an entry
may also be a URL, ``host=https://address[:port][/]`` (``https://[fd00::11]:8443``); only
``https`` is accepted, and the URL holds no path and no credentials. Read by the
interface's validation (:mod:`fence_compute.fence_nova`) and by the fencing path
(:mod:`fence_compute.actions`), so it is a module of its own that imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

# The URL form: what may precede "://" (compared case-insensitively) and what it means.
HTTPS = "https"


@dataclass(frozen=True)
class BmcAddress:
    """Where one host's BMC answers: ``address`` and, when given, ``port``.

    ``scheme`` is ``"https"`` for an entry written as a URL (a Redfish service), None for a
    bare address (any driver; Redfish then uses ``https`` and its default port).
    """

    address: str
    port: int | None = None
    scheme: str | None = None


def parse_bmc_map(text: str) -> dict[str, BmcAddress]:
    """Parse ``host=address[:port][,host=address[:port]...]``, or ``host=https://...`` entries.

    An IPv6 address takes a port only in brackets (``[fd00::11]:623``); in a URL it always
    takes brackets.  A host named twice (compared case-insensitively) is refused, naming it:
    which BMC to power off must never be a guess.  Raises ValueError with a message that
    names the entry, never with credentials written into a URL (``user:password@``): any
    ``@`` in the map is refused first, with the user info shown as ``***``.
    """
    result: dict[str, BmcAddress] = {}
    seen: dict[str, str] = {}
    entries = [e.strip() for e in text.split(",")]
    _refuse_user_info(entries)
    for number, entry in enumerate(entries, 1):
        if not entry:
            continue  # a trailing or doubled comma
        host, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not host or not target:
            raise ValueError(f"entry {number} ({entry!r}) is not host=address[:port]")
        if any(c.isspace() for c in host + target):
            raise ValueError(f"entry {number} ({entry!r}) contains white space")
        if "://" in target:
            bmc = _parse_url(target, number, entry)
        else:
            bmc = BmcAddress(*_split_address(target, number, entry))
        key = host.lower()
        if key in seen:
            raise ValueError(f"host {host!r} is mapped twice (entries {seen[key]} and {number})")
        seen[key] = str(number)
        result[host] = bmc
    if not result:
        raise ValueError("no host=address entry")
    return result


def _refuse_user_info(entries: list[str]) -> None:
    """An ``@`` anywhere: a URL with ``user[:password]@``.  Checked before anything else is
    parsed, so that no other error echoes a piece of the password (one with a ``,`` in it
    splits into two entries)."""
    for number, entry in enumerate(entries, 1):
        if "@" not in entry:
            continue
        host, sep, target = entry.partition("=")
        if not sep:
            host, target = "", entry
        scheme, colon_slashes, rest = target.partition("://")
        if not colon_slashes:
            scheme, rest = "", target
        shown = f"{host}{sep}{scheme}{colon_slashes}***@{rest.rpartition('@')[2]}"
        raise ValueError(f"entry {number} ({shown!r}) has user info (user:password@) in its"
                         " address: give the BMC's credentials in bmc_username and bmc_password")


def _parse_url(target: str, number: int, entry: str) -> BmcAddress:
    scheme, _, rest = target.partition("://")
    if scheme.lower() == "http":
        raise ValueError(f"entry {number} ({entry!r}) is an http:// URL: the BMC password would"
                         " cross the network in clear text; use https://")
    if scheme.lower() != HTTPS:
        raise ValueError(f"entry {number} ({entry!r}) has the scheme {scheme!r}; only https://"
                         " is accepted")
    authority, slash, path = rest.partition("/")
    if any(c in authority for c in "?#") or path or (slash and not authority):
        raise ValueError(f"entry {number} ({entry!r}) has a path, query or fragment; give"
                         " https://address[:port] (the Redfish service is /redfish/v1 there)")
    if not authority.startswith("[") and authority.count(":") > 1:
        raise ValueError(f"entry {number} ({entry!r}) has an IPv6 address without brackets;"
                         " write https://[address]:port")
    address, port = _split_address(authority, number, entry)
    return BmcAddress(address, port, HTTPS)


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
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"entry {number} ({entry!r}) has a port outside 1-65535")
    return address, int(port_text)
