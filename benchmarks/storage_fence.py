"""Storage fencing (Ceph's OSD blocklist) measured: the fence step with and without it, the
lab's start with and without Ceph, and the MTTR of the zombie it exists for; stock rows in the
same run.

Phase 1, the fence step (the lab of benchmarks/fence_off.py: three computes, IPMI BMCs,
Keystone, Nova, a Pacemaker controller with remote node compute1, and the lab's Ceph on
127.0.0.1). Rows, each ``fence_nova -o off`` of compute1 with its options on stdin:

* ``power``: power off through the BMC, confirmed, then Nova (what fence_off.py measures);
* ``power+storage``: the same with ``storage_fence=ceph``: after the power-off, blocklist the
  host's storage address and read the blocklist back, then Nova;
* ``storage``: ``power_driver=none storage_fence=ceph``, level 2 of the reference topology;
* ``stock``: fence_ipmilan then fence_compute, the stock level (no storage fencing exists
  there).

The host's storage address is 10.252.1.2 (in this lab its nova-compute runs on the host, at
127.0.0.1, which must not be blocklisted: the fence agent's own client is there); what is timed
is what Ceph does with it, the same for any address. Each run is checked (forced down,
disabled, and for the storage rows the entry listed) and undone (entry removed, lab reset).

Phase 2, the zombie's MTTR (the lab with its cluster and Ceph, scripts/configure-cluster.sh
plus scripts/configure-storage-fencing.sh): N servers on compute1, whose guests hold their
RBD disks; compute1's management link is cut and its BMC made silent (``noreply``); level 1
fails, level 2 blocklists it, and the servers are rebuilt elsewhere. MTTR is fault → last
instance rebuilt (Nova's records). Beside it, ``crash`` (every process of the node killed,
BMC fine) with power and storage fencing. The stock configuration cannot recover a zombie
at all: its only level is the BMC, which never answers (it stays down until
``stonith_admin --confirm``).

    flock /tmp/ohalab.lock python -m benchmarks.storage_fence [--rounds 5] [--n 20] [--runs 2]

Writes ``benchmarks/results/storage_fence.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.evacuate import CellDB
from benchmarks.fence_off import Agents, outcome, restore, run, stdin_of, summarize
from fence_compute.storage import blocklist_entry
from lab import workload
from lab.ceph import FENCE_CLIENT
from lab.failover import Deployment
from lab.pacemaker import PacemakerLab
from lab.procs import pids_named
from lab.stack import Lab

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HOST = "compute1"
STORAGE_ADDRESS = "10.252.1.2"
ROWS = ("power", "power+storage", "storage", "stock")


def blocklisted(lab: Lab) -> bool:
    return blocklist_entry(STORAGE_ADDRESS) in lab.ceph.ceph("osd", "blocklist", "ls").stdout


def fence_row(lab: Lab, cluster: PacemakerLab, agents: Agents, row: str) -> dict[str, Any]:
    if row == "stock":
        result = agents.stock()
    else:
        ceph = lab.ceph
        storage = {"storage_fence": "ceph", "ceph_conf": str(ceph.conf), "ceph_user": FENCE_CLIENT,
                   "ceph_keyring_file": str(ceph.keyring(FENCE_CLIENT)),
                   "storage_address": STORAGE_ADDRESS}
        stdin = agents.ours_stdin
        if row == "storage":
            stdin = "".join(line + "\n" for line in stdin.splitlines()
                            if not line.startswith(("power_driver=", "ip=", "ipport=")))
            stdin += "power_driver=none\n"
        if row != "power":
            stdin += stdin_of(storage)
        rc, wall, err = run(agents.ours_argv, stdin, agents.ours_env)
        result = {"rc": rc, "wall_s": wall, "stderr": agents.clean(err) if rc else ""}
    found = outcome(lab)
    found["blocklisted"] = blocklisted(lab)
    if row == "storage":  # the BMC is not asked: the host stays on
        found["verified"] = found["forced_down"] and found["disabled"] and found["blocklisted"]
    elif row == "power+storage":
        found["verified"] = found["verified"] and found["blocklisted"]
    result.update(row=row, outcome=found, ok=result["rc"] == 0 and found["verified"])
    lab.ceph.ceph("osd", "blocklist", "rm", blocklist_entry(STORAGE_ADDRESS), check=False)
    result["reset_s"] = restore(lab, cluster)
    return result


def ceph_memory_mib() -> dict[str, float]:
    """Resident memory of each Ceph daemon (MiB)."""
    found = {}
    for name in ("ceph-mon", "ceph-mgr", "ceph-osd"):
        total = 0
        for pid in pids_named(name):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        found[name] = round(total / 1024, 1)
    return found


def phase_fence(rounds: int, work: Path) -> dict[str, Any]:
    lab = Lab(work / "lab")
    cluster = PacemakerLab(work / "pacemaker")
    out: dict[str, Any] = {"runs": []}
    try:
        t0 = time.perf_counter()
        lab.up(3)
        out["lab_up_without_ceph_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        lab.ceph.up(["compute1", "compute2", "compute3"])
        out["ceph_up_s"] = round(time.perf_counter() - t0, 1)
        out["ceph_memory_mib"] = ceph_memory_mib()
        cluster.up((HOST,))
        agents = Agents(lab)
        for number in range(rounds):
            shift = number % len(ROWS)
            for row in (*ROWS[shift:], *ROWS[:shift]):
                result = fence_row(lab, cluster, agents, row)
                result["round"] = number
                out["runs"].append(result)
                print(f"round {number} {row}: rc={result['rc']} wall={result['wall_s']:.2f}s"
                      f" ok={result['ok']}" + ("" if result["ok"] else
                                                f" {result['outcome']} {result.get('stderr')}"),
                      flush=True)
    finally:
        try:
            cluster.down()
        finally:
            lab.down()
    out["summary"] = {row: {**summarize([r["wall_s"] for r in out["runs"]
                                         if r["row"] == row and r["ok"]]),
                            "ok": sum(r["ok"] for r in out["runs"] if r["row"] == row),
                            "runs": sum(r["row"] == row for r in out["runs"])}
                      for row in ROWS}
    return out


def zombie_run(d: Deployment, db: CellDB, scenario: str, n: int) -> dict[str, Any]:
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    d.heal()
    ids = workload.boot(conn, HOST, n, prefix=f"stor-{scenario}",
                        image_id=workload.image(conn, "plain").id,
                        flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, ids, timeout=600)
    time.sleep(3)  # every guest writing its disk
    if scenario == "zombie":
        d.lab.bmc.set_fault(HOST, "noreply")
        t0 = d.mark("failure_injected", HOST, how="management link cut, BMC silent",
                    bench="storage")
        d.cut_link(HOST)
    else:
        t0 = d.mark("failure_injected", HOST, how="node crash", bench="storage")
        d.pcmk.power_off(HOST)

    def finished() -> bool:
        moved, errors = db.progress(ids)
        if errors:
            raise RuntimeError(f"{errors} servers in ERROR")
        return moved == n

    workload.wait_for(finished, 600, f"{n} servers ACTIVE away from {HOST}", 0.5)
    events = d.events(t0, HOST)

    def first(*names: str) -> float | None:
        return next((e["ts"] for e in events if e["event"] in names), None)

    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 2) if a is not None and b is not None else None

    rebuilt = db.actions(ids)["last_rebuilt"]
    result = {"scenario": scenario, "n": n, "mttr": span(t0, rebuilt),
              "detection": span(t0, first("detected", "node_lost")),
              "storage_fenced": span(t0, first("storage_fenced")),
              "evacuation_requested": span(t0, first("evacuation_requested")),
              "level1_failed": span(t0, first("fence_failed"))}
    print(json.dumps(result), flush=True)
    if scenario == "zombie":  # back: BMC and link, then powered off so that it is unfenced
        d.lab.bmc.set_fault(HOST, "none")
        d.restore_link(HOST)
        d.lab.ipmitool(HOST, "chassis", "power", "off")
    return result


def phase_zombie(n: int, runs: int, work: Path) -> dict[str, Any]:
    lab = Lab(work / "cluster-lab", cluster=True)
    out: dict[str, Any] = {"runs": []}
    try:
        lab.up(3, ceph=True)
        d = Deployment(lab)
        d.configure()
        d.enable_storage_fencing()
        d.reconfigure_engine(disk_check=True)
        db = CellDB(lab)
        for _ in range(runs):
            for scenario in ("crash", "zombie"):
                out["runs"].append(zombie_run(d, db, scenario, n))
    finally:
        lab.down()
    out["summary"] = {s: summarize([r["mttr"] for r in out["runs"]
                                    if r["scenario"] == s and r["mttr"] is not None])
                      for s in ("crash", "zombie")}
    return out


def markdown(result: dict[str, Any]) -> str:
    f, z = result["fence"], result["zombie"]
    lines = ["# Storage fencing: the fence step, the lab's start, the zombie's MTTR", "",
             f"{result['machine']}; {result['date']}. Seconds: median (min–max).", "",
             "## fence_nova -o off of compute1", "",
             *([f"(From the run of {f['earlier_run']}.)", ""] if f.get("earlier_run") else []),
             "| row | runs ok | median | min | max |", "| --- | --- | --- | --- | --- |"]
    for row, s in f.get("summary", {}).items():
        lines.append(f"| {row} | {s['ok']}/{s['runs']} | {s['median_s']} | {s['min_s']} |"
                     f" {s['max_s']} |")
    lines += ["", f"Lab start without Ceph: {f.get('lab_up_without_ceph_s')} s; Ceph adds"
              f" {f.get('ceph_up_s')} s (one monitor, one manager, one memstore OSD). Ceph's"
              f" resident memory (MiB): {f.get('ceph_memory_mib')}.", "",
              "## MTTR with storage fencing (the cluster lab)", "",
              *([f"(From the run of {z['earlier_run']}.)", ""] if z.get("earlier_run") else []),
              "| scenario | N | runs | MTTR median | min | max | detected | level 1 failed |"
              " storage fenced | evacuation requested |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for scenario, s in z.get("summary", {}).items():
        mine = [r for r in z["runs"] if r["scenario"] == scenario]
        n = next((r["n"] for r in mine), "-")

        def median(key: str, mine: list[dict[str, Any]] = mine) -> str:
            values = sorted(r[key] for r in mine if r.get(key) is not None)
            return f"{values[len(values) // 2]:.1f}" if values else "-"

        lines.append(f"| {scenario} | {n} | {len(mine)} | {s['median_s']} | {s['min_s']} |"
                     f" {s['max_s']} | {median('detection')} | {median('level1_failed')} |"
                     f" {median('storage_fenced')} | {median('evacuation_requested')} |")
    lines += ["", "The last four columns: seconds from the fault (median; with two runs, the"
              " later). Zombie: management link cut and BMC silent; level 1 (power) fails after"
              " its login timeout, level 2 (blocklist) fences it. Stock: never recovers (the BMC"
              " is its only level).", "", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.storage_fence")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--phases", nargs="+", choices=("fence", "zombie"), default=["fence", "zombie"])
    args = p.parse_args(argv)
    if not Path("/usr/sbin/fence_ipmilan").exists():
        print("run scripts/bench-deps.sh first (fence-agents and its Python dependencies)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="ohabench-storage-"))
    t_start = time.time()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
                   f" Python {platform.python_version()}",
        "command": "flock /tmp/ohalab.lock python -m benchmarks.storage_fence "
                   + " ".join(sys.argv[1:] if argv is None else argv)}
    previous = RESULTS / "storage_fence.json"
    earlier = json.loads(previous.read_text()) if previous.exists() else {}
    # a phase not run this time keeps its figures from the earlier run, marked with its date
    result["fence"] = (phase_fence(args.rounds, work) if "fence" in args.phases
                       else {**earlier.get("fence", {}), "earlier_run": earlier.get("date")})
    result["zombie"] = (phase_zombie(args.n, args.runs, work) if "zombie" in args.phases
                        else {**earlier.get("zombie", {}), "earlier_run": earlier.get("date")})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storage_fence.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "storage_fence.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
