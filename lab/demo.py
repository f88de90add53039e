"""The failover demo, the README's main job: a compute node dies and its instances come back.

Brings up the lab with its cluster (Keystone, Nova, three compute nodes that run
pacemaker_remoted and nova-compute, one IPMI BMC each), configures it with
scripts/configure-cluster.sh as an operator would, boots instances on compute1, crashes
compute1 (every process of the node killed at once, its BMC still on), and shows the
recovery as it happens: Pacemaker notices, fence_nova powers the node off through its BMC
and marks it in Nova, the NovaEvacuate worker evacuates every instance while the node stays
powered off (Pacemaker's unfencing is refused until then). Then the worker asks Pacemaker
to unfence the node (fence_nova ``on`` powers it on) and it serves again. The timeline with
the MTTR and its
parts ends the show, and the lab is torn down.

    python -m lab.demo [--instances 20] [--keep] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lab import workload
from lab.failover import Deployment
from lab.stack import Lab

VICTIM = "compute1"


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def watch(d: Deployment, ids: list[str], since: float, until: str, timeout: float,
          shown: int = 0) -> int:
    """Print each timeline event from ``since`` on (the first ``shown`` already were), and
    the instances' whereabouts, until event ``until``; how many events were shown."""
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    seen = shown
    last_count = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = d.events(since)
        for event in events[seen:]:
            detail = " ".join(f"{k}={v}" for k, v in event.items()
                              if k not in ("ts", "event", "host", "by") and v not in (None, ""))
            if event["event"] in ("instance_done", "instance_failed"):
                detail = f"{event.get('name')} -> {event.get('dest')}"
            say(f"  +{event['ts'] - since:6.1f}s  {event['host']:<9} {event['event']:<21} {detail}")
        seen = len(events)
        if ids:
            now = workload.servers(conn, ids)
            moved = sum(s.compute_host != VICTIM and s.status == "ACTIVE" for s in now.values())
            if moved != last_count:
                say(f"  instances ACTIVE away from {VICTIM}: {moved}/{len(ids)}")
                last_count = moved
        if any(e["event"] == until and e["host"] == VICTIM for e in events):
            return seen
        time.sleep(1)
    raise TimeoutError(f"no {until} for {VICTIM} after {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    p.add_argument("--state-dir", type=Path, default=Path("/tmp/openstack-ha-demo"))
    args = p.parse_args(argv)
    from openstack_ha import timeline

    lab = Lab(args.state_dir, cluster=True)
    t_start = time.monotonic()
    try:
        say("bringing up the lab: Keystone, Glance, Placement, Nova, 3 compute nodes"
            " (pacemaker_remoted + nova-compute each), their BMCs, corosync + pacemaker")
        lab.up(3, owned=False)
        d = Deployment(lab)
        say("configuring the cluster with scripts/configure-cluster.sh (pcs, as an operator)")
        d.configure()
        say(f"cluster serving: ComputeLiveness on {', '.join(d.hosts)}, NovaEvacuate on ctl1")
        conn = lab.openstack.connection(compute_api_version=workload.MICROVERSION)
        ids = workload.boot(conn, VICTIM, args.instances, prefix="demo",
                            image_id=workload.image(conn, "plain").id,
                            flavor_id=workload.flavor(conn, "lab.tiny").id)
        workload.wait_active(conn, ids)
        say(f"{len(ids)} instances ACTIVE on {VICTIM}")
        time.sleep(2)

        t0 = d.mark("failure_injected", VICTIM, how="every process of the node SIGKILLed")
        d.pcmk.power_off(VICTIM)
        say(f"CRASH: every process of {VICTIM} killed (its BMC still reports power on)")
        shown = watch(d, ids, t0, "evacuation_done", 300)
        say(f"{VICTIM} evacuated while it stayed powered off; the worker asks Pacemaker to"
            " unfence it: fence_nova sees the evacuation done and powers it on through its BMC")
        watch(d, [], t0, "unfenced", 300, shown)

        def back() -> bool:
            svc = d.service(VICTIM)
            return svc.state == "up" and svc.status == "enabled" and not svc.is_forced_down

        workload.wait_for(back, 180, f"{VICTIM} back in Nova", 2)
        say(f"{VICTIM} is back: up, enabled, not forced down; new instances may land there")
        print()
        events = [e for e in d.events(t0) if e["host"] == VICTIM]
        for recovery in timeline.recoveries(events):
            print(timeline.render(recovery))
        print(f"\nthe timeline is in {timeline.path()}; render it again with openstack-ha-timeline")
        return 0
    except Exception as exc:
        say(f"demo failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if args.keep:
            say(f"lab left running in {args.state_dir} (python -m lab --state-dir"
                f" {args.state_dir} down)")
        else:
            say("tearing the lab down")
            lab.down()
        say(f"total {time.monotonic() - t_start:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
