"""A live ComputeLiveness demonstration in the lab cluster (the README's main job for now).

Builds a one-controller cluster with a pacemaker_remote compute node, starts a
stand-in nova-compute on it, creates ComputeLiveness with pcs as an operator
would, SIGKILLs the stand-in and prints what Pacemaker sees, second by second,
then brings the process back and tears everything down.

    python -m lab.liveness_demo [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import html
import os
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from lab.pacemaker import PacemakerLab

NODE = "compute1"
WATCHED = "ohalab-nova-compute"  # lab nodes share the host's process table: a lab-only name
INTERVAL = 5


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def crm_state() -> tuple[str | None, str, list[str]]:
    """(liveness attribute on the node, resource role, failure lines)."""
    out = subprocess.run(
        ["crm_mon", "-1", "--output-as=xml", "-A", "--include=failures"],
        capture_output=True, text=True, check=False,
    ).stdout
    root = ET.fromstring(out)
    value = None
    for node in root.iter("node"):
        if node.get("name") == NODE:
            for attr in node.iter("attribute"):
                if attr.get("name") == "openstack-ha-liveness":
                    value = attr.get("value")
    role = "Stopped"
    for res in root.iter("resource"):
        if res.get("id") == "liveness" and any(n.get("name") == NODE for n in res.iter("node")):
            role = res.get("role") or role
    failures = [
        f"{f.get('task')} on {f.get('node')}: {html.unescape(f.get('exitreason') or '')}"
        for f in root.iter("failure")
    ]
    return value, role, failures


def start_watched(lab: PacemakerLab) -> None:
    lab.run_in_node(
        NODE,
        ["bash", "-c", f"setsid bash -c 'exec -a {WATCHED} sleep 100000' </dev/null >/dev/null 2>&1 &"],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("OPENSTACK_HA_LAB") or tempfile.mkdtemp()))
    args = parser.parse_args()
    lab = PacemakerLab(args.state_dir / "pacemaker")
    try:
        say("starting corosync + pacemaker (ctl1) and a pacemaker_remote node (compute1)")
        lab.up(computes=(NODE,))
        start_watched(lab)
        checks = f"process:{WATCHED}; degraded process:ovs-vswitchd"
        say(f"pcs resource create liveness ocf:openstack-ha:ComputeLiveness checks='{checks}' "
            f"op monitor interval={INTERVAL}s clone")
        lab.pcs("resource", "create", "liveness", "ocf:openstack-ha:ComputeLiveness",
                f"checks={checks}", "op", "monitor", f"interval={INTERVAL}s", "timeout=20s",
                "clone")
        lab.pcs("constraint", "location", "liveness-clone", "rule",
                "resource-discovery=exclusive", "score=0", "#kind", "eq", "remote")
        lab.wait_until(lambda: crm_state()[1] == "Started", 60, "liveness to start")
        lab.wait_until(lambda: crm_state()[0] is not None, 30, "the liveness attribute")
        print(subprocess.run(["crm_mon", "-1", "-A"], capture_output=True, text=True).stdout)

        say(f"SIGKILL {WATCHED} on {NODE} (a critical check watches it)")
        subprocess.run(["pkill", "-KILL", "-f", f"^{WATCHED} "], check=False)
        killed = time.monotonic()
        last = None
        while time.monotonic() - killed < INTERVAL + 20:
            state = crm_state()
            if state != last:
                value, role, failures = state
                say(f"+{time.monotonic() - killed:4.1f}s  attribute={value}  role={role}")
                for line in failures:
                    say(f"         failure: {line}")
                last = state
            if last[2] and last[1] != "Started":
                break
            time.sleep(0.5)

        say(f"{WATCHED} is back; crm_resource --cleanup lets Pacemaker start liveness again")
        start_watched(lab)
        lab.pcs("resource", "cleanup", "liveness-clone")
        lab.wait_until(lambda: crm_state()[:2] == ("degraded:process:ovs-vswitchd", "Started"),
                       60, "liveness to recover")
        value, role, _ = crm_state()
        say(f"recovered: attribute={value} role={role} (ovs-vswitchd is a degraded check here)")
        return 0
    finally:
        say("tearing the lab down")
        subprocess.run(["pkill", "-KILL", "-f", f"^{WATCHED} "], check=False)
        lab.down()


if __name__ == "__main__":
    raise SystemExit(main())
