"""Evacuating one dead host of a cloud of 3, 100 and 1,000 compute hosts: ``nova-evacuate``'s
time to its first evacuate, its dry run and its makespan as the cloud grows, in one run.

The lab is benchmarks/evacuate.py's (3 real compute hosts, real Keystone, Nova 34 and
Placement, fake virt driver). It is grown to N hosts by adding N-3 fake ones, ``scale-0001``
upward, through the interfaces a real host's arrival goes through wherever one exists:

* Placement, through its REST API (microversion 1.29, the lab's admin session): one resource
  provider per fake host, named as a compute node's is (its host name) and with the uuid of
  its compute node row (below), carrying compute3's provider's inventories (VCPU, MEMORY_MB,
  DISK_GB: total, units, step, allocation ratio; the reserved amount is the benchmark's, see
  below) and traits (COMPUTE_STATUS_DISABLED left out).
* Nova compute services. Nova has no API that creates one (a nova-compute creates its own
  when it starts), so rows go into the cell DB (nova_cell1, through psql as the lab runs
  it): a ``services`` row (compute3's binary, topic and version; enabled, not forced down,
  a new uuid) and a ``compute_nodes`` row copied from compute3's (host and
  hypervisor_hostname the fake host, uuid its provider's; compute3's usage figures as they
  stand, which only the hypervisors API shows: Placement has the usage), left unmapped so
  that the scheduler's periodic host discovery maps it to the cell as it maps a new real
  host. The columns are those of Nova's models (nova/db/main/models.py in the lab venv).
  A fake host has no nova-compute reporting: Nova's DB servicegroup driver calls a service
  up while its last report (``last_seen_up``) is within ``service_down_time`` (10 s in the
  lab's nova.conf), so a thread of the benchmark does to every fake service row what each
  nova-compute's report does to its own (``report_count`` + 1, ``last_seen_up`` and
  ``updated_at`` now), every third of that time, from before the first fake host exists
  until the teardown.
* Aggregates: 10 Nova host aggregates (``scale-agg-01`` ..) through ``os-aggregates``, each
  fake host added to one in turn (``add_host``); Nova mirrors every membership into
  Placement, so the fake providers also sit in 10 Placement aggregates.

What this reproduces is what the engine reads before its first evacuate: ``GET
/os-services`` lists N compute services, N-1 of them up (the gates, the brake's denominator
and the capacity's target list count them all), ``GET /os-aggregates`` carries the fake
hosts, and Placement's provider list and allocation candidates carry N providers. What it
does not: nothing consumes a fake host's RPC topic and no virt driver stands behind it, so
nothing may ever be scheduled or evacuated there (a rebuild sent to one would wait for
ever); and the control plane does not carry 1,000 nova-computes' periodic reports and RPC:
nova-api and Placement answer the engine otherwise quiet. The fake hosts stay enabled and
up, as a real cloud's are; what keeps every placement off them is their capacity,
``--fake-capacity``:

* ``nearly-full`` (the default): all but one unit of each resource reserved (``reserved =
  total - 1``), so a fake provider has 1 × its allocation ratio free of each. It still answers
  the engine's capacity read (allocation candidates for VCPU:1,MEMORY_MB:1, whose provider
  summaries are the whole cloud's capacity), so that read carries N providers as on a real
  cloud, but none has room for the smallest server the lab boots (lab.tiny, 64 MiB): the
  plan weighs them and picks none, and Placement never offers one to the scheduler.
* ``none``: ``reserved = total`` (Placement allows it from 1.26): no room at all, so the
  fake providers are left out of the allocation candidates and the capacity read answers
  the 3 real providers whatever N: cheaper than on a real cloud of N hosts.

Checked at each size before its runs (the benchmark stops otherwise): every fake service
listed, up and enabled; every fake provider present, in a Placement aggregate and in the
capacity read (``nearly-full``) or out of it (``none``); none among the allocation
candidates for lab.tiny. Every run's servers are verified to land on compute2 or compute3.

Per size (ascending: fake hosts are added to reach each) and round, as
benchmarks/evacuate.py does: ``Lab.reset()`` → boot ``--instances`` servers on compute1
(lab.tiny, image ``plain``) → all ACTIVE → 3 s settle → SIGKILL its nova-compute → force it
down and disable it (2.53, reason ``bench``) → the dry run → **t0** → ``python -m
nova_evacuate.cli compute1 --config-file F --json`` from this tree (F: evacuate.py's
``ours_c20`` options, the defaults: poll_interval 1, max_concurrency 20, per_host_concurrency
10; ``--capacity-check`` adds that option).

Figures per run:

* ``dry run``: the wall time of ``nova-evacuate --dry-run compute1 --config-file F --json``,
  which makes the gates' reads and every read the engine makes before its first evacuate;
  run just before t0, the servers still on the dead host, so its plan is the run's.
* ``first evacuate``: t0 → the first ``evacuate`` instance action's start (cell DB).
* ``claimed``: t0 → the engine's ``claimed`` timeline event (start-up, Keystone, the gates,
  the brake, the ledger's claim; the run's timeline is a file of its own); ``claimed → first
  evacuate``: the reads before the first evacuate, the plan and the first server's lock.
* ``makespan``: t0 → the last ``compute_rebuild_instance`` event finished (cell DB).
* Requests: lines of nova-api's and Placement's request logs from the tool's user (the lab's
  admin; Nova's own calls to Placement are its service user's) in the dry run's window and
  in the run's (t0 → the tool exited and every instance finished), and of the run's those
  answered before the first evacuate began (the logs' time stamps, in the machine's zone as
  the lab's processes have no TZ); by kind, with nova-api's own time per request and
  Placement's response bytes. The benchmark sends no API request inside either window.

A run is ok when its dry run and the run both exit 0 and every server is ACTIVE on compute2
or compute3 afterwards; a failed run is recorded and listed, never dropped.

    flock /tmp/ohalab.lock python -m benchmarks.scale [--hosts 3 100 1000] [--instances 50] \
        [--rounds 2] [--keep-lab]

Writes ``benchmarks/results/scale.json`` and ``.md``. Brings the lab up and down as
evacuate.py does (``--keep-lab`` leaves it up). What it added is removed at the end, after a
failure too, and at the start (an earlier run's leftovers: the lab's databases outlive the
lab): every fake service through Nova's ``DELETE /os-services/{id}`` (which also takes its
host out of its aggregates and deletes its provider and host mapping), then the aggregates,
then whatever named ``scale-*`` is left: providers through Placement, rows (Nova's
soft-deleted ones included) from nova_cell1 and nova_api. What is left after that is in the
results (``teardown.left``). A SIGTERM stops the run and tears down; a second one ends at
once, and the next run's start sweeps what it left.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from benchmarks.evacuate import CONCURRENCY, Bench, Terminated, machine, spread
from benchmarks.fence_off import HOST, REPO, RESULTS, VENV_PYTHON
from lab.openstack import _pg_bin
from lab.stack import Lab
from nova_evacuate.nova import PLACEMENT_MICROVERSION, SMALLEST_REQUEST
from openstack_ha import timeline

T = TypeVar("T")

REAL_HOSTS = ("compute1", "compute2", "compute3")
TARGETS = ("compute2", "compute3")
# The real host whose provider, service and compute node the fake ones copy: not the victim.
MODEL_HOST = "compute3"
# Every fake host, provider and aggregate is named so; the teardown removes by this prefix.
PREFIX = "scale-"
AGGREGATES = 10
WORKERS = 16
# Nova's services by uuid (PUT/DELETE /os-services/{uuid}), aggregates with their uuid (2.41)
COMPUTE_MICROVERSION = "2.53"
CONFIG_ROW = "ours_c20"  # evacuate.py's row whose options are the defaults
CAPACITY_MODES = ("nearly-full", "none")
CAPACITY_CHECKS = ("before", "alongside", "off")
INVENTORY_FIELDS = ("total", "reserved", "min_unit", "max_unit", "step_size", "allocation_ratio")
TOOL_TIMEOUT_S = 900
DRY_RUN_TIMEOUT_S = 300
ROWS_PER_INSERT = 500  # fake hosts per psql call: its variables stay far below argv's limits
GOAL_S = 1.0
FIGURES = ("dry_run_s", "first_evacuate_s", "makespan_s", "claimed_s", "claim_to_first_evacuate_s")

_PSQL_VALUE = re.compile(r"^[A-Za-z0-9_.,-]*$")
_LOG_REQUEST = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ \w+ (?P<logger>[\w.]+)\.requestlog "
    r"\[\S+ \S+ (?P<user>\S+) \S+ [^\]]*\] \S+ \"(?P<method>\w+) (?P<url>\S+)\" "
    r"status: (?P<status>\d+) len: (?P<length>\S+)(?: microversion: \S+)?(?: time: (?P<time>[\d.]+))?")
_LOGGERS = {"nova.api.openstack": "nova", "placement": "placement"}
_ID_IN_PATH = re.compile(r"/(?:[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{32}|\d+)(?=/|$)")

# nova_cell1. The columns are nova/db/main/models.py's (Service, ComputeNode; the migrations
# create no others). deleted, report_count, disabled, forced_down and version have only
# Python-side defaults in Nova's models, so they are given here.
_INSERT_SQL = """
BEGIN;
INSERT INTO services (created_at, updated_at, last_seen_up, host, "binary", topic, report_count,
                      disabled, disabled_reason, forced_down, version, uuid, deleted)
