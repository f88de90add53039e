"""The evacuation engine through ``nova-evacuate`` against the lab: real Keystone, Glance,
Placement and Nova with three fake-driver computes.

Each test fences compute1 the way fence_nova does after its power-off (nova-compute dead,
service forced down, the ledger's request written), then runs the CLI as a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import workload
from nova_evacuate.ledger import Ledger, State, parse_marker
from tests.target import target_host_names

pytestmark = [pytest.mark.lab, pytest.mark.target,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

# The failed host and the others: against an outside target (tests/target.py), the hosts of
# its hosts file (the first one fails)
HOST, *SURVIVORS = target_host_names() or ["compute1", "compute2", "compute3"]
REPO = Path(__file__).resolve().parents[2]


def write_conf(lab, tmp_path: Path, **evacuation: Any) -> Path:
    options = {"poll_interval": 1, **evacuation}
    path = tmp_path / "openstack-ha.conf"
    path.write_text(f"[cloud]\ncloud = {lab.cloud}\nclouds_yaml = {lab.clouds_yaml}\n"
                    "[evacuation]\n"
                    + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return path


def cli(conf: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nova_evacuate.cli", HOST, "--config-file",
                           str(conf), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def fence(lab, nova, *hosts: str, request: bool = True) -> None:
    """What fence_nova leaves behind: nova-compute dead, forced down, evacuation requested."""
    for host in hosts:
        lab.crash(host)
        service = nova.compute_service(host)
        nova.force_down(service.id, True)
        if request:
            Ledger(nova).request(host)


def migrations(conn, host: str = HOST) -> Counter:
    return Counter(m.server_id for m in conn.compute.migrations(
        source_compute=host, migration_type="evacuation"))


def boot(conn, count: int, prefix: str, *, image, flavor, host: str = HOST) -> list[str]:
    ids = workload.boot(conn, host, count, prefix=prefix, image_id=image.id, flavor_id=flavor.id)
    workload.wait_active(conn, ids, timeout=300)
    return ids


@pytest.fixture
def tagged(conn):
    """An image and a flavor tagged evacuable; removed afterwards, since anything tagged
    in the cloud switches filtering on for every later test."""
    image = workload.image(conn, "evac-tagged-image", evacuable="true")
    flavor = workload.flavor(conn, "evac.tagged", extra_specs={"evacuable": "true"})
    yield image, flavor
    conn.image.delete_image(image, ignore_missing=True)
    conn.compute.delete_flavor(flavor, ignore_missing=True)


def test_selected_servers_move_keep_their_state_and_the_rest_stay(lab, conn, nova, tagged,
                                                                   tmp_path):
    tagged_image, tagged_flavor = tagged
    plain_image, tiny = workload.image(conn, "plain"), workload.flavor(conn, "lab.tiny")
    by_image = boot(conn, 10, "by-image", image=tagged_image, flavor=tiny)
    by_flavor = boot(conn, 10, "by-flavor", image=plain_image, flavor=tagged_flavor)
    untagged = boot(conn, 10, "untagged", image=plain_image, flavor=tiny)
    (excluded,) = boot(conn, 1, "skip-me", image=tagged_image, flavor=tiny)
    (in_error,) = boot(conn, 1, "was-error", image=tagged_image, flavor=tiny)
    (paused,) = boot(conn, 1, "was-paused", image=tagged_image, flavor=tiny)
    (suspended,) = boot(conn, 1, "was-suspended", image=tagged_image, flavor=tiny)
    stopped = by_image[:2]
    workload.stop(conn, stopped)
    conn.compute.reset_server_state(in_error, "error")
    conn.compute.pause_server(paused)
    conn.compute.suspend_server(suspended)
    workload.wait_for(lambda: {sid: s.status for sid, s in workload.servers(
        conn, [paused, suspended]).items()} == {paused: "PAUSED", suspended: "SUSPENDED"},
        60, "paused and suspended")
    fence(lab, nova, HOST)

    done = cli(write_conf(lab, tmp_path, exclude_names="^skip-"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    selected = set(by_image) | set(by_flavor) | {in_error, paused, suspended}
    assert {i["id"] for i in report["instances"] if i["state"] == "done"} == selected
    assert {s["id"] for s in report["skipped"]} == set(untagged) | {excluded}
    assert report["ok"] and report["ledger"] == "done"

    now = workload.servers(conn)
    # the table of nova_evacuate/plan.py: ACTIVE stays ACTIVE, SHUTOFF stays SHUTOFF, PAUSED
    # is paused again, SUSPENDED comes back SHUTOFF, an ERROR server is rebuilt ACTIVE
    final = {**dict.fromkeys(stopped, "SHUTOFF"), paused: "PAUSED", suspended: "SHUTOFF"}
    for sid in selected:
        assert now[sid].compute_host in SURVIVORS, now[sid].name
        assert now[sid].status == final.get(sid, "ACTIVE"), now[sid].name
        assert not now[sid].is_locked, now[sid].name
    for sid in [*untagged, excluded]:
        assert now[sid].compute_host == HOST and now[sid].status == "ACTIVE"
    moved = migrations(conn)
    assert set(moved) == selected and set(moved.values()) == {1}
    entry = parse_marker(nova.compute_service(HOST).disabled_reason)
    assert (entry.state, entry.evacuated, entry.failed) == (State.DONE, 23, 0)


def test_killed_mid_way_a_second_run_finishes_without_evacuating_twice(lab, conn, nova, tmp_path):
    ids = boot(conn, 30, "resume", image=workload.image(conn, "plain"),
               flavor=workload.flavor(conn, "lab.tiny"))
    # Stopped servers are the ones whose lock (lock_servers = when_needed, the default)
    # carries their status to the second run: mid-rebuild it reads REBUILD, not SHUTOFF.
    stopped = ids[::5]
    workload.stop(conn, stopped)
    fence(lab, nova, HOST)
    conf = write_conf(lab, tmp_path, max_concurrency=3, per_host_concurrency=2)
    first = subprocess.Popen([sys.executable, "-m", "nova_evacuate.cli", HOST, "--config-file",
                              str(conf)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        workload.wait_for(lambda: len(migrations(conn)) >= 8, 120, "8 evacuations started")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    started = migrations(conn)
    assert 8 <= len(started) < 30
    assert parse_marker(nova.compute_service(HOST).disabled_reason).state is State.CLAIMED

    second = cli(conf, "--json")
    failed = [f"{i['name']}: {i['reason']}" for i in
              json.loads(second.stdout or "{}").get("instances", []) if i["state"] != "done"]
    assert second.returncode == 0, "; ".join(failed) + "\n" + second.stderr[-3000:]
    report = json.loads(second.stdout)
    assert report["done"] == 30
    moved = migrations(conn)
    assert set(moved) == set(ids)
    assert set(moved.values()) == {1}, "a server was evacuated twice"
    now = workload.servers(conn, ids)
    assert all(s.compute_host != HOST for s in now.values())
    assert {sid for sid, s in now.items() if s.status == "SHUTOFF"} == set(stopped)
    assert all(s.status == "ACTIVE" for sid, s in now.items() if sid not in stopped)
    assert not any(s.is_locked for s in now.values())


@pytest.mark.lab_only("sets Keystone's token lifetime and restarts nova-api")
def test_run_survives_token_expiry_and_a_nova_api_restart(lab, conn, nova, tmp_path):
    # 8 servers, 4 at a time: the restart lands while evacuations are under way (20 took
    # two minutes of the CI run for nothing more)
    ids = boot(conn, 8, "outage", image=workload.image(conn, "plain"),
               flavor=workload.flavor(conn, "lab.tiny"))
    fence(lab, nova, HOST)
    # Tokens of 15 s: keystoneauth takes a new one whenever less than 120 s are left, so
    # every request of the run authenticates again (and the run is slow on purpose).
    lab.openstack.set_token_expiration(15)
    try:
        conf = write_conf(lab, tmp_path, max_concurrency=4, per_host_concurrency=2)
        run = subprocess.Popen([sys.executable, "-m", "nova_evacuate.cli", HOST, "--config-file",
                                str(conf), "--json"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        workload.wait_for(lambda: len(migrations(conn)) >= 4, 120, "evacuations under way")
        lab.openstack.stop_service("nova-api")
        time.sleep(8)
        lab.openstack.start_service("nova-api")
        out, err = run.communicate(timeout=600)
    finally:
        lab.openstack.set_token_expiration(3600)
    assert run.returncode == 0, err[-3000:]
    assert json.loads(out)["done"] == 8
    assert set(migrations(conn).values()) == {1}
    assert all(s.compute_host != HOST for s in workload.servers(conn, ids).values())


@pytest.mark.lab_only("the brake's default threshold is measured against the lab's three hosts")
def test_two_of_three_hosts_down_nothing_moves_and_the_refusal_says_why(lab, conn, nova,
                                                                        tmp_path):
    ids = boot(conn, 3, "brake", image=workload.image(conn, "plain"),
               flavor=workload.flavor(conn, "lab.tiny"))
    fence(lab, nova, HOST, SURVIVORS[0], request=False)
    conf = write_conf(lab, tmp_path)

    refused = cli(conf)
    assert refused.returncode == 3
    assert "mass-failure brake" in refused.stderr and "2 of 3" in refused.stderr
    dry = cli(conf, "--dry-run")
    assert dry.returncode == 3 and "gates: REFUSED: mass-failure brake" in dry.stdout
    assert not migrations(conn)
    assert all(s.compute_host == HOST for s in workload.servers(conn, ids).values())
    assert nova.compute_service(HOST).disabled_reason is None  # no request, no claim


@pytest.mark.lab_only("the flavor is sized for the fake driver's 800000 MB per host")
def test_dry_run_reports_a_capacity_shortfall_and_changes_nothing(lab, conn, nova, tmp_path):
    image = workload.image(conn, "plain")
    # The fake driver offers 800000 MB per host: one of these fills a host.
    huge = workload.flavor(conn, "evac.huge", ram=600000)
    try:
        victim = boot(conn, 1, "huge", image=image, flavor=huge)
        for host in SURVIVORS:
            boot(conn, 1, f"huge-{host}", image=image, flavor=huge, host=host)
        fence(lab, nova, HOST, request=False)
        before = nova.compute_service(HOST)

        dry = cli(write_conf(lab, tmp_path), "--dry-run", "--json")
        assert dry.returncode == 1, dry.stderr[-3000:]
        plan = json.loads(dry.stdout)
        assert plan["gates"] == "pass"
        assert not plan["capacity_ok"] and plan["shortfall"] == victim
        text = cli(write_conf(lab, tmp_path), "--dry-run")
        assert "capacity: SHORTFALL: no surviving host has room for 1 of 1" in text.stdout
        assert nova.compute_service(HOST) == before
        assert not migrations(conn)
    finally:
        for server in workload.servers(conn).values():
            conn.compute.delete_server(server.id, force=True)
        workload.wait_for(lambda: not workload.servers(conn), 120, "servers deleted")
        conn.compute.delete_flavor(huge, ignore_missing=True)


def _system_metadata(lab, server_id: str, key: str) -> str:
    """One key of the server's system metadata in the cell DB, where Nova keeps the image
    properties it booted with (``image_<property>``): what the guest is rebuilt with, which
    no API shows."""
    from lab.openstack import _pg_bin
    lay = lab.openstack.layout
    done = subprocess.run(
        [str(_pg_bin() / "psql"), "-h", lay.bind_host, "-p", str(lay.port("postgres")),
         "-U", "postgres", "-d", "nova_cell1", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-v", f"id={server_id}", "-v", f"key={key}"],
        input="SELECT value FROM instance_system_metadata WHERE instance_uuid = :'id'"
              " AND key = :'key' AND deleted = 0;\n",
        capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


@pytest.fixture
def watchdog_flavor_and_image(conn):
    flavor = workload.flavor(conn, "evac.watchdog", extra_specs={"hw:watchdog_action": "reset"})
    image = workload.image(conn, "evac-watchdog-image", hw_watchdog_action="poweroff")
    yield flavor, image
    conn.image.delete_image(image, ignore_missing=True)
    conn.compute.delete_flavor(flavor, ignore_missing=True)


@pytest.mark.lab_only("reads the image properties Nova keeps in its cell database")
def test_an_evacuated_server_keeps_its_watchdog_and_the_report_says_which(
        lab, conn, nova, tmp_path, watchdog_flavor_and_image):
    flavor, image = watchdog_flavor_and_image
    plain, tiny = workload.image(conn, "plain"), workload.flavor(conn, "lab.tiny")
    by_flavor = boot(conn, 2, "wd-flavor", image=plain, flavor=flavor)
    by_image = boot(conn, 2, "wd-image", image=image, flavor=flavor)  # the image's wins
    without = boot(conn, 1, "wd-none", image=plain, flavor=tiny)
    wanted = {**dict.fromkeys(by_flavor, "reset"), **dict.fromkeys(by_image, "poweroff"),
              **dict.fromkeys(without, "disabled")}
    conf = write_conf(lab, tmp_path)
    fence(lab, nova, HOST)

    dry = cli(conf, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert {m["id"]: m["watchdog"] for m in json.loads(dry.stdout)["moves"]} == wanted

    timeline = tmp_path / "timeline.jsonl"
    done = subprocess.run([sys.executable, "-m", "nova_evacuate.cli", HOST, "--config-file",
                           str(conf), "--json"], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "OPENSTACK_HA_TIMELINE": str(timeline)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert {i["id"]: i["watchdog"] for i in json.loads(done.stdout)["instances"]} == wanted
    events = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert {e["server"]: e["watchdog"] for e in events
            if e.get("event") == "instance_done"} == wanted

    # rebuilt elsewhere with the same settings: the embedded flavor (2.47+) and the image
    # properties Nova booted it with, which the rebuild reuses
    for sid in wanted:
        server = conn.compute.get_server(sid)
        assert server.compute_host != HOST
        specs = (server.flavor or {}).get("extra_specs") or {}
        assert specs.get("hw:watchdog_action") == ("reset" if sid not in without else None)
        assert _system_metadata(lab, sid, "image_hw_watchdog_action") == (
            "poweroff" if sid in by_image else "")


def test_nova_evacuate_chooses_its_cloud_as_the_openstack_client_does(lab, tmp_path):
    """``OS_CLOUD`` without a configuration file that names a cloud, an openrc's ``OS_*``
    variables alone, and a configuration file's ``[cloud] cloud`` beating ``OS_CLOUD``
    (nova_evacuate/cloud_args.py): each dry run reaches the lab's Nova and plans for HOST."""
    lab_cloud = yaml.safe_load(lab.clouds_yaml.read_text())["clouds"][lab.cloud]
    auth = lab_cloud["auth"]
    bare = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    named = tmp_path / "named.conf"
    named.write_text(f"[cloud]\ncloud = {lab.cloud}\nclouds_yaml = {lab.clouds_yaml}\n")
    openrc = {"OS_AUTH_URL": auth["auth_url"], "OS_USERNAME": auth["username"],
              "OS_PASSWORD": auth["password"], "OS_PROJECT_NAME": auth["project_name"],
              "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
              "OS_REGION_NAME": lab_cloud.get("region_name", "RegionOne")}
    cases = {
        "OS_CLOUD": (empty, {"OS_CLIENT_CONFIG_FILE": str(lab.clouds_yaml), "OS_CLOUD": lab.cloud}),
        "openrc": (empty, openrc),
        "file beats OS_CLOUD": (named, {"OS_CLOUD": "not-this-one"}),
    }
    for case, (conf, env) in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "nova_evacuate.cli", HOST, "--dry-run", "--json",
             "--config-file", str(conf)], env={**bare, **env}, capture_output=True, text=True,
            timeout=120, cwd=REPO)
        # 3: the host is up, so the gates refuse; the plan was made from the lab's Nova
        assert done.returncode in (0, 3), f"{case}: {done.stderr[-2000:]}"
        assert json.loads(done.stdout)["host"] == HOST, case
        assert "configuration:" not in done.stderr and "Traceback" not in done.stderr, case
        assert auth["password"] not in done.stdout + done.stderr
