"""Secrets: a secret option's value, from itself, its ``<name>_script`` or its ``<name>_file``.

Only one of the three may be given.  A script is split like a shell command line,
run without a shell and killed after ``SECRET_SCRIPT_TIMEOUT``; a file must be a
regular file that other users cannot read.  The first line of either is the
value, held as a :class:`Secret`.  No message names the command line, the
script's output or the file's content: any of them may be the secret.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import stat
import subprocess
from collections.abc import Mapping

from fence_compute.protocol.options import SECRET_SCRIPT_TIMEOUT, Option, Secret


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
    timeout = SECRET_SCRIPT_TIMEOUT
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
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        return None, f"{name} did not finish within {timeout:g} s and was killed"
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
