"""MTTR of a failed compute node in the real cluster: from the failure to the last instance
ACTIVE elsewhere, split into detection, fencing and evacuation, for each kind of failure;
ours against the stock configuration, in the same run.

The lab with its cluster (lab/failover.py): three compute nodes running pacemaker_remoted and
nova-compute, one IPMI BMC each. Each run boots N instances on compute1, makes the node fail
(``--failures``) and waits until every instance is ACTIVE on another host; then the fault is
undone and everything is brought back to healthy for the next run (``Deployment.heal``: every
link up, every process continued, every node powered and running nova-compute, failures
cleaned up, no servers).

Failure kinds (``--failures``, default ``crash`` alone), injected at t0 with lab/failover.py's
injectors, the ones tests/e2e/test_failover.py uses:

* ``crash``: every process of the node SIGKILLed at once (``PacemakerLab.power_off``); its
  BMC still reports power on. Pacemaker's connection to the node fails at once. Undone by
  ``heal()``: the BMC says on, so the node boots again (remoted and nova-compute started).
* ``hang``: every process of the node SIGSTOPped (``Deployment.hang``): the node is there and
  answers nothing; the connection's monitor (every 5 s, timeout 5 s in the lab) times out.
  Fencing powers it off (SIGKILL ends a stopped process too). Undone right after the run by
  SIGCONT to whatever of the node is left (``Deployment.unhang``; fence_nova may have powered
  it on again by then), and by ``heal()``, which powers on a node left off.
* ``link-cut``: the node's management link (its veth) set down (``Deployment.cut_link``): the
  node runs on, unreachable; the connection's monitor times out. Undone right after the run
  (``Deployment.restore_link``: fence_nova may power the node on once its evacuation is done,
  and it should find its link), and by ``heal()``, which sets every link up before powering a
  node on.
* ``all-links-cut``: the node's management and storage links both set down
  (``Deployment.cut_link``, ``cut_storage_link``): as ``link-cut`` for Pacemaker, but Consul
  (the Consul modes below) sees the node failed on every network, where a management link
  cut alone is a partition fence_nova refuses to fence for ``partition_hold``. Undone as
  ``link-cut``.
* ``nova-compute``: nova-compute alone SIGKILLed (``lab.openstack.kill_compute``), the node
  and its connection fine. Ours: ComputeLiveness's ``process:nova-compute`` check fails at its
  next monitor (every 10 s) and Pacemaker restarts the resource; the start retries the
  check until shortly before its timeout (30 s), fails, and a failed start fences the node
  (scripts/configure-cluster.sh, ``on-fail=fence``): that wait is part of the fencing figure.
  Stock: ``Stock.install`` deletes the liveness clone and nothing else watches nova-compute,
  so the stock pipeline never acts: the run is recorded as ``"outcome": "not detected"``
  (see below) and the table says so. Undone by ``heal()``: nova-compute started again, or the
  node powered on when it was fenced.

Any run, whatever its mode and failure, is *not detected* when within ``DETECTION_WAIT``
(120 s) of the failure the timeline has none of ``NOTICED`` for the node and no instance has
moved: it is recorded with that outcome and no figures, and the benchmark goes on.

* ``ours``: scripts/configure-cluster.sh: fence_nova (BMC power-off, confirmed; force-down;
  ledger) and the NovaEvacuate worker. Parts from the recovery timeline: detection (failure →
  Pacemaker's first failed operation or node loss, from the alert agent), fencing (detected →
  evacuation requested by fence_nova), evacuation (requested → last instance rebuilt, from
  Nova's instance-action records).
* ``consul``: ours, with the lab's Consul (``lab up --consul``: serf pools per network,
  lab/consul.py): fence_nova reads every network's view before its power step
  (``consul_config``, ``partition_hold`` 300 s, ``Deployment.enable_consul``); waiting up to
  ``settle`` for gossip to notice is part of the fencing figure.
* ``consul-watch``: ``consul``, and the NovaEvacuate worker's watcher (``[consul]`` in the
  engine's configuration) fails the connection of a node failed on every network: its
  ``consul_down`` counts as detection when it comes before Pacemaker's own.
* ``stock``: the configuration TripleO built: a topology level of ``fence_ipmilan`` then
  ``fence_compute`` (Debian fence-agents 4.12.1, ``record_only=1``), and a NovaEvacuate-style
  loop that every 10 s reads the ``evacuate`` node attributes and runs ``fence_evacuate -o
  off`` (``no_shared_storage=1``) for each ``yes`` (the stock NovaEvacuate agent is not
  packaged for Debian; the loop is benchmarks/stock_novaevacuate.py, its logic); no
  ComputeLiveness. Parts: detection as for ours; fencing (detected → Pacemaker's fencing
  result, from the alert agent); evacuation (fenced → last instance rebuilt).

Detection is the first ``detected`` / ``node_lost`` event; where the alert agent wrote none,
ours falls back to fence_nova's ``fence_start`` (as ``python -m openstack_ha.timeline``
does), and the record's ``detected_by`` names the event (and resource) used.

MTTR is failure → last instance rebuilt (Nova's records: the last ``compute_rebuild_instance``
finish of these instances), the same clock for both. *Overhead*, everything that is not Nova
rebuilding, is detection + fencing + (first evacuate accepted by Nova − evacuation requested,
or fenced for stock), that is failure → first evacuate accepted: the ``first_evacuate_accepted``
figure of the records, the ``overhead`` column of the tables. The markdown gives the figures
beside issue 14's goals: MTTR ours ≤ 0.6 × stock at 20 instances (crash), overhead ≤ 1 s.

Order: every ``ours`` run, then the stock configuration installed and every ``stock`` run
(there is no way back from stock to ours in one lab); within each, for each size and round,
every failure kind in turn, so that the lab's drift weighs on all of them alike.

Second faults during the recovery (``--scenarios``, ours only, after a crash), injected once
a third of the servers are rebuilt: ``worker-killed`` (the NovaEvacuate worker SIGKILLed:
Pacemaker restarts it and it takes the claim over), ``target-died`` (compute2, a rebuild
target, loses every process: it is fenced at once, compute1 being held off by the suite and
so not counted by the brake; rebuilds it never started are sent elsewhere by compute1's
evacuation, the ones under way are failed there and taken over by compute2's own),
``controller-crashed`` (three controllers; ctl2, running NovaEvacuate, is powered off: the
others fence it and one of them takes the claim over). For these, ``settled`` is crash →
every server ACTIVE, with no task, on a host other than the crashed one that Nova sees up and
not forced down (read every 0.5 s), measured for the plain ``crash`` beside them.

    flock /tmp/ohalab.lock python -m benchmarks.mttr [--sizes 20 50] [--runs 3]
    flock /tmp/ohalab.lock python -m benchmarks.mttr --sizes 20 50 --runs 3 \
        --failures crash hang link-cut nova-compute
    flock /tmp/ohalab.lock python -m benchmarks.mttr --modes ours --sizes 30 \
        --scenarios crash worker-killed target-died controller-crashed
    flock /tmp/ohalab.lock python -m benchmarks.mttr --modes ours consul consul-watch \
        --sizes 20 --runs 2 --failures crash hang all-links-cut

Needs scripts/bench-deps.sh (the stock agents' Python dependencies). Writes
``benchmarks/results/mttr.json`` and ``.md``; the rows of kinds (mode, failure, scenario) not
run this time are kept from the previous file, marked as earlier. Records written before the
failure kinds (no ``failure``) count as crashes, and the tables are computed from the records,
so an older file renders too.
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
from openstack_ha import timeline

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHIM = HERE / "py311shim"
HOST = "compute1"
TARGET = "compute2"  # the rebuild target that dies in scenario target-died
ENGINE_HOME = "ctl2"  # where NovaEvacuate runs in scenario controller-crashed (ctl1 is this host)
SCENARIOS = ("crash", "worker-killed", "target-died", "controller-crashed")
FAILURES = ("crash", "hang", "link-cut", "all-links-cut", "nova-compute")
FAILURE_HOW = {"crash": "node crash", "hang": "SIGSTOP every process of the node",
               "link-cut": "management link down",
               "all-links-cut": "management and storage links down",
               "nova-compute": "SIGKILL nova-compute"}
# ours, then ours with Consul (lab/consul.py's serf pools): fence_nova's consul_config alone,
# then with the NovaEvacuate worker's watcher too; then the stock pipeline.
MODES = ("ours", "consul", "consul-watch", "stock")
CONSUL_MODES = ("consul", "consul-watch")
# Within this long of the failure the pipeline has acted, or it never will (stock has nothing
# that watches nova-compute alone).
DETECTION_WAIT = 120.0
# Timeline events of the node that show the pipeline acted: Pacemaker noticed, or fencing began.
NOTICED = (*timeline.DETECTION, "fence_start", "fence_failed", "fenced", "evacuation_requested")
NOT_DETECTED = "not detected"
# partition_hold of the Consul modes: the documented default
CONSUL_HOLD = 300
# Issue 14's goals.
RATIO_GOAL = 0.6  # MTTR ours / stock ...
RATIO_GOAL_FAILURE, RATIO_GOAL_N = "crash", 20  # ... for a crash at 20 instances
OVERHEAD_GOAL_S = 1.0
FIGURES = ("mttr", "settled", "detection", "fencing", "evacuation", "first_evacuate_accepted")
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
        # No ComputeLiveness in the stock configuration: Pacemaker watches only the nodes'
        # connections, so nova-compute dying alone goes unnoticed.
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


def inject(d: Deployment, failure: str, host: str) -> None:
    """``host`` fails as ``failure`` says, through the lab's own injectors."""
    if failure == "crash":
        d.pcmk.power_off(host)  # every process SIGKILLed at once; the BMC still says on
    elif failure == "hang":
        d.hang(host)
    elif failure == "link-cut":
        d.cut_link(host)
    elif failure == "all-links-cut":
        d.cut_link(host)
        d.cut_storage_link(host)
    elif failure == "nova-compute":
        d.lab.openstack.kill_compute(host)
    else:
        raise ValueError(f"unknown failure {failure!r}")


