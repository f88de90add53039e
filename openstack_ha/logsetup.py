"""Logging set-up shared by every entry point: OCF agents, fence_nova, the CLI.

Logging goes through oslo.log (stderr, and syslog when asked), but oslo.log costs
about 180 ms to import. A healthy OCF monitor runs every few seconds on every
compute node and logs nothing, so oslo.log is loaded at the first record that
passes the level filter, not at start-up. Until then a tiny stdlib handler
stands in and hands that first record over once oslo.log is ready.

Whatever strings are logged, what a handler writes is printable (:func:`printable`), so
no parameter, however malformed, can crash logging; and a log file root writes is opened
by :func:`open_for_append`, which follows no planted link.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from urllib.parse import unquote, urlsplit

# When set, a program also logs to syslog with this facility. The NovaEvacuate agent sets
# it for its worker when log_file is empty ("syslog only"): the worker's stderr goes nowhere.
SYSLOG_FACILITY_ENV = "OPENSTACK_HA_SYSLOG_FACILITY"

_FACILITIES = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
}


# What a log line must not carry as it is: C0 controls, DEL, C1 controls, the Unicode
# line and paragraph separators, the bidirectional controls (they reorder what a terminal
# shows), and lone surrogates (how Python carries bytes that are not UTF-8, e.g. from the
# environment: syslog's UTF-8 encoder raised on them, issue 11).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, keep: str = "\t\n") -> str:
    """``text`` with every control character and lone surrogate shown as an escape.

    What remains encodes to UTF-8 and holds no NUL (syslog refuses both) and no
    terminal control sequence; ``keep`` lists the characters left alone (a traceback
    at debug level keeps its lines; an ``ocf-exit-reason`` keeps none).
    """
    if text.isprintable():  # the usual case, in C
        return text
    return _UNPRINTABLE.sub(lambda m: m.group() if m.group() in keep else _escape(m), text)


# The user info of any URL in free text ("https://admin:secret@keystone/v3"): a credential
# wherever it appears (keystoneauth quotes the auth URL in its warnings and errors).
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]+@")
_HIDDEN: set[str] = set()  # secrets this process holds (see hide)


def hide(*secrets: str) -> None:
    """Show ``secrets`` as ``***`` in every log line and message from now on (a password,
    the query of an auth URL). Very short ones are left: they would garble every line."""
    _HIDDEN.update(s for s in secrets if len(s) >= 4)


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that are credentials: user info, password, query, fragment, as
    written and percent-decoded (a library may print either)."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None:
        return []
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    found = [userinfo, userinfo.partition(":")[2], parts.query, parts.fragment]
    return [p for part in found if part for p in dict.fromkeys((part, unquote(part)))]


def redacted(text: str) -> str:
    """``text`` with every secret given to :func:`hide`, and the user info of every URL in
    it, shown as ``***``."""
    for secret in sorted(_HIDDEN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return _URL_USERINFO.sub(r"\1***@", text) if "@" in text else text


def printable_output(handler: logging.Handler) -> None:
    """Make everything ``handler`` formats printable (see :func:`printable`), and free of
    credentials (:func:`redacted`): messages,
    arguments, prefixes and tracebacks alike, so that no string can crash a handler.
    Done to the root handlers at set-up; a handler added later (a debug file) needs it too.
    (Not a LogRecord factory: fence_nova's redaction installs its own.)"""
    if getattr(handler, "_printable", False):
        return
    format_record = handler.format

    def format_printable(record: logging.LogRecord) -> str:
        return printable(redacted(format_record(record)))

    handler.format = format_printable  # type: ignore[method-assign]
    handler._printable = True  # type: ignore[attr-defined]


def open_for_append(path: str, mode: int = 0o640) -> int:
    """A descriptor appending to the regular file ``path``, created with ``mode`` if new.

    Root must not append to, or chmod, whatever a link planted at ``path`` points to: a
    new file is created with O_EXCL (nothing there may be followed), an existing one is
    opened with O_NOFOLLOW (a symbolic link fails with ELOOP), O_NONBLOCK (a FIFO without
    reader fails at once instead of blocking the agent) and must be a regular file with a
    single link (a hard link to another file is refused). An existing file wider than
    ``mode`` is narrowed, through the descriptor just checked. Raises ``OSError``.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode):  # refuse before open() touches a device
            raise OSError(0, "not a regular file", path) from None
        fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file", path)
        if st.st_nlink != 1:
            raise OSError(0, "has more than one link (a hard link to another file?)", path)
        if stat.S_IMODE(st.st_mode) & ~mode:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _OsloOnFirstRecord(logging.Handler):
    """Root handler that replaces itself with oslo.log's handlers on first use."""

    def __init__(self, setup) -> None:
        super().__init__()
        self._setup = setup
        self._lock_setup = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_setup:
            root = logging.getLogger()
            if self in root.handlers:
                # A new list, not removeHandler(): Logger.callHandlers is still
                # iterating the old one, and must not walk into oslo's handlers
                # too (the first record would be emitted twice).
                root.handlers = [h for h in root.handlers if h is not self]
                failure = None
                try:
                    self._setup()
                except Exception as exc:  # logging must never take the agent down
                    failure = exc
                    fallback = logging.StreamHandler()
                    fallback.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
                    root.addHandler(fallback)
                for handler in root.handlers:
                    printable_output(handler)
                if failure is not None:
                    root.warning("oslo.log set-up failed (%s); logging to stderr", failure)
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def setup_logging(
    program: str,
    *,
    debug: bool = False,
    use_stderr: bool = True,
    use_syslog: bool = False,
    syslog_facility: str = "daemon",
    prefix: str = "",
) -> None:
    """Route the root logger through oslo.log, loaded at the first record.

    ``program`` names the product in oslo.log's formatter; ``prefix`` is put in
    front of every message (an OCF agent passes its resource instance, so
    Pacemaker's logs say which resource spoke). Whatever the strings logged, the
    output is printable (:func:`printable`): no string can crash a handler.
    """
    from_env = os.environ.get(SYSLOG_FACILITY_ENV)
    if from_env:
        use_syslog, syslog_facility = True, from_env
    facility = syslog_facility.lower().removeprefix("log_")
    if facility not in _FACILITIES:
        facility = "daemon"

    def oslo_setup() -> None:
        from oslo_config import cfg
        from oslo_log import log as oslo_logging

        conf = cfg.ConfigOpts()
        oslo_logging.register_options(conf)
        conf([], project="openstack-ha", default_config_files=[], default_config_dirs=[])
        line = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s "
        if prefix:
            # Escaped twice: '%' for logging's formatter, '$' for oslo.config,
            # which substitutes "$name" in every option value it returns.
            line += prefix.replace("%", "%%").replace("$", "$$") + " "
        conf.set_override("logging_default_format_string", line + "%(message)s")
        conf.set_override("logging_context_format_string", line + "%(message)s")
        conf.set_override("use_stderr", use_stderr)
        conf.set_override("use_syslog", use_syslog)
        conf.set_override("syslog_log_facility", "LOG_" + facility.upper())
        conf.set_override("debug", debug)
        oslo_logging.setup(conf, program, fix_eventlet=False)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.addHandler(_OsloOnFirstRecord(oslo_setup))
