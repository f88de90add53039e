"""The run loop: one invocation of an agent, from argv or stdin to an exit code.

:func:`run` reads the input, sets up logging, answers ``--help``, ``metadata``
and ``--version`` before validating anything, builds the :class:`Options`,
waits ``delay`` and calls the action's handler while every log record is
redacted of the secrets.  A failure of any kind is one log line and exit 1;
nothing here calls ``sys.exit``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from fence_compute.protocol.documents import _version, metadata_xml, usage_text
from fence_compute.protocol.options import (
    _TRUE_WORDS,
    DELAY_ACTIONS,
    ExitCode,
    FenceAgent,
    FenceError,
    Options,
)
from fence_compute.protocol.parsing import _FORBIDDEN_RE, _Raw, parse_argv, parse_stdin, show_value
from fence_compute.protocol.redaction import redact_text, url_secrets
from fence_compute.protocol.validation import build_options
from openstack_ha import logsetup

# The package's name, as before the split: log lines and logging configuration name it.
LOG = logging.getLogger("fence_compute.protocol")

# Stdin larger than this is refused: Pacemaker sends a few hundred bytes.
MAX_STDIN_BYTES = 1 << 20
# Answered by this module without reading or validating anything else.
_DOC_ACTIONS = frozenset({"metadata"})


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
