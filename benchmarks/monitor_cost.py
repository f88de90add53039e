"""Cost of one ComputeLiveness monitor, beside stock agents, in the same run.

Rows:
* ``ComputeLiveness``: our agent, installed launcher, default checks (nova-compute,
  libvirtd, the libvirt socket, degraded ovs-vswitchd), after a start.
* ``ShellLiveness``: the smallest shell OCF agent doing the same checks
  (``benchmarks/ShellLiveness``: pgrep and ``test -S``; it does not connect to the
  socket nor publish an attribute, so it is a floor, not an equal).
* ``heartbeat:anything``: the stock resource-agents agent that watches one process
  (through its pid file), the closest stock way of checking a process.

Each monitor runs as Pacemaker runs it (a fresh process with ``OCF_RESKEY_*`` set),
N times, interleaved so that machine noise hits every row alike. Wall time and
CPU time (user + system of the agent and its children) per call, median and p90.
A controller-only Pacemaker lab is started for ``attrd_updater`` and stopped after.

    python -m benchmarks.monitor_cost [--calls 200]

Writes ``benchmarks/results/monitor_cost.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lab.pacemaker import PacemakerLab

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OCF_ROOT = "/usr/lib/ocf"
LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"
FAKE_DAEMONS = ("nova-compute", "libvirtd", "ovs-vswitchd")


def run_once(argv: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """Exit code, wall seconds and CPU seconds (process and its children)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime


def _accept_forever(listener: socket.socket) -> None:
    """Play libvirtd: accept and drop, so the backlog never fills."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.close()


def ocf_env(instance: str, action_interval_ms: int, **params: str) -> dict[str, str]:
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "OCF_ROOT": OCF_ROOT,
        "OCF_RESOURCE_INSTANCE": instance,
        "OCF_RESKEY_CRM_meta_interval": str(action_interval_ms),
        "OCF_RESKEY_CRM_meta_timeout": "30000",
        "OCF_RESKEY_CRM_meta_on_node": "ctl1",
        "HA_LOGFACILITY": "daemon",
        **{f"OCF_RESKEY_{k}": v for k, v in params.items()},
    }


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="ComputeLiveness monitor cost")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    agent = Path(OCF_ROOT) / "resource.d/openstack-ha/ComputeLiveness"
    anything = Path(OCF_ROOT) / "resource.d/heartbeat/anything"
    if not agent.exists():
        sys.exit("ComputeLiveness is not installed: run openstack-ha-install first")

    work = Path(tempfile.mkdtemp(prefix="ohabench-"))
    lab = PacemakerLab(work / "pacemaker")
    daemons: list[subprocess.Popen[bytes]] = []
    listener = None
    made_libvirt_dir = False
    try:
        lab.up(computes=())
        # A symlink to sleep named like the daemon gives the process that name
        # (comm), as a real daemon has: both agents' checks see it the same way.
        for name in FAKE_DAEMONS:
            (work / name).symlink_to(shutil.which("sleep") or "/bin/sleep")
            daemons.append(subprocess.Popen([str(work / name), "100000"]))
        if not os.path.exists(LIBVIRT_SOCK):
            made_libvirt_dir = not os.path.isdir(os.path.dirname(LIBVIRT_SOCK))
            os.makedirs(os.path.dirname(LIBVIRT_SOCK), exist_ok=True)
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(LIBVIRT_SOCK)
            listener.listen(64)
            threading.Thread(target=_accept_forever, args=(listener,), daemon=True).start()

        rows = {
            "ComputeLiveness": ([str(agent)], ocf_env("bench-liveness", 10000)),
            "ShellLiveness": ([str(HERE / "ShellLiveness")], ocf_env("bench-shell", 10000)),
            "heartbeat:anything": (
                [str(anything)],
                ocf_env("bench-anything", 10000, binfile="/bin/sleep", cmdline_options="100000",
                        pidfile=str(work / "anything.pid")),
            ),
        }
        for name, (argv, env) in rows.items():
            code, _, _ = run_once([*argv, "start"], {**env, "OCF_RESKEY_CRM_meta_interval": "0"})
            if code != 0:
                sys.exit(f"{name} start failed with exit {code}")

        walls: dict[str, list[float]] = {name: [] for name in rows}
        cpus: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.calls):
            for name, (argv, env) in rows.items():
                code, wall, cpu = run_once([*argv, "monitor"], env)
                if code != 0:
                    sys.exit(f"{name} monitor failed with exit {code}")
                walls[name].append(wall)
                cpus[name].append(cpu)

        for argv, env in rows.values():
            run_once([*argv, "stop"], env)
    finally:
        if listener is not None:
            listener.close()
            os.unlink(LIBVIRT_SOCK)
            if made_libvirt_dir:
                os.rmdir(os.path.dirname(LIBVIRT_SOCK))
        for proc in daemons:
            proc.kill()
            proc.wait()
        lab.down()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "ComputeLiveness monitor cost per call",
        "calls_per_agent": args.calls,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "agents": {
            name: {"wall": summarize(walls[name]), "cpu": summarize(cpus[name])} for name in rows
        },
    }
    ours = result["agents"]["ComputeLiveness"]
    for name in ("ShellLiveness", "heartbeat:anything"):
        other = result["agents"][name]
        result[f"ratio_wall_vs_{name}"] = round(
            ours["wall"]["median_ms"] / other["wall"]["median_ms"], 2
        )
        result[f"ratio_cpu_vs_{name}"] = round(
            ours["cpu"]["median_ms"] / max(other["cpu"]["median_ms"], 0.01), 2
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "monitor_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# {result['benchmark']}",
        "",
        f"{args.calls} monitor calls per agent, interleaved; {result['machine']}; {result['date']}.",
        "",
        "| agent | wall median ms | wall p90 ms | CPU median ms | CPU p90 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, figures in result["agents"].items():
        lines.append(
            f"| {name} | {figures['wall']['median_ms']} | {figures['wall']['p90_ms']} "
            f"| {figures['cpu']['median_ms']} | {figures['cpu']['p90_ms']} |"
        )
    (RESULTS / "monitor_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
