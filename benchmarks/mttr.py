"""MTTR of a compute node crash in the real cluster: from the crash to the last instance
ACTIVE elsewhere, split into detection, fencing and evacuation; ours against the stock
configuration, in the same run.

The lab with its cluster (lab/failover.py): three compute nodes running pacemaker_remoted and
nova-compute, one IPMI BMC each. Each run boots N instances on compute1, then crashes it
(every process of the node SIGKILLed at once; its BMC still reports power on) and waits until
every instance is ACTIVE on another host; then the node is powered on and everything is
brought back to healthy for the next run.

* ``ours``: scripts/configure-cluster.sh: fence_nova (BMC power-off, confirmed; force-down;
  ledger) and the NovaEvacuate worker. Parts from the recovery timeline: detection (crash →
  Pacemaker's first failed operation, from the alert agent), fencing (detected → evacuation
  requested by fence_nova), evacuation (requested → last instance rebuilt, from Nova's
  instance-action records).
* ``stock``: the configuration TripleO built: a topology level of ``fence_ipmilan`` then
  ``fence_compute`` (Debian fence-agents 4.12.1, ``record_only=1``), and a NovaEvacuate-style
  loop that every 10 s reads the ``evacuate`` node attributes and runs ``fence_evacuate -o
  off`` (``no_shared_storage=1``) for each ``yes`` (the stock NovaEvacuate agent is not
  packaged for Debian; the loop is benchmarks/stock_novaevacuate.py, its logic). Parts:
  detection as for ours; fencing (detected → Pacemaker's fencing result, from the alert
  agent); evacuation (fenced → last instance rebuilt).

MTTR is crash → last instance rebuilt (Nova's records: the last ``compute_rebuild_instance``
finish of these instances), the same clock for both.

Second faults during the recovery (``--scenarios``, ours only), injected once a third of the
servers are rebuilt: ``worker-killed`` (the NovaEvacuate worker SIGKILLed: Pacemaker restarts
it and it takes the claim over), ``target-died`` (compute2, a rebuild target, loses every
process: it is fenced at once, compute1 being held off by the suite and so not counted by the
brake; rebuilds it never started are sent elsewhere by compute1's evacuation, the ones under
way are failed there and taken over by compute2's own), ``controller-crashed`` (three
controllers; ctl2, running NovaEvacuate, is powered off: the others fence it and one of them
takes the claim over). For these, ``settled`` is crash → every server ACTIVE,
with no task, on a host other than the crashed one that Nova sees up and not forced down (read
every 0.5 s), measured for the
plain ``crash`` beside them.

    flock /tmp/ohalab.lock python -m benchmarks.mttr [--sizes 20 50] [--runs 3]
    flock /tmp/ohalab.lock python -m benchmarks.mttr --modes ours --sizes 30 \
        --scenarios crash worker-killed target-died controller-crashed

Needs scripts/bench-deps.sh (the stock agents' Python dependencies). Writes
``benchmarks/results/mttr.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.evacuate import CellDB
from lab import workload
from lab.failover import Deployment
from lab.stack import Lab

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHIM = HERE / "py311shim"
HOST = "compute1"
TARGET = "compute2"  # the rebuild target that dies in scenario target-died
ENGINE_HOME = "ctl2"  # where NovaEvacuate runs in scenario controller-crashed (ctl1 is this host)
SCENARIOS = ("crash", "worker-killed", "target-died", "controller-crashed")
STOCK_COMPUTE = Path("/usr/sbin/fence_compute_py311")  # fence_compute with the 3.11 shim


def _pcs(*args: str, check: bool = True) -> None:
    done = subprocess.run(["pcs", *args], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"pcs {' '.join(args)}: {done.stderr.strip()[-300:]}")


class Stock:
    """The stock configuration on the same cluster, and its NovaEvacuate-style loop."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.loop: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        # Pacemaker runs fence agents with a clean environment: a wrapper gives fence_compute
        # the getargspec shim (benchmarks/py311shim) it needs on Python 3.11.
        STOCK_COMPUTE.write_text(f"#!/bin/sh\nPYTHONPATH={SHIM} exec /usr/sbin/fence_compute \"$@\"\n")
        STOCK_COMPUTE.chmod(0o755)
        for name in ("liveness-clone", "nova-evacuate"):
            _pcs("resource", "delete", name, "--force", check=False)
        auth = self.d.auth()
        for host, bmc in self.d.lab.bmc.endpoints().items():
            _pcs("stonith", "delete", f"fence-nova-{host}", check=False)
            _pcs("stonith", "create", f"fence-ipmi-{host}", "fence_ipmilan", f"ip={bmc.address}",
                 f"ipport={bmc.port}", f"username={bmc.username}",
                 f"password_script=/bin/cat {self.d.dir / f'bmc-{host}.secret'}", "lanplus=1",
                 "cipher=3", f"pcmk_host_list={host}")
            _pcs("stonith", "create", f"fence-compute-{host}", STOCK_COMPUTE.name,
                 f"auth_url={auth['auth_url']}", f"login={auth['username']}",
                 f"passwd_script=/bin/cat {self.d.dir / 'keystone.secret'}",
                 f"tenant_name={auth['project_name']}", "record_only=1", "no_shared_storage=1",
                 f"pcmk_host_list={host}", "--force")  # pcs does not know the wrapper's name
            _pcs("stonith", "level", "clear", host, check=False)
            _pcs("stonith", "level", "add", "1", host, f"fence-ipmi-{host}",
                 f"fence-compute-{host}", "--force")
        env = {**os.environ, "PYTHONPATH": f"{SHIM}"}
        with open(self.d.dir / "stock-loop.log", "ab") as log:
            self.loop = subprocess.Popen(
                ["/usr/bin/python3", str(HERE / "stock_novaevacuate.py"), "--auth-url",
                 auth["auth_url"], "--username", auth["username"], "--project",
                 auth["project_name"], "--password-file", str(self.d.dir / "keystone.secret")],
                env=env, stdout=subprocess.DEVNULL, stderr=log)

    def remove(self) -> None:
        if self.loop is not None:
            self.loop.terminate()
            self.loop.wait(10)
        STOCK_COMPUTE.unlink(missing_ok=True)

    def serving(self) -> bool:
        return all(self.d.pcmk.remote_ready(h) for h in self.d.hosts)


