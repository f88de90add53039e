"""The OCF resource agent protocol: one declaration drives meta-data and dispatch.

An agent declares its parameters and actions once (:class:`Agent`); :func:`run`
reads the action from argv and the ``OCF_RESKEY_*`` parameters from the
environment, validates them against the declaration, calls the action's handler
with a :class:`Context`, and turns the outcome into an OCF exit code. Failure
semantics live here, in one place:

* a handler returning ``None`` means ``OCF_SUCCESS``;
* :class:`OCFError` becomes its exit code plus an ``ocf-exit-reason:`` line, which
  ``pcs status`` shows the operator;
* any other exception becomes ``OCF_ERR_GENERIC`` with one line naming it (the
  traceback only at debug level: agents never print tracebacks);
* bad or missing parameters give ``OCF_ERR_CONFIGURED`` for start, validate-all and
  recurring monitors. A probe answers ``OCF_NOT_RUNNING`` instead (a resource whose
  configuration cannot be read is not running here), and stop is never refused for
  configuration (a failed stop gets the node fenced).

Reference: the OCF Resource Agent API (resource-agents ``doc/dev-guides/ra-dev-guide.asc``)
and ``ra-api-1.dtd``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from openstack_ha import logsetup
from openstack_ha.logsetup import printable

# Every monitor pays for what is imported here: typing and xml.etree are only
# needed by type checkers and by meta-data.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from typing import Any

LOG = logging.getLogger(__name__)


@enum.unique
class OCFExit(enum.IntEnum):
    """OCF exit codes; must match resource-agents ``ocf-returncodes`` and the RA API."""

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    RUNNING_PROMOTED = 8
    FAILED_PROMOTED = 9


class OCFError(Exception):
    """A handler's failure with the exit code and the one line the operator sees."""

    def __init__(self, code: OCFExit, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_TRUE = frozenset({"1", "yes", "true", "on", "y"})
_FALSE = frozenset({"0", "no", "false", "off", "n"})


# Only ASCII blanks are trimmed: str.strip() would also eat Unicode spaces.
_BLANKS = " \t\r\n"
# Integer parameters are bounded (a timeout, an interval, a level): a 32-bit int is plenty,
# and bounding the digits first keeps int() from ever seeing a huge string.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def parse_boolean(text: str) -> bool:
    """OCF booleans, as ``ocf_is_true`` reads them; anything else is an error."""
    value = text.strip(_BLANKS).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")


def parse_integer(text: str, minimum: int = INT_MIN, maximum: int = INT_MAX) -> int:
    """A decimal integer in ASCII digits, with an optional sign, from minimum to maximum.

    ``int()`` alone would take '٣' as 3, '1_000' as 1000 and a million digits as work:
    none of those is an integer an operator typed in a CIB.
    """
    value = text.strip(_BLANKS)
    digits = value[1:] if value.startswith(("+", "-")) else value
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"expected an integer, got {text!r}")
    if len(digits) > 12:
        raise ValueError(f"must be {minimum} to {maximum}, got {text!r}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"must be {minimum} to {maximum}, got {number}")
    return number


def parse_path(text: str, absolute: bool = True) -> str:
    """A file path an agent opens: absolute, and nothing in it a log line could not show.

    A NUL would make ``open()`` raise (issue 11: a traceback), and control characters or
    bytes that are not UTF-8 cannot be shown to the operator as they are.
    """
    if not text.isprintable():  # NUL, controls, lone surrogates (bytes not UTF-8), ...
        raise ValueError(f"path '{printable(text, keep='')}' holds a control character"
                         " or invalid UTF-8")
    if not text:
        raise ValueError("expected a path, got nothing")
    if absolute and not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    if len(text.encode()) > 4095:
        raise ValueError("path longer than 4095 bytes")
    return text


def parse_optional_path(text: str) -> str:
    """:func:`parse_path`, or "" (none) for an empty value."""
    return text if text == "" else parse_path(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": str,
    "integer": parse_integer,
    "boolean": parse_boolean,
}


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One ``OCF_RESKEY_<name>`` parameter.

    ``parse`` turns the raw string into the value handlers receive and raises
    ``ValueError`` with a readable message when the text is wrong; it defaults to
    the parser of ``content_type``. ``default`` is the raw string, as in meta-data.
    ``empty_is_value``: an empty value is given to ``parse`` (its meta-data says what
    empty means, e.g. "none"), not replaced by the default as an unset one is.
    """

    name: str
    shortdesc: str
    longdesc: str
    content_type: str = "string"
    default: str | None = None
    required: bool = False
    unique: bool = False
    parse: Callable[[str], Any] | None = None
    empty_is_value: bool = False

    def __post_init__(self) -> None:
        if self.content_type not in _PARSERS:
            raise ValueError(f"parameter {self.name}: unknown content type {self.content_type}")

    def value_from(self, raw: str) -> Any:
        parser = self.parse or _PARSERS[self.content_type]
        return parser(raw)


Handler = Callable[["Context"], "OCFExit | None"]


@dataclasses.dataclass(frozen=True)
class Action:
    """One action with the timeout (and interval) advertised in meta-data."""

    name: str
    timeout: int
    handler: Handler | None = None
    interval: int | None = None
    depth: int | None = None


@dataclasses.dataclass(frozen=True)
class Context:
    """What a handler knows about this invocation."""

    action: str
    params: Mapping[str, Any]
    config_errors: Sequence[str]
    interval_ms: int
    timeout_s: float
    started_at: float
    environ: Mapping[str, str]

    @property
    def is_probe(self) -> bool:
        """A probe is a monitor with interval 0 (Pacemaker asks "is it running here?")."""
        return self.action == "monitor" and self.interval_ms == 0

    @property
    def resource(self) -> str:
        return self.environ.get("OCF_RESOURCE_INSTANCE", "")

    @property
    def node_from_pacemaker(self) -> str | None:
        """The node Pacemaker runs us on; absent when run by hand (crm_resource --force-*)."""
        return self.environ.get("OCF_RESKEY_CRM_meta_on_node") or None

    def remaining(self) -> float:
        """Seconds left before Pacemaker's timeout for this action."""
        return self.timeout_s - (time.monotonic() - self.started_at)


@dataclasses.dataclass(frozen=True)
class Agent:
    """The whole interface of an OCF agent, as data."""

    name: str
    version: str
    shortdesc: str
    longdesc: str
    parameters: Sequence[Parameter]
    actions: Sequence[Action]

    def action(self, name: str) -> Action | None:
        return next((a for a in self.actions if a.name == name), None)

    def metadata_xml(self) -> str:
        import xml.etree.ElementTree as ET

        return ET.tostring(self.metadata_element(), encoding="unicode", xml_declaration=False)

    def metadata_element(self) -> ET.Element:
        """The ``<resource-agent>`` element, in the order ``ra-api-1.dtd`` requires."""
        import xml.etree.ElementTree as ET

        root = ET.Element("resource-agent", name=self.name, version=self.version)
        ET.SubElement(root, "version").text = "1.0"  # the OCF API version we speak
        ET.SubElement(root, "longdesc", lang="en").text = self.longdesc
        ET.SubElement(root, "shortdesc", lang="en").text = self.shortdesc
        params = ET.SubElement(root, "parameters")
        for p in self.parameters:
            el = ET.SubElement(
                params,
                "parameter",
                name=p.name,
                unique="1" if p.unique else "0",
                required="1" if p.required else "0",
            )
            ET.SubElement(el, "longdesc", lang="en").text = p.longdesc
            ET.SubElement(el, "shortdesc", lang="en").text = p.shortdesc
            content = ET.SubElement(el, "content", type=p.content_type)
            if p.default is not None:
                content.set("default", p.default)
        actions = ET.SubElement(root, "actions")
        for a in [*self.actions, *_BUILTIN_ACTIONS]:
            el = ET.SubElement(actions, "action", name=a.name, timeout=f"{a.timeout}s")
            if a.interval is not None:
                el.set("interval", f"{a.interval}s")
            if a.depth is not None:
                el.set("depth", str(a.depth))
        ET.indent(root)
        return root

    def usage(self) -> str:
        names = "|".join(a.name for a in [*self.actions, *_BUILTIN_ACTIONS])
        return f"usage: {self.name} {{{names}}}"


# meta-data and usage are answered by run() itself, for every agent.
_BUILTIN_ACTIONS = (Action("meta-data", timeout=5), Action("usage", timeout=5))


def read_parameters(
    agent: Agent, environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Typed parameter values from ``OCF_RESKEY_*``, and one message per bad one.

    Defaults fill in what is unset. A bad value is left out of the result (the
    handler sees the default, if any) and reported; secrets are never declared
    as OCF parameters, so messages may quote values.
    """
    values: dict[str, Any] = {}
    errors: list[str] = []
    for p in agent.parameters:
        raw = environ.get(f"OCF_RESKEY_{p.name}")
        if raw is None or (raw == "" and (p.required or not p.empty_is_value)):
            if p.required:
                errors.append(f"required parameter '{p.name}' is not set")
            raw = p.default
            if raw is None:
                values[p.name] = None
                continue
        try:
            values[p.name] = p.value_from(raw)
        except ValueError as exc:
            errors.append(f"parameter '{p.name}': {exc}")
            values[p.name] = _default_value(p) if raw != p.default else None
    return values, errors


def _default_value(p: Parameter) -> Any:
    """The parsed default, or None when there is none or it does not parse either."""
    if p.default is None:
        return None
    try:
        return p.value_from(p.default)
    except ValueError:
        return None


def _meta_int(environ: Mapping[str, str], name: str, fallback: int) -> int:
    """Pacemaker's interval and timeout, in ms; anything but 0 to 2**31-1 means unset."""
    raw = environ.get(f"OCF_RESKEY_CRM_meta_{name}")
    if raw is None:
        return fallback
    try:
        return parse_integer(raw, 0, INT_MAX)
    except ValueError:
        return fallback


def exit_reason(reason: str) -> None:
    """The ``ocf-exit-reason:`` line Pacemaker shows in ``pcs status``: one line, whatever
    the reason quotes (control characters and invalid UTF-8 are shown escaped)."""
    print(f"ocf-exit-reason:{printable(reason, keep='')}", file=sys.stderr, flush=True)


# Linux's NAME_MAX is 255 bytes; the instance part of a file name stays well under it.
_INSTANCE_IN_NAME_MAX = 100


def instance_file(directory: str, agent_name: str, instance: str, suffix: str) -> str:
    """``<directory>/<agent>-<instance><suffix>``: this resource's file in HA_RSCTMP.

    Usual instance names are kept as they are (a file written before an upgrade is
    found after it). A name too long for a file name (issue 11: 300 characters made
    probe and stop fail with ENAMETOOLONG), or one with a character that has no place in
    a file name, is shortened and made unique by a hash of the whole name.
    """
    name = (instance or agent_name).replace("/", "_")
    if not name.isprintable() or len(name.encode()) > _INSTANCE_IN_NAME_MAX:
        import hashlib  # 2 ms that only such a name pays for

        whole = (instance or agent_name).encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(whole).hexdigest()[:16]
        kept = "".join(c if c.isascii() and c.isprintable() else "_" for c in name[:64])
        name = f"{kept}-{digest}"
    return os.path.join(directory, f"{agent_name}-{name}{suffix}")


def write_file(path: str, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` as root may: never through a link an attacker planted.

    The temporary file is created anew (O_EXCL) without following links (O_NOFOLLOW), so
    nothing planted at its name is written or chmod-ed; rename() then replaces ``path``
    itself, a link there included, never its target.
    """
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a stale or planted one: unlink removes a link, not its target
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def setup_agent_logging(agent: Agent, environ: Mapping[str, str]) -> None:
    instance = environ.get("OCF_RESOURCE_INSTANCE") or "-"
    logsetup.setup_logging(
        agent.name,
        debug=_is_debug(environ.get("HA_debug", "0")),
        use_syslog=environ.get("HA_LOGFACILITY", "daemon").lower() not in ("", "none"),
        syslog_facility=environ.get("HA_LOGFACILITY", "daemon") or "daemon",
        prefix=f"{agent.name}({instance})",
    )


def _is_debug(text: str) -> bool:
    try:
        return parse_boolean(text)
    except ValueError:
        return False


def run(
    agent: Agent,
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    *,
    setup_logging: Callable[[Agent, Mapping[str, str]], None] = setup_agent_logging,
) -> int:
    """Run one OCF action and return its exit code. Never raises, never prints a traceback:
    whatever escapes the handling in :func:`_run` (logging that cannot be set up, a
    parameter parser that fails some other way) is one ``ocf-exit-reason:`` line and
    ``OCF_ERR_GENERIC``. ``setup_logging`` routes the action's logging (the suite's
    :func:`setup_agent_logging` by default), as the fence runner takes it."""
    try:
        return _run(agent, argv, environ, setup_logging)
    except Exception as exc:
        action = argv[0] if len(argv) == 1 else agent.name
        exit_reason(f"{action}: unexpected error: {type(exc).__name__}: {exc}")
        return OCFExit.ERR_GENERIC


def _run(agent: Agent, argv: Sequence[str], environ: Mapping[str, str] | None,
         setup_logging: Callable[[Agent, Mapping[str, str]], None]) -> int:
    env = dict(os.environ if environ is None else environ)
    if len(argv) != 1:
        print(agent.usage(), file=sys.stderr)
        return OCFExit.ERR_ARGS
    action_name = argv[0]
    if action_name == "meta-data":
        print('<?xml version="1.0"?>')
        print('<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">')
        print(agent.metadata_xml())
        return OCFExit.SUCCESS
    if action_name in ("usage", "help"):
        print(agent.usage())
        return OCFExit.SUCCESS

    setup_logging(agent, env)
    action = agent.action(action_name)
    if action is None or action.handler is None:
        LOG.error("unknown action '%s'; %s", action_name, agent.usage())
        return OCFExit.ERR_UNIMPLEMENTED

    params, errors = read_parameters(agent, env)
    ctx = Context(
        action=action_name,
        params=params,
        config_errors=tuple(errors),
        interval_ms=_meta_int(env, "interval", 0),
        timeout_s=_meta_int(env, "timeout", action.timeout * 1000) / 1000.0,
        started_at=time.monotonic(),
        environ=env,
    )
    if errors and action_name != "stop":
        for message in errors:
            LOG.error("%s", message)
        if ctx.is_probe:
            # A probe must not be fatal: the resource cannot be running with a
            # configuration we cannot read.
            return OCFExit.NOT_RUNNING
        exit_reason(errors[0])
        return OCFExit.ERR_CONFIGURED

    # Logged after the except blocks: oslo.log appends the exception being
    # handled to ERROR lines, and the operator's line must stay one line.
    try:
        result = action.handler(ctx)
    except OCFError as exc:
        failure = exc
    except Exception as exc:
        LOG.debug("%s raised", action_name, exc_info=True)
        failure = OCFError(
            OCFExit.ERR_GENERIC, f"{action_name}: unexpected error: {type(exc).__name__}: {exc}"
        )
    else:
        return OCFExit.SUCCESS if result is None else OCFExit(result)
    LOG.error("%s failed: %s", action_name, failure.reason)
    exit_reason(failure.reason)
    return failure.code
