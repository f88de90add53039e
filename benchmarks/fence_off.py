"""``fence_nova -o off`` against the stock fencing level it replaces, in the same run.

Rows (target compute1 of a 3-compute lab: real BMC, Keystone and Nova):

* ``fence_nova``: one process powers compute1 off through its BMC (IPMI, polled
  until the BMC reports off), forces its nova-compute down, disables it with the
  evacuation marker and mirrors that to the node attribute ``evacuate=yes``. Keystone
  is asked while the BMC works; the token is kept between runs (``token_cache``, a
  directory of this run), as the device's ``monitor`` keeps it in a cluster.
* ``ours_cold``: the same with ``token_cache=`` (empty): Keystone's password
  check in every run, as the first fence after a controller boots would pay it.
* ``stock``: what a stock instance-HA topology level runs, one after the other:
  ``fence_ipmilan`` (lanplus, cipher 3) ``off``, then ``fence_compute`` ``off``
  (Debian fence-agents 4.12.1, python3-novaclient; ``record_only=1`` and
  ``no_shared_storage=1`` as stock instance-HA configurations set them). Timed end
  to end. fence_compute needs ``benchmarks/py311shim`` on PYTHONPATH (Python 3.11
  dropped ``inspect.getargspec``) and ``scripts/bench-deps.sh`` installed.
* ``stock_power_wait_0``: the same with ``power_wait=0`` for fence_ipmilan, whose
  default is a fixed 2 s sleep between ``off`` and its first status poll; not a
  stock setting, it shows how much of the difference that sleep is.

Both get their options on stdin, as Pacemaker passes them (no password in argv).
After every run the outcome is checked (BMC reports off, nova-compute gone,
service forced down and disabled) and then undone: the ``evacuate`` attribute
deleted and ``Lab.reset()`` (BMC power on, which starts nova-compute again; once it
has reported, forced_down cleared and the service enabled, which drops the
marker). Runs alternate, the order flipped each round. One untimed run of each
under ``strace -f -e execve`` first, as a warm-up that also counts the processes.
A Pacemaker lab (ctl1 + remote compute1) runs meanwhile, so ``attrd_updater -N
compute1`` works for both agents.

    flock /tmp/ohalab.lock python -m benchmarks.fence_off [--rounds 7] [--budget 480]

Writes ``benchmarks/results/fence_off.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lab.pacemaker import PacemakerLab
from lab.stack import Lab
from openstack_ha import pacemaker

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SHIM = HERE / "py311shim"
VENV_PYTHON = "/opt/openstack-ha/venv/bin/python"
HOST = "compute1"
# ours; the stock level as shipped; the same with fence_ipmilan's power_wait=0
ROWS = ("ours", "ours_cold", "stock", "stock_power_wait_0")
STOCK_ROWS = ("stock", "stock_power_wait_0")
MARKER = "openstack-ha:v1 evacuation=requested "
STOCK_PACKAGES = ("fence-agents", "python3-novaclient", "python3-keystoneclient",
                  "python3-keystoneauth1", "ipmitool")


# Where one fence_nova off spends its time, from the timeline it writes (each event's
# time) and the run's own launch and exit: (phase, from, to). fence_start carries the time
# off() began, before the brake's read.
PHASES = (
    ("start: interpreter, imports, options", "launched", "fence_start"),
    ("power: the brake's cluster read, the BMC's library, login, off, polled until off",
     "fence_start", "power_off_confirmed"),
    ("Nova: the read begun with the power-off, then the force-down", "power_off_confirmed",
     "forced_down"),
    ("ledger: the disable with its marker, the node attribute", "forced_down",
     "evacuation_requested"),
    ("end: the connection held, exit", "evacuation_requested", "exited"),
)


def phases(events: list[dict[str, Any]], launched: float, exited: float) -> dict[str, float]:
    """Seconds of each of PHASES in one run, from its timeline ``events`` (the first of each
    name counts); a phase whose ends are not both known is left out."""
    at = {"launched": launched, "exited": exited}
    for event in events:
        at.setdefault(event.get("event", ""), event.get("ts", 0.0))
    return {name: round(at[end] - at[begin], 3) for name, begin, end in PHASES
            if begin in at and end in at}


def stdin_of(options: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in options.items())


def run(argv: list[str], stdin: str, env: dict[str, str],
        timeout: float = 120) -> tuple[int, float, str]:
    """Exit code, wall seconds, stderr."""
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return -1, time.perf_counter() - started, f"timed out after {timeout}s: {exc.stderr!r}"
    return done.returncode, time.perf_counter() - started, done.stderr


class Agents:
    """How each row is run, from the lab's endpoints."""

    def __init__(self, lab: Lab, tokens: Path) -> None:
        bmc = lab.hosts()[HOST]
        self.secrets = [bmc["password"]]
        self.auth_url = lab.openstack.layout.url("keystone", "/v3")
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OS_", "PYTHON"))}
        self.ours_argv, self.ours_kind = ours_argv()
        self.timeline = tokens.parent / "timeline.jsonl"  # ours only: its phases
        self.ours_env = {**base, "OS_CLIENT_CONFIG_FILE": str(lab.clouds_yaml),
                         "OPENSTACK_HA_TIMELINE": str(self.timeline)}
        # Keystone as the reference configuration (scripts/configure-cluster.sh) and the
        # stock row give it: explicit options, not a clouds.yaml entry
        ours = {
            "action": "off", "port": HOST, "nodename": HOST, "auth_url": self.auth_url,
            "username": "admin", "password": "admin", "tenant_name": "admin",
            "user_domain": "Default", "project_domain": "Default",
            "region_name": "RegionOne", "endpoint_type": "internalURL",
            "power_driver": "ipmi", "ip": bmc["address"], "ipport": str(bmc["port"]),
            "bmc_username": bmc["username"], "bmc_password": bmc["password"],
        }
        self.ours_stdin = stdin_of({**ours, "token_cache": str(tokens)})
        self.ours_cold_stdin = stdin_of({**ours, "token_cache": ""})
        self.ipmilan_argv = ["/usr/sbin/fence_ipmilan"]
        self.ipmilan_env = dict(base)
        self.ipmilan_stdin = stdin_of({
            "action": "off", "ip": bmc["address"], "ipport": str(bmc["port"]),
            "username": bmc["username"], "password": bmc["password"],
            "lanplus": "1", "cipher": "3",
        })
        self.compute_argv = ["/usr/sbin/fence_compute"]
        self.compute_env = {**base, "PYTHONPATH": str(SHIM)}
        self.compute_stdin = stdin_of({
            "action": "off", "plug": HOST, "auth_url": self.auth_url,
            "login": "admin", "passwd": "admin", "tenant_name": "admin",
            "user_domain": "Default", "project_domain": "Default",
            "region_name": "RegionOne", "endpoint_type": "internalURL",
            "no_shared_storage": "1", "record_only": "1",
        })

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text[-1500:]

    def ours(self, wrap: list[str] | None = None, stdin: str | None = None) -> dict[str, Any]:
        self.timeline.unlink(missing_ok=True)
        launched = time.time()
        rc, wall, err = run([*(wrap or []), *self.ours_argv], stdin or self.ours_stdin,
                            self.ours_env)
        exited = launched + wall
        events = [json.loads(line) for line in self.timeline.read_text().splitlines()
                  if line.strip()] if self.timeline.exists() else []
        return {"rc": rc, "wall_s": wall, "stderr": self.clean(err) if rc else "",
                "phases_s": phases([e for e in events if e.get("host") == HOST], launched,
                                   exited)}

    def ours_cold(self, wrap: list[str] | None = None) -> dict[str, Any]:
        """Keystone's password check in every run: no token kept."""
        return self.ours(wrap, self.ours_cold_stdin)

    def stock(self, wrap: list[str] | None = None, **ipmilan: str) -> dict[str, Any]:
        started = time.perf_counter()
        rc1, wall1, err1 = run([*(wrap or []), *self.ipmilan_argv],
                               self.ipmilan_stdin + stdin_of(ipmilan), self.ipmilan_env)
        result: dict[str, Any] = {"fence_ipmilan_rc": rc1, "fence_ipmilan_s": wall1}
        if rc1 == 0:  # a topology level stops at its first failing device
            rc2, wall2, err2 = run([*(wrap or []), *self.compute_argv], self.compute_stdin,
                                   self.compute_env)
            result.update(fence_compute_rc=rc2, fence_compute_s=wall2)
            if rc2:
                result["stderr"] = self.clean(err2)
        else:
            rc2 = None
            result["stderr"] = self.clean(err1)
        result["wall_s"] = time.perf_counter() - started
        result["rc"] = rc1 if rc1 else rc2
        return result

    def stock_power_wait_0(self, wrap: list[str] | None = None) -> dict[str, Any]:
        """The same, without fence_ipmilan's fixed 2 s sleep between 'off' and the first
        status poll (its power_wait default): how much of the gap is that sleep."""
        return self.stock(wrap, power_wait="0")