def second_fault(d: Deployment, scenario: str, n: int, since: float) -> None:
    """Once a third of the servers are rebuilt, the scenario's second fault."""
    if scenario == "crash":
        return

    def a_third_done() -> bool:
        return sum(e["event"] == "instance_done" for e in d.events(since, HOST)) >= n // 3

    workload.wait_for(a_third_done, 300, f"{n // 3} servers evacuated", 0.2)
    if scenario == "worker-killed":
        pid = d.worker_pid()
        if pid is None:
            raise RuntimeError("no NovaEvacuate worker to kill")
        (controller,) = d.started_on("nova-evacuate")
        d.mark("failure_injected", controller, how="SIGKILL the NovaEvacuate worker",
               bench=scenario)
        os.kill(pid, signal.SIGKILL)
    elif scenario == "target-died":
        d.mark("failure_injected", TARGET, how="node crash", bench=scenario)
        d.pcmk.power_off(TARGET)
    elif scenario == "controller-crashed":
        d.mark("failure_injected", ENGINE_HOME, how="controller crash", bench=scenario)
        d.pcmk.power_off_controller(ENGINE_HOME)


def engine_on(d: Deployment, controller: str | None) -> None:
    """NovaEvacuate moved to ``controller`` (a preference), or the preference cleared."""
    args = ["--move", "--node", controller] if controller else ["--clear"]
    subprocess.run(["crm_resource", *args, "--resource", "nova-evacuate"], check=True,
                   capture_output=True, timeout=60)
    if controller:
        workload.wait_for(lambda: d.started_on("nova-evacuate") == {controller}, 120,
                          f"nova-evacuate on {controller}", 1)


