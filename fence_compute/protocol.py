"""The fence-agents protocol, declared once and driven by data.

A fence agent is run by Pacemaker (``pacemaker-fenced``) with no arguments and
its parameters on stdin, one ``key=value`` per line, or by a person with argv
flags (``fence_nova -o status -n compute-1``).  It answers through its exit
code: 0 success, 2 for ``status`` when the target is off, 1 for every failure.
``-o metadata`` prints an XML description of its parameters and actions that
Pacemaker and pcs read.

This module is that protocol for any agent, compatible with ClusterLabs
fence-agents' ``fencing.py`` (same parameter names, deprecated aliases, XML
layout and exit codes), without its global, stringly typed option dict:

* :class:`Option`, :class:`FenceAction` and :class:`FenceAgent` declare an
  agent's interface as frozen data.  One table drives stdin parsing, argv
  parsing, ``metadata``, ``--help``, validation and ``validate-all``.
* :func:`run` parses (argv, or stdin when argv is empty), validates, resolves
  secrets and calls the agent's handler for the action.  Handlers receive a
  frozen, typed :class:`Options` and return an exit code; they signal a failure
  by raising :class:`FenceError`.  Nothing here calls ``sys.exit``.

Secret values (options declared ``secret=True``) never appear in a log line, an
exception text or an error message: they are held as :class:`Secret` and are
redacted from anything a handler raises.

No OpenStack library is imported here: ``metadata`` must stay fast.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TextIO
from urllib.parse import unquote
from xml.sax.saxutils import escape as _xml_escape

from openstack_ha import logsetup

LOG = logging.getLogger(__name__)

OptionType = Literal["string", "boolean", "integer", "second"]
_OPTION_TYPES = ("string", "boolean", "integer", "second")

# Stdin larger than this is refused: Pacemaker sends a few hundred bytes.
MAX_STDIN_BYTES = 1 << 20
# How long a ``<secret>_script`` may run before it is killed and the action fails.
SECRET_SCRIPT_TIMEOUT = 30.0

# The actions that act on one target, and so need ``plug``.  fence-agents
# requires plug for every action except list, list-status and monitor; we also
# exempt validate-all, which pcs and ``stonith_admin --validate`` run without a
# target when a device is created.
PLUG_ACTIONS = frozenset({"on", "off", "reboot", "status"})
# Actions that wait ``delay`` seconds first, as fence-agents' ``run_delay``.
DELAY_ACTIONS = frozenset({"off", "reboot"})
# Answered by this module without reading or validating anything else.
_DOC_ACTIONS = frozenset({"metadata"})

# fence-agents' well-known deprecated spellings, mapped to the current name when
# the agent declares that name (fencing.py keeps these as all_opt keys whose
# longopt differs).  Options add their own through ``deprecated_names``.
FENCE_AGENTS_ALIASES: Mapping[str, str] = {
    "port": "plug",
    "login": "username",
    "ipaddr": "ip",
    "passwd": "password",
    "passwd_script": "password_script",
    "debug": "debug_file",
}

# Strict boolean words.  fence-agents ignores a boolean with any other value
# (with a warning) and carries on with the default; for a tool that decides
# whether a machine is powered off, a value we do not understand must stop the
# agent instead, so anything else is an error here.
_TRUE_WORDS = frozenset({"1", "yes", "on", "true"})
_FALSE_WORDS = frozenset({"0", "no", "off", "false"})

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_GETOPT_RE = re.compile(
    r"^(?:-(?P<short>[A-Za-z0-9]), )?--(?P<long>[a-z0-9][a-z0-9-]*)(?:=\[[^\]]*\])?$"
)


# Numbers are ASCII decimal only: int() and float() also take '١٢', '1_000', 'nan' and
# 'inf', none of which a Pacemaker parameter means.  A bound keeps a typo (delay=6e9)
# from hanging the agent or overflowing time.sleep().
MAX_INTEGER = 2**31 - 1
MAX_SECONDS = 86400.0  # one day: longer than any fence action may take
_INTEGER_RE = re.compile(r"\+?[0-9]{1,10}")
_SECONDS_RE = re.compile(r"\+?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?")


def _convert(option: Option, raw: str | int | float | bool) -> tuple[Value, str | None]:
    """Type one value; returns (value, problem), never naming a secret's value."""
    if option.type == "boolean":
        if isinstance(raw, bool):
            return raw, None
        word = str(raw).strip().lower()
        if word in _TRUE_WORDS:
            return True, None
        if word in _FALSE_WORDS:
            return False, None
        return None, "must be a boolean: 1/yes/on/true or 0/no/off/false"
    if option.type == "integer":
        if isinstance(raw, bool):
            return None, "must be a non-negative integer"
        text = str(raw).strip()
        if not _INTEGER_RE.fullmatch(text):
            return None, "must be a non-negative integer"
        number = int(text, 10)
        if number > MAX_INTEGER:
            return None, f"must be a non-negative integer, at most {MAX_INTEGER}"
        return number, None
    if option.type == "second":
        if isinstance(raw, bool):
            return None, "must be a non-negative number of seconds"
        text = str(raw).strip()
        if not _SECONDS_RE.fullmatch(text):
            return None, "must be a non-negative number of seconds"
        seconds = float(text)
        if not math.isfinite(seconds) or seconds > MAX_SECONDS:
            return None, f"must be a non-negative number of seconds, at most {MAX_SECONDS:g}"
        return seconds, None
    if isinstance(raw, bool):
        return None, "needs a value"
    text = str(raw)
    if option.choices is not None:
        for choice in option.choices:
            if choice.lower() == text.lower():
                return choice, None
        return None, "must be one of: " + ", ".join(option.choices)
    return text, None


class ExitCode(enum.IntEnum):
    """Exit codes of a fence agent (fence-agents ``fencing.py``)."""

    SUCCESS = 0  # EC_OK
    # EC_GENERIC_ERROR.  fence-agents defines more EC_* codes (EC_LOGIN_DENIED,
    # EC_TIMED_OUT, EC_WAITING_OFF, ...) but only to pick a message: fail() and
    # fail_usage() always exit with EC_GENERIC_ERROR, and Pacemaker only tells
    # 0 from non-zero.  So every failure is 1 here too.
    FAILURE = 1
    # ``status`` answering "off": fence_action returns 2 (the same number as
    # EC_BAD_ARGS, which fence-agents never uses as an exit code).
    STATUS_OFF = 2


class FenceError(Exception):
    """A handler failed for a reason worth one log line; the agent exits 1."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Secret:
    """A secret value that does not print itself.

    ``str()``, ``repr()`` and f-strings give ``***``; :meth:`reveal` gives the
    value to the one place that needs it (a keystone session, an IPMI login).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickled into a cache, a queue or a core file by accident
        raise TypeError("a Secret cannot be pickled")


