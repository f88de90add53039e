"""``openstack-ha-watchdog audit``: its time and its API requests as the cloud's servers grow.

A 3-compute lab (Keystone, Glance, Nova 34, fake virt driver). For each size, in ascending
order, servers are booted to reach it (lab.tiny, image ``plain``, spread over compute2 and
compute3) and the audit runs ``--rounds`` times as an operator runs it: a fresh process,
``python -m nova_evacuate.watchdog_cli --os-cloud lab audit --json``, its clouds.yaml
through ``OS_CLIENT_CONFIG_FILE``. Figures per size: the wall time of the process (median,
min, max) and the API requests the audit counted itself (every HTTP request its session
sent: Keystone, Nova, Glance). The count must not grow with the servers: every read is a
list call.

    flock /tmp/ohalab.lock python -m benchmarks.watchdog_audit [--sizes 10 200] [--rounds 3]

Writes ``benchmarks/results/watchdog_audit.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import workload
from lab.stack import Lab

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HOSTS = ("compute2", "compute3")


def audit(lab: Lab) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(lab.clouds_yaml)}
    env.pop("OS_CLOUD", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nova_evacuate.watchdog_cli", "--os-cloud",
                           "lab", "audit", "--json"], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"audit exited {done.returncode}: {done.stderr[-500:]}")
    return wall, json.loads(done.stdout)


def grow_to(lab: Lab, conn: Any, size: int, booted: list[str]) -> None:
    image, flavor = workload.image(conn, "plain"), workload.flavor(conn, "lab.tiny")
    missing = size - len(booted)
    for i, host in enumerate(HOSTS):
        count = missing // len(HOSTS) + (1 if i < missing % len(HOSTS) else 0)
        if count:
            ids = workload.boot(conn, host, count, prefix=f"wd-bench-{len(booted):04d}",
                                image_id=image.id, flavor_id=flavor.id)
            workload.wait_active(conn, ids, timeout=900)
            booted.extend(ids)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['benchmark']}", "",
             f"{result['date']}; {result['rounds']} runs per size; a 3-compute lab (Keystone,"
             " Glance, Nova 34, fake virt driver).", "",
             "| servers | wall median s | min s | max s | API requests (every run) |",
             "| --- | --- | --- | --- | --- |"]
    for row in result["sizes"]:
        lines.append(f"| {row['servers']} | {row['wall_median_s']} | {row['wall_min_s']} |"
                     f" {row['wall_max_s']} | {', '.join(map(str, sorted(set(row['api_requests']))))} |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lab = Lab()
    rows = []
    try:
        lab.up(3)
        lab.reset()
        conn = lab.openstack.connection(compute_api_version=workload.MICROVERSION)
        booted: list[str] = []
        for size in sorted(args.sizes):
            grow_to(lab, conn, size, booted)
            walls, requests, servers = [], [], 0
            for _ in range(args.rounds):
                wall, report = audit(lab)
                walls.append(wall)
                requests.append(report["api_requests"])
                servers = report["counts"]["servers"]
            rows.append({"servers": servers, "wall_median_s": round(statistics.median(walls), 2),
                         "wall_min_s": round(min(walls), 2), "wall_max_s": round(max(walls), 2),
                         "api_requests": requests})
            print(rows[-1], flush=True)
    finally:
        lab.down()
    result = {"benchmark": "openstack-ha-watchdog audit: time and API requests by servers",
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rounds": args.rounds, "sizes": rows,
              "command": "python -m benchmarks.watchdog_audit " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "watchdog_audit.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "watchdog_audit.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
