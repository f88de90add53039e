"""Parsing: stdin's ``key=value`` lines or argv's flags into what was said, untyped.

:func:`parse_stdin` and :func:`parse_argv` give a ``_Raw`` (option name -> raw
value, and how it was spelt), finding options through the agent's spellings
(deprecated names, ``-``/``_``, short flags).  An input holding a control
character is refused as a whole (:func:`forbidden_character`).  Values are typed
and checked later, by :mod:`.validation`; no message here echoes a value that
may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from fence_compute.protocol.options import FenceAgent, Option, _normalise
from fence_compute.protocol.redaction import redact_url


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