def settled(conn: Any, ids: list[str]) -> bool:
    """Every server ACTIVE, with no task, away from the crashed host, on a host Nova sees up
    and not forced down (right after the crash Nova still sees the crashed host up)."""
    live = {s.host for s in conn.compute.services(binary="nova-compute")
            if s.state == "up" and not s.is_forced_down and s.host != HOST}
    return all(s.status == "ACTIVE" and not s.task_state and s.compute_host in live
               for s in workload.servers(conn, ids).values())


def one_run(d: Deployment, db: CellDB, mode: str, n: int, serving,
            scenario: str | None = None) -> dict[str, Any]:
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    d.heal(serving=serving)
    engine_on(d, ENGINE_HOME if scenario == "controller-crashed" else None)
    ids = workload.boot(conn, HOST, n, prefix=f"mttr-{mode}",
                        image_id=workload.image(conn, "plain").id,
                        flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, ids, timeout=600)
    time.sleep(3)
    t0 = d.mark("failure_injected", HOST, how="node crash", bench=mode)
    d.pcmk.power_off(HOST)

    def finished() -> bool:
        moved, errors = db.progress(ids)
        if errors:
            raise RuntimeError(f"{errors} servers in ERROR")
        return moved == n

    settled_at = None
    if scenario is None:
        workload.wait_for(finished, 600, f"{n} servers ACTIVE away from {HOST}", 0.5)
    else:
        second_fault(d, scenario, n, t0)
        workload.wait_for(lambda: settled(conn, ids), 900, "every server ACTIVE on a live host",
                          0.5)
        settled_at = time.time()
    actions = db.actions(ids)
    events = d.events(t0, HOST)

    def first(*names: str) -> float | None:
        return next((e["ts"] for e in events if e["event"] in names), None)

    detected = first("detected", "node_lost")  # the alert agent: Pacemaker noticed
    fenced = first("evacuation_requested") if mode == "ours" else first("fenced")
    rebuilt = actions["last_rebuilt"]

    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 2) if a is not None and b is not None else None

    run = {"mode": mode, "scenario": scenario or "crash", "n": n, "mttr": span(t0, rebuilt),
           "settled": span(t0, settled_at), "detection": span(t0, detected),
           "fencing": span(detected, fenced), "evacuation": span(fenced, rebuilt),
           "first_evacuate_accepted": span(t0, actions["first_accept"]),
           "instances_rebuilt": actions["instances_rebuilt"]}
    print(json.dumps(run), flush=True)
    return run


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # rows of the scenario set (``settled`` measured) apart from the plain comparison
    kinds = sorted({(r["mode"], r.get("scenario", "crash"), r.get("settled") is not None)
                    for r in runs}, key=lambda k: (k[2], k[0], SCENARIOS.index(k[1])))
    for mode, scenario, with_settled in kinds:
        for n in sorted({r["n"] for r in runs}):
            mine = [r for r in runs if r["mode"] == mode and r["n"] == n
                    and r.get("scenario", "crash") == scenario
                    and (r.get("settled") is not None) == with_settled]
            if not mine:
                continue
            row: dict[str, Any] = {"runs": len(mine)}
            for key in ("mttr", "settled", "detection", "fencing", "evacuation",
                        "first_evacuate_accepted"):
                values = [r[key] for r in mine if r.get(key) is not None]
                row[key] = {"median": round(statistics.median(values), 2) if values else None,
                            "min": min(values, default=None), "max": max(values, default=None)}
            name = f"{mode}-{n}" if not with_settled else f"{mode}+{scenario}-{n}"
            out[name] = row
    for n in sorted({r["n"] for r in runs}):
        a, b = out.get(f"stock-{n}"), out.get(f"ours-{n}")
        if a and b and a["mttr"]["median"] and b["mttr"]["median"]:
            out[f"ratio-{n}"] = round(a["mttr"]["median"] / b["mttr"]["median"], 2)
    return out


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = ["# MTTR of a compute node crash: ours against the stock configuration", "",
             f"{result['machine']}; {result['date']}. Median (min–max) seconds over the runs.", "",
             "| configuration | N | runs | MTTR | settled | detection | fencing | evacuation |"
             " first evacuate accepted |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, row in s.items():
        if key.startswith("ratio"):
            continue
        mode, n = key.rsplit("-", 1)

        def cell(name: str, row: dict[str, Any] = row) -> str:
            v = row.get(name) or {"median": None}
            return "-" if v["median"] is None else f"{v['median']:.1f} ({v['min']:.1f}–{v['max']:.1f})"

        lines.append(f"| {mode} | {n} | {row['runs']} | {cell('mttr')} | {cell('settled')} |"
                     f" {cell('detection')} | {cell('fencing')} | {cell('evacuation')} |"
                     f" {cell('first_evacuate_accepted')} |")
    lines.append("")
    for key, value in s.items():
        if key.startswith("ratio"):
            lines.append(f"* MTTR stock/ours at N={key.split('-')[1]}: **{value}**")
    earlier = sorted({r["earlier_run"] for r in result["runs"] if r.get("earlier_run")})
    if earlier:
        modes = sorted({r["mode"] for r in result["runs"] if r.get("earlier_run")})
        lines += ["", f"Rows {', '.join(modes)}: from the run of {', '.join(earlier)}, same lab"
                  " and machine (`--modes` ran only the others this time)."]
    lines += ["", "Rows `ours+SCENARIO`: a second fault a third of the way (see the module's"
              " docstring); `settled`: crash → every server ACTIVE on a live host.",
              "", "Stock fencing: detected → Pacemaker's fencing result (fence_ipmilan then"
              " fence_compute); ours: detected → fence_nova's evacuation request. Evacuation:"
              " from there to the last instance rebuilt (Nova's records).", "",
              f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mttr")
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["ours", "stock"])
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=[],
                   help="ours only: these scenarios, each measured to 'settled'")
    args = p.parse_args(argv)
    if "stock" in args.modes and (shutil.which("fence_ipmilan") is None
                                  or not Path("/usr/sbin/fence_evacuate").exists()):
        print("run scripts/bench-deps.sh first (fence-agents and its Python dependencies)")
        return 2
    # three controllers when one of them is to crash; the others run in the usual lab
    controllers = 3 if "controller-crashed" in args.scenarios else 1
    lab = Lab(Path(tempfile.mkdtemp(prefix="mttr-")), cluster=True, controllers=controllers)
    runs: list[dict[str, Any]] = []
    t_start = time.time()
    try:
        lab.up(3)
        d = Deployment(lab)
        d.configure()
        db = CellDB(lab)
        if "ours" in args.modes:
            for n in args.sizes:
                for _ in range(args.runs):
                    if not args.scenarios:
                        runs.append(one_run(d, db, "ours", n, d.serving))
                    for scenario in args.scenarios:
                        runs.append(one_run(d, db, "ours", n, d.serving, scenario))
        if "stock" in args.modes:
            d.heal()
            stock = Stock(d)
            try:
                stock.install()
                for n in args.sizes:
                    for _ in range(args.runs):
                        runs.append(one_run(d, db, "stock", n, stock.serving))
            finally:
                stock.remove()
    finally:
        lab.down()
    kept: list[dict[str, Any]] = []
    previous = RESULTS / "mttr.json"
    if previous.exists():  # the rows of modes not run this time stay, marked as earlier
        ran = {(m, s) for m in args.modes for s in (args.scenarios or [None])}
        kept = [dict(r, earlier_run=r.get("earlier_run") or json.loads(previous.read_text())["date"])
                for r in json.loads(previous.read_text())["runs"]
                if (r["mode"], r.get("scenario") if r.get("settled") is not None else None)
                not in ran]
    runs = kept + runs
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
                         f" Python {platform.python_version()}",
              "command": "flock /tmp/ohalab.lock python -m benchmarks.mttr "
                         + " ".join(sys.argv[1:]),
              "runs": runs, "summary": summarize(runs)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mttr.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "mttr.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