SELECT now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', fake.host,
       model."binary", model.topic, 1, false, NULL, false, model.version, fake.uuid, 0
FROM unnest(string_to_array(:'hosts', ','), string_to_array(:'service_uuids', ','))
     AS fake(host, uuid)
CROSS JOIN (SELECT "binary", topic, version FROM services
            WHERE host = :'model' AND "binary" = 'nova-compute' AND deleted = 0) AS model;
INSERT INTO compute_nodes (created_at, updated_at, deleted, service_id, host, uuid,
                           hypervisor_hostname, vcpus, memory_mb, local_gb, vcpus_used,
                           memory_mb_used, local_gb_used, hypervisor_type, hypervisor_version,
                           cpu_info, disk_available_least, free_ram_mb, free_disk_gb,
                           current_workload, running_vms, host_ip, supported_instances,
                           metrics, pci_stats, extra_resources, stats, numa_topology,
                           ram_allocation_ratio, cpu_allocation_ratio, disk_allocation_ratio,
                           mapped)
SELECT now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', 0,
       CASE WHEN model.service_id IS NULL THEN NULL ELSE s.id END, fake.host, fake.uuid,
       fake.host, model.vcpus, model.memory_mb, model.local_gb, model.vcpus_used,
       model.memory_mb_used, model.local_gb_used, model.hypervisor_type,
       model.hypervisor_version, model.cpu_info, model.disk_available_least,
       model.free_ram_mb, model.free_disk_gb, model.current_workload, model.running_vms,
       model.host_ip, model.supported_instances, model.metrics, model.pci_stats,
       model.extra_resources, model.stats, model.numa_topology, model.ram_allocation_ratio,
       model.cpu_allocation_ratio, model.disk_allocation_ratio, 0
FROM unnest(string_to_array(:'hosts', ','), string_to_array(:'node_uuids', ','))
     AS fake(host, uuid)
JOIN services AS s ON s.host = fake.host AND s."binary" = 'nova-compute' AND s.deleted = 0
CROSS JOIN (SELECT * FROM compute_nodes WHERE host = :'model' AND deleted = 0) AS model;
COMMIT;
SELECT count(*) FROM services AS s
JOIN compute_nodes AS c ON c.host = s.host AND c.deleted = 0
WHERE starts_with(s.host, :'prefix') AND s."binary" = 'nova-compute' AND s.deleted = 0;
"""
# What each nova-compute's report does to its own row (nova/db/main/api.py service_update:
# a higher report_count sets last_seen_up; updated_at is what os-services shows).
_HEARTBEAT_SQL = """
UPDATE services SET report_count = report_count + 1, last_seen_up = now() AT TIME ZONE 'UTC',
                    updated_at = now() AT TIME ZONE 'UTC'
WHERE starts_with(host, :'prefix') AND "binary" = 'nova-compute' AND deleted = 0;
"""
# Rows Nova left (soft-deleted ones: deleted <> 0) or did not delete (deleted = 0).
_DELETE_CELL_SQL = """
WITH nodes AS (DELETE FROM compute_nodes WHERE starts_with(host, :'prefix') RETURNING deleted),
     services AS (DELETE FROM services WHERE starts_with(host, :'prefix') RETURNING deleted)
SELECT (SELECT count(*) FROM nodes), (SELECT count(*) FROM nodes WHERE deleted = 0),
       (SELECT count(*) FROM services), (SELECT count(*) FROM services WHERE deleted = 0);
"""
_DELETE_API_SQL = """
WITH mappings AS (DELETE FROM host_mappings WHERE starts_with(host, :'prefix') RETURNING 1),
     members AS (DELETE FROM aggregate_hosts WHERE starts_with(host, :'prefix')
                 OR aggregate_id IN (SELECT id FROM aggregates WHERE starts_with(name, :'prefix'))
                 RETURNING 1),
     metadata AS (DELETE FROM aggregate_metadata WHERE aggregate_id IN
                  (SELECT id FROM aggregates WHERE starts_with(name, :'prefix')) RETURNING 1)
SELECT (SELECT count(*) FROM mappings), (SELECT count(*) FROM members),
       (SELECT count(*) FROM metadata);
