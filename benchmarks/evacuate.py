"""Evacuating N instances from one dead host: ``nova-evacuate`` against fence-agents'
``fence_evacuate``, on the same lab and host, in the same run.

Rows (victim compute1 of a 3-compute lab: real Keystone and Nova 34, fake virt driver):

* ``ours``: ``python -m nova_evacuate.cli compute1 --json`` from this tree with
  ``max_concurrency=10``, ``per_host_concurrency=4`` (the first defaults) and
  ``poll_interval=1``. It returns when every instance has finished.
* ``stock``: ``/usr/sbin/fence_evacuate -o off`` (Debian fence-agents 4.12.1,
  python3-novaclient) with ``no_shared_storage=1`` (without it every evacuation fails on
  local storage, yet it exits 0). It sends one evacuate after another and returns once
  they are accepted, not done. It needs ``benchmarks/py311shim`` on PYTHONPATH (Python
  3.11 dropped ``inspect.getargspec``) and ``scripts/bench-deps.sh`` installed.
* ``ours_c20``: ``ours`` with ``max_concurrency=20``, ``per_host_concurrency=10``: the
  defaults since this benchmark showed the first ones leave Nova idle.
* ``ours_c20_lock``: ``ours_c20`` with ``lock_servers = always`` (every server locked before
  its evacuation and unlocked after it), where the other rows run the default
  ``when_needed`` (only servers meant to end SHUTOFF, PAUSED or SUSPENDED, none here): what
  the lock and unlock cost.

Per run: ``Lab.reset()`` (no servers, every compute up and enabled) → boot N servers on
compute1 (``lab.tiny``, image ``plain``) → all ACTIVE → 3 s settle → SIGKILL its
nova-compute → force it down and disable it (``PUT /os-services/{id}`` at 2.53, reason
``bench``: fence_evacuate refuses a host that is not down *and* disabled; our engine
keeps the reason as the operator's and writes its own marker) → **t0** → the tool, its
options on stdin (stock) or in a config file (ours): no password in argv.

Figures per run:

* ``makespan``: t0 → the last ``compute_rebuild_instance`` event finished, from the
  instance-action records in the cell DB (no polling through the API). The benchmark
  polls the DB (``instances``, every 0.5 s) only to know when to stop waiting.
* ``wall``: the tool's own run time (stock returns before the work is done).
* ``first/last request accepted``: the first/last ``evacuate`` instance action's start.
* ``Nova API calls``: lines of nova's request log (``nova.api.openstack.requestlog``)
  written between t0 and the end of the window (tool exited and every instance
  finished), by the admin user the tools authenticate as. The benchmark itself sends no
  Nova request inside the window. Keystone and Glance requests are not counted.

A run counts as ok only when the tool exited 0 and all N servers are ACTIVE on
compute2/compute3 afterwards (checked through the API, after the window); a failed
run is recorded and listed, never dropped. Rounds are interleaved, the row order
rotated each round.

    flock /tmp/ohalab.lock python -m benchmarks.evacuate [--sizes 50 100] [--rounds 3]

Writes ``benchmarks/results/evacuate.json`` and ``.md``. Brings the lab up
(``/tmp/openstack-ha-lab``) and takes it down at the end unless ``--keep-lab``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from benchmarks.fence_off import HOST, REPO, RESULTS, SHIM, VENV_PYTHON, stdin_of, versions
from lab import workload
from lab.openstack import _pg_bin
from lab.stack import Lab

ROWS = ("ours", "stock", "ours_c20", "ours_c20_lock")
TARGETS = ("compute2", "compute3")
# max_concurrency, per_host_concurrency, lock_servers
CONCURRENCY = {"ours": (10, 4, "when_needed"), "ours_c20": (20, 10, "when_needed"),
               "ours_c20_lock": (20, 10, "always")}
SETTLE_S = 3.0
DB_POLL_S = 0.5
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REQUEST = re.compile(r'nova\.api\.openstack\.requestlog \[\S+ \S+ (\S+) (\S+) [^\]]*\] \S+ '
                      r'"(\w+) (\S+)" status: (\d+)')
_UWSGI_REQUEST = re.compile(r"^\[pid: \d+\|app: ")
_ID_IN_PATH = re.compile(r"/(?:[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{32}|\d+)(?=/|$)")


_PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE host <> :'host' AND vm_state = 'active' AND task_state IS NULL),
       count(*) FILTER (WHERE vm_state = 'error')
FROM instances WHERE deleted = 0 AND uuid = ANY (string_to_array(:'ids', ','));
"""
_ACTIONS_SQL = """
SELECT extract(epoch FROM min(a.start_time) AT TIME ZONE 'UTC'),
       extract(epoch FROM max(a.start_time) AT TIME ZONE 'UTC'),
       extract(epoch FROM max(e.finish_time) AT TIME ZONE 'UTC'),
       count(DISTINCT a.instance_uuid),
       count(*) FILTER (WHERE e.result IS DISTINCT FROM 'Success'),
       count(DISTINCT a.id)
FROM instance_actions a JOIN instance_actions_events e ON e.action_id = a.id
WHERE a.action = 'evacuate' AND e.event = 'compute_rebuild_instance'
  AND a.instance_uuid = ANY (string_to_array(:'ids', ','));
"""