Value = str | int | float | bool | Secret | None


@dataclass(frozen=True)
class Option:
    """One parameter of a fence agent, as fence-agents' ``all_opt`` entry.

    ``name`` is the stdin key (``power_timeout``); the argv long flag is derived
    from it (``--power-timeout``), the short flag is read from ``getopt``
    (``"-n, --plug=[id]"``).  ``deprecated_names`` are accepted on stdin and argv
    and listed in metadata with ``deprecated="1"``.  A ``secret`` option also
    gets ``<name>_script`` and ``<name>_file`` companions (see
    :meth:`FenceAgent.parameters`).  ``choices`` make it a ``select`` in
    metadata; values match case-insensitively and are stored as declared.
    A ``url`` option's user info and query string are credentials
    (``https://user:pass@keystone/v3?token=...``): they are shown as ``***`` in
    every message, log line and repr (see :func:`redact_url`).
    """

    name: str
    shortdesc: str
    type: OptionType = "string"
    default: str | int | float | bool | None = None
    required: bool = False
    getopt: str = ""
    deprecated_names: tuple[str, ...] = ()
    secret: bool = False
    choices: tuple[str, ...] | None = None
    longdesc: str = ""
    url: bool = False

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"option name {self.name!r} must be lower_snake_case")
        if self.type not in _OPTION_TYPES:
            raise ValueError(f"option {self.name}: unknown type {self.type!r}")
        for alias in self.deprecated_names:
            if not _ALIAS_RE.match(alias) or alias == self.name:
                raise ValueError(f"option {self.name}: bad deprecated name {alias!r}")
        if self.getopt:
            match = _GETOPT_RE.match(self.getopt)
            if not match or match.group("long") != self.long_flag[2:]:
                raise ValueError(
                    f"option {self.name}: getopt {self.getopt!r} must look like"
                    f" '-x, {self.long_flag}=[value]'"
                )
        if self.choices is not None:
            if self.type != "string" or not self.choices:
                raise ValueError(f"option {self.name}: choices need a string option")
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.url and (self.type != "string" or self.secret):
            raise ValueError(f"option {self.name}: url needs a string option that is not secret")
        if self.secret and self.required:
            # A secret comes from <name>_script or <name>_file as well, so it is
            # never required as such, and never has to be typed on a command line.
            raise ValueError(f"option {self.name}: a secret option cannot be required")
        if self.default is not None:
            _, problem = _convert(self, self.default)
            if problem:
                raise ValueError(f"option {self.name}: default {self.default!r}: {problem}")

    @property
    def long_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def short_flag(self) -> str | None:
        match = _GETOPT_RE.match(self.getopt) if self.getopt else None
        return "-" + match.group("short") if match and match.group("short") else None

    @property
    def takes_value(self) -> bool:
        """Whether the argv flag takes a value: all but booleans without ``=[..]``.

        A boolean flag alone means true; ``--flag=false`` is accepted too.  A
        boolean declared with a value (``--disable-timeout=[true/false]``) needs it.
        """
        return self.type != "boolean" or "=" in self.getopt

    @property
    def getopt_mixed(self) -> str:
        """The ``<getopt mixed=...>`` text: the declared getopt or one derived."""
        if self.getopt:
            return self.getopt
        if self.type == "boolean":
            return self.long_flag
        placeholder = {"second": "seconds", "integer": "number"}.get(self.type, "value")
        return f"{self.long_flag}=[{placeholder}]"

    @property
    def typed_default(self) -> Value:
        if self.default is None:
            return False if self.type == "boolean" else None
        value, _ = _convert(self, self.default)
        return Secret(str(value)) if self.secret else value


@dataclass(frozen=True)
class FenceAction:
    """One action of a fence agent.

    ``automatic`` is metadata's ``automatic="1"`` on ``on``: the device is an
    unfencing device, and Pacemaker runs ``on`` for a node before it may start
    resources there (with the device's ``meta provides=unfencing``).
    """

    name: str
    automatic: bool = False


@dataclass(frozen=True)
class FenceAgent:
    """The declared interface of one fence agent.

    ``options`` are the agent's own parameters; ``action``, ``help`` and
    ``version`` are added by this module, and every ``secret`` option brings
    its ``_script`` and ``_file`` companions (see :attr:`parameters`).
    ``check`` is the agent's cross-option validation: given parsed options it
    returns error lines (each naming an option, never a secret's value); it is
    run for ``validate-all`` and before every other action except ``metadata``.
    """

    name: str
    shortdesc: str
    longdesc: str
    options: tuple[Option, ...]
    actions: tuple[FenceAction, ...]
    default_action: str
    vendor_url: str = ""
    check: Callable[[Options], Sequence[str]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "actions", tuple(self.actions))
        action_names = [a.name for a in self.actions]
        if len(set(action_names)) != len(action_names):
            raise ValueError(f"{self.name}: an action is declared twice")
        if self.default_action not in action_names:
            raise ValueError(f"{self.name}: default action {self.default_action!r} not declared")
        if "metadata" not in action_names:
            raise ValueError(f"{self.name}: every fence agent must answer 'metadata'")
        for option in self.options:
            if option.name in _BUILTIN_NAMES:
                raise ValueError(f"{self.name}: option {option.name!r} is provided by protocol")
            if option.name in _RESERVED_NAMES:
                raise ValueError(f"{self.name}: option name {option.name!r} is an Options method")
        # Every spelling (name, deprecated names, long and short flags) must
        # lead to one option only.
        keys: dict[str, str] = {}
        shorts: dict[str, str] = {}
        for option in self.parameters:
            for spelling in (option.name, *option.deprecated_names):
                key = _normalise(spelling)
                if keys.get(key, option.name) != option.name:
                    raise ValueError(
                        f"{self.name}: {spelling!r} names both {keys[key]} and {option.name}"
                    )
                keys[key] = option.name
            short = option.short_flag
            if short:
                if short in shorts:
                    raise ValueError(
                        f"{self.name}: short flag {short} is used by {shorts[short]}"
                        f" and {option.name}"
                    )
                shorts[short] = option.name

    @functools.cached_property
    def parameters(self) -> tuple[Option, ...]:
        """Every option the agent accepts, in metadata order."""
        result = [
            Option(
                "action",
                "Fencing action",
                default=self.default_action,
                required=True,
                getopt="-o, --action=[action]",
                longdesc="One of: " + ", ".join(a.name for a in self.actions) + ".",
            )
        ]
        for option in self.options:
            result.append(option)
            if option.secret:
                result.extend(_secret_companions(option))
        result.extend(_TRAILING_BUILTINS)
        return tuple(result)

    @functools.cached_property
    def _by_name(self) -> Mapping[str, Option]:
        return {option.name: option for option in self.parameters}

    @functools.cached_property
    def _by_key(self) -> Mapping[str, Option]:
        table: dict[str, Option] = {}
        for old, new in FENCE_AGENTS_ALIASES.items():
            if new in self._by_name:
                table[_normalise(old)] = self._by_name[new]
        for option in self.parameters:
            for spelling in option.deprecated_names:
                table[_normalise(spelling)] = option
        for option in self.parameters:
            table[_normalise(option.name)] = option
        return table

    @functools.cached_property
    def _by_short(self) -> Mapping[str, Option]:
        return {o.short_flag: o for o in self.parameters if o.short_flag}

    def option(self, name: str) -> Option:
        """The declared option ``name`` (current name only); KeyError if none."""
        return self._by_name[name]

    def lookup(self, key: str) -> Option | None:
        """The option a stdin key or long flag names, through aliases and ``-``/``_``."""
        return self._by_key.get(_normalise(key))

    def short_option(self, letter: str) -> Option | None:
        """The option whose getopt short flag is ``-<letter>``."""
        return self._by_short.get("-" + letter)

    def has_action(self, name: str) -> bool:
        return any(a.name == name for a in self.actions)

    def declares(self, name: str) -> bool:
        return name in self._by_name


