"""The ``[consul]`` settings, parsed into typed, bounded values, and read from one place.

The same options reach us three ways: oslo.config's ``[consul]`` group (the NovaEvacuate
worker, the sample config: :mod:`nova_evacuate.conf.consul` builds its options from
`OPTIONS` here), a file holding a ``[consul]`` section (fence_nova's ``consul_config=/path``,
which may be the worker's own openstack-ha.conf), and the same ``key=value`` pairs inline
(``consul_config="networks=management=http://10.0.0.1:8500 samples=3"``). Each becomes a
mapping of option name to text, checked once by `settings_from_mapping`.

No oslo.config here: fence_nova's ``off`` imports this before touching power.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Mapping
from dataclasses import dataclass

from openstack_ha.consul import ConsulClient, parse_networks
from openstack_ha.secret_files import read_token_file

SECTION = "consul"


@dataclass(frozen=True)
class Bounds:
    """One option's default and bounds (numbers) as the help text states them."""

    default: float | int | str
    minimum: float | None = None
    maximum: float | None = None


# name -> (default, bounds); the help texts are in nova_evacuate/conf/consul.py
OPTIONS: dict[str, Bounds] = {
    "networks": Bounds(""),
    "token_file": Bounds(""),
    "ca_file": Bounds(""),
    "timeout": Bounds(2.0, 0.1, 30.0),
    "samples": Bounds(3, 1, 10),
    "interval": Bounds(1.0, 0.0, 10.0),
    "settle": Bounds(10.0, 0.0, 120.0),
    "watch": Bounds("true"),
}
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}


@dataclass(frozen=True)
class ConsulSettings:
    """Where each network's Consul agent is and how to read it.

    ``networks``: name → agent URL, in the order given; empty when Consul is not used.
    ``token``: the ACL token read from ``token_file`` (never shown), or None.
    """

    networks: dict[str, str]
    token: str | None
    ca_file: str | None
    timeout: float
    samples: int
    interval: float
    settle: float = 0.0
    watch: bool = True

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return (f"ConsulSettings(networks={self.networks!r}, token={'<set>' if self.token else None},"
                f" ca_file={self.ca_file!r}, timeout={self.timeout}, samples={self.samples},"
                f" interval={self.interval}, settle={self.settle}, watch={self.watch})")

    @property
    def enabled(self) -> bool:
        return bool(self.networks)

    def clients(self) -> dict[str, ConsulClient]:
        """One client per network, in the networks' order."""
        return {name: ConsulClient(url, token=self.token, ca_file=self.ca_file,
                                   timeout=self.timeout)
                for name, url in self.networks.items()}

    @property
    def budget(self) -> float:
        """The longest a reading of every network takes (they are read in parallel): the
        settle wait and its last reading, the samples' spacing, and the last sample's two
        requests at their full timeout."""
        return self.settle + (self.samples - 1) * self.interval + 4 * self.timeout


def _number(name: str, text: str, integer: bool) -> float | int:
    bounds = OPTIONS[name]
    try:
        value: float | int = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"consul option {name!r} must be {kind} (got {text[:40]!r})") from None
    if not math.isfinite(value) or not (bounds.minimum <= value <= bounds.maximum):  # type: ignore[operator]
        raise ValueError(f"consul option {name!r} must be between {bounds.minimum:g} and"
                         f" {bounds.maximum:g} (got {text[:40]!r})")
    return value


def _boolean(name: str, text: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError(f"consul option {name!r} must be true or false (got {text[:40]!r})") from None


def settings_from_mapping(values: Mapping[str, str]) -> ConsulSettings:
    """``values`` (option name → text; missing ones take their default) checked and typed.
    ValueError, one line naming the option, for an unknown option or a bad value; the
    token file is read here, so an unreadable one is an error before any fence."""
    unknown = sorted(set(values) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown consul option {unknown[0]!r} (known: {', '.join(OPTIONS)})")

    def text(name: str) -> str:
        value = values.get(name)
        return str(OPTIONS[name].default) if value is None else value.strip()

    networks = parse_networks(text("networks")) if text("networks") else {}
    token_file, ca_file = text("token_file"), text("ca_file")
    settings = ConsulSettings(
        networks=networks,
        # names the option and the file, never the token (one that cannot be a header is
        # refused by ConsulClient below, also without showing it)
        token=read_token_file(token_file, "consul option 'token_file':") if token_file else None,
        ca_file=ca_file or None,
        timeout=float(_number("timeout", text("timeout"), integer=False)),
        samples=int(_number("samples", text("samples"), integer=True)),
        interval=float(_number("interval", text("interval"), integer=False)),
        settle=float(_number("settle", text("settle"), integer=False)),
        watch=_boolean("watch", text("watch")),
    )
    if settings.enabled:
        settings.clients()  # a CA file that cannot be used is an error now, not at the fence
    return settings


def parse_inline(text: str) -> dict[str, str]:
    """``key=value key=value ...`` (white space between pairs, the first ``=`` splits) as a
    mapping; ValueError for a pair without ``=`` or a key given twice."""
    values: dict[str, str] = {}
    for item in text.split():
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"consul_config: {item[:40]!r} is not key=value"
                             " (inline options are key=value pairs separated by spaces)")
        if key in values:
            raise ValueError(f"consul_config: option {key!r} is given twice")
        values[key] = value
    return values


def read_file(path: str) -> dict[str, str]:
    """The ``[consul]`` section of the INI file ``path`` (other sections are not read: it may
    be the whole openstack-ha.conf). ValueError, one line, if it cannot be read or parsed or
    has no such section."""
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       default_section="__no_defaults__")
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except OSError as exc:
        raise ValueError(f"consul_config: {path!r} cannot be read"
                         f" ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ValueError(f"consul_config: {path!r} is not UTF-8 text") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"consul_config: {path!r} is not an INI file ({first[:120]})") from None
    if not parser.has_section(SECTION):
        raise ValueError(f"consul_config: {path!r} has no [{SECTION}] section")
    return dict(parser.items(SECTION))


def load(value: str) -> ConsulSettings:
    """fence_nova's ``consul_config``: a path (it starts with ``/``) to a file with a
    ``[consul]`` section, or the options inline. ValueError, one line, for anything wrong."""
    text = value.strip()
    mapping = read_file(text) if text.startswith("/") else parse_inline(text)
    settings = settings_from_mapping(mapping)
    if not settings.enabled:
        raise ValueError("consul_config names no networks (networks=name=url,...)")
    return settings


def default_policy(networks: Mapping[str, str] | tuple[str, ...]) -> str:
    """The partition policy used when none is given, for these networks: fence when the node
    is failed on storage or on every network; refuse when only management is lost. Rules
    naming a network that is not configured are left out."""
    names = list(networks)
    rules = []
    if "storage" in names and len(names) > 1:
        rules.append("storage=fence")
    rules.append("*=fence")
    if "management" in names and len(names) > 1:
        rules.append("management=refuse")
    return "; ".join(rules)