class CellDB:
    """Read-only queries on the lab's cell DB (nova_cell1), through psql: constant SQL on
    stdin, the values as psql variables."""

    def __init__(self, lab: Lab) -> None:
        lay = lab.openstack.layout
        self.argv = [str(_pg_bin() / "psql"), "-h", lay.bind_host, "-p", str(lay.port("postgres")),
                     "-U", "postgres", "-d", "nova_cell1", "-X", "-q", "-A", "-t", "-F", "\t",
                     "-v", "ON_ERROR_STOP=1"]

    def row(self, sql: str, ids: list[str]) -> list[str]:
        if not all(_UUID.match(i) for i in ids):
            raise ValueError("not a server uuid")
        done = subprocess.run([*self.argv, "-v", f"host={HOST}", "-v", f"ids={','.join(ids)}"],
                              input=sql, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode:
            raise RuntimeError(f"psql: {done.stderr.strip()[-300:]}")
        return done.stdout.rstrip("\n").split("\t")  # an empty last column is a value

    def progress(self, ids: list[str]) -> tuple[int, int]:
        """(finished on another host, in ERROR) among ``ids``."""
        done, error = self.row(_PROGRESS_SQL, ids)
        return int(done), int(error)

    def actions(self, ids: list[str]) -> dict[str, Any]:
        """Epoch times of the evacuations of ``ids``: first and last request accepted,
        last rebuild finished; instances rebuilt; rebuild events that did not succeed."""
        number = [float(c) if c else None for c in self.row(_ACTIONS_SQL, ids)]
        return {"first_accept": number[0], "last_accept": number[1], "last_rebuilt": number[2],
                "instances_rebuilt": int(number[3] or 0), "rebuild_not_success": int(number[4] or 0),
                "evacuate_actions": int(number[5] or 0)}


class RequestLog:
    """nova-api's log: the requests one user made between two offsets."""

    def __init__(self, lab: Lab) -> None:
        self.path = lab.openstack.layout.log_dir / "nova-api.log"

    def offset(self) -> int:
        return self.path.stat().st_size

    def count(self, start: int, end: int, user_id: str) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            f.seek(start)
            text = f.read(end - start).decode(errors="replace")
        kinds: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        others = uwsgi = 0
        for line in text.splitlines():
            if _UWSGI_REQUEST.match(line):
                uwsgi += 1
                continue
            match = _REQUEST.search(line)
            if not match:
                continue
            user, _project, method, url, status = match.groups()
            if user != user_id:
                others += 1
                continue
            path = _ID_IN_PATH.sub("/{id}", url.split("?")[0])
            kinds[f"{method} {path}"] += 1
            statuses[status] += 1
        return {"nova_api_calls": sum(kinds.values()), "by_kind": dict(kinds.most_common()),
                "by_status": dict(statuses), "other_users": others, "uwsgi_lines_all": uwsgi}


class Terminated(Exception):
    """SIGTERM: stop, take the lab down and write what was measured."""


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends at once
    raise Terminated(f"signal {signum}")


class Bench:
    def __init__(self, lab: Lab, work: Path) -> None:
        self.lab = lab
        self.work = work
        self.conn = lab.openstack.connection(compute_api_version="2.94")
        self.user_id = self.conn.current_user_id
        self.flavor = workload.flavor(self.conn, "lab.tiny")
        self.image = workload.image(self.conn, "plain")
        self.db = CellDB(lab)
        self.log = RequestLog(lab)
        auth = yaml.safe_load(lab.clouds_yaml.read_text())["clouds"]["lab"]["auth"]
        self.password = auth["password"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
        self.stock_env = {**base, "PYTHONPATH": str(SHIM)}
        self.stock_stdin = stdin_of({
            "action": "off", "plug": HOST, "auth_url": auth["auth_url"],
            "login": auth["username"], "passwd": self.password,
            "tenant_name": auth["project_name"], "user_domain": "Default",
            "project_domain": "Default", "region_name": "RegionOne",
            "endpoint_type": "internalURL", "no_shared_storage": "1",
        })
        self.ours_env = base
        self.configs = {}
        for row, (total, per_host, lock) in CONCURRENCY.items():
            path = work / f"{row}.conf"
            path.write_text(f"[cloud]\ncloud = lab\nclouds_yaml = {lab.clouds_yaml}\n"
                            f"[evacuation]\npoll_interval = 1\nmax_concurrency = {total}\n"
                            f"per_host_concurrency = {per_host}\nlock_servers = {lock}\n")
            self.configs[row] = path

    def clean(self, text: str) -> str:
        return text.replace(self.password, "***")[-1500:]

    def lab_facts(self) -> dict[str, Any]:
        """What fence_evacuate's request count depends on: flavors and images, and whether
        any is tagged evacuable (then both tools evacuate only tagged instances)."""
        flavors = list(self.conn.compute.flavors(is_public=None))
        tagged = [f.name for f in flavors
                  if str((f.extra_specs or {}).get("evacuable", "")).lower() == "true"]
        images = list(self.conn.image.images())
        tagged_images = [i.name for i in images
                         if str(i.properties.get("evacuable", "")).lower() == "true"]
        return {"flavors": len(flavors), "flavors_tagged_evacuable": tagged,
                "images": len(images), "images_tagged_evacuable": tagged_images}

    def prepare(self, n: int, label: str) -> tuple[list[str], dict[str, float]]:
        took: dict[str, float] = {}
        t = time.perf_counter()
        self.lab.reset()
        took["reset_s"] = time.perf_counter() - t
        took["trait_resync_s"] = self.schedulable()
        t = time.perf_counter()
        ids = workload.boot(self.conn, HOST, n, prefix=label, image_id=self.image.id,
                            flavor_id=self.flavor.id)
        found = workload.wait_active(self.conn, ids, timeout=120 + 6 * n)
        took["boot_s"] = time.perf_counter() - t
        elsewhere = [s.name for s in found.values() if s.compute_host != HOST]
        if elsewhere:
            raise RuntimeError(f"booted off {HOST}: {elsewhere}")
        time.sleep(SETTLE_S)
        self.lab.openstack.kill_compute(HOST)
        svc = self._service()
        for body in ({"forced_down": True}, {"status": "disabled", "disabled_reason": "bench"}):
            self._set_service(svc, body)
        return ids, took

    def _service(self) -> Any:
        (svc,) = [s for s in self.conn.compute.services(binary="nova-compute") if s.host == HOST]
        return svc

    def _set_service(self, svc: Any, body: dict[str, Any]) -> None:
        resp = self.conn.compute.put(f"/os-services/{svc.id}", json=body, microversion="2.53")
        if resp.status_code != 200:
            raise RuntimeError(f"os-services {body}: {resp.status_code} {resp.text[:300]}")

    def schedulable(self, timeout: float = 60) -> float | None:
        """Wait until the victim's resource provider has lost COMPUTE_STATUS_DISABLED.

        ``Lab.reset()`` re-enables the service while it is still forced down: nova-api then
        skips the RPC that drops the trait ("will be synchronized when the service is
        restarted", but the compute has already restarted), and the scheduler finds no room
        on the host until nova-compute's periodic resource update, ~60 s later. A disable and
        enable while the service is up makes nova-api sync it at once. None: nothing to do;
        else the seconds it took."""
        started = time.perf_counter()
        (rp,) = self.conn.placement.get(f"/resource_providers?name={HOST}",
                                        microversion="1.14").json()["resource_providers"]
        resynced = False
        while True:
            traits = self.conn.placement.get(f"/resource_providers/{rp['uuid']}/traits",
                                             microversion="1.14").json()["traits"]
            if "COMPUTE_STATUS_DISABLED" not in traits:
                return time.perf_counter() - started if resynced else None
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{HOST}: COMPUTE_STATUS_DISABLED still set after {timeout}s")
            if not resynced:
                svc = self._service()
                self._set_service(svc, {"status": "disabled", "disabled_reason": "bench resync"})
                self._set_service(svc, {"status": "enabled"})
                resynced = True
            time.sleep(0.5)

    def command(self, row: str) -> tuple[list[str], str, dict[str, str], float]:
        if row == "stock":
            return ["/usr/sbin/fence_evacuate"], self.stock_stdin, self.stock_env, 300
        return ([VENV_PYTHON, "-m", "nova_evacuate.cli", HOST, "--config-file",
                 str(self.configs[row]), "--json"], "", self.ours_env, 900)

    def _watch(self, proc: subprocess.Popen[str], row: str, ids: list[str], t0: float,
               deadline: float) -> tuple[int, float, int, int, float | None]:
        """Until the tool has exited and every instance is ACTIVE elsewhere or in ERROR (or
        the deadline): exit code, wall, done, in error, when the DB first showed all done."""
        n = len(ids)
        rc: int | None = None
        wall = 0.0
        all_done_s = None
        while True:
            now = time.perf_counter()
            if rc is None and (code := proc.poll()) is not None:
                rc, wall = code, now - t0
                # the tool is gone: what has not finished by now gets a bounded wait
                deadline = min(deadline, now + (30 if row != "stock" or code else 120 + 3 * n))
            done, error = self.db.progress(ids)
            if done == n and all_done_s is None:
                all_done_s = time.perf_counter() - t0
            if rc is not None and done + error == n:
                break
            if time.perf_counter() > deadline:
                if rc is None:
                    proc.kill()
                    proc.wait()
                    rc, wall = -9, time.perf_counter() - t0
                break
            time.sleep(DB_POLL_S)
        return rc, wall, done, error, all_done_s

    def evacuate(self, row: str, ids: list[str]) -> dict[str, Any]:
        n = len(ids)
        argv, stdin, env, timeout = self.command(row)
        out_path, err_path = self.work / "stdout", self.work / "stderr"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            start_offset = self.log.offset()
            t0_epoch, t0 = time.time(), time.perf_counter()
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    env=env, cwd=REPO, text=True)
            proc.stdin.write(stdin)
            proc.stdin.close()
            try:
                rc, wall, done, error, all_done_s = self._watch(proc, row, ids, t0, t0 + timeout)
            finally:
                if proc.poll() is None:  # an exception (SIGTERM) while the tool runs
                    proc.kill()
                    proc.wait()
            time.sleep(0.3)  # the last request lines reach the log
            end_offset = self.log.offset()
        result: dict[str, Any] = {"rc": rc, "wall_s": wall, "db_done": done, "db_error": error,
                                  "all_done_polled_s": all_done_s}
        times = self.db.actions(ids)
        for key in ("first_accept", "last_accept", "last_rebuilt"):
            value = times.pop(key)
            result[f"{key}_s"] = None if value is None else value - t0_epoch
        result["makespan_s"] = result.pop("last_rebuilt_s")
        result.update(times)
        calls = self.log.count(start_offset, end_offset, self.user_id)
        result.update(calls, api_calls_per_instance=calls["nova_api_calls"] / n)
        stdout, stderr = out_path.read_text(), err_path.read_text()
        if row != "stock":
            try:
                report = json.loads(stdout)
                result["tool_report"] = {k: report.get(k) for k in
                                         ("ok", "done", "failed", "timed_out", "ledger")}
                result["tool_report"]["attempts"] = sum(i.get("attempts") or 0
                                                        for i in report.get("instances", []))
            except ValueError:
                result["tool_report"] = None
        if rc:
            result["stderr"] = self.clean(stderr)
        return result

    def verify(self, ids: list[str]) -> dict[str, Any]:
        found = workload.servers(self.conn, ids)
        where = Counter(f"{s.status}@{s.compute_host}" for s in found.values())
        ok = len(found) == len(ids) and all(
            s.status == "ACTIVE" and s.compute_host in TARGETS for s in found.values())
        return {"verified": ok, "servers": dict(sorted(where.items()))}

    def one(self, row: str, n: int, number: int) -> dict[str, Any]:
        ids, took = self.prepare(n, f"bench-{row}-r{number}")
        result = self.evacuate(row, ids)
        result.update(self.verify(ids), row=row, size=n, round=number, **took)
        result["ok"] = result["rc"] == 0 and result["verified"]
        return result


def spread(values: list[float], digits: int = 2) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def machine(load: tuple[float, float, float]) -> dict[str, Any]:
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text()
                .splitlines() if line.startswith("MemTotal:")), None)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.machine())
    debian = Path("/etc/debian_version")
    nova = subprocess.run(["/opt/openstack-ha/lab-venv/bin/python", "-c",
                           "import importlib.metadata as m; print(m.version('nova'))"],
                          capture_output=True, text=True, check=False).stdout.strip()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                            "nova_evacuate"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_mib": mem,
            "os": f"Debian {debian.read_text().strip()}" if debian.exists() else platform.platform(),
            "python": platform.python_version(), "nova": nova or None,
            "load_average_at_start": [round(x, 2) for x in load],
            "ours_code": f"{REPO} at {head}" + (" (nova_evacuate/ with uncommitted changes)"
                                                 if dirty else "")}


