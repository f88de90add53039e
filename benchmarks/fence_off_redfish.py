"""``fence_nova -o off`` over Redfish against the stock Redfish level, in the same run.

The same method as ``benchmarks/fence_off.py`` (whose helpers it uses): target compute1 of a
3-compute lab with its Pacemaker lab, outcome checked after every run and undone, runs
alternating with the order flipped each round. The BMC is the lab's Redfish face
(``lab/redfish_bmc.py``: sushy-tools' emulator over HTTPS, the lab's CA), the same BMC whose
IPMI face ``fence_off.py`` uses, so the two tables differ only by the protocol.

* ``ours``: ``fence_nova power_driver=redfish`` (sushy, a Redfish session, ``ForceOff`` then
  ``PowerState`` polled until ``Off``), then Nova and the ledger; Keystone is asked while the
  BMC works; token kept between runs.
* ``stock``: fence-agents' ``fence_redfish`` ``off`` (basic auth in every request; fence-agents'
  sequence: status, ForceOff, poll every second), then ``fence_compute`` ``off`` as in
  ``fence_off.py``. It verifies the certificate through ``REQUESTS_CA_BUNDLE`` (the lab's CA),
  as ours does through ``ssl_ca_file``: neither switches verification off.

    flock /tmp/ohalab.lock python -m benchmarks.fence_off_redfish [--rounds 5]

Writes ``benchmarks/results/fence_off_redfish.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.fence_off import (
    HOST,
    RESULTS,
    SHIM,
    ours_argv,
    outcome,
    restore,
    run,
    stdin_of,
    summarize,
    versions,
)
from lab.pacemaker import PacemakerLab
from lab.stack import Lab

ROWS = ("ours", "stock")


class Agents:
    def __init__(self, lab: Lab, tokens: Path) -> None:
        redfish = lab.hosts()[HOST]["redfish"]
        url = urlsplit(redfish["url"])
        self.secrets = [redfish["password"]]
        auth_url = lab.openstack.layout.url("keystone", "/v3")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
        self.ours_argv, self.ours_kind = ours_argv()
        self.ours_env = dict(base)
        keystone = {"auth_url": auth_url, "tenant_name": "admin", "user_domain": "Default",
                    "project_domain": "Default", "region_name": "RegionOne",
                    "endpoint_type": "internalURL"}
        self.ours_stdin = stdin_of({
            "action": "off", "port": HOST, "nodename": HOST, **keystone,
            "username": "admin", "password": "admin",
            "power_driver": "redfish", "ip": url.hostname or "", "ipport": str(url.port or 443),
            "redfish_system": redfish["system"], "redfish_auth": "session",
            "ssl_ca_file": redfish["ca_file"], "bmc_username": redfish["username"],
            "bmc_password": redfish["password"], "token_cache": str(tokens),
        })
        self.redfish_env = {**base, "REQUESTS_CA_BUNDLE": redfish["ca_file"]}
        self.redfish_stdin = stdin_of({
            "action": "off", "ip": url.hostname or "", "ipport": str(url.port or 443),
            "username": redfish["username"], "password": redfish["password"],
            "systems_uri": redfish["system"],
        })
        self.compute_env = {**base, "PYTHONPATH": str(SHIM)}
        self.compute_stdin = stdin_of({
            "action": "off", "plug": HOST, **keystone, "login": "admin", "passwd": "admin",
            "no_shared_storage": "1", "record_only": "1",
        })

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text[-1500:]

    def ours(self) -> dict[str, Any]:
        rc, wall, err = run(self.ours_argv, self.ours_stdin, self.ours_env)
        return {"rc": rc, "wall_s": wall, "stderr": self.clean(err) if rc else ""}

    def stock(self) -> dict[str, Any]:
        started = time.perf_counter()
        rc1, wall1, err1 = run(["/usr/sbin/fence_redfish"], self.redfish_stdin, self.redfish_env)
        result: dict[str, Any] = {"fence_redfish_rc": rc1, "fence_redfish_s": wall1}
        rc2 = None
        if rc1 == 0:  # a topology level stops at its first failing device
            rc2, wall2, err2 = run(["/usr/sbin/fence_compute"], self.compute_stdin,
                                   self.compute_env)
            result.update(fence_compute_rc=rc2, fence_compute_s=wall2)
            if rc2:
                result["stderr"] = self.clean(err2)
        else:
            result["stderr"] = self.clean(err1)
        result["wall_s"] = time.perf_counter() - started
        result["rc"] = rc1 if rc1 else rc2
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description="fence_nova -o off over Redfish against the"
                                     " stock Redfish level")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=420,
                        help="start no new round after this many seconds (the lab is shared)")
    args = parser.parse_args()
    for tool in ("/usr/sbin/fence_redfish", "/usr/sbin/fence_compute"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/bench-deps.sh")

    work = Path(tempfile.mkdtemp(prefix="ohabench-redfish-"))
    lab = Lab(work / "lab")
    cluster = PacemakerLab(work / "pacemaker")
    runs: list[dict[str, Any]] = []
    setup: dict[str, float] = {}
    error = None
    load_before = os.getloadavg()
    started = time.perf_counter()
    agents = None
    try:
        t0 = time.perf_counter()
        lab.up(3, redfish=True)
        setup["openstack_lab_up_s"] = round(time.perf_counter() - t0, 1)
        cluster.up((HOST,))
        agents = Agents(lab, work / "tokens")
        for row in ROWS:  # warm-up, untimed: page cache, the token cache's first token
            getattr(agents, row)()
            restore(lab, cluster)
        for number in range(args.rounds):
            if time.perf_counter() - started > args.budget:
                error = f"time budget of {args.budget:.0f}s reached after {number} rounds"
                break
            order = ROWS if number % 2 == 0 else tuple(reversed(ROWS))
            for row in order:
                result = getattr(agents, row)()
                result.update(row=row, round=number, outcome=outcome(lab))
                result["ok"] = result["rc"] == 0 and result["outcome"]["verified"]
                result["reset_s"] = round(restore(lab, cluster), 2)
                result["wall_s"] = round(result["wall_s"], 3)
                runs.append(result)
                print(f"round {number} {row}: rc={result['rc']} wall={result['wall_s']:.2f}s"
                      f" verified={result['outcome']['verified']}", flush=True)
    except Exception as exc:  # recorded, not hidden; the teardown still runs
        error = f"{type(exc).__name__}: {exc}"
        print(f"aborted: {error}", file=sys.stderr)
    finally:
        try:
            cluster.down()
        finally:
            lab.down()
            shutil.rmtree(work, ignore_errors=True)

    rows = {}
    for row in ROWS:
        mine = [r for r in runs if r["row"] == row]
        good = [r["wall_s"] for r in mine if r["ok"]]
        rows[row] = {"runs": len(mine), "verified_ok": len(good), "failed": len(mine) - len(good),
                     "wall": summarize(good)}
    parts = {part: summarize([r[f"{part}_s"] for r in runs
                              if r["row"] == "stock" and r["ok"] and f"{part}_s" in r])
             for part in ("fence_redfish", "fence_compute")}
    ours_median, stock_median = rows["ours"]["wall"]["median_s"], rows["stock"]["wall"]["median_s"]
    result = {
        "benchmark": "fence_nova -o off (power_driver=redfish) against fence_redfish +"
                     " fence_compute -o off",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, load average {load_before[0]:.1f} at start",
        "host": HOST,
        "ours_command": agents.ours_kind if agents else None,
        "stock_versions": {**versions(), **_versions("python3-requests")},
        "setup": setup,
        "rows": rows,
        "stock_parts": parts,
        "ratio_stock_over_ours": (round(stock_median / ours_median, 2)
                                  if ours_median and stock_median else None),
        "error": error,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fence_off_redfish.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fence_off_redfish.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if error is None and all(v["failed"] == 0 for v in rows.values()) else 1


def _versions(*packages: str) -> dict[str, str]:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *packages],
                          capture_output=True, text=True, check=False)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def markdown(result: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value}"

    rows, parts = result["rows"], result["stock_parts"]
    names = {"ours": "fence_nova -o off, power_driver=redfish (one agent), token kept",
             "stock": "fence_redfish -o off, then fence_compute -o off"}
    lines = [
        "# fence_nova -o off over Redfish against fence_redfish + fence_compute",
        "",
        f"{result['date']}, {result['machine']}. Target {result['host']}: the lab's BMC, its"
        " Redfish face (sushy-tools' emulator, HTTPS with the lab's CA; a power-off kills the"
        " node's processes before it answers), real Keystone and Nova. Each run's outcome is"
        " checked (BMC off, nova-compute gone, service forced down and disabled) and undone.",
        "",
        "| row | runs | verified | median s | min s | max s |",
        "|---|---|---|---|---|---|",
    ]
    for row, data in rows.items():
        wall = data["wall"]
        lines.append(f"| {names[row]} | {data['runs']} | {data['verified_ok']} |"
                     f" {cell(wall['median_s'])} | {cell(wall['min_s'])} | {cell(wall['max_s'])} |")
    lines += ["", "Stock parts (median s): fence_redfish "
              f"{cell(parts['fence_redfish']['median_s'])}, fence_compute "
              f"{cell(parts['fence_compute']['median_s'])}.",
              f"Stock over ours: {cell(result['ratio_stock_over_ours'])}.",
              f"Ours ran as: {result['ours_command']}.",
              "Stock versions: " + ", ".join(f"{k} {v}" for k, v in
                                              result["stock_versions"].items()) + "."]
    if result["error"]:
        lines += ["", f"Error: {result['error']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
