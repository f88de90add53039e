"""Files that hold a secret or a certificate, read safely: only regular files (opening a FIFO
must not wait for a writer, a device must not be read without end), bounded, and every error
naming the file, never what it holds. Standard library only: the compute node's monitor
imports it."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

MAX_TOKEN_FILE_BYTES = 4096  # a token is a UUID; a file far larger is some other file


class FileUnusable(ValueError):
    """A file that cannot be opened or read on this machine (not a problem of its contents)."""


def open_regular_file(path: str, what: str) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file; FileUnusable (naming ``what``,
    the option that gave the path) otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileUnusable(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileUnusable(f"{what} {path} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_token_file(path: str, what: str) -> str:
    """The token held in ``path`` (surrounding white space, a final new line, dropped).
    FileUnusable when it cannot be read; ValueError when it holds no token. Errors name the
    file, never what it holds."""
    with open_regular_file(path, what) as f:
        try:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise FileUnusable(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ValueError(f"{what} {path} is larger than {MAX_TOKEN_FILE_BYTES}"
                         " bytes: not a token file")
    token = data.decode("ascii", errors="replace").strip()
    if not token:
        raise ValueError(f"{what} {path} is empty")
    return token  # ConsulClient refuses one that cannot be a header, without showing it