def summarize(runs: list[dict[str, Any]], sizes: list[int], rows: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sizes:
        per: dict[str, Any] = {}
        for row in rows:
            mine = [r for r in runs if r["row"] == row and r["size"] == n]
            good = [r for r in mine if r["ok"]]

            def pick(key: str, good: list[dict[str, Any]] = good) -> list[float]:
                return [r[key] for r in good if r.get(key) is not None]

            per[row] = {"runs": len(mine), "ok": len(good), "failed": len(mine) - len(good),
                        "makespan_s": spread(pick("makespan_s")), "wall_s": spread(pick("wall_s")),
                        "last_accept_s": spread(pick("last_accept_s")),
                        "first_accept_s": spread(pick("first_accept_s")),
                        "nova_api_calls": spread(pick("nova_api_calls"), 1),
                        "api_calls_per_instance": spread(pick("api_calls_per_instance"))}
        stock = per.get("stock")
        ratios = {}
        for row in rows:
            if row == "stock" or stock is None:
                continue
            ratios[f"stock/{row}"] = {
                "makespan": ratio(stock["makespan_s"]["median"], per[row]["makespan_s"]["median"]),
                "api_calls_per_instance": ratio(stock["api_calls_per_instance"]["median"],
                                                per[row]["api_calls_per_instance"]["median"])}
        out[str(n)] = {"rows": per, "ratios": ratios}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="nova-evacuate against fence_evacuate")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--budget", type=float, default=5400,
                        help="start no new round after this many seconds (the lab is shared)")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args()
    if shutil.which("/usr/sbin/fence_evacuate") is None:
        sys.exit("/usr/sbin/fence_evacuate is missing: run scripts/bench-deps.sh")
    if subprocess.run(["/usr/bin/python3", "-c", "import novaclient, keystoneclient"],
                      capture_output=True, check=False).returncode:
        sys.exit("python3-novaclient/python3-keystoneclient missing: run scripts/bench-deps.sh")

    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="ohabench-evacuate-"))
    lab = Lab()
    runs: list[dict[str, Any]] = []
    setup: dict[str, float] = {}
    facts: dict[str, Any] = {}
    error = None
    load_before = os.getloadavg()
    started = time.perf_counter()
    failures = 0
    try:
        t = time.perf_counter()
        lab.up(3)
        setup["lab_up_s"] = round(time.perf_counter() - t, 1)
        bench = Bench(lab, work)
        facts = bench.lab_facts()
        for number in range(args.rounds):
            if time.perf_counter() - started > args.budget:
                error = f"time budget of {args.budget:.0f}s reached after {number} rounds"
                break
            shift = number % len(args.rows)
            order = [*args.rows[shift:], *args.rows[:shift]]
            for n in args.sizes:
                for row in order:
                    try:
                        result = bench.one(row, n, number)
                        failures = 0
                    except Terminated:
                        raise
                    except Exception as exc:  # this run failed; the next starts from a reset
                        failures += 1
                        if failures > 1:
                            raise
                        print(f"round {number} n={n} {row}: {exc}", file=sys.stderr)
                        result = {"row": row, "size": n, "round": number, "ok": False, "rc": None,
                                  "error": f"{type(exc).__name__}: {exc}"}
                        runs.append(result)
                        continue
                    runs.append(result)
                    print(f"round {number} n={n} {row}: rc={result['rc']} ok={result['ok']}"
                          f" makespan={result['makespan_s'] or 0:.2f}s wall={result['wall_s']:.2f}s"
                          f" api={result['nova_api_calls']} servers={result['servers']}"
                          f" boot={result['boot_s']:.0f}s reset={result['reset_s']:.0f}s",
                          flush=True)
        t = time.perf_counter()
        lab.reset()
        setup["final_reset_s"] = round(time.perf_counter() - t, 1)
    except Exception as exc:  # recorded, not hidden; the teardown still runs
        error = f"{type(exc).__name__}: {exc}"
        print(f"aborted: {error}", file=sys.stderr)
    finally:
        if not args.keep_lab:
            t = time.perf_counter()
            lab.down()
            setup["teardown_s"] = round(time.perf_counter() - t, 1)
        shutil.rmtree(work, ignore_errors=True)

    for r in runs:
        for key, value in r.items():
            if isinstance(value, float):
                r[key] = round(value, 3)
    result = {
        "benchmark": "nova-evacuate against fence_evacuate -o off: evacuating one dead host",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "flock /tmp/ohalab.lock " + " ".join([VENV_PYTHON, "-m", "benchmarks.evacuate",
                                                          *sys.argv[1:]]),
        "machine": machine(load_before),
        "host": HOST, "sizes": args.sizes, "rounds": args.rounds, "rows": args.rows,
        "ours_command": f"{VENV_PYTHON} -m nova_evacuate.cli {HOST} --config-file F --json"
                        " (cwd: this tree; F: [cloud] cloud=lab, clouds_yaml;"
                        " [evacuation] poll_interval=1, max_concurrency, per_host_concurrency,"
                        " lock_servers)",
        "concurrency": {row: {"max_concurrency": c[0], "per_host_concurrency": c[1],
                              "lock_servers": c[2]} for row, c in CONCURRENCY.items()},
        "stock_command": "/usr/sbin/fence_evacuate (stdin: action=off, plug, auth_url, login,"
                         " passwd, tenant_name, user_domain, project_domain, region_name,"
                         " endpoint_type=internalURL, no_shared_storage=1) with"
                         " PYTHONPATH=benchmarks/py311shim",
        "stock_versions": versions(),
        "lab_facts": facts,
        "setup": setup,
        "total_s": round(time.perf_counter() - started, 1),
        "summary": summarize(runs, args.sizes, args.rows),
        "error": error,
        "runs": runs,
    }
    if not runs:  # nothing measured: keep the files of the last run that measured something
        print(markdown(result))
        print("no run finished; results files left as they were", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evacuate.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "evacuate.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if error is None and all(r["ok"] for r in runs) else 1


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]

    def cell(fig: dict[str, Any]) -> str:
        if fig["median"] is None:
            return "-"
        return f"{fig['median']} ({fig['min']}–{fig['max']})"

    def plain(value: Any) -> str:
        return "-" if value is None else str(value)

    names = {"ours": "nova-evacuate (10 / 4 per host)", "stock": "fence_evacuate -o off",
             "ours_c20": "nova-evacuate (20 / 10 per host)",
             "ours_c20_lock": "nova-evacuate (20 / 10 per host, lock_servers=always)"}
    lines = [
        f"# {result['benchmark']}",
        "",
        f"Victim {result['host']} of a 3-compute lab (Keystone, Nova {plain(m['nova'])},"
        " fake virt driver, 1 conductor, 1 scheduler); flavor lab.tiny; "
        f"{m['cpu']}, {m['cores']} cores, {m['mem_mib']} MiB, {m['os']}, Python {m['python']},"
        f" load average {m['load_average_at_start'][0]} at start; {result['date']}.",
        f"{result['rounds']} rounds, rows interleaved (order rotated each round); every run on a"
        " fresh set of servers booted on the victim, whose nova-compute is then SIGKILLed,"
        " forced down and disabled before t0.",
        "",
        "Medians (min–max) over the runs that were verified ok. makespan: t0 (tool start) → last"
        " `compute_rebuild_instance` finished (Nova's instance-action records). wall: the tool's"
        " run time. Nova API calls: nova-api's request log, t0 → all done, the tools' user only.",
        "",
    ]
    for size, fig in result["summary"].items():
        lines += [
            f"## {size} instances",
            "",
            "| row | runs | ok | makespan s | tool wall s | last evacuate accepted s |"
            " Nova API calls | calls per instance |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row, r in fig["rows"].items():
            lines.append(f"| {names[row]} | {r['runs']} | {r['ok']} | {cell(r['makespan_s'])} |"
                         f" {cell(r['wall_s'])} | {cell(r['last_accept_s'])} |"
                         f" {cell(r['nova_api_calls'])} | {cell(r['api_calls_per_instance'])} |")
        lines.append("")
        for name, rt in fig["ratios"].items():
            lines.append(f"* **{name}** (medians): makespan {plain(rt['makespan'])},"
                         f" API calls per instance {plain(rt['api_calls_per_instance'])}")
        lines.append("")
    kinds: dict[str, Counter[str]] = {}
    for r in result["runs"]:
        if r["ok"]:
            kinds.setdefault(f"{r['row']} n={r['size']}", Counter()).update(r["by_kind"])
    counted: dict[str, int] = Counter(f"{r['row']} n={r['size']}" for r in result["runs"] if r["ok"])
    lines += ["Nova requests by kind (mean per run, ok runs):", ""]
    for key, counter in kinds.items():
        lines.append(f"* {key}: " + ", ".join(f"`{k}` {v / counted[key]:.1f}"
                                               for k, v in counter.most_common()))
    resynced = sum(r.get("trait_resync_s") is not None for r in result["runs"])
    lines += [
        "",
        f"Before {resynced} of {len(result['runs'])} runs the victim's provider still had"
        " COMPUTE_STATUS_DISABLED after `Lab.reset()` (the service was enabled while forced"
        " down); the benchmark disabled and re-enabled it so the boot could land there.",
        "",
        f"Ours: `{result['ours_command']}`; {m['ours_code']}.",
        f"Stock: `{result['stock_command']}`; {result['stock_versions']}.",
        f"Lab: {result['lab_facts']} (fence_evacuate lists every flavor's extra specs, one GET"
        " per flavor). Setup: " + str(result["setup"]) + f"; total {result['total_s']} s.",
        "",
        f"Command: `{result['command']}`",
    ]
    if result["error"]:
        lines += ["", f"**Stopped early:** {result['error']}"]
    failed = [r for r in result["runs"] if not r["ok"]]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"* round {r['round']} n={r['size']} {r['row']}: rc {r['rc']}, servers"
                  f" {r.get('servers')}, db done/error {r.get('db_done')}/{r.get('db_error')},"
                  f" {r.get('error') or ''} stderr {r.get('stderr', '')!r}" for r in failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