def undo_at_once(d: Deployment, failure: str, host: str) -> None:
    """What of ``failure`` must not wait for the next run's heal(): a node that fence_nova
    powers on again after its evacuation finds its link; no stopped process outlives the
    run (lab.down could not stop it). A crash and a dead nova-compute are heal()'s to undo,
    which knows whether the node is powered."""
    if failure == "hang":
        d.unhang(host)
    elif failure == "link-cut":
        d.restore_link(host)
    elif failure == "all-links-cut":
        d.restore_link(host)
        d.restore_storage_link(host)


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


def detection_event(events: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The event that marks Pacemaker noticing the failure: the alert agent's first
    ``detected`` / ``node_lost``; for ours, without one, fence_nova's ``fence_start`` (as the
    timeline's own rendering does). ``events``: the node's, in time order."""
    found = next((e for e in events if e["event"] in timeline.DETECTION), None)
    if found is None and mode != "stock":
        found = next((e for e in events if e["event"] == "fence_start"), None)
    return found


def detected_by(event: dict[str, Any] | None) -> str | None:
    """Which event (and resource) detection was read from: ``detected compute1`` (the node's
    connection), ``detected liveness:0``, ``node_lost``, ``fence_start``."""
    if event is None:
        return None
    return f"{event['event']} {event.get('rsc') or ''}".strip()


def one_run(d: Deployment, db: CellDB, mode: str, n: int, serving,
            scenario: str | None = None, failure: str = "crash") -> dict[str, Any]:
    conn = d.lab.openstack.connection(compute_api_version=workload.MICROVERSION)
    d.heal(serving=serving)
    if mode != "stock":  # the stock configuration has no NovaEvacuate resource
        engine_on(d, ENGINE_HOME if scenario == "controller-crashed" else None)
    ids = workload.boot(conn, HOST, n, prefix=f"mttr-{mode}",
                        image_id=workload.image(conn, "plain").id,
                        flavor_id=workload.flavor(conn, "lab.tiny").id)
    workload.wait_active(conn, ids, timeout=600)
    time.sleep(3)
    t0 = d.mark("failure_injected", HOST, how=FAILURE_HOW[failure], bench=mode, failure=failure)
    inject(d, failure, HOST)

    def finished() -> bool:
        moved, errors = db.progress(ids)
        if errors:
            raise RuntimeError(f"{errors} servers in ERROR")
        return moved == n

    def noticed() -> bool:
        return (any(e["event"] in NOTICED for e in d.events(t0, HOST))
                or db.progress(ids)[0] > 0)

    run: dict[str, Any] = {"mode": mode, "failure": failure, "scenario": scenario, "n": n}
    settled_at = None
    try:
        try:
            workload.wait_for(noticed, DETECTION_WAIT, f"{HOST}'s failure noticed", 0.5)
        except TimeoutError:
            run.update({"outcome": NOT_DETECTED, "waited": DETECTION_WAIT,
                        **dict.fromkeys(FIGURES), "detected_by": None, "instances_rebuilt": 0})
            print(json.dumps(run), flush=True)
            return run
        if scenario is None:
            workload.wait_for(finished, 600, f"{n} servers ACTIVE away from {HOST}", 0.5)
        else:
            second_fault(d, scenario, n, t0)
            workload.wait_for(lambda: settled(conn, ids), 900,
                              "every server ACTIVE on a live host", 0.5)
            settled_at = time.time()
    finally:
        undo_at_once(d, failure, HOST)
    actions = db.actions(ids)
    events = d.events(t0, HOST)
    detection = detection_event(events, mode)
    detected = detection["ts"] if detection is not None else None

    def first(*names: str) -> float | None:
        return next((e["ts"] for e in events if e["event"] in names), None)

    fenced = first("evacuation_requested") if mode != "stock" else first("fenced")
    rebuilt = actions["last_rebuilt"]

    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 2) if a is not None and b is not None else None

    run.update({"outcome": "recovered", "mttr": span(t0, rebuilt),
                "settled": span(t0, settled_at), "detection": span(t0, detected),
                "fencing": span(detected, fenced), "evacuation": span(fenced, rebuilt),
                "first_evacuate_accepted": span(t0, actions["first_accept"]),
                "detected_by": detected_by(detection),
                "instances_rebuilt": actions["instances_rebuilt"]})
    print(json.dumps(run), flush=True)
    return run


# ---------------------------------------------------------------------------- results


def failure_of(run: dict[str, Any]) -> str:
    """A record's failure kind; records written before the kinds were crashes."""
    return run.get("failure", "crash")


def scenario_of(run: dict[str, Any]) -> str | None:
    """A record's second-fault scenario (``--scenarios``, measured to ``settled``), None for
    a plain run. Records written before the failure kinds said ``crash`` for plain runs too
    (or nothing): there ``settled`` tells them apart."""
    if "failure" in run:
        return run.get("scenario")
    return run.get("scenario", "crash") if run.get("settled") is not None else None


def kind_of(run: dict[str, Any]) -> tuple[str, str, str | None]:
    """What a record measured: (mode, failure, scenario)."""
    return run["mode"], failure_of(run), scenario_of(run)


def detected(run: dict[str, Any]) -> bool:
    return run.get("outcome") != NOT_DETECTED


def _order(row: dict[str, Any]) -> tuple[int, int, str, int]:
    scenario = row["scenario"]
    return (FAILURES.index(row["failure"]),
            -1 if scenario is None else SCENARIOS.index(scenario), row["mode"], row["n"])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each figure per (mode, failure, scenario, N), over the runs the
    pipeline noticed; how many it did not; and ours against stock per failure and N."""
    rows: list[dict[str, Any]] = []
    for mode, failure, scenario in sorted({kind_of(r) for r in runs}, key=str):
        for n in sorted({r["n"] for r in runs}):
            mine = [r for r in runs if kind_of(r) == (mode, failure, scenario) and r["n"] == n]
            if not mine:
                continue
            seen = [r for r in mine if detected(r)]
            row: dict[str, Any] = {
                "mode": mode, "failure": failure, "scenario": scenario, "n": n,
                "runs": len(mine), "not_detected": len(mine) - len(seen),
                "waited": max((r.get("waited", DETECTION_WAIT) for r in mine if not detected(r)),
                              default=None)}
            for key in FIGURES:
                values = [r[key] for r in seen if r.get(key) is not None]
                row[key] = {"median": round(statistics.median(values), 2) if values else None,
                            "min": min(values, default=None), "max": max(values, default=None)}
            rows.append(row)
    rows.sort(key=_order)
    comparisons = []
    for failure in FAILURES:
        for n in sorted({r["n"] for r in rows}):
            pair = {r["mode"]: r for r in rows if r["failure"] == failure and r["n"] == n
                    and r["scenario"] is None}
            if "ours" not in pair or "stock" not in pair:
                continue
            ours, stock = pair["ours"]["mttr"]["median"], pair["stock"]["mttr"]["median"]
            comparisons.append({
                "failure": failure, "n": n, "ours_s": ours, "stock_s": stock,
                "ours_over_stock": round(ours / stock, 2) if ours and stock else None,
                **{f"{mode}_{key}": pair[mode][key] for mode in ("ours", "stock")
                   for key in ("runs", "not_detected", "waited")}})
    return {"rows": rows, "comparisons": comparisons}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _unnoticed(comparison: dict[str, Any]) -> str:
    """What of a comparison's runs the pipeline did not notice, as a clause (or nothing)."""
    return "".join(f"; {mode} did not notice the failure in {comparison[f'{mode}_not_detected']}"
                   f" of {comparison[f'{mode}_runs']} runs ({comparison[f'{mode}_waited']:.0f} s"
                   " waited)" for mode in ("ours", "stock") if comparison[f"{mode}_not_detected"])


def goal_lines(summary: dict[str, Any]) -> list[str]:
    """Each figure beside issue 14's goals: MTTR ours/stock (≤ 0.6 for a crash at 20
    instances; the other failures and sizes beside it, for comparison) and our overhead
    (≤ 1 s), from the medians."""
    lines = []
    goal = next((c for c in summary["comparisons"] if c["failure"] == RATIO_GOAL_FAILURE
                 and c["n"] == RATIO_GOAL_N), None)
    head = (f"**Goal: MTTR ≤ {RATIO_GOAL} of the stock pipeline at {RATIO_GOAL_N} instances"
            f" ({RATIO_GOAL_FAILURE}):**")
    if goal is None:
        lines.append(f"* {head} not measured (ours and stock at N={RATIO_GOAL_N} needed).")
    else:
        ratio = goal["ours_over_stock"]
        verdict = "not measured" if ratio is None else "met" if ratio <= RATIO_GOAL else "not met"
        lines.append(f"* {head} ours {_seconds(goal['ours_s'])}, stock"
                     f" {_seconds(goal['stock_s'])}: **{ratio}**, {verdict}{_unnoticed(goal)}.")
    for c in summary["comparisons"]:
        if c is goal:
            continue
        figure = "not measured" if c["ours_over_stock"] is None else f"**{c['ours_over_stock']}**"
        lines.append(f"* MTTR ours/stock, {c['failure']}, N={c['n']}: {figure} (ours"
                     f" {_seconds(c['ours_s'])}, stock {_seconds(c['stock_s'])}){_unnoticed(c)}.")
    overheads = [r for r in summary["rows"] if r["mode"] == "ours" and r["scenario"] is None]
    if overheads:
        lines.append(f"* **Goal: our overhead ≤ {OVERHEAD_GOAL_S:.0f} s** (failure → first"
                     " evacuate accepted, median):")
        for r in overheads:
            value = r["first_evacuate_accepted"]["median"]
            verdict = ("not measured" if value is None
                       else "met" if value <= OVERHEAD_GOAL_S else "not met")
            lines.append(f"  * {r['failure']}, N={r['n']}: {_seconds(value)}, {verdict}"
                         f" (detection {_seconds(r['detection']['median'])}, fencing"
                         f" {_seconds(r['fencing']['median'])})")
    return lines


def _cell(fig: dict[str, Any] | None) -> str:
    if not fig or fig["median"] is None:
        return "-"
    return f"{fig['median']:.1f} ({fig['min']:.1f}–{fig['max']:.1f})"


def failure_table(rows: list[dict[str, Any]]) -> list[str]:
    """One failure kind's table; the ``settled`` column only where a row measured it."""
    with_settled = any(r["settled"]["median"] is not None for r in rows)
    head = ["configuration", "N", "runs", "MTTR", *(["settled"] if with_settled else []),
            "detection", "fencing", "evacuation", "overhead (→ first evacuate accepted)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        name = r["mode"] if r["scenario"] is None else f"{r['mode']}+{r['scenario']}"
        runs = str(r["runs"])
        if r["not_detected"]:
            runs += f", {r['not_detected']} not detected"
        cells = [name, str(r["n"]), runs, _cell(r["mttr"]),
                 *([_cell(r["settled"])] if with_settled else []), _cell(r["detection"]),
                 _cell(r["fencing"]), _cell(r["evacuation"]),
                 _cell(r["first_evacuate_accepted"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


NOT_DETECTED_WHY = {
    ("stock", "nova-compute"): "the stock configuration has no ComputeLiveness: Pacemaker"
                               " watches only the node's connection, which stays up"}


def markdown(result: dict[str, Any]) -> str:
    """The results as markdown. The summary is computed again from the records, so that a
    file written before the failure kinds renders the same way."""
    summary = summarize(result["runs"])
    lines = ["# MTTR of a failed compute node: ours against the stock configuration", "",
             f"{result['machine']}; {result['date']}. Median (min–max) seconds over the runs"
             " the pipeline noticed.", ""]
    for failure in FAILURES:
        rows = [r for r in summary["rows"] if r["failure"] == failure]
        if not rows:
            continue
        lines += [f"## {failure}: {FAILURE_HOW[failure]}", "", *failure_table(rows), ""]
        for r in rows:
            if r["not_detected"]:
                why = NOT_DETECTED_WHY.get((r["mode"], failure))
                lines.append(f"* {r['mode']}, N={r['n']}: not detected within"
                             f" {r['waited']:.0f} s in {r['not_detected']} of {r['runs']} runs"
                             + (f" ({why})" if why else "") + ".")
        if any(r["not_detected"] for r in rows):
            lines.append("")
    lines += ["## Against the goals of issue 14", "", *goal_lines(summary)]
    earlier: dict[str, set[str]] = {}
    for r in result["runs"]:
        if r.get("earlier_run"):
            mode, failure, scenario = kind_of(r)
            earlier.setdefault(r["earlier_run"], set()).add(
                f"{mode} {failure}" if scenario is None else f"{mode}+{scenario}")
    if earlier:
        lines += [""] + [f"Rows {', '.join(sorted(kinds))}: from the run of {date}, same lab and"
                         " machine (not run this time)." for date, kinds in sorted(earlier.items())]
    if any(r["scenario"] is not None for r in summary["rows"]):
        lines += ["", "Rows `ours+SCENARIO`: a second fault a third of the way (see the"
                  " module's docstring); `settled`: crash → every server ACTIVE on a live host."]
    lines += ["", "Detection: failure → Pacemaker's first failed operation or node loss (the"
              " alert agent). Stock fencing: detected → Pacemaker's fencing result"
              " (fence_ipmilan then fence_compute); ours: detected → fence_nova's evacuation"
              " request. Evacuation: from there to the last instance rebuilt (Nova's records)."
              " Overhead: everything that is not Nova rebuilding, detection + fencing + (first"
              " evacuate accepted − evacuation requested, or fenced for stock) = failure →"
              " first evacuate accepted.", "",
              f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mttr")
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--modes", nargs="+", choices=MODES, default=["ours", "stock"],
                   help="consul: fence_nova reads the lab's Consul (consul_config);"
                        " consul-watch: and the worker's watcher reports failures")
    p.add_argument("--failures", nargs="+", choices=FAILURES, default=["crash"],
                   help="how compute1 fails, each in turn in every round, for every mode"
                        " (default: crash)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=[],
                   help="ours only, after a crash: these scenarios, each measured to 'settled'")
    args = p.parse_args(argv)
    if args.scenarios and args.failures != ["crash"]:
        p.error("--scenarios measures second faults after a crash: leave --failures out")
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
        consul = any(mode in CONSUL_MODES for mode in args.modes)
        lab.up(3, consul=consul)
        d = Deployment(lab)
        d.configure()
        db = CellDB(lab)
        for mode in ("ours", *CONSUL_MODES):
            if mode not in args.modes:
                continue
            if mode in CONSUL_MODES:
                d.heal()
                d.enable_consul(CONSUL_HOLD)
                d.reconfigure_engine(consul=mode == "consul-watch")
            for n in args.sizes:
                for _ in range(args.runs):
                    if not args.scenarios:
                        for failure in args.failures:
                            runs.append(one_run(d, db, mode, n, d.serving, failure=failure))
                    for scenario in args.scenarios:
                        runs.append(one_run(d, db, mode, n, d.serving, scenario))
        if consul:
            d.heal()
            d.disable_consul()
            d.reconfigure_engine()
        if "stock" in args.modes:
            d.heal()
            stock = Stock(d)
            try:
                stock.install()
                for n in args.sizes:
                    for _ in range(args.runs):
                        for failure in args.failures:
                            runs.append(one_run(d, db, "stock", n, stock.serving,
                                                failure=failure))
            finally:
                stock.remove()
    finally:
        lab.down()
    kept: list[dict[str, Any]] = []
    previous = RESULTS / "mttr.json"
    if previous.exists():  # the rows of kinds not run this time stay, marked as earlier
        before = json.loads(previous.read_text())
        ran = {kind_of(r) for r in runs}
        kept = [dict(r, earlier_run=r.get("earlier_run") or before["date"])
                for r in before["runs"] if kind_of(r) not in ran]
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
