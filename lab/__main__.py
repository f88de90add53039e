"""``python -m lab``: the whole lab (OpenStack + BMCs, and with ``up --cluster`` the Pacemaker
cluster whose remote nodes run the computes), one command up and one down."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.bmc_chassis import MODES, TIMED_MODES
from lab.stack import Lab, default_state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Keystone, Nova, the computes and their BMCs")
    up.add_argument("--computes", type=int, default=3)
    up.add_argument("--cluster", action="store_true",
                    help="also the Pacemaker cluster, each compute host a pacemaker_remote node")
    up.add_argument("--controllers", type=int, default=1,
                    help="with --cluster: cluster nodes ctl1..ctlN (default: 1)")
    up.add_argument("--token-expiration", type=int, default=3600, help="Keystone token lifetime (s)")
    up.add_argument("--ceph", action="store_true",
                    help="also a Ceph cluster (lab/ceph.py) on the control plane's address")
    up.add_argument("--redfish", action="store_true",
                    help="every BMC also serves Redfish (HTTPS, port 443 of its address)")
    up.add_argument("--redfish-hosts", default="",
                    help="comma-separated hosts whose power_driver in hosts.json is redfish "
                         "(implies --redfish)")
    up.add_argument("--consul", action="store_true",
                    help="with --cluster: a serf pool per network and Consul's API in front of "
                         "the controller's agents (lab/consul.py), for fence_nova consul_config")
    sub.add_parser("configure", help="with --cluster: the reference configuration "
                   "(scripts/configure-cluster.sh, as lab/failover.py's Deployment runs it)")
    sub.add_parser("down", help="stop everything; safe to run twice")
    sub.add_parser("status", help="what runs, as JSON")
    for name in ("kill-compute", "start-compute", "power-off", "power-on"):
        sub.add_parser(name).add_argument("host")
    sub.add_parser("crash", help="the host stops serving at once (hosts.json's crash command)"
                   ).add_argument("host")
    sub.add_parser("restore", help="the host serves again, powered on through its BMC "
                   "(hosts.json's restore command)").add_argument("host")
    fault = sub.add_parser("bmc-fault", help="|".join(MODES) + " (SECONDS for "
                           + ", ".join(TIMED_MODES) + "; the last four: Redfish only)")
    fault.add_argument("host")
    fault.add_argument("mode")
    fault.add_argument("seconds", nargs="?", type=float, default=0.0)
    args = parser.parse_args(argv)

    lab = Lab(args.state_dir, cluster=True if args.command == "up" and args.cluster else None)
    try:
        if args.command == "up":
            if args.controllers != 1 and not args.cluster:
                parser.error("--controllers needs --cluster")
            lab.up(args.computes, token_expiration=args.token_expiration, owned=False,
                   controllers=args.controllers, ceph=args.ceph, redfish=args.redfish,
                   redfish_hosts=[h.strip() for h in args.redfish_hosts.split(",") if h.strip()],
                   consul=args.consul)
            print(f"lab up: {lab.clouds_yaml} (cloud 'lab'), {lab.hosts_json}")
        elif args.command == "configure":
            from lab.failover import Deployment

            Deployment(lab).configure()
            print(f"configured: {lab.hosts_json} describes the target (tests/target.py)")
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            print(json.dumps({"openstack": lab.openstack.status(), "bmc": lab.bmc.status(),
                              "ceph": lab.ceph.status()}, indent=2))
        elif args.command == "kill-compute":
            lab.openstack.kill_compute(args.host)
        elif args.command == "start-compute":
            lab.openstack.start_compute(args.host)
        elif args.command == "power-off":
            lab.power_off(args.host)
        elif args.command == "power-on":
            lab.power_on(args.host)
        elif args.command == "crash":
            lab.crash(args.host)
        elif args.command == "restore":
            lab.restore(args.host)
        elif args.command == "bmc-fault":
            lab.bmc.set_fault(args.host, args.mode, args.seconds)
    except Exception as exc:  # a lab CLI: one line, not a traceback
        print(f"lab {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