def _normalise(key: str) -> str:
    return key.replace("-", "_")


def _secret_companions(option: Option) -> tuple[Option, Option]:
    """``<name>_script`` and ``<name>_file`` for a secret option.

    ``password_script`` keeps fence-agents' name, alias (``passwd_script``) and
    short flag (``-S``, which fence-agents gives it in every agent).
    """
    what = option.shortdesc[:1].lower() + option.shortdesc[1:]
    short = "-S, " if option.name == "password" else ""
    script = Option(
        f"{option.name}_script",
        f"Script to run to retrieve {what}",
        getopt=f"{short}--{option.name.replace('_', '-')}-script=[script]",
        deprecated_names=tuple(f"{old}_script" for old in option.deprecated_names),
        longdesc=(
            f"Command whose first line of output is the value of {option.name}. It is split"
            " like a shell command line but run without a shell, with a timeout of"
            f" {SECRET_SCRIPT_TIMEOUT:g} s; a non-zero exit fails the action. Give only one of"
            f" {option.name}, {option.name}_script and {option.name}_file."
        ),
    )
    secret_file = Option(
        f"{option.name}_file",
        f"File holding {what}",
        getopt=f"--{option.name.replace('_', '-')}-file=[path]",
        longdesc=(
            f"Path of a file whose first line is the value of {option.name}. The file must"
            " not be readable by other users (chmod o-r), or the agent refuses it."
        ),
    )
    return script, secret_file


_BUILTIN_NAMES = frozenset({"action", "help", "version"})
# Names that Options attribute access cannot reach (its methods).
_RESERVED_NAMES = frozenset(
    {
        "get",
        "is_set",
        "nodename",
        "text",
        "flag",
        "number",
        "seconds",
        "secret",
        "secret_values",
        "for_agent",
    }
)
_TRAILING_BUILTINS = (
    Option("version", "Display version information and exit", "boolean", getopt="-V, --version"),
    Option("help", "Display help and exit", "boolean", getopt="-h, --help"),
)


# fence-agents' common options (fencing.py all_opt), with their names, aliases,
# short flags and defaults.  An agent picks the ones it uses, and changes one
# with dataclasses.replace() -- never in place.  run() gives these their
# fence-agents meaning when the agent declares them: verbose, verbose_level,
# debug_file, quiet, delay, disable_timeout.
_STANDARD = (
    Option(
        "plug",
        "Physical plug number on device, UUID or identification of machine",
        required=True,
        getopt="-n, --plug=[id]",
        deprecated_names=("port",),
    ),
    Option("username", "Login name", getopt="-l, --username=[name]", deprecated_names=("login",)),
    Option(
        "password",
        "Login password or passphrase",
        getopt="-p, --password=[password]",
        deprecated_names=("passwd",),
        secret=True,
    ),
    Option(
        "ip",
        "IP address or hostname of fencing device",
        getopt="-a, --ip=[ip]",
        deprecated_names=("ipaddr",),
    ),
    Option(
        "ipport",
        "TCP/UDP port to use for connection with device",
        "integer",
        getopt="-u, --ipport=[port]",
    ),
    Option(
        "quiet",
        "Disable logging to stderr. Does not affect --verbose or --debug-file or logging"
        " to syslog.",
        "boolean",
        getopt="-q, --quiet",
    ),
    Option(
        "verbose",
        "Verbose mode. Multiple -v flags can be stacked on the command line (e.g., -vvv)"
        " to increase verbosity.",
        "boolean",
        getopt="-v, --verbose",
    ),
    Option(
        "verbose_level",
        "Level of debugging detail in output. Defaults to the number of --verbose flags"
        " specified on the command line, or to 1 if verbose=1 in a stonith device"
        " configuration (i.e., on stdin).",
        "integer",
        getopt="--verbose-level=[level]",
    ),
    Option(
        "debug_file",
        "Write debug information to given file",
        getopt="-D, --debug-file=[debugfile]",
        deprecated_names=("debug",),
    ),
    Option(
        "separator",
        "Separator for CSV created by 'list' operation",
        default=",",
        getopt="-C, --separator=[char]",
    ),
    Option(
        "plug_separator",
        "Separator for plug parameter when specifying more than 1 plug",
        default=",",
        getopt="--plug-separator=[char]",
    ),
    Option(
        "delay",
        "Wait X seconds before fencing is started",
        "second",
        default=0,
        getopt="--delay=[seconds]",
    ),
    Option(
        "disable_timeout",
        "Disable timeout (true/false) (default: true when run from Pacemaker 2.0+)",
        "boolean",
        getopt="--disable-timeout=[true/false]",
    ),
    Option(
        "login_timeout",
        "Wait X seconds for cmd prompt after login",
        "second",
        default=5,
        getopt="--login-timeout=[seconds]",
    ),
    Option(
        "power_timeout",
        "Test X seconds for status change after ON/OFF",
        "second",
        default=20,
        getopt="--power-timeout=[seconds]",
    ),
    Option(
        "power_wait",
        "Wait X seconds after issuing ON/OFF",
        "second",
        default=0,
        getopt="--power-wait=[seconds]",
    ),
    Option(
        "shell_timeout",
        "Wait X seconds for cmd prompt after issuing command",
        "second",
        default=3,
        getopt="--shell-timeout=[seconds]",
    ),
    Option(
        "stonith_status_sleep",
        "Sleep X seconds between status calls during a STONITH action",
        "second",
        default=1,
        getopt="--stonith-status-sleep=[seconds]",
    ),
    Option(
        "retry_on",
        "Count of attempts to retry power on",
        "integer",
        default=1,
        getopt="--retry-on=[attempts]",
    ),
)
STANDARD_OPTIONS: Mapping[str, Option] = MappingProxyType({o.name: o for o in _STANDARD})

