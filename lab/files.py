"""Files the lab writes for other processes: whole or not at all, with the owner and mode they need.

Standard library only, and cheap to import: lab/bmc_chassis.py, which ipmi_sim runs for every
power request, writes its state with :func:`write_atomic` too.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace PATH with DATA in one step, created with MODE (and OWNER, a (uid, gid)) before
    it appears: readers (the fence agent, a BMC's chassis script, run at any moment) never see
    half a file or a secret with the wrong mode. The directory is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def make_dir(path: Path, mode: int, owner: tuple[int, int]) -> None:
    """PATH (with its parents) as a directory of OWNER, a (uid, gid), with MODE, whatever it
    was before."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    path.chmod(mode)


def make_file(path: Path, mode: int, owner: tuple[int, int]) -> None:
    """PATH as a file of OWNER, a (uid, gid), with MODE, its content kept: a log file that a
    daemon running as OWNER opens itself."""
    path.touch()
    os.chown(path, *owner)
    path.chmod(mode)


def user_ids(user: str, group: str) -> tuple[int, int]:
    """The uid of USER and the gid of GROUP; KeyError if either is missing."""
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


def world_executable(path: Path) -> bool:
    """True if any user may run PATH: every directory above it searchable, the file executable
    by others."""
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
