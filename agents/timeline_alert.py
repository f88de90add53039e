"""Pacemaker alert agent: writes the cluster's side of the recovery timeline.

    pcs alert create id=openstack-ha-timeline path=/usr/lib/openstack-ha/timeline_alert

Pacemaker runs it (as hacluster) on every node, fencing and resource event, with the event
in ``CRM_alert_*`` variables. It records, in :mod:`openstack_ha.timeline`'s file:

* ``detected``: an operation failed (a result other than expected) on a compute node, or
  the connection resource of a pacemaker_remote node failed: the moment Pacemaker noticed;
* ``fenced`` / ``fence_failed``: the result of fencing a node (off or reboot; unfencing is
  fence_nova's own ``unfenced``), as Pacemaker saw it;
* ``node_lost``: a cluster node left the membership.

It exits 0 whatever happens: an alert agent's failure helps nobody.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# A Pacemaker resource id is an XML ID: only such a name is put into the XPath below (a
# quote or bracket in it would change the query), and nothing longer than a node name.
_RESOURCE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,254}")


def _is_remote_connection(rsc: str) -> bool:
    """Whether ``rsc`` is an ocf:pacemaker:remote resource: its id is the remote node's name."""
    if not _RESOURCE_ID.fullmatch(rsc):
        return False
    try:
        done = subprocess.run(
            ["cibadmin", "--query", "--scope", "resources", "--xpath",
             f"//primitive[@id='{rsc}'][@type='remote']"],
            capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "<primitive" in done.stdout


def event(env: dict[str, str]) -> tuple[str, str, dict[str, str]] | None:
    """(event, host, details) for the alert in ``env``, or None when it is not for us."""
    kind, node = env.get("CRM_alert_kind", ""), env.get("CRM_alert_node", "")
    desc = env.get("CRM_alert_desc", "")
    if kind == "fencing" and node:
        # "Operation off of compute1 by ctl1 for ...: OK": unfencing ("on") is fence_nova's
        # own "unfenced" event, and a controller's unfencing is no part of a recovery.
        operation = re.match(r"Operation (\S+) of", desc)
        if operation is not None and operation.group(1) == "on":
            return None
        ok = env.get("CRM_alert_rc") == "0"
        return ("fenced" if ok else "fence_failed"), node, {"desc": desc}
    if kind == "node" and desc == "lost" and node:
        return "node_lost", node, {}
    if kind != "resource":
        return None
    rc, target = env.get("CRM_alert_rc", ""), env.get("CRM_alert_target_rc", "")
    task, rsc = env.get("CRM_alert_task", ""), env.get("CRM_alert_rsc", "")
    if not rc or rc == target or task not in ("monitor", "start") or task == "stop":
        return None
    if task == "monitor" and env.get("CRM_alert_interval", "0") == "0" and rc in ("0", "7", "8"):
        return None  # a probe finding a resource running or stopped is no failure
    host = rsc if rsc and _is_remote_connection(rsc) else node
    return "detected", host, {"rsc": rsc, "task": task, "rc": rc, "desc": desc}


def main() -> int:
    try:
        env = dict(os.environ)
        found = event(env)
        if found is None:
            return 0
        name, host, details = found
        from openstack_ha import timeline

        # Recorded at the time Pacemaker runs the alert, not CRM_alert_timestamp: for a lost
        # remote connection that is the failed monitor's start, which can precede the failure.
        timeline.record(name, host, by="pacemaker", **details)
    except Exception as exc:  # never fail an alert
        print(f"timeline_alert: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
