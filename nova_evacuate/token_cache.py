"""Keystone tokens kept between the runs of a short-lived command (``fence_nova``), so that a
fence does not wait for Keystone's password check (about 0.3 s on the lab) while a token from
an earlier run (the device's ``monitor``, every minute by default) is still valid.

This is keystoneauth's own mechanism: the auth plugin's state (``get_auth_state``: the token
and its catalog) saved under the plugin's cache id (``get_cache_id``: a digest of every
credential, so another user, project or password uses another file), as openstacksdk's
keyring cache does. keystoneauth does not use a saved token that expires within two minutes,
and when Keystone has revoked one (a 401 from Nova) it authenticates again and retries once.

A token is a credential, kept as carefully as the password file it stands for: in a
directory only its owner may enter, on tmpfs (``/run``: gone at reboot), each file 0600. A
file or directory with other owners or wider permissions is ignored, never trusted. A cache
that cannot be read or written costs one password check, never the call.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_DIR = "/run/openstack-ha/keystone"


def _private(st: os.stat_result, kind: int) -> bool:
    return (stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid()
            and not st.st_mode & 0o077)


class TokenCache:
    """The saved state of one auth plugin (see the module's docstring)."""

    def __init__(self, directory: str | os.PathLike[str], cache_id: str) -> None:
        self.directory = Path(directory)
        # the cache id is base64 (it may hold "/"): a file name of its URL-safe form
        name = base64.urlsafe_b64encode(base64.b64decode(cache_id)).decode().rstrip("=")
        self.path = self.directory / f"{name}.json"

    @classmethod
    def for_plugin(cls, directory: str | os.PathLike[str], plugin: Any) -> TokenCache | None:
        """The cache of ``plugin`` (a keystoneauth identity plugin); None when it has no
        cache id (a plugin that is not a password or token one)."""
        try:
            cache_id = plugin.get_cache_id()
        except (AttributeError, NotImplementedError):
            return None
        return cls(directory, cache_id) if cache_id else None

    def load(self) -> str | None:
        """The saved state; None when there is none, or it is not private to this user."""
        try:
            if not _private(os.lstat(self.directory), stat.S_IFDIR):
                return None
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, encoding="utf-8") as f:
            if not _private(os.fstat(f.fileno()), stat.S_IFREG):
                return None
            return f.read(1_000_000) or None

    def save(self, state: str) -> None:
        """Replace the saved state, atomically; a failure is logged at debug level only."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(os.lstat(self.directory), stat.S_IFDIR):
                LOG.debug("token cache %s not private: not used", self.directory)
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".token-")  # 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(state)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            LOG.debug("token cache %s not written: %s", self.directory, exc.strerror)

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