def ours_argv() -> tuple[list[str], str]:
    """The installed launcher (what Pacemaker runs) when its code is this tree's, else the
    module from this tree."""
    launcher = Path("/usr/sbin/fence_nova")
    if launcher.exists():
        where = subprocess.run(
            [VENV_PYTHON, "-I", "-c",
             "import fence_compute, nova_evacuate; print(fence_compute.__path__[0]);"
             " print(nova_evacuate.__path__[0])"],
            capture_output=True, text=True, check=False).stdout.split()
        same = len(where) == 2 and all(
            not filecmp.dircmp(REPO / name, Path(path)).diff_files
            and not filecmp.dircmp(REPO / name, Path(path)).left_only
            for name, path in zip(("fence_compute", "nova_evacuate"), where, strict=True))
        if same:
            return [str(launcher)], "/usr/sbin/fence_nova (installed, same code as this tree)"
    return ([VENV_PYTHON, "-m", "fence_compute.fence_nova"],
            f"{VENV_PYTHON} -m fence_compute.fence_nova (from {REPO})")


def evacuate_attribute() -> str | None:
    done = subprocess.run(["attrd_updater", "-Q", "-n", "evacuate", "-N", HOST],
                          capture_output=True, text=True, check=False)
    value = done.stdout.split('value="')[1].split('"')[0] if 'value="' in done.stdout else ""
    return value or None