WITH aggregates_gone AS (DELETE FROM aggregates WHERE starts_with(name, :'prefix') RETURNING 1)
SELECT count(*) FROM aggregates_gone;
"""
_LEFT_CELL_SQL = """
SELECT (SELECT count(*) FROM services WHERE starts_with(host, :'prefix')),
       (SELECT count(*) FROM compute_nodes WHERE starts_with(host, :'prefix'));
"""
_LEFT_API_SQL = """
SELECT (SELECT count(*) FROM host_mappings WHERE starts_with(host, :'prefix')),
       (SELECT count(*) FROM aggregate_hosts WHERE starts_with(host, :'prefix')),
       (SELECT count(*) FROM aggregates WHERE starts_with(name, :'prefix'));
"""
_MAPPED_SQL = "SELECT count(*) FROM host_mappings WHERE starts_with(host, :'prefix');\n"


# ------------------------------------------------------------------------- pure helpers


def parse_sizes(values: Sequence[int], real: int = len(REAL_HOSTS)) -> list[int]:
    """The cloud sizes to measure, ascending, each once: at least the lab's real hosts, and
    at most 9,999 fake ones (their names have four digits)."""
    sizes = sorted(set(values))
    if not sizes:
        raise ValueError("no size given")
    for n in sizes:
        if n < real:
            raise ValueError(f"{n} hosts: the lab has {real} real ones, the smallest size")
        if n - real > 9999:
            raise ValueError(f"{n} hosts: at most {real + 9999}")
    return sizes


def fake_host_name(index: int) -> str:
    """The ``index``-th fake host (from 1)."""
    return f"{PREFIX}{index:04d}"


def fake_hosts_between(have: int, want: int) -> list[str]:
    """The fake hosts to add to go from ``have`` fake hosts to ``want``."""
    return [fake_host_name(i) for i in range(have + 1, want + 1)]


def aggregate_name(number: int) -> str:
    return f"{PREFIX}agg-{number:02d}"


def aggregate_of(index: int, count: int = AGGREGATES) -> str:
    """The aggregate of the ``index``-th fake host (from 1): each in turn."""
    return aggregate_name((index - 1) % count + 1)


def fake_inventories(real: dict[str, dict[str, Any]], mode: str) -> dict[str, dict[str, Any]]:
    """A fake provider's inventories from a real one's (``GET .../inventories``): the same
    fields, the reserved amount the ``--fake-capacity`` mode's (the module's docstring)."""
    if mode not in CAPACITY_MODES:
        raise ValueError(f"unknown capacity mode {mode!r}")
    out: dict[str, dict[str, Any]] = {}
    for resource_class, inventory in real.items():
        total = int(inventory["total"])
        copy = {k: inventory[k] for k in INVENTORY_FIELDS if k in inventory}
        copy["reserved"] = total if mode == "none" else max(0, total - 1)
        out[resource_class] = copy
    return out


def flavor_resources(vcpus: int, ram_mb: int, disk_gb: int) -> str:
    """Placement's ``resources`` query for a flavor (a zero amount is not a request)."""
    amounts = (("VCPU", vcpus), ("MEMORY_MB", ram_mb), ("DISK_GB", disk_gb))
    return ",".join(f"{rc}:{amount}" for rc, amount in amounts if amount > 0)


def heartbeat_interval(nova_conf: str, default_down_s: float = 60.0) -> tuple[float, float]:
    """(service_down_time from nova.conf's text, or Nova's default; a third of it, within
    1..10 s): how often the fake services must report to stay up, with room to spare."""
    match = re.search(r"^\s*service_down_time\s*=\s*(\d+)\s*$", nova_conf, re.MULTILINE)
    down = float(match.group(1)) if match else default_down_s
    return down, max(1.0, min(10.0, down / 3))


def psql_list(values: Iterable[str]) -> str:
    """Values for one psql variable, comma-separated (split back by string_to_array)."""
    values = list(values)
    if any("," in v or not _PSQL_VALUE.match(v) for v in values):
        raise ValueError("a value for psql has characters other than letters, digits, _ . -")
    return ",".join(values)


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


@dataclass(frozen=True)
class Request:
    """One line of nova-api's or Placement's request log."""

    at: float  # epoch seconds (the log's local time)
    service: str  # "nova" or "placement"
    user: str
    kind: str  # "GET /v2.1/os-services": ids out, query out
    status: int
    length: int | None  # response bytes
    seconds: float | None  # nova-api's own time for it (Placement logs none)


def parse_requests(text: str) -> list[Request]:
    """The authenticated requests in a piece of nova-api's or Placement's log."""
    found = []
    for line in text.splitlines():
        match = _LOG_REQUEST.match(line)
        if not match or match["logger"] not in _LOGGERS:
            continue
        path = _ID_IN_PATH.sub("/{id}", match["url"].split("?")[0])
        found.append(Request(
            at=datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f").timestamp(),
            service=_LOGGERS[match["logger"]], user=match["user"],
            kind=f"{match['method']} {path}", status=int(match["status"]),
            length=int(match["length"]) if match["length"].isdigit() else None,
            seconds=float(match["time"]) if match["time"] else None))
    return found


def count_requests(requests: Iterable[Request], user_id: str,
                   until: float | None = None) -> dict[str, Any]:
    """What ``user_id`` asked (answered before ``until``, when given): calls by kind, their
    response bytes and nova-api's time by kind, errors; and how many lines were others'."""
    requests = list(requests)
    mine = [r for r in requests if r.user == user_id and (until is None or r.at < until)]
    kinds = Counter(r.kind for r in mine)
    size: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for r in mine:
        size[r.kind] += r.length or 0
        if r.seconds is not None:
            seconds[r.kind] += r.seconds
    return {"calls": len(mine), "by_kind": dict(kinds.most_common()),
            "bytes_by_kind": dict(size), "seconds_by_kind": {k: round(v, 3) for k, v in seconds.items()},
            "errors": sum(r.status >= 400 for r in mine),
            "other_users": sum(r.user != user_id for r in requests)}


def first_event_at(events: Iterable[timeline.Event], name: str, host: str,
                   after: float) -> float | None:
    """When the first event ``name`` of ``host`` at or after ``after`` was recorded."""
    times = [e.ts for e in events if e.event == name and e.host == host and e.ts >= after]
    return min(times) if times else None


def plan_targets(plan: dict[str, Any]) -> dict[str, int]:
    """How many moves of a dry run's plan (``--json``) name each target ("None": the
    scheduler's pick)."""
    return dict(Counter(str(m.get("target")) for m in plan.get("moves", [])))


