"""The declarations: an agent's interface as frozen data, and the options it is given.

:class:`Option`, :class:`FenceAction` and :class:`FenceAgent` declare an agent
(:data:`STANDARD_OPTIONS` holds fence-agents' common options to pick from);
:class:`ExitCode`, :class:`FenceError` and :class:`Secret` are what a handler
returns, raises and holds; :class:`Options` is one invocation's parsed, typed,
read-only options.  One conversion (``_convert``) types a declared default and a
given value alike.  Of this package, only :mod:`.redaction` is imported here.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from fence_compute.protocol.redaction import redact_url, url_secrets

OptionType = Literal["string", "boolean", "integer", "second"]
_OPTION_TYPES = ("string", "boolean", "integer", "second")

# How long a ``<secret>_script`` may run before it is killed and the action fails.
SECRET_SCRIPT_TIMEOUT = 30.0

# The actions that act on one target, and so need ``plug``.  fence-agents
# requires plug for every action except list, list-status and monitor; we also
# exempt validate-all, which pcs and ``stonith_admin --validate`` run without a
# target when a device is created.
PLUG_ACTIONS = frozenset({"on", "off", "reboot", "status"})
# Actions that wait ``delay`` seconds first, as fence-agents' ``run_delay``.
DELAY_ACTIONS = frozenset({"off", "reboot"})

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
    ``compat_only`` says why the option has no effect in this agent: it is
    accepted only so that another agent's configuration loads unchanged, and
    metadata and ``--help`` mark it so (empty: the option is used).
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
    compat_only: str = ""

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
        if self.compat_only and self.required:
            raise ValueError(f"option {self.name}: an option without effect cannot be required")
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
