"""Entering namespaces in a child process, between fork and exec (a ``preexec_fn``).

Python 3.11 has no os.setns/os.unshare, so libc is called through ctypes. Doing this in the
child replaces a chain of ``ip netns exec ... unshare ... sh -c "hostname; mount ...; exec ..."``
and keeps quoting and a shell out of the way. libc is loaded when this module is imported, that
is before any fork: dlopen() in the child of a threaded parent can deadlock.

Standard library only: lab/bmc_chassis.py, run by ipmi_sim, imports it to run a power hook.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

Mount = tuple[Path, Path, int]  # source, target, extra mount flags (a bind mount)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p,
]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns_preexec(fd: int) -> Callable[[], None]:
    """Move the child into the network namespace open as ``fd``."""

    def enter() -> None:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns")

    return enter


def node_preexec(
    netns: str, hostname: str, mounts: Sequence[Mount], propagation: int = MS_PRIVATE
) -> Callable[[], None]:
    """Move the child into network namespace /run/netns/NETNS and new mount and UTS
    namespaces of its own: mount propagation PROPAGATION (private, or slave to see mounts the
    host makes later), MOUNTS bound in order, host name HOSTNAME."""
    netns_path = f"/run/netns/{netns}".encode()
    mount_args = [(bytes(src), bytes(dst), flags) for src, dst, flags in mounts]

    def enter() -> None:
        fd = os.open(netns_path, os.O_RDONLY)
        _check(_libc.setns(fd, CLONE_NEWNET), "setns")
        os.close(fd)
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
        # Private propagation first, or the bind mounts below would leak into the host's view.
        _check(_libc.mount(b"none", b"/", None, MS_REC | propagation, None), "mount /")
        for src, dst, flags in mount_args:
            _check(_libc.mount(src, dst, None, MS_BIND | flags, None),
                   f"bind mount {dst.decode()}")
        socket.sethostname(hostname)

    return enter


def join_preexec(pid: int) -> Callable[[], None]:
    """Move the child into the network, mount and UTS namespaces of PID (a controller's
    corosync), so that it sees exactly what that process sees."""
    kinds = (("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS))

    def enter() -> None:
        fds = [(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY), flag) for ns, flag in kinds]
        for fd, flag in fds:
            _check(_libc.setns(fd, flag), "setns")
            os.close(fd)

    return enter