def rig_problems(facts: dict[str, Any], mode: str) -> list[str]:
    """What is wrong with the fake hosts at one size (:meth:`ScaleRig.check`'s facts): each
    one listed and up, a provider in an aggregate, in the capacity read as ``mode`` says,
    and never with room for the lab's flavor."""
    fake = facts["fake_hosts"]
    expected = {"fake_services": fake, "fake_services_up": fake, "fake_providers": fake,
                "fake_in_capacity_read": fake if mode == "nearly-full" else 0,
                "fake_with_room_for_flavor": 0}
    if fake:
        expected |= {"fake_hosts_in_nova_aggregates": fake, "fake_providers_in_aggregates": fake}
    return [f"{key} is {facts.get(key)}, expected {value}" for key, value in expected.items()
            if facts.get(key) != value]


def rounded(value: Any, digits: int = 3) -> Any:
    """``value`` with every float in it rounded (dicts and lists walked)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def _dig(run: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(run, dict):
            return None
        run = run.get(key)  # type: ignore[assignment]
    return run


def summarize(runs: list[dict[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """Per size: runs, ok runs, and the spread of each figure over the ok runs."""
    out: dict[str, Any] = {}
    for n in sizes:
        mine = [r for r in runs if r.get("hosts") == n]
        good = [r for r in mine if r.get("ok")]

        def pick(*keys: str, good: list[dict[str, Any]] = good) -> list[float]:
            return [v for r in good if (v := _dig(r, *keys)) is not None]

        fig: dict[str, Any] = {"runs": len(mine), "ok": len(good)}
        for key in FIGURES:
            fig[key] = spread(pick(key))
        fig["dry_run_nova_calls"] = spread(pick("dry_run", "nova", "calls"), 1)
        fig["dry_run_placement_calls"] = spread(pick("dry_run", "placement", "calls"), 1)
        fig["allocation_candidates_bytes"] = spread(
            pick("dry_run", "placement", "bytes_by_kind", "GET /allocation_candidates"), 0)
        out[str(n)] = fig
    return out


def goal(summary: dict[str, Any], goal_s: float = GOAL_S) -> dict[str, Any]:
    """The largest size's median first evacuate against the smallest's."""
    sizes = sorted(int(n) for n in summary)
    small, large = sizes[0], sizes[-1]
    small_s = summary[str(small)]["first_evacuate_s"]["median"]
    large_s = summary[str(large)]["first_evacuate_s"]["median"]
    difference = None
    if large != small and small_s is not None and large_s is not None:
        difference = round(large_s - small_s, 2)
    return {"small": small, "large": large, "small_s": small_s, "large_s": large_s,
            "difference_s": difference, "goal_s": goal_s,
            "met": None if difference is None else difference <= goal_s,
            "as_stated": small == 3 and large >= 1000}


def goal_line(g: dict[str, Any]) -> str:
    head = "**Goal: 1,000 hosts within 1 s of 3 hosts (first evacuate, medians):**"
    if g["difference_s"] is None:
        return f"{head} not measured (ok runs at two sizes needed)."
    line = (f"{head} {g['small']:,} hosts {g['small_s']} s, {g['large']:,} hosts {g['large_s']} s:"
            f" difference {g['difference_s']:+.2f} s, {'met' if g['met'] else 'not met'}")
    if not g["as_stated"]:
        line += f" (measured between {g['small']:,} and {g['large']:,} hosts, not 3 and 1,000)"
    return line + "."


def cell(fig: dict[str, Any], size: bool = False) -> str:
    """A table cell: median (min–max), or - when nothing was measured; ``size``: whole
    numbers with thousands separators."""
    if fig["median"] is None:
        return "-"
    shown = {k: f"{fig[k]:,.0f}" if size else str(fig[k]) for k in ("median", "min", "max")}
    if fig["min"] == fig["max"]:
        return shown["median"]
    return f"{shown['median']} ({shown['min']}–{shown['max']})"


def kinds_line(runs: list[dict[str, Any]], service: str) -> str:
    """The dry runs' requests to ``service`` by kind: mean count per run, with the mean
    bytes (Placement) or nova-api's mean time (Nova) per run."""
    counts: Counter[str] = Counter()
    size: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for r in runs:
        seen = r["dry_run"][service]
        counts.update(seen["by_kind"])
        size.update(seen["bytes_by_kind"])
        seconds.update(seen["seconds_by_kind"])
    parts = []
    for kind, count in counts.most_common():
        extra = (f"{seconds[kind] / len(runs):.3f} s" if service == "nova"
                 else f"{size[kind] / len(runs):,.0f} B")
        parts.append(f"`{kind}` {count / len(runs):.1f} ({extra})")
    return ", ".join(parts) or "none"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    summary = result["summary"]
    lines = [
        f"# {result['benchmark']}",
        "",
        f"Victim {result['host']} of a lab with 3 real compute hosts (Keystone, Nova"
        f" {m.get('nova') or '-'} and Placement, fake virt driver, 1 conductor, 1 scheduler) and"
        f" fake ones up to each size; {result['instances']} lab.tiny instances per run;"
        f" fake hosts' capacity `{result['fake_capacity']}`; capacity_check"
        f" `{result['capacity_check']}`; {m['cpu']}, {m['cores']} cores, {m['mem_mib']} MiB,"
        f" {m['os']}, Python {m['python']}, load average {m['load_average_at_start'][0]} at"
        f" start; {result['date']}.",
        "",
        "Medians (min–max) over the ok runs. dry run: `nova-evacuate --dry-run` wall time (every"
        " read before the first evacuate, and the gates'). first evacuate: t0 (tool start) →"
        " the first `evacuate` instance action. makespan: t0 → the last"
        " `compute_rebuild_instance` finished.",
        "",
        "| hosts | dry-run s | first evacuate s | makespan s | ok runs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size, fig in summary.items():
        lines.append(f"| {int(size):,} | {cell(fig['dry_run_s'])} | {cell(fig['first_evacuate_s'])}"
                     f" | {cell(fig['makespan_s'])} | {fig['ok']}/{fig['runs']} |")
    lines += ["", goal_line(result["goal"]), "",
              "| hosts | t0 → claimed s | claimed → first evacuate s | dry-run Nova requests |"
              " dry-run Placement requests | allocation candidates bytes | fake hosts added |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for size, fig in summary.items():
        added = result["population"].get(size, {})
        grown = (f"{added.get('added', 0)} in {added['total_s']} s" if added.get("total_s") is not None
                 else str(added.get("added", 0)))
        lines.append(f"| {int(size):,} | {cell(fig['claimed_s'])} |"
                     f" {cell(fig['claim_to_first_evacuate_s'])} | {cell(fig['dry_run_nova_calls'])} |"
                     f" {cell(fig['dry_run_placement_calls'])} |"
                     f" {cell(fig['allocation_candidates_bytes'], size=True)} | {grown} |")
    lines += ["", "Dry-run requests by kind (mean per ok run; Nova: nova-api's own time,"
              " Placement: response bytes):", ""]
    for size in summary:
        good = [r for r in result["runs"] if r.get("ok") and str(r["hosts"]) == size]
        if good:
            lines.append(f"* {int(size):,} hosts: Nova {kinds_line(good, 'nova')};"
                         f" Placement {kinds_line(good, 'placement')}")
    lines += ["", "Fake hosts at each size (checked before its runs):", ""]
    for size, facts in result["rig_checks"].items():
        lines.append(f"* {int(size):,} hosts: {facts}")
    hb = result.get("heartbeat") or {}
    lines += [
        "",
        f"Fake services' reports: every {result['heartbeat_interval_s']} s (Nova's"
        f" service_down_time {result['service_down_time_s']} s): {hb.get('beats')} made, longest"
        f" gap {hb.get('max_gap_s')} s, {hb.get('failures')} failed"
        + (f" (last: {hb['last_error']})" if hb.get("last_error") else "") + ".",
        f"Leftovers swept at start: {result.get('leftovers_at_start')}.",
        f"Teardown: {result.get('teardown')}.",
        f"Setup: {result['setup']}; total {result['total_s']} s.",
        f"Tool: `{result['ours_command']}`; {m['ours_code']}.",
        "",
        f"Command: `{result['command']}`",
    ]
    if result["error"]:
        lines += ["", f"**Stopped early:** {result['error']}"]
    failed = [r for r in result["runs"] if not r.get("ok")]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"* {r['hosts']:,} hosts, round {r['round']}: rc {r.get('rc')}, dry run rc"
                  f" {_dig(r, 'dry_run', 'rc')}, servers {r.get('servers')}, db done/error"
                  f" {r.get('db_done')}/{r.get('db_error')}, {r.get('error') or ''} stderr"
                  f" {r.get('stderr', '')!r}" for r in failed]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- the lab's side


def _answer(response: Any, what: str) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


def parallel(fn: Callable[[T], Any], items: Sequence[T], workers: int) -> list[str]:
    """``fn`` over ``items`` in ``workers`` threads, every item tried; the errors, as text."""
    def one(item: T) -> str | None:
        try:
            fn(item)
        except Exception as exc:  # collected: the caller decides
            return f"{type(exc).__name__}: {exc}"[:400]
        return None

    with ThreadPoolExecutor(workers, thread_name_prefix="scale") as pool:
        return [e for e in pool.map(one, items) if e]


def _all_through(errors: list[str], count: int, what: str) -> None:
    if errors:
        raise RuntimeError(f"{what}: {len(errors)} of {count} failed; first: {errors[0]}")


class Psql:
    """SQL on the lab's PostgreSQL through psql, as the lab runs it: constant SQL on stdin,
    the values as psql variables (names, uuids, numbers and commas only)."""

    def __init__(self, lab: Lab) -> None:
        lay = lab.openstack.layout
        self.argv = [str(_pg_bin() / "psql"), "-h", lay.bind_host, "-p", str(lay.port("postgres")),
                     "-U", "postgres", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]

    def run(self, sql: str, database: str, timeout: float = 60, **variables: str) -> list[list[str]]:
        """The rows every statement printed, in order."""
        argv = [*self.argv, "-d", database]
        for name, value in variables.items():
            if not _PSQL_VALUE.match(value):
                raise ValueError(f"psql variable {name}: characters other than letters, digits, _ . , -")
            argv += ["-v", f"{name}={value}"]
        done = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode:
            raise RuntimeError(f"psql on {database}: {done.stderr.strip()[-300:]}")
        return [line.split("\t") for line in done.stdout.splitlines() if line]


class Heartbeat:
    """Every ``interval`` s, in a thread: what each nova-compute's report does to its row,
    done to every fake service at once."""

    def __init__(self, db: Psql, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: float | None = None
        self.beats = 0
        self.failures = 0
        self.max_gap_s = 0.0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            try:
                self.db.run(_HEARTBEAT_SQL, "nova_cell1", timeout=max(10.0, 2 * self.interval),
                            prefix=PREFIX)
                now = time.monotonic()
                if self._last is not None:
                    self.max_gap_s = max(self.max_gap_s, now - self._last)
                self._last = now
                self.beats += 1
            except Exception as exc:  # counted and reported; the next beat tries again
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._stop.wait(self.interval):
                return

    def stats(self) -> dict[str, Any]:
        return {"interval_s": round(self.interval, 2), "beats": self.beats,
                "failures": self.failures, "max_gap_s": round(self.max_gap_s, 2),
                "last_error": self.last_error}


class ScaleRig:
    """The fake hosts: Placement providers, Nova service and compute node rows, Nova
    aggregates (mirrored into Placement by Nova), and their removal."""

    def __init__(self, lab: Lab, conn: Any, capacity: str, workers: int = WORKERS) -> None:
        self.conn = conn
        self.db = Psql(lab)
        self.capacity = capacity
        self.workers = workers
        self.hosts: list[str] = []  # fake hosts added, in order
        self.aggregates: dict[str, dict[str, Any]] = {}  # name → {"id", "uuid"}
        self._model: dict[str, Any] | None = None
        conf = (lab.openstack.layout.etc / "nova" / "nova.conf").read_text()
        self.service_down_time_s, interval = heartbeat_interval(conf)
        self.heartbeat = Heartbeat(self.db, interval)

    def placement(self, method: str, path: str, body: Any = None) -> Any:
        response = self.conn.placement.request(path, method, json=body,
                                               microversion=PLACEMENT_MICROVERSION)
        return _answer(response, f"Placement {method} {path.split('?')[0]}")

    def compute(self, method: str, path: str, body: Any = None) -> Any:
        response = self.conn.compute.request(path, method, json=body,
                                             microversion=COMPUTE_MICROVERSION)
        return _answer(response, f"Nova {method} {path.split('?')[0]}")

    # ------------------------------------------------------------------ growing

    def model(self) -> dict[str, Any]:
        """compute3's provider: its inventories and traits, what every fake one copies."""
        if self._model is None:
            found = self.placement("GET", "/resource_providers?"
                                   + urlencode({"name": MODEL_HOST}))["resource_providers"]
            if len(found) != 1:
                raise RuntimeError(f"{len(found)} resource providers named {MODEL_HOST}")
            rp = found[0]["uuid"]
            inventories = self.placement("GET", f"/resource_providers/{rp}/inventories")
            traits = self.placement("GET", f"/resource_providers/{rp}/traits")["traits"]
            self._model = {"uuid": rp, "inventories": inventories["inventories"],
                           "traits": sorted(t for t in traits if t != "COMPUTE_STATUS_DISABLED")}
        return self._model

    def grow_to(self, n: int) -> dict[str, Any]:
        """Add fake hosts until the cloud has ``n`` compute hosts; seconds per step."""
        new = fake_hosts_between(len(self.hosts), n - len(REAL_HOSTS))
        took: dict[str, Any] = {"added": len(new)}
        if not new:
            return took
        started = time.perf_counter()
        model = self.model()
        # a compute node's uuid is its provider's; its service has one of its own
        node_uuids = {h: str(uuid.uuid4()) for h in new}
        inventories = fake_inventories(model["inventories"], self.capacity)

        def provider(host: str) -> None:
            rp = node_uuids[host]
            created = self.placement("POST", "/resource_providers", {"name": host, "uuid": rp})
            stocked = self.placement("PUT", f"/resource_providers/{rp}/inventories", {
                "resource_provider_generation": created["generation"], "inventories": inventories})
            if model["traits"]:
                self.placement("PUT", f"/resource_providers/{rp}/traits", {
                    "resource_provider_generation": stocked["resource_provider_generation"],
                    "traits": model["traits"]})

        t = time.perf_counter()
        _all_through(parallel(provider, new, self.workers), len(new), "creating providers")
        took["providers_s"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        count = None
        for part in chunks(new, ROWS_PER_INSERT):
            rows = self.db.run(_INSERT_SQL, "nova_cell1", hosts=psql_list(part),
                               service_uuids=psql_list(str(uuid.uuid4()) for _ in part),
                               node_uuids=psql_list(node_uuids[h] for h in part),
                               model=MODEL_HOST, prefix=PREFIX)
            count = int(rows[-1][0])
        if count != len(self.hosts) + len(new):
            raise RuntimeError(f"{count} fake services with a compute node in nova_cell1,"
                               f" expected {len(self.hosts) + len(new)}")
        took["services_s"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        self._join_aggregates(new, len(self.hosts))
        took["aggregates_s"] = round(time.perf_counter() - t, 1)
        self.hosts += new
        took["total_s"] = round(time.perf_counter() - started, 1)
        return took

    def _join_aggregates(self, new: list[str], before: int) -> None:
        for number in range(1, AGGREGATES + 1):
            name = aggregate_name(number)
            if name not in self.aggregates:
                made = self.compute("POST", "/os-aggregates", {"aggregate": {"name": name}})
                self.aggregates[name] = {"id": made["aggregate"]["id"],
                                         "uuid": made["aggregate"]["uuid"]}

        def join(item: tuple[int, str]) -> None:
            index, host = item
            aggregate = self.aggregates[aggregate_of(index)]["id"]
            self.compute("POST", f"/os-aggregates/{aggregate}/action", {"add_host": {"host": host}})

        members = list(enumerate(new, before + 1))
        _all_through(parallel(join, members, self.workers), len(members), "adding hosts to aggregates")

    # ------------------------------------------------------------------ checking

    def fake_services_up(self) -> int:
        services = self.compute("GET", "/os-services?binary=nova-compute")["services"]
        return sum(s["host"].startswith(PREFIX) and s["state"] == "up" for s in services)

    def check(self, flavor: Any) -> dict[str, Any]:
        """What Nova and Placement show of the fake hosts; raises when it is not what the
        module's docstring says (:func:`rig_problems`)."""
        services = self.compute("GET", "/os-services?binary=nova-compute")["services"]
        fake_services = [s for s in services if s["host"].startswith(PREFIX)]
        providers = self.placement("GET", "/resource_providers")["resource_providers"]
        fake_uuids = {p["uuid"] for p in providers if p["name"].startswith(PREFIX)}
        facts: dict[str, Any] = {
            "fake_hosts": len(self.hosts), "compute_services": len(services),
            "fake_services": len(fake_services),
            "fake_services_up": sum(s["state"] == "up" and s["status"] == "enabled"
                                    and not s["forced_down"] for s in fake_services),
            "providers": len(providers), "fake_providers": len(fake_uuids)}
        if self.aggregates:
            nova_aggregates = self.compute("GET", "/os-aggregates")["aggregates"]
            facts["fake_hosts_in_nova_aggregates"] = sum(
                h.startswith(PREFIX) for a in nova_aggregates for h in a.get("hosts") or ())
            member_of = "in:" + ",".join(a["uuid"] for a in self.aggregates.values())
            members = self.placement("GET", "/resource_providers?" + urlencode(
                {"member_of": member_of}))["resource_providers"]
            facts["fake_providers_in_aggregates"] = sum(p["uuid"] in fake_uuids for p in members)
        smallest = self.placement("GET", "/allocation_candidates?"
                                  + urlencode({"resources": SMALLEST_REQUEST}))
        facts["fake_in_capacity_read"] = len(fake_uuids & set(smallest["provider_summaries"]))
        wanted = flavor_resources(flavor.vcpus, flavor.ram, flavor.disk)
        room = self.placement("GET", "/allocation_candidates?" + urlencode({"resources": wanted}))
        facts["fake_with_room_for_flavor"] = len(fake_uuids & set(room["provider_summaries"]))
        facts["fake_host_mappings"] = int(self.db.run(_MAPPED_SQL, "nova_api", prefix=PREFIX)[0][0])
        problems = rig_problems(facts, self.capacity)
        if problems:
            raise RuntimeError("fake hosts not as intended: " + "; ".join(problems))
        return facts

    # ------------------------------------------------------------------ removing

    def sweep(self) -> dict[str, Any]:
        """Remove every fake host, provider and aggregate (by the name prefix): through Nova
        and Placement first, then the rows left. A step that fails is recorded and the next
        one still runs. Returns what each step removed, the errors and what is left."""
        report: dict[str, Any] = {"errors": []}
        started = time.perf_counter()
        for name, step in (("services", self._delete_services),
                           ("aggregates", self._delete_aggregates),
                           ("providers", self._delete_providers),
                           ("rows", self._delete_rows), ("left", self.left)):
            try:
                report[name] = step()
            except Exception as exc:  # recorded; the next step still runs
                report["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:400])
        report["seconds"] = round(time.perf_counter() - started, 1)
        self.hosts, self.aggregates = [], {}
        return report

    def _delete_services(self) -> dict[str, Any]:
        """Nova's own removal of a compute service: out of its aggregates, its provider and
        host mapping deleted, its rows soft-deleted."""
        services = self.compute("GET", "/os-services?binary=nova-compute")["services"]
        fakes = [s["id"] for s in services if s["host"].startswith(PREFIX)]
        errors = parallel(lambda sid: self.compute("DELETE", f"/os-services/{sid}"), fakes,
                          self.workers)
        return {"found": len(fakes), "failed": len(errors), "first_error": errors[0] if errors else None}

    def _delete_aggregates(self) -> dict[str, Any]:
        found = [a for a in self.compute("GET", "/os-aggregates")["aggregates"]
                 if a["name"].startswith(PREFIX)]
        errors: list[str] = []
        for aggregate in found:
            path = f"/os-aggregates/{aggregate['id']}"
            errors += parallel(lambda host, path=path: self.compute(
                "POST", f"{path}/action", {"remove_host": {"host": host}}),
                list(aggregate.get("hosts") or ()), self.workers)
            try:
                self.compute("DELETE", path)
            except RuntimeError as exc:
                errors.append(str(exc)[:400])
        return {"found": len(found), "failed": len(errors), "first_error": errors[0] if errors else None}

    def _delete_providers(self) -> dict[str, Any]:
        providers = self.placement("GET", "/resource_providers")["resource_providers"]
        fakes = [p["uuid"] for p in providers if p["name"].startswith(PREFIX)]
        errors = parallel(lambda rp: self.placement("DELETE", f"/resource_providers/{rp}"), fakes,
                          self.workers)
        return {"found": len(fakes), "failed": len(errors), "first_error": errors[0] if errors else None}

    def _delete_rows(self) -> dict[str, int]:
        nodes, live_nodes, services, live_services = map(
            int, self.db.run(_DELETE_CELL_SQL, "nova_cell1", prefix=PREFIX)[0])
        api = self.db.run(_DELETE_API_SQL, "nova_api", prefix=PREFIX)
        mappings, members, metadata = map(int, api[0])
        return {"compute_nodes": nodes, "compute_nodes_not_deleted_by_nova": live_nodes,
                "services": services, "services_not_deleted_by_nova": live_services,
                "host_mappings": mappings, "aggregate_hosts": members,
                "aggregate_metadata": metadata, "aggregates": int(api[1][0])}

    def left(self) -> dict[str, Any]:
        services, nodes = map(int, self.db.run(_LEFT_CELL_SQL, "nova_cell1", prefix=PREFIX)[0])
        mappings, members, aggregates = map(int, self.db.run(_LEFT_API_SQL, "nova_api",
                                                             prefix=PREFIX)[0])
        providers = sum(p["name"].startswith(PREFIX) for p in
                        self.placement("GET", "/resource_providers")["resource_providers"])
        counts = {"services": services, "compute_nodes": nodes, "host_mappings": mappings,
                  "aggregate_hosts": members, "aggregates": aggregates, "providers": providers}
        return {**counts, "clean": not any(counts.values())}


class Runner:
    """One measured run at the current size: prepare (evacuate.py's), dry run, the run."""

    def __init__(self, lab: Lab, bench: Bench, rig: ScaleRig, work: Path, instances: int,
                 capacity_check: str | None) -> None:
        self.bench = bench
        self.rig = rig
        self.work = work
        self.instances = instances
        log_dir = lab.openstack.layout.log_dir
        self.logs = {"nova": log_dir / "nova-api.log", "placement": log_dir / "placement.log"}
        total, per_host = CONCURRENCY[CONFIG_ROW]
        self.config_text = (f"[cloud]\ncloud = lab\nclouds_yaml = {lab.clouds_yaml}\n"
                            f"[evacuation]\npoll_interval = 1\nmax_concurrency = {total}\n"
                            f"per_host_concurrency = {per_host}\n"
                            + (f"capacity_check = {capacity_check}\n" if capacity_check else ""))
        self.config = work / "scale.conf"
        self.config.write_text(self.config_text)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}

    def command(self, *extra: str) -> list[str]:
        return [VENV_PYTHON, "-m", "nova_evacuate.cli", HOST, *extra, "--config-file",
                str(self.config), "--json"]

    def offsets(self) -> dict[str, int]:
        return {name: path.stat().st_size for name, path in self.logs.items()}

    def requests(self, start: dict[str, int], end: dict[str, int]) -> dict[str, list[Request]]:
        seen = {}
        for name, path in self.logs.items():
            with open(path, "rb") as f:
                f.seek(start[name])
                seen[name] = parse_requests(f.read(end[name] - start[name]).decode(errors="replace"))
        return seen

    def dry_run(self) -> dict[str, Any]:
        start = self.offsets()
        started = time.perf_counter()
        try:
            done = subprocess.run(self.command("--dry-run"), cwd=REPO, capture_output=True,
                                  text=True, timeout=DRY_RUN_TIMEOUT_S, check=False,
                                  env={**self.env, timeline.ENV: ""})  # records nothing
            rc, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            rc, stdout, stderr = -9, "", f"timed out after {DRY_RUN_TIMEOUT_S} s"
        wall = time.perf_counter() - started
        time.sleep(0.3)  # the last request lines reach the logs
        seen = self.requests(start, self.offsets())
        user = self.bench.user_id
        result: dict[str, Any] = {"rc": rc, "wall_s": wall,
                                  "nova": count_requests(seen["nova"], user),
                                  "placement": count_requests(seen["placement"], user)}
        try:
            plan = json.loads(stdout)
            result.update(gates=plan.get("gates"), moves=len(plan.get("moves", [])),
                          targets=plan_targets(plan), capacity_ok=plan.get("capacity_ok"))
        except ValueError:
            result["plan"] = None
        if rc:
            result["stderr"] = self.bench.clean(stderr)
        return result

    def evacuate(self, ids: list[str], label: str) -> dict[str, Any]:
        n = len(ids)
        timeline_path = self.work / f"timeline-{label}.jsonl"
        out_path, err_path = self.work / "stdout", self.work / "stderr"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            start = self.offsets()
            t0_epoch, t0 = time.time(), time.perf_counter()
            proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, env={**self.env, timeline.ENV: str(timeline_path)},
                                    cwd=REPO, text=True)
            try:
                # evacuate.py's wait: until the tool exited and every server is done (cell DB)
                rc, wall, done, error, all_done_s = self.bench._watch(
                    proc, CONFIG_ROW, ids, t0, t0 + TOOL_TIMEOUT_S)
            finally:
                if proc.poll() is None:  # an exception (SIGTERM) while the tool runs
                    proc.kill()
                    proc.wait()
            time.sleep(0.3)  # the last request lines reach the logs
            end = self.offsets()
        result: dict[str, Any] = {"rc": rc, "wall_s": wall, "db_done": done, "db_error": error,
                                  "all_done_polled_s": all_done_s}
        times = self.bench.db.actions(ids)
        first = times.pop("first_accept")
        for key, value in (("first_evacuate_s", first), ("last_accept_s", times.pop("last_accept")),
                           ("makespan_s", times.pop("last_rebuilt"))):
            result[key] = None if value is None else value - t0_epoch
        result.update(times)
        events = timeline.read(str(timeline_path))[0] if timeline_path.exists() else []
        claimed = first_event_at(events, "claimed", HOST, t0_epoch - 1)
        result["claimed_s"] = None if claimed is None else claimed - t0_epoch
        result["claim_to_first_evacuate_s"] = (None if claimed is None or first is None
                                               else first - claimed)
        seen = self.requests(start, end)
        user = self.bench.user_id
        result["requests"] = {name: count_requests(r, user) for name, r in seen.items()}
        result["requests_before_first_evacuate"] = None if first is None else {
            name: count_requests(r, user, until=first) for name, r in seen.items()}
        result["nova_api_calls_per_instance"] = result["requests"]["nova"]["calls"] / n
        try:
            report = json.loads(out_path.read_text())
            result["tool_report"] = {k: report.get(k) for k in
                                     ("ok", "done", "failed", "timed_out", "capacity_checked",
                                      "shortfall", "ledger")}
        except ValueError:
            result["tool_report"] = None
        if rc:
            result["stderr"] = self.bench.clean(err_path.read_text())
        return result

    def one(self, n: int, number: int) -> dict[str, Any]:
        label = f"h{n}-r{number}"
        ids, took = self.bench.prepare(self.instances, f"bench-scale-{label}")
        up_before = self.rig.fake_services_up()  # before the dry run's window
        dry = self.dry_run()
        result = self.evacuate(ids, label)
        result.update(self.bench.verify(ids), hosts=n, round=number, dry_run=dry,
                      dry_run_s=dry["wall_s"], fake_services_up_before=up_before, **took)
        result["ok"] = result["rc"] == 0 and dry["rc"] == 0 and result["verified"]
        return result


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends at once
    raise Terminated(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="nova-evacuate's first evacuate, dry run and makespan at 3 to 1,000 hosts")
    parser.add_argument("--hosts", type=int, nargs="+", default=[3, 100, 1000],
                        help="cloud sizes in compute hosts (3 real ones, the rest fake)")
    parser.add_argument("--instances", type=int, default=50, help="servers on the dead host")
    parser.add_argument("--rounds", type=int, default=2, help="runs per size")
    parser.add_argument("--fake-capacity", choices=CAPACITY_MODES, default="nearly-full",
                        help="what the fake providers have free (see the module's docstring)")
    parser.add_argument("--capacity-check", choices=CAPACITY_CHECKS, default=None,
                        help="[evacuation] capacity_check for the tool (default: its own)")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="parallel requests while adding and removing fake hosts")
    parser.add_argument("--budget", type=float, default=5400,
                        help="start no new run after this many seconds (the lab is shared)")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args()
    try:
        sizes = parse_sizes(args.hosts)
    except ValueError as exc:
        parser.error(str(exc))
    if min(args.instances, args.rounds, args.workers) < 1:
        parser.error("--instances, --rounds and --workers take 1 or more")

    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="ohabench-scale-"))
    lab = Lab()
    rig: ScaleRig | None = None
    runner: Runner | None = None
    runs: list[dict[str, Any]] = []
    population: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    setup: dict[str, float] = {}
    leftovers: dict[str, Any] | None = None
    teardown: dict[str, Any] | None = None
    heartbeat: dict[str, Any] | None = None
    error = None
    load_before = os.getloadavg()
    started = time.perf_counter()
    failures = 0
    try:
        t = time.perf_counter()
        lab.up(len(REAL_HOSTS))
        setup["lab_up_s"] = round(time.perf_counter() - t, 1)
        bench = Bench(lab, work)
        rig = ScaleRig(lab, bench.conn, args.fake_capacity, args.workers)
        leftovers = rig.sweep()
        rig.heartbeat.start()
        runner = Runner(lab, bench, rig, work, args.instances, args.capacity_check)
        for n in sizes:
            population[str(n)] = rig.grow_to(n)
            checks[str(n)] = rig.check(bench.flavor)
            print(f"{n} hosts: {population[str(n)]}; {checks[str(n)]}", flush=True)
            for number in range(args.rounds):
                if time.perf_counter() - started > args.budget:
                    raise TimeoutError(f"time budget of {args.budget:.0f}s reached")
                try:
                    result = runner.one(n, number)
                    failures = 0
                except Terminated:
                    raise
                except Exception as exc:  # this run failed; the next starts from a reset
                    failures += 1
                    if failures > 1:
                        raise
                    print(f"{n} hosts, round {number}: {exc}", file=sys.stderr)
                    result = {"hosts": n, "round": number, "ok": False, "rc": None,
                              "error": f"{type(exc).__name__}: {exc}"}
                runs.append(result)
                if "first_evacuate_s" in result:
                    print(f"{n} hosts, round {number}: ok={result['ok']} rc={result['rc']}"
                          f" dry-run={result['dry_run_s']:.2f}s (rc {result['dry_run']['rc']})"
                          f" first-evacuate={result['first_evacuate_s'] or 0:.2f}s"
                          f" makespan={result['makespan_s'] or 0:.2f}s servers={result['servers']}",
                          flush=True)
        t = time.perf_counter()
        lab.reset()
        setup["final_reset_s"] = round(time.perf_counter() - t, 1)
    except Exception as exc:  # recorded, not hidden; the teardown still runs
        error = f"{type(exc).__name__}: {exc}"
        print(f"aborted: {error}", file=sys.stderr)
    finally:
        if rig is not None:
            rig.heartbeat.stop()
            heartbeat = rig.heartbeat.stats()
            try:
                teardown = rig.sweep()
            except Exception as exc:  # a SIGTERM during it: the next run's start sweeps
                teardown = {"errors": [f"{type(exc).__name__}: {exc}"]}
            print(f"teardown: {teardown}", flush=True)
        if not args.keep_lab:
            t = time.perf_counter()
            try:
                lab.down()
            except Exception as exc:
                print(f"lab down: {type(exc).__name__}: {exc}", file=sys.stderr)
            setup["teardown_s"] = round(time.perf_counter() - t, 1)
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(runs, sizes)
    result = {
        "benchmark": "nova-evacuate on a growing cloud: one dead host among 3 to 1,000 compute hosts",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "flock /tmp/ohalab.lock " + " ".join([VENV_PYTHON, "-m", "benchmarks.scale",
                                                          *sys.argv[1:]]),
        "machine": machine(load_before),
        "host": HOST, "hosts": sizes, "instances": args.instances, "rounds": args.rounds,
        "fake_capacity": args.fake_capacity, "capacity_check": args.capacity_check or "default",
        "ours_command": f"{VENV_PYTHON} -m nova_evacuate.cli {HOST} [--dry-run] --config-file F"
                        " --json (cwd: this tree)",
        "config": runner.config_text if runner else None,
        "service_down_time_s": rig.service_down_time_s if rig else None,
        "heartbeat_interval_s": round(rig.heartbeat.interval, 2) if rig else None,
        "heartbeat": heartbeat,
        "setup": setup,
        "population": population,
        "rig_checks": checks,
        "leftovers_at_start": leftovers,
        "teardown": teardown,
        "total_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "goal": goal(summary),
        "error": error,
        "runs": rounded(runs),
    }
    if not runs:  # nothing measured: keep the files of the last run that measured something
        print(markdown(result))
        print("no run finished; results files left as they were", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if error is None and all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
