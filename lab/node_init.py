"""PID 1 of a lab compute node's pid namespace: starts the command given (pacemaker-remoted)
and reaps every process orphaned inside the node, for as long as the node is "powered".

Run by ``unshare --pid --fork --mount-proc`` (see lab/pacemaker.py): the node's processes see
only each other in /proc, as on a real host, so a process check of ComputeLiveness on one node
never finds another node's nova-compute. Like an init system it outlives the daemons it
started: when pacemaker-remoted is killed, nova-compute goes on running, as it would on a
real host; only a power cut (every process of the node SIGKILLed) ends the node. Only the
standard library: it runs as ``python3 -I -S``.
"""

import os
import signal
import sys


def main() -> int:
    if os.fork() == 0:
        os.execv(sys.argv[1], sys.argv[1:])  # noqa: S606 - argv as given, no shell
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()  # nothing left to reap: wait for a signal (or the power cut)
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main())
