"""The OpenStack lab (lab/openstack.py) against plain openstacksdk calls: real Keystone, Glance,
Placement and Nova with three fake-driver computes (the session's lab, tests/conftest.py).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from lab.openstack import OpenStackLab
from lab.openstack_procs import listening
from lab.workload import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

COMPUTES = ("compute1", "compute2", "compute3")
# From 2.95 an evacuated server lands stopped; 2.94 keeps it ACTIVE.
EVACUATE_MV = "2.94"
FORCE_DOWN_MV = "2.53"


@pytest.fixture
def lab(clean_lab: Any) -> OpenStackLab:
    """The OpenStack part of the session's lab (tests/conftest.py), from a clean state."""
    return clean_lab.openstack



def compute_service(conn: Any, host: str) -> Any:
    (svc,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == host]
    return svc


def set_forced_down(conn: Any, service_id: str, value: bool) -> Any:
    return conn.compute.put(f"/os-services/{service_id}", json={"forced_down": value},
                            microversion=FORCE_DOWN_MV)


def test_boot_kill_evacuate_and_recover(lab: OpenStackLab, request: pytest.FixtureRequest) -> None:
    lab.reset()
    conn = lab.connection(compute_api_version=EVACUATE_MV)
    flavor = conn.compute.find_flavor("lab.tiny") or conn.compute.create_flavor(
        name="lab.tiny", ram=64, vcpus=1, disk=1)
    image = conn.image.create_image(
        name="lab-evacuable", data=b"\0" * 4096, disk_format="raw", container_format="bare",
        evacuable="true", allow_duplicates=True)
    # anything tagged evacuable switches filtering on for every later test of the session
    request.addfinalizer(lambda: conn.image.delete_image(image, ignore_missing=True))
    stored = conn.image.get_image(image.id)
    assert stored.status == "active"
    assert stored.properties["evacuable"] == "true"
    assert image.id in {i.id for i in conn.image.images(evacuable="true")}

    ids = {conn.compute.create_server(name=f"smoke-{i}", image_id=image.id, flavor_id=flavor.id,
                                      networks="none").id for i in range(20)}

    def servers() -> dict[str, Any]:
        return {s.id: s for s in conn.compute.servers(all_projects=True, details=True)
                if s.id in ids}

    def all_active() -> dict[str, Any] | None:
        now = servers()
        errors = [s.name for s in now.values() if s.status == "ERROR"]
        assert not errors, f"servers in ERROR: {errors}"
        return now if len(now) == 20 and all(s.status == "ACTIVE" for s in now.values()) else None

    booted = wait_for(all_active, 120, "20 servers ACTIVE", 2)
    per_host = Counter(s.compute_host for s in booted.values())
    assert set(per_host) <= set(COMPUTES)
    assert len(per_host) >= 2, per_host
    victim = per_host.most_common(1)[0][0]
    moved = {sid for sid, s in booted.items() if s.compute_host == victim}

    lab.kill_compute(victim)
    assert not lab.compute_running(victim)
    svc = wait_for(lambda: (s := compute_service(conn, victim)).state == "down" and s, 60,
                   f"{victim} reported down")
    assert set_forced_down(conn, svc.id, True).status_code == 200
    assert compute_service(conn, victim).is_forced_down

    for sid in moved:
        resp = conn.compute.post(f"/servers/{sid}/action", json={"evacuate": {}},
                                 microversion=EVACUATE_MV)
        assert resp.status_code == 200, resp.text

    def evacuated() -> bool:
        now = all_active()
        return bool(now) and all(now[sid].compute_host != victim for sid in moved)

    wait_for(evacuated, 120, f"servers of {victim} ACTIVE elsewhere", 2)

    def migrations() -> list[Any]:
        return list(conn.compute.migrations(source_compute=victim, migration_type="evacuation"))

    assert {m.server_id for m in migrations()} == moved
    wait_for(lambda: {m.status for m in migrations()} == {"done"}, 30, "evacuations done")
    # Nova refuses a force-up while the 'done' records remain.
    assert set_forced_down(conn, svc.id, False).status_code == 400

    lab.start_compute(victim)
    lab.start_compute(victim)  # idempotent
    assert lab.compute_running(victim)
    wait_for(lambda: {m.status for m in migrations()} == {"completed"}, 90,
             f"evacuation records of {victim} completed")
    wait_for(lambda: set_forced_down(conn, svc.id, False).status_code == 200, 30, "force-up")
    wait_for(lambda: (s := compute_service(conn, victim)).state == "up" and not s.is_forced_down,
             60, f"{victim} up again")
    # The evacuated servers stay where they went.
    assert all(servers()[sid].compute_host != victim for sid in moved)