# --------------------------------------------------------------------------
# Parsed options


class Options:
    """The parsed, typed, read-only options of one invocation.

    Every declared option is present, given or defaulted (``None`` when it has
    no default, ``False`` for an unset boolean).  Reading an option that is not
    declared raises (KeyError / AttributeError), so a misspelt name fails
    loudly instead of reading ``None``.  Secret options hold :class:`Secret`.
    """

    __slots__ = ("_given", "_nodename", "_types", "_urls", "_values")

    def __init__(
        self,
        values: Mapping[str, Value],
        *,
        types: Mapping[str, str],
        given: Iterable[str] = (),
        nodename: str | None = None,
        urls: Iterable[str] = (),
    ) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_types", dict(types))
        object.__setattr__(self, "_given", frozenset(given))
        object.__setattr__(self, "_nodename", nodename)
        # Names of ``url`` options: their credentials are redacted like secrets.
        object.__setattr__(self, "_urls", frozenset(urls))

    @classmethod
    def for_agent(
        cls,
        agent: FenceAgent,
        values: Mapping[str, Value] | None = None,
        *,
        nodename: str | None = None,
    ) -> Options:
        """Options of ``agent`` with defaults, overridden by typed ``values``.

        For handlers' tests: ``Options.for_agent(FENCE_NOVA, {"plug": "c1"})``.
        """
        values = dict(values or {})
        unknown = set(values) - {o.name for o in agent.parameters}
        if unknown:
            raise KeyError(f"not options of {agent.name}: {', '.join(sorted(unknown))}")
        full: dict[str, Value] = {o.name: o.typed_default for o in agent.parameters}
        for name, value in values.items():
            option = agent.option(name)
            if value is not None and not isinstance(value, Secret):
                value, problem = _convert(option, value)
                if problem:
                    raise ValueError(f"option '{name}' {problem}")
                if option.secret:
                    value = Secret(str(value))
            full[name] = value
        return cls(
            full,
            types={o.name: o.type for o in agent.parameters},
            given=values.keys(),
            nodename=nodename,
            urls=[o.name for o in agent.parameters if o.url],
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Options are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Options are read-only")

    def get(self, name: str) -> Value:
        """The value of option ``name``; KeyError if the agent does not declare it."""
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"no option named {name!r}") from None

    __getitem__ = get

    def __getattr__(self, name: str) -> Value:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no option named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def is_set(self, name: str) -> bool:
        """Whether ``name`` was given (on stdin or argv), not just defaulted."""
        self.get(name)
        return name in self._given

    @property
    def nodename(self) -> str | None:
        """Pacemaker's ``nodename=`` (the cluster node name), when it sent one."""
        return self._nodename

    def text(self, name: str) -> str | None:
        return self._typed(name, ("string",), str)

    def flag(self, name: str) -> bool:
        return bool(self._typed(name, ("boolean",), bool))

    def number(self, name: str) -> int | None:
        return self._typed(name, ("integer",), int)

    def seconds(self, name: str) -> float | None:
        return self._typed(name, ("second",), float)

    def secret(self, name: str) -> Secret | None:
        return self._typed(name, ("string",), Secret)

    def _typed(self, name: str, types: tuple[str, ...], python_type: type):
        value = self.get(name)
        if self._types.get(name) not in types or not (
            value is None or isinstance(value, python_type)
        ):
            raise TypeError(f"option {name!r} is a {self._types.get(name)}, not {types[0]}")
        return value

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value held, and the credentials inside ``url`` options, for redaction."""
        found = [v.reveal() for v in self._values.values() if isinstance(v, Secret) and v]
        for name in sorted(self._urls):
            value = self._values.get(name)
            if isinstance(value, str):
                found.extend(url_secrets(value))
        return tuple(found)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={(redact_url(v) if k in self._urls and isinstance(v, str) else v)!r}"
            for k, v in self._values.items()
            if k in self._given
        )
        return f"Options({shown})"


# --------------------------------------------------------------------------
# Parsing


@dataclass
class _Raw:
    """What stdin or argv said, before typing: name -> (raw value, as given)."""

    values: dict[str, tuple[str | bool, str]] = field(default_factory=dict)
    nodename: str | None = None
    verbose_count: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Set when the input as a whole is refused (a control character): nothing
    # else of it is read, not even the action, and the agent exits 1 at once.
    fatal: str | None = None

    def put(self, option: Option, value: str | bool, given_as: str) -> None:
        previous = self.values.get(option.name)
        if previous is not None and previous[0] != value:
            # Two spellings of one option with different values (port= and
            # plug=, say): refuse rather than pick one.
            self.errors.append(
                f"option '{option.name}' is given more than once with different values"
                f" (as '{previous[1]}' and '{given_as}')"
            )
            return
        self.values[option.name] = (value, given_as)


# Refused anywhere in stdin and argv: the C0 controls but tab, DEL, the C1
# controls, U+2028/U+2029 (str.splitlines() and many log and terminal readers
# break lines at these, so one line could carry a second option past whoever
# checked it), and lone surrogates (bytes that were not UTF-8, kept by Python's
# surrogateescape).  Carriage return is allowed only at the end of a stdin line.
_FORBIDDEN_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def forbidden_character(text: str) -> str | None:
    """What in ``text`` an input may not hold ("control character U+000B"), or None."""
    match = _FORBIDDEN_RE.search(text)
    if match is None:
        return None
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return "bytes that are not UTF-8"
    return f"control character U+{ord(char):04X}"


def parse_stdin(agent: FenceAgent, text: str) -> _Raw:
    """Parse fence-agents' stdin: one ``key=value`` per line.

    Lines end at ``\\n`` only (a trailing ``\\r`` is dropped), as fence-agents
    reads them.  A line holding any other control character refuses the whole
    input (:attr:`_Raw.fatal`): it is not split, guessed at, or partly applied.
    """
    raw = _Raw()
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    for lineno, line in enumerate(lines, 1):
        problem = forbidden_character(line)
        if problem:
            return _Raw(fatal=f"stdin line {lineno} holds {problem}; refusing the whole input")
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            # Never echo the line: it may be a password typed without its key.
            raw.errors.append(f"stdin line {lineno}: expected key=value, found no '='")
            continue
        if not key:
            raw.errors.append(f"stdin line {lineno}: no option name before '='")
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]  # fence-agents strips one pair of double quotes
        if _normalise(key) == "nodename":
            raw.nodename = value
            continue
        option = agent.lookup(key)
        if option is None:
            raw.warnings.append(f"Ignoring unknown option {_show_key(key)}")
            continue
        raw.put(option, value, key)
    return raw


def parse_argv(agent: FenceAgent, argv: Sequence[str]) -> _Raw:
    """Parse argv: long flags from option names, short flags from getopt."""
    args = list(argv)
    for position, arg in enumerate(args, 1):
        problem = forbidden_character(arg)
        if problem:
            return _Raw(fatal=f"argument {position} holds {problem}; refusing the command line")
    raw = _Raw()
    index = 0

    def take(option: Option, flag: str, inline: str | None) -> None:
        nonlocal index
        if option.name == "verbose" and inline is None:
            raw.verbose_count += 1
        if option.secret:
            raw.warnings.append(
                f"{flag} on the command line is visible to every user of this machine;"
                f" use --{option.name.replace('_', '-')}-script or"
                f" --{option.name.replace('_', '-')}-file"
            )
        if not option.takes_value:
            raw.put(option, True if inline is None else inline, flag)
            return
        if inline is None:
            if index + 1 >= len(args):
                raw.errors.append(f"option {flag} needs a value")
                return
            following = args[index + 1]
            if following.startswith("-") and len(following) > 1:
                # getopt would take it as the value: `--login-timeout -pSECRET` would
                # swallow a password and then echo it as a bad number.  The next
                # argument is parsed as the option it looks like instead.
                spelled = f"{flag}=VALUE" if flag.startswith("--") else f"{flag}VALUE"
                raw.errors.append(
                    f"option {flag} needs a value, but the next argument is an option;"
                    f" write {spelled} for a value that starts with '-'"
                )
                return
            index += 1
            inline = args[index]
        raw.put(option, inline, flag)

    while index < len(args):
        arg = args[index]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            option = agent.lookup(name)
            if option is None:
                raw.errors.append(f"unknown option {_show_key('--' + name)}")
            else:
                take(option, "--" + name, value if eq else None)
        elif arg.startswith("-") and len(arg) > 1 and arg != "--":
            letters = arg[1:]
            for pos, letter in enumerate(letters):
                option = agent.short_option(letter)
                if option is None:
                    raw.errors.append(f"unknown option {_show_key('-' + letter)}")
                    break
                if option.takes_value:
                    take(option, "-" + letter, letters[pos + 1 :] or None)
                    break
                take(option, "-" + letter, None)
        else:
            # Not echoed: a stray word may be a value that lost its flag.
            raw.errors.append(f"unexpected argument at position {index + 1}")
        index += 1
    return raw


def _show_key(key: str) -> str:
    shown = key if len(key) <= 64 else key[:64] + "..."
    return repr(shown) if not shown.isprintable() or "'" in shown else f"'{shown}'"


def show_value(value: str) -> str | None:
    """``value`` quoted for an error message, or None when it must not be shown.

    A value that starts with ``-`` is never shown: on a command line it is most
    likely the next option, swallowed (a password given as ``-pSECRET``).
    """
    if value.startswith("-"):
        return None
    return _show_key(value)


def _describe_bad(option: Option, raw: str | bool, problem: str) -> str:
    if option.secret or isinstance(raw, bool):
        return f"option '{option.name}' {problem}"
    shown = show_value(redact_url(raw) if option.url else raw)
    if shown is None:
        return f"option '{option.name}' {problem} (its value starts with '-' and is not shown)"
    return f"option '{option.name}' {problem} (got {shown})"


# --------------------------------------------------------------------------
# Redaction

_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The user info of any URL in free text (an exception's message): always a credential.
_USERINFO_IN_TEXT_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]+@")


def _split_url(url: str) -> tuple[str, str | None, str, str | None, str | None]:
    """(``scheme://``, user info, host and path, query, fragment), by hand.

    urllib refuses some malformed URLs, and a redaction must never fail.  The user
    info runs to the *last* ``@``: a password holding ``/``, ``?`` or ``#`` (unencoded)
    is then still hidden, at the price of hiding too much of an odd URL.
    """
    match = _URL_SCHEME_RE.match(url)
    prefix = match.group() if match else ""
    rest = url[len(prefix) :]
    userinfo = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
    rest, hash_mark, fragment = rest.partition("#")
    rest, question_mark, query = rest.partition("?")
    return (
        prefix,
        userinfo,
        rest,
        query if question_mark else None,
        fragment if hash_mark else None,
    )


def redact_url(url: str) -> str:
    """``url`` with its user info, query string and fragment shown as ``***``.

    ``https://admin:pw@keystone:5000/v3?token=x`` gives ``https://***@keystone:5000/v3?***``.
    Pure, and total: any string gives a string.
    """
    prefix, userinfo, rest, query, fragment = _split_url(url)
    return (
        prefix
        + ("***@" if userinfo is not None else "")
        + rest
        + ("?***" if query else "?" if query is not None else "")
        + ("#***" if fragment else "#" if fragment is not None else "")
    )


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that :func:`redact_url` hides, to redact them from free text.

    The user info, its password alone, the query and the fragment, as written
    and percent-decoded (a library may print either).
    """
    _, userinfo, _, query, fragment = _split_url(url)
    parts = [userinfo, query, fragment]
    if userinfo and ":" in userinfo:
        parts.append(userinfo.partition(":")[2])
    found: list[str] = []
    for part in parts:
        if part:
            found.extend(dict.fromkeys((part, unquote(part))))
    return tuple(found)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and the user info of any URL in it, shown as ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO_IN_TEXT_RE.sub(r"\1***@", text)


# --------------------------------------------------------------------------
# Secrets


def _resolve_secret(
    option: Option, raw: Mapping[str, tuple[str | bool, str]]
) -> tuple[Secret | None, str | None]:
    """The secret value of ``option`` from itself, its _script or its _file."""
    script_name, file_name = f"{option.name}_script", f"{option.name}_file"
    sources = [n for n in (option.name, script_name, file_name) if raw.get(n, ("",))[0]]
    if len(sources) > 1:
        return None, (
            "give only one of " + ", ".join(sources) + f" (all set the same {option.name})"
        )
    if not sources:
        default = option.typed_default
        return (default if isinstance(default, Secret) else None), None
    source = sources[0]
    given = str(raw[source][0])
    if source == option.name:
        return Secret(given), None
    if source == script_name:
        return _run_secret_script(script_name, given)
    return _read_secret_file(file_name, given)


def _run_secret_script(name: str, command: str) -> tuple[Secret | None, str | None]:
    # Neither the command line (it may embed the secret: passwd_script="echo x")
    # nor the script's output is ever put in a message.
    try:
        argv = shlex.split(command)
    except ValueError:
        return None, f"{name} cannot be split into words (unbalanced quotes?)"
    if not argv:
        return None, f"{name} is empty"
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        return None, f"{name} could not be started: {exc.strerror or type(exc).__name__}"
    try:
        out, _ = proc.communicate(timeout=SECRET_SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        return None, f"{name} did not finish within {SECRET_SCRIPT_TIMEOUT:g} s and was killed"
    if proc.returncode != 0:
        if proc.returncode < 0:
            return None, f"{name} was killed by signal {-proc.returncode}"
        return None, f"{name} failed with exit status {proc.returncode}"
    return _first_line(name, out, "printed nothing")


def _read_secret_file(name: str, path: str) -> tuple[Secret | None, str | None]:
    # stat() before open(): opening a FIFO for reading blocks until a writer comes
    # (forever), and opening a device may do something.  O_NONBLOCK on the open and
    # the fstat() after it cover a file swapped for one of those in between.
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, f"{name} {path!r} is not a regular file"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        return None, f"{name} {path!r} cannot be opened: {exc.strerror}"
    except ValueError:  # a NUL in the path
        return None, f"{name} cannot be opened: its path holds a NUL character"
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            return None, f"{name} {path!r} is not a regular file"
        os.set_blocking(fd, True)
        if mode & stat.S_IROTH:
            return None, (
                f"{name} {path!r} is readable by every user (mode {stat.S_IMODE(mode):04o});"
                f" refusing it: run 'chmod o-r {path}'"
            )
        data = handle.readline(64 * 1024)
    return _first_line(name, data, "is empty")


def _first_line(name: str, data: bytes, empty: str) -> tuple[Secret | None, str | None]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"{name}: the secret is not UTF-8 text"
    # The first line ends at "\n" only (not at \x0b, \x85, \u2028 ... as
    # splitlines() would); trailing white space is dropped, as fence-agents' rstrip() does.
    line = text.split("\n", 1)[0].rstrip()
    if not line:
        return None, f"{name} {empty}"
    return Secret(line), None


# --------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class _Parsed:
    options: Options | None
    errors: tuple[str, ...]
    # Secrets resolved from a _script or _file: redacted from the errors too.
    secrets: tuple[str, ...] = ()


def build_options(agent: FenceAgent, raw: _Raw, action: str) -> _Parsed:
    """Type, default, check and resolve secrets: the Options for ``action``."""
    errors = list(raw.errors)
    values: dict[str, Value] = {}
    for option in agent.parameters:
        if option.name in raw.values:
            given, _ = raw.values[option.name]
            value, problem = _convert(option, given)
            if problem:
                errors.append(_describe_bad(option, given, problem))
                continue
            values[option.name] = value
        else:
            values[option.name] = option.typed_default
    values["action"] = action
    given_names = set(raw.values)

    if "plug" in values and not values["plug"] and raw.nodename:
        # Pacemaker sends the target as port= (pcmk_host_argument) and as
        # nodename=; when there is no port/plug, the node name is the target.
        values["plug"] = raw.nodename
        given_names.add("plug")
    if agent.declares("verbose_level") and "verbose_level" not in raw.values:
        values["verbose_level"] = raw.verbose_count or (1 if values.get("verbose") else 0)
    if (
        agent.declares("disable_timeout")
        and "disable_timeout" not in raw.values
        # pacemaker-fenced sets exactly this (lower-case) name for its agents.
        and os.environ.get("PCMK_service") == "pacemaker-fenced"  # noqa: SIM112
    ):
        values["disable_timeout"] = True  # fence-agents' default under Pacemaker 2.0+

    for option in agent.parameters:
        if not option.required or option.name == "action":
            continue
        if option.name == "plug" and action not in PLUG_ACTIONS:
            continue
        if values.get(option.name) in (None, ""):
            also = ", ".join(f"'{n}'" for n in option.deprecated_names)
            hint = f" (also accepted as {also})" if also else ""
            errors.append(f"option '{option.name}' is required for action '{action}'{hint}")

    if errors:
        return _Parsed(None, tuple(errors))

    for option in agent.parameters:
        if option.secret:
            secret, problem = _resolve_secret(option, raw.values)
            if problem:
                errors.append(problem)
            values[option.name] = secret
            companions = (option.name, f"{option.name}_script", f"{option.name}_file")
            if any(name in raw.values for name in companions):
                given_names.add(option.name)
    resolved = tuple(v.reveal() for v in values.values() if isinstance(v, Secret) and v)
    if errors:
        return _Parsed(None, tuple(errors), resolved)

    options = Options(
        values,
        types={o.name: o.type for o in agent.parameters},
        given=given_names,
        nodename=raw.nodename,
        urls=[o.name for o in agent.parameters if o.url],
    )
    if agent.check is not None:
        errors.extend(agent.check(options))
    return _Parsed(None if errors else options, tuple(errors), options.secret_values())


# --------------------------------------------------------------------------
# Documents: metadata and --help


def _attr(value: str) -> str:
    return _xml_escape(value, {'"': "&quot;", "'": "&apos;"})


def _default_text(option: Option) -> str | None:
    if option.default is None or option.secret:
        return None
    if isinstance(option.default, bool):
        return "1" if option.default else "0"
    if isinstance(option.default, float) and option.default.is_integer():
        return str(int(option.default))
    return str(option.default)


def metadata_xml(agent: FenceAgent) -> str:
    """The ``-o metadata`` document, laid out exactly as fence-agents prints it.

    It validates against fence-agents' ``metadata.rng``; deprecated spellings
    are parameters of their own with ``deprecated="1"`` and the current one says
    ``obsoletes="<old>"``.  Parameters have no ``<longdesc>`` (the schema has
    none); the long descriptions are in ``--help``.
    """
    lines = [
        '<?xml version="1.0" ?>',
        f'<resource-agent name="{_attr(agent.name)}" shortdesc="{_attr(agent.shortdesc)}" >',
        f"<longdesc>{_xml_escape(agent.longdesc)}</longdesc>",
        f"<vendor-url>{_xml_escape(agent.vendor_url)}</vendor-url>",
        "<parameters>",
    ]
    for option in agent.parameters:
        obsoletes = option.deprecated_names[0] if option.deprecated_names else None
        lines.extend(_parameter_xml(option, option.name, obsoletes=obsoletes))
        for old in option.deprecated_names:
            lines.extend(_parameter_xml(option, old, deprecated=True))
    lines.append("</parameters>")
    lines.append("<actions>")
    for action in agent.actions:
        if action.name == "on" or action.automatic:
            automatic = "1" if action.automatic else "0"
            lines.append(f'\t<action name="{_attr(action.name)}" automatic="{automatic}"/>')
        else:
            lines.append(f'\t<action name="{_attr(action.name)}" />')
    lines.append("</actions>")
    lines.append("</resource-agent>")
    return "\n".join(lines) + "\n"


def _parameter_xml(
    option: Option, name: str, *, deprecated: bool = False, obsoletes: str | None = None
) -> list[str]:
    info = ""
    if deprecated:
        info = ' deprecated="1"'
    elif obsoletes:
        info = f' obsoletes="{_attr(obsoletes)}"'
    required = "1" if option.required else "0"
    default = _default_text(option)
    default_attr = f'default="{_attr(default)}" ' if default is not None else ""
    lines = [
        f'\t<parameter name="{_attr(name)}" unique="0" required="{required}"{info}>',
        f'\t\t<getopt mixed="{_attr(option.getopt_mixed)}" />',
    ]
    if option.choices is not None:
        lines.append(f'\t\t<content type="select" {default_attr} >')
        lines.extend(f'\t\t\t<option value="{_attr(c)}" />' for c in option.choices)
        lines.append("\t\t</content>")
    else:
        lines.append(f'\t\t<content type="{option.type}" {default_attr} />')
    lines.append(f'\t\t<shortdesc lang="en">{_xml_escape(option.shortdesc)}</shortdesc>')
    lines.append("\t</parameter>")
    return lines


def usage_text(agent: FenceAgent) -> str:
    """``--help``: every option with its flags, default and long description."""
    wrap = functools.partial(
        textwrap.fill, width=79, initial_indent=" " * 8, subsequent_indent=" " * 8
    )
    out = [
        f"{agent.name}: {agent.shortdesc}",
        "",
        "Usage:",
        f"\t{agent.name} [options]",
        f"\techo -e 'action=off\\nplug=NODE\\n...' | {agent.name}",
        "",
        "Without command-line options, options are read from stdin, one key=value per line.",
        "Lines end at a newline; a line or argument holding any other control character",
        f"is refused as a whole. Numbers are ASCII decimals: integers up to {MAX_INTEGER},",
        f"seconds up to {MAX_SECONDS:g}.",
        "",
        "Options:",
    ]
    for option in agent.parameters:
        head = f"   {option.getopt_mixed:<34} {option.shortdesc}"
        out.append(head)
        notes = []
        if option.longdesc:
            notes.append(option.longdesc)
        default = _default_text(option)
        if default is not None:
            notes.append(f"Default: {default}.")
        if option.choices:
            notes.append("One of: " + ", ".join(option.choices) + ".")
        if option.deprecated_names:
            notes.append("Also accepted as: " + ", ".join(option.deprecated_names) + ".")
        if option.name == "plug":
            notes.append("Pacemaker's nodename= is used when no plug is given.")
        if notes:
            out.append(wrap(" ".join(notes)))
    out.append("")
    out.append("Actions: " + ", ".join(a.name for a in agent.actions))
    out.append("")
    out.append("Exit status: 0 success, 2 status is off, 1 any failure.")
    return "\n".join(out) + "\n"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("openstack-instance-ha")
    except metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------
# The run loop


Handler = Callable[[Options], int]


def _read_stdin(stdin: TextIO | None) -> tuple[str, str | None]:
    if stdin is None:
        return "", None
    try:
        if stdin.closed or stdin.isatty():
            return "", None  # a person at a terminal: do not wait for input
        text = stdin.read(MAX_STDIN_BYTES + 1)
    except UnicodeDecodeError:
        return "", "stdin is not valid UTF-8 text"
    except (OSError, ValueError) as exc:
        return "", f"cannot read stdin: {type(exc).__name__}"
    if len(text) > MAX_STDIN_BYTES:
        return "", f"stdin is larger than {MAX_STDIN_BYTES} bytes"
    return text, None


def _raw_secrets(agent: FenceAgent, raw: _Raw) -> list[str]:
    """The secrets written on stdin or argv themselves, before any is resolved.

    A parse error about another option must not show one either (the same text
    given to two options, a password swallowed as a value).
    """
    found: list[str] = []
    for name, (value, _) in raw.values.items():
        option = agent.lookup(name)
        if option is None or not isinstance(value, str) or not value:
            continue
        if option.secret:
            found.append(value)
        elif option.url:
            found.extend(url_secrets(value))
    return found


# Record attributes that hold text: set when the record is made (msg) and while
# it is formatted (message, exc_text, and oslo.log's error_summary, the exception
# being handled, which oslo.log appends to every warning logged in an except block).
_RECORD_TEXTS = frozenset({"msg", "message", "exc_text", "error_summary", "stack_info"})


class _RedactingRecord(logging.LogRecord):
    """A log record whose texts are redacted whenever they are set, a formatter's too."""

    _secrets: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        if name in _RECORD_TEXTS and isinstance(value, str):
            value = redact_text(value, self._secrets)
        super().__setattr__(name, value)


@contextlib.contextmanager
def _redacted_records(secrets: Sequence[str]) -> Iterator[None]:
    """While a handler runs, every log record, a library's too, is redacted.

    keystoneauth logs each request's URL at debug level, and the message of its
    ConnectionError holds it: with credentials in ``auth_url`` that would reach
    stderr, syslog and ``debug_file``.  Handlers are replaced by oslo.log at the
    first record, so the redaction is done where records are made.
    """
    previous = logging.getLogRecordFactory()
    kept = tuple(s for s in secrets if s)

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if type(record) is logging.LogRecord:  # another factory's class is left as it is
            record.__class__ = _RedactingRecord
            object.__setattr__(record, "_secrets", kept)
        _redact_message(record, kept)
        return record

    logging.setLogRecordFactory(make_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def _redact_message(record: logging.LogRecord, secrets: Sequence[str]) -> None:
    """Merge and redact the message now: a handler may call getMessage() itself."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it, with nothing of ours
        return
    clean = redact_text(message, secrets)
    if clean != message:
        record.msg, record.args = clean, None


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails still gets its one line
        return "(no message)"


def _one_line(text: str) -> str:
    # A reason may carry a BMC's or Nova's text: no control character reaches a terminal.
    return _FORBIDDEN_RE.sub("?", " ".join(text.split()))


def _quick_flag(raw: _Raw, name: str) -> bool:
    value = raw.values.get(name, (False, ""))[0]
    if isinstance(value, bool):
        return value
    return value.strip().lower() in _TRUE_WORDS


def run(
    agent: FenceAgent,
    handlers: Mapping[str, Handler],
    argv: Sequence[str],
    stdin: TextIO | None,
    *,
    stdout: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    setup_logging: Callable[..., None] | None = logsetup.setup_logging,
) -> int:
    """Run one invocation of ``agent``; returns the exit code.

    Options come from ``argv`` when it is not empty, else from ``stdin``
    (fence-agents reads stdin only without argv).  ``metadata`` prints the XML
    and returns 0 without validating anything.  Every other action is checked
    (types, required options, secrets, ``agent.check``) and refused with exit 1
    and a line naming the option on any problem.  ``validate-all`` stops there
    (0 when valid, or what ``handlers["validate-all"]`` returns if given);
    other actions wait ``delay`` (off and reboot only) and call
    ``handlers[action]``.  A :class:`FenceError` becomes one log line, any
    other exception one "unexpected error" line (traceback at debug level), and
    exit 1.  ``stdout``, ``sleep`` and ``setup_logging`` are for tests.
    """
    try:
        return _run(agent, handlers, argv, stdin, stdout, sleep, setup_logging)
    except Exception as exc:
        failure, detail = exc, "".join(traceback.format_exception(exc))
    # A bug of ours (or of an agent's check): still one line, no traceback on
    # stderr, and never success.  Logged after the except block (see _call).
    LOG.error("unexpected error: %s: %s", type(failure).__name__, _one_line(_text_of(failure)))
    LOG.debug("%s", detail)
    return ExitCode.FAILURE


def _run(
    agent: FenceAgent,
    handlers: Mapping[str, Handler],
    argv: Sequence[str],
    stdin: TextIO | None,
    stdout: TextIO | None,
    sleep: Callable[[float], None],
    setup_logging: Callable[..., None] | None,
) -> int:
    out = stdout if stdout is not None else sys.stdout
    if argv:
        raw = parse_argv(agent, argv)
    else:
        text, problem = _read_stdin(stdin)
        # Unreadable (not UTF-8, too large) is refused as a whole too: nothing
        # of it is half-read.
        raw = _Raw(fatal=f"{problem}; refusing the whole input") if problem else parse_stdin(
            agent, text
        )

    if raw.fatal is not None:
        # Refused as a whole, before anything of it is used: not even the
        # logging options, the action or metadata.
        if setup_logging is not None:
            setup_logging(agent.name, debug=False, use_stderr=True, use_syslog=True)
        LOG.error("%s", raw.fatal)
        return ExitCode.FAILURE

    verbose = _quick_flag(raw, "verbose") or raw.verbose_count > 0
    level = raw.values.get("verbose_level", ("0", ""))[0]
    level = level.strip() if isinstance(level, str) else ""
    # ASCII digits only: str.isdigit() is true for '²', which int() refuses.
    if level.isascii() and level.isdigit() and int(level) > 0:
        verbose = True
    debug_file = raw.values.get("debug_file", ("", ""))[0]
    if setup_logging is not None:
        setup_logging(
            agent.name,
            debug=verbose or bool(debug_file),
            use_stderr=not _quick_flag(raw, "quiet"),
            use_syslog=True,
        )

    # Documents first: they never fail and log nothing (so oslo.log is not
    # even loaded), whatever else stdin or argv said.
    if _quick_flag(raw, "help"):
        out.write(usage_text(agent))
        out.flush()
        return ExitCode.SUCCESS
    given_action = raw.values.get("action", (agent.default_action, ""))[0]
    action = str(given_action).strip().lower()
    if action == "meta-data":  # the OCF spelling, as fence-agents accepts it
        action = "metadata"
    if action in _DOC_ACTIONS:
        out.write(metadata_xml(agent))
        out.flush()
        return ExitCode.SUCCESS
    if _quick_flag(raw, "version"):
        out.write(f"{agent.name} {_version()}\n")
        out.flush()
        return ExitCode.SUCCESS

    raw_secrets = _raw_secrets(agent, raw)
    if setup_logging is not None and isinstance(debug_file, str) and debug_file:
        _add_debug_file(debug_file)
    for warning in raw.warnings:
        LOG.warning("%s", redact_text(warning, raw_secrets))

    if not agent.has_action(action):
        for error in raw.errors:
            LOG.error("%s", redact_text(error, raw_secrets))
        shown = show_value(str(given_action)) or "(a value that starts with '-', not shown)"
        LOG.error(
            "Unrecognised action %s; %s accepts: %s",
            redact_text(shown, raw_secrets),
            agent.name,
            ", ".join(a.name for a in agent.actions),
        )
        return ExitCode.FAILURE

    parsed = build_options(agent, raw, action)
    if parsed.options is None:
        for error in parsed.errors:
            LOG.error("%s", redact_text(error, [*raw_secrets, *parsed.secrets]))
        return ExitCode.FAILURE
    options = parsed.options

    if action == "validate-all" and "validate-all" not in handlers:
        LOG.debug("%s: configuration is valid", agent.name)
        return ExitCode.SUCCESS

    handler = handlers.get(action)
    if handler is None:
        LOG.error("%s: action '%s' has no implementation", agent.name, action)
        return ExitCode.FAILURE

    if action in DELAY_ACTIONS and agent.declares("delay"):
        delay = options.seconds("delay") or 0.0
        if delay > 0:
            LOG.info("Delay %g second(s) before fencing", delay)
            sleep(delay)

    return _call(handler, options, action)


def _call(handler: Handler, options: Options, action: str) -> int:
    secrets = options.secret_values()
    with _redacted_records(secrets):
        failure, detail = None, ""
        try:
            result = handler(options)
        except FenceError as exc:
            failure = exc.reason
        except Exception as exc:
            failure = f"unexpected error: {type(exc).__name__}: {_text_of(exc)}"
            if LOG.isEnabledFor(logging.DEBUG):
                detail = "".join(traceback.format_exception(exc))
        if failure is not None:
            # Logged after the except block: oslo.log appends the exception being
            # handled to a line logged inside one, making it two messages in one.
            LOG.error("%s", _one_line(redact_text(failure, secrets)))
            if detail:
                LOG.debug("%s", redact_text(detail, secrets))
            return ExitCode.FAILURE
    if isinstance(result, bool) or not isinstance(result, int):
        LOG.error(
            "unexpected error: handler for '%s' returned %s, not an exit code",
            action,
            type(result).__name__,
        )
        return ExitCode.FAILURE
    return result


def _add_debug_file(path: str) -> None:
    """Copy every record, at debug level, to ``path`` (fence-agents' debug_file).

    logsetup loads oslo.log at the first record, and oslo.log replaces the root
    logger's handlers; one debug record is sent first so the file handler is
    added after that and stays.
    """
    LOG.debug("writing debug log to %s", path)
    try:
        # as root: no link followed, a regular file only (logsetup.open_for_append)
        stream = os.fdopen(logsetup.open_for_append(path), "a", encoding="utf-8",
                           errors="backslashreplace")
    except OSError as exc:
        LOG.error("cannot open debug_file %r: %s", path, exc.strerror or exc)
        return
    except ValueError:  # a NUL in the path (never from stdin or argv, which refuse it)
        LOG.error("cannot open debug_file: its path holds a NUL character")
        return
    handler = logging.StreamHandler(stream)
    logsetup.printable_output(handler)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(handler)


__all__ = [
    "DELAY_ACTIONS",
    "FENCE_AGENTS_ALIASES",
    "PLUG_ACTIONS",
    "STANDARD_OPTIONS",
    "ExitCode",
    "FenceAction",
    "FenceAgent",
    "FenceError",
    "Handler",
    "Option",
    "OptionType",
    "Options",
    "Secret",
    "forbidden_character",
    "metadata_xml",
    "redact_text",
    "redact_url",
    "run",
    "show_value",
    "url_secrets",
    "usage_text",
]
