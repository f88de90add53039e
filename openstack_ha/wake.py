"""fence_nova's nudge to the NovaEvacuate worker on its node: "an evacuation was just
requested, scan now".

The worker finds requests by polling the ``evacuate`` node attribute every quarter second
(a local ``attrd_updater`` call, about 6 ms of CPU each: polling faster would cost every
controller a steady share of a core). When fence_nova runs on the node the worker runs on,
one datagram on a UNIX socket wakes the worker at once; on another controller nothing
listens, and the poll finds the request as before. Advisory both ways: a nudge lost, or sent
by anyone else, only makes the worker scan now rather than within a quarter second; what it
scans is Nova's record, never the nudge.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket

SOCKET = "/run/openstack-ha/worker.sock"
_MESSAGE = b"scan"
_DRAIN = 64  # nudges read at most per wake: they all say the same


def nudge(path: str = SOCKET) -> bool:
    """Tell a worker listening on ``path`` to scan now; whether one was listening."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(_MESSAGE, path)
    except OSError:  # no worker on this node, or its queue is full: it scans anyway
        return False
    return True


class Listener:
    """The worker's end: a datagram socket bound to ``path``, only root's to write to."""

    def __init__(self, path: str = SOCKET) -> None:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous worker's, left behind when it was killed
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(path)
            os.chmod(path, 0o600)  # root's (a nudge from anyone else would be harmless too)
            self._sock.setblocking(False)
            self._inode = os.stat(path).st_ino
        except OSError:
            self._sock.close()
            raise

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a nudge; whether one came (each one queued
        is read: one scan answers them all)."""
        ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        nudged = False
        for _ in range(_DRAIN if ready else 0):
            try:
                self._sock.recv(16)
            except BlockingIOError:
                break
            nudged = True
        return nudged

    def close(self) -> None:
        """Close, and remove the path unless a newer worker has bound it since."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
