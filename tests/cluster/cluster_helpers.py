"""Helpers of the cluster tests (imported by module name: pytest puts this directory on
sys.path in its default import mode)."""

from __future__ import annotations

import subprocess


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def attribute(name: str, node: str) -> str | None:
    """A transient node attribute's value, None when unset."""
    done = sh("attrd_updater", "-Q", "-n", name, "-N", node, check=False)
    if done.returncode != 0:
        return None
    for token in done.stdout.split():
        if token.startswith("value="):
            return token.split("=", 1)[1].strip('"') or None
    return None


def nova_service(lab, node: str):
    """The nova-compute service record of ``node`` in the OpenStack lab (openstacksdk)."""
    conn = lab.openstack.connection()
    (svc,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == node]
    return svc