def outcome(lab: Lab) -> dict[str, Any]:
    """What is true after a fence, from the BMC, the lab's processes, Nova and attrd."""
    conn = lab.openstack.connection(compute_api_version="2.53")
    (svc,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == HOST]
    found = {
        "bmc_off": lab.bmc.power_state(HOST) is False,
        "nova_compute_stopped": not lab.openstack.compute_running(HOST),
        "forced_down": bool(svc.is_forced_down),
        "disabled": svc.status == "disabled",
        "marker": (svc.disabled_reason or "").startswith(MARKER),
        "evacuate_attribute": evacuate_attribute(),
    }
    found["verified"] = all(found[k] for k in ("bmc_off", "nova_compute_stopped",
                                                "forced_down", "disabled"))
    return found


def restore(lab: Lab, cluster: PacemakerLab | None = None) -> float:
    """Undo a fence: the attribute, the BMC and Nova (``lab.reset``), and the remote node's
    connection, which ``off`` holds while the host is off (unfencing releases it; without the
    release the next fence counts the node as down and the brake refuses)."""
    started = time.perf_counter()
    subprocess.run(["attrd_updater", "-n", "evacuate", "-D", "-N", HOST],
                   capture_output=True, check=False)
    lab.reset()
    if cluster is not None:
        pacemaker.release_connection(HOST)
        cluster.wait_until(lambda: cluster.node_online(HOST), 60, f"{HOST} online again")
        pacemaker.end_return(HOST)  # back: as Pacemaker's unfencing at its rejoin does
    took = time.perf_counter() - started
    if not lab.bmc.power_state(HOST) or not lab.openstack.compute_running(HOST):
        raise RuntimeError(f"{HOST} not back on after reset")
    return took