def test_reset_brings_back_a_killed_forced_down_host(lab: OpenStackLab) -> None:
    conn = lab.connection()
    lab.kill_compute("compute3")
    svc = compute_service(conn, "compute3")
    set_forced_down(conn, svc.id, True)
    conn.compute.put(f"/os-services/{svc.id}", json={"status": "disabled"},
                     microversion=FORCE_DOWN_MV)
    lab.reset()
    assert lab.compute_running("compute3")
    assert not list(conn.compute.servers(all_projects=True))
    for s in conn.compute.services(binary="nova-compute"):
        assert (s.state, s.status, s.is_forced_down) == ("up", "enabled", False), s.host


def _token_posts(lab: OpenStackLab) -> int:
    log = (lab.state_dir / "log" / "keystone.log").read_text(errors="replace")
    return len(re.findall(r"POST /v3/auth/tokens", log))


def test_a_session_outlives_its_token(lab: OpenStackLab) -> None:
    """Keystone restarted with 20 s tokens; the client session keeps working past expiry.

    keystoneauth renews a token that expires within MIN_TOKEN_LIFE_SECONDS (120 s) before
    every request, so with 20 s tokens it would never present an expired one. Here it is told
    never to renew ahead, so the expired token reaches nova-api, which answers 401, and the
    session re-authenticates and repeats the request: the path a long evacuation takes.
    """
    lab.set_token_expiration(20)
    try:
        conn = lab.connection()
        auth = conn.session.auth
        auth.MIN_TOKEN_LIFE_SECONDS = -3600
        first = conn.session.get_token()
        ref = auth.auth_ref
        assert 15 <= (ref.expires - ref.issued).total_seconds() <= 25
        hosts = {s.host for s in conn.compute.services(binary="nova-compute")}
        assert hosts == set(COMPUTES)
        assert list(conn.image.images()) is not None
        assert conn.session.get_token() == first  # still the same token

        time.sleep(max(0.0, (ref.expires - datetime.now(UTC)).total_seconds()) + 1.5)
        posts = _token_posts(lab)
        # Keystone itself refuses the first token now.
        resp = conn.identity.get("/auth/tokens", headers={"X-Subject-Token": first},
                                 raise_exc=False)
        assert resp.status_code == 404
        assert {s.host for s in conn.compute.services(binary="nova-compute")} == hosts
        second = conn.session.get_token()
        assert second != first
        assert _token_posts(lab) > posts
    finally:
        lab.set_token_expiration(3600)


def test_down_leaves_no_process_and_no_port(openstack_lab: Any) -> None:
    lab = openstack_lab.openstack
    pids = [lab.procs.pid(name) for name in lab.procs.load()["pids"]]
    assert all(pids)
    openstack_lab.down()
    try:
        openstack_lab.down()  # safe twice
        assert not lab.procs.running()
        assert not listening(set(lab.layout.ports.values()))
        assert not [pid for pid in pids if _alive(pid)]
        assert not openstack_lab.bmc.running()
    finally:
        # later tests share this session's lab: bring it back as tests/conftest.py started
        # it, Redfish faces included (a restart, ~30 s)
        openstack_lab.up(len(COMPUTES), token_expiration=3600, redfish=True)


def _alive(pid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
