"""How the Pacemaker lab runs the host's tools and starts its daemons, and the error it raises.

Standard library only: the installed fence agent (fence_labpower) and ``python -m lab.pacemaker
exec`` run under the system python3 and import it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

# Daemons get a clean, predictable PATH (as an init system would give them), not the caller's.
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    """The lab could not do what was asked; the message is one line and names the log to read."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool and wait for it. With ``check``, a non-zero exit is a LabError that quotes
    the last line it printed; ``what`` names the command in that message."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer after {timeout}s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LabError(
            f"{what or ' '.join(argv)} failed (rc={proc.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
    return proc


def daemon_env(**extra: str) -> dict[str, str]:
    """The environment of a cluster daemon: not the caller's, so that pytest or a developer's
    shell does not leak into the cluster."""
    env = {"PATH": DAEMON_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
    if os.environ.get("OPENSTACK_HA_LAB_DEBUG") == "1":  # debug logs from every daemon
        env["PCMK_debug"] = "yes"
    env.update(extra)
    return env