_EXECVE = re.compile(r'^(\d+) +execve\("([^"]+)", \[(.*)\], .*\) = 0$')


def census(agents: Agents, row: str, work: Path) -> dict[str, Any]:
    """One untimed run under strace: every program executed (its pid counts once), and the
    BMC and attrd commands it sent. The trace holds argv (passwords) and is deleted."""
    trace = work / f"{row}.strace"
    wrap = ["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-s", "80",
            "-A", "-o", str(trace)]  # -A: the stock row's two agents append to one trace
    result = getattr(agents, row)(wrap)
    programs: Counter[str] = Counter()
    commands: list[str] = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        match = _EXECVE.match(line)
        if not match:
            continue
        programs[os.path.basename(match.group(2))] += 1
        args = re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(3))
        if "chassis" in args:
            commands.append("ipmitool " + " ".join(args[args.index("chassis"):]))
        elif args and os.path.basename(args[0]) == "attrd_updater":
            commands.append(" ".join(args))
    trace.unlink(missing_ok=True)
    for name in ("rc", "stderr"):
        result.setdefault(name, None)
    return {"rc": result["rc"], "processes": sum(programs.values()),
            "programs": dict(programs), "commands": commands}


def summarize(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"median_s": None, "min_s": None, "max_s": None}
    return {"median_s": round(statistics.median(samples), 3), "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3)}


def versions() -> dict[str, str]:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n",
                           *STOCK_PACKAGES], capture_output=True, text=True, check=False)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def main() -> int:
    parser = argparse.ArgumentParser(description="fence_nova -o off against the stock level")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=480,
                        help="start no new round after this many seconds (the lab is shared)")
    args = parser.parse_args()
    for tool in ("/usr/sbin/fence_ipmilan", "/usr/sbin/fence_compute", "strace"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/bench-deps.sh (and apt-get install strace)")
    if subprocess.run(["/usr/bin/python3", "-c", "import novaclient, keystoneclient"],
                      capture_output=True, check=False).returncode:
        sys.exit("python3-novaclient/python3-keystoneclient missing: run scripts/bench-deps.sh")

    work = Path(tempfile.mkdtemp(prefix="ohabench-fence-"))
    lab = Lab(work / "lab")
    cluster = PacemakerLab(work / "pacemaker")
    runs: list[dict[str, Any]] = []
    censuses: dict[str, Any] = {}
    setup: dict[str, float] = {}
    error = None
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        lab.up(3)
        setup["openstack_lab_up_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        cluster.up((HOST,))
        setup["pacemaker_lab_up_s"] = round(time.perf_counter() - t0, 1)
        agents = Agents(lab, work / "tokens")
        for row in ("ours", "stock"):  # stock_power_wait_0 runs the same programs
            censuses[row] = census(agents, row, work)
            censuses[row]["outcome"] = outcome(lab)
            censuses[row]["reset_s"] = round(restore(lab, cluster), 2)
        for number in range(args.rounds):
            if time.perf_counter() - started > args.budget:
                error = f"time budget of {args.budget:.0f}s reached after {number} rounds"
                break
            shift = number % len(ROWS)
            order = (*ROWS[shift:], *ROWS[:shift])
            for row in order:
                result = getattr(agents, row)()
                result.update(row=row, round=number, outcome=outcome(lab))
                result["ok"] = result["rc"] == 0 and result["outcome"]["verified"]
                result["reset_s"] = restore(lab, cluster)
                runs.append(result)
                print(f"round {number} {row}: rc={result['rc']} wall={result['wall_s']:.2f}s"
                      f" verified={result['outcome']['verified']}"
                      f" reset={result['reset_s']:.1f}s", flush=True)
    except Exception as exc:  # recorded, not hidden; the teardown still runs
        error = f"{type(exc).__name__}: {exc}"
        print(f"aborted: {error}", file=sys.stderr)
    finally:
        t0 = time.perf_counter()
        try:
            cluster.down()
        finally:
            lab.down()
            shutil.rmtree(work, ignore_errors=True)
        setup["teardown_s"] = round(time.perf_counter() - t0, 1)

    rows = {}
    for row in ROWS:
        mine = [r for r in runs if r["row"] == row]
        good = [r["wall_s"] for r in mine if r["ok"]]
        rows[row] = {"runs": len(mine), "verified_ok": len(good),
                     "failed": len(mine) - len(good), "wall": summarize(good),
                     "wall_all_runs": summarize([r["wall_s"] for r in mine])}
    our_phases = {
        row: {name: summarize([r["phases_s"][name] for r in runs if r["row"] == row
                               and r["ok"] and name in r.get("phases_s", {})])
              for name, _, _ in PHASES}
        for row in ("ours", "ours_cold")
    }
    stock_parts = {
        row: {part: summarize([r[f"{part}_s"] for r in runs
                               if r["row"] == row and r["ok"] and f"{part}_s" in r])
              for part in ("fence_ipmilan", "fence_compute")}
        for row in STOCK_ROWS
    }
    ours_median = rows["ours"]["wall"]["median_s"]
    stock_median = rows["stock"]["wall"]["median_s"]
    ratio = round(stock_median / ours_median, 2) if ours_median and stock_median else None
    nowait_median = rows["stock_power_wait_0"]["wall"]["median_s"]
    ratio_nowait = (round(nowait_median / ours_median, 2)
                    if ours_median and nowait_median else None)
    for r in runs:
        r["wall_s"] = round(r["wall_s"], 3)
        r["reset_s"] = round(r["reset_s"], 2)
        for part in ("fence_ipmilan_s", "fence_compute_s"):
            if part in r:
                r[part] = round(r[part], 3)

    result = {
        "benchmark": "fence_nova -o off against fence_ipmilan + fence_compute -o off",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()} (suite venv), load average "
                   f"{load_before[0]:.1f} at start",
        "host": HOST,
        "ours_command": agents.ours_kind if "agents" in locals() else None,
        "stock_command": "fence_ipmilan (stdin: ip, ipport, username, password, lanplus=1,"
                         " cipher=3, action=off) then fence_compute (stdin: auth_url, login,"
                         " passwd, tenant_name, user_domain, project_domain, region_name,"
                         " endpoint_type=internalURL, no_shared_storage=1, record_only=1,"
                         " plug, action=off) with PYTHONPATH=benchmarks/py311shim",
        "stock_versions": versions(),
        "setup": setup,
        "rows": rows,
        "stock_parts": stock_parts,
        "our_phases": our_phases,
        "ratio_stock_over_ours": ratio,
        "ratio_stock_power_wait_0_over_ours": ratio_nowait,
        "census": censuses,
        "error": error,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fence_off.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fence_off.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if error is None and all(v["failed"] == 0 for v in rows.values()) else 1


# A power phase this long once meant pyghmi's retransmit timer (0.5 to 1 s), see below.
SLOW_POWER_S = 0.6


def slow_power_note(runs: list[dict[str, Any]]) -> list[str]:
    """The runs of fence_nova whose power phase took over SLOW_POWER_S, and why."""
    power = PHASES[1][0]
    slow = [r for r in runs if r["row"].startswith("ours")
            and (r.get("phases_s") or {}).get(power, 0.0) > SLOW_POWER_S]
    if not slow:
        return []
    listed = ", ".join(f"round {r['round']} {r['row']} {r['phases_s'][power]:.2f} s"
                       for r in slow)
    return ["", f"Power phases over {SLOW_POWER_S} s: {listed}. Before fence_compute/ipmi.py"
            " read pyghmi's queued answers first, this was pyghmi waiting out its retransmit"
            " timer (0.5 to 1 s) for an answer it already had (tcpdump in the BMCs'"
            " namespace: the BMC had answered within milliseconds). With that in place, the"
            " run's stderr and the BMC's chassis.log say more."]


def markdown(result: dict[str, Any]) -> str:
    rows, census_ = result["rows"], result["census"]

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    def processes(row: str) -> str:
        found = census_.get(row.replace("_power_wait_0", "").replace("_cold", ""))
        if not found:
            return "-"
        return f"{found['processes']}: " + ", ".join(
            f"{name} x{count}" for name, count in found["programs"].items())

    names = {"ours": "fence_nova -o off (one agent), token kept between runs",
             "ours_cold": "fence_nova -o off, no token kept (a password check each run)",
             "stock": "fence_ipmilan -o off, then fence_compute -o off",
             "stock_power_wait_0": "the same, fence_ipmilan power_wait=0 (not its default)"}
    lines = [
        f"# {result['benchmark']}",
        "",
        f"Target {result['host']} of a 3-compute lab (ipmi_sim BMC, Keystone, Nova 34);"
        f" {result['machine']}; {result['date']}.",
        "Runs interleaved (order rotated each round); after each, the outcome is verified"
        " and the host restored (`Lab.reset()`).",
        "",
        f"**Ratio stock/ours (medians): {cell(result['ratio_stock_over_ours'])}**"
        f" (stock with power_wait=0: {cell(result['ratio_stock_power_wait_0_over_ours'])}).",
        "",
        "| row | runs | verified ok | wall median s | min s | max s | processes (census) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, fig in rows.items():
        lines.append(
            f"| {names[row]} | {fig['runs']} | {fig['verified_ok']} | "
            f"{cell(fig['wall']['median_s'])} | {cell(fig['wall']['min_s'])} | "
            f"{cell(fig['wall']['max_s'])} | {processes(row)} |")
    lines += ["", "Where fence_nova's time goes (median s of each phase, from the timeline"
              " it writes; the phases' medians need not add up to the wall median):", "",
              "| phase | token kept | no token kept |", "| --- | --- | --- |"]
    ours_phases = result.get("our_phases", {})
    for name, _, _ in PHASES:
        lines.append(f"| {name} | "
                     + " | ".join(cell(ours_phases.get(row, {}).get(name, {}).get("median_s"))
                                  for row in ("ours", "ours_cold")) + " |")
    lines += ["", "Stock parts (median s):", ""]
    for row, parts in result["stock_parts"].items():
        lines.append(f"* {names[row]}: fence_ipmilan {cell(parts['fence_ipmilan']['median_s'])},"
                     f" fence_compute {cell(parts['fence_compute']['median_s'])}")
    lines += ["", "Commands run (one untimed warm-up run of each under `strace -f -e execve`):", ""]
    for row in ("ours", "stock"):
        found = census_.get(row)
        if found:
            sent = "; ".join(f"`{c}`" for c in found["commands"]) or "none"
            lines.append(f"* {row} (rc {found['rc']}): {sent}")
    lines += [
        "",
        "What each checks itself: power-off, both (fence_nova polls the BMC over IPMI in"
        " process; fence_ipmilan runs `ipmitool chassis power status` until off, after a"
        " fixed 2 s `power_wait`). Nova, both (fence_nova checks the answer of its"
        " force-down and disable; fence_compute re-reads os-services until down and"
        " disabled). Checked here after every run: BMC reports off, nova-compute gone,"
        " service forced down and disabled.",
        "",
        f"Setup: {result['setup']}. Stock: {result['stock_versions']}; fence_compute with"
        " PYTHONPATH=benchmarks/py311shim (Python 3.11 has no `inspect.getargspec`).",
    ]
    lines += slow_power_note(result["runs"])
    if result["error"]:
        lines += ["", f"**Stopped early:** {result['error']}"]
    failed = [r for r in result["runs"] if not r["ok"]]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"* round {r['round']} {r['row']}: rc {r['rc']}, outcome {r['outcome']},"
                  f" stderr {r.get('stderr', '')!r}" for r in failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
