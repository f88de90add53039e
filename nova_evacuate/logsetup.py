"""Logging set-up shared by every entry point: OCF agents, fence_nova, the CLI.

Logging goes through oslo.log (stderr, and syslog when asked), but oslo.log costs
about 180 ms to import. A healthy OCF monitor runs every few seconds on every
compute node and logs nothing, so oslo.log is loaded at the first record that
passes the level filter, not at start-up. Until then a tiny stdlib handler
stands in and hands that first record over once oslo.log is ready.
"""

from __future__ import annotations

import logging
import threading

_FACILITIES = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
}


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
                try:
                    self._setup()
                except Exception as exc:  # logging must never take the agent down
                    fallback = logging.StreamHandler()
                    fallback.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
                    root.addHandler(fallback)
                    root.warning("oslo.log set-up failed (%s); logging to stderr", exc)
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
    Pacemaker's logs say which resource spoke).
    """
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
            line += prefix.replace("%", "%%") + " "
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
