"""The Nova adapter (nova_evacuate/nova.py) and the ledger (nova_evacuate/ledger.py) against the
lab's real Keystone and Nova (tests/conftest.py). What Nova stored is read back with plain
openstacksdk calls, never through the code under test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import yaml

from nova_evacuate.ledger import Ledger, State, format_marker
from nova_evacuate.nova import ForceUpRefused, Nova, NovaError, connect
from tests.target import target_host_names

pytestmark = [pytest.mark.lab, pytest.mark.target,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# From 2.95 an evacuated server lands stopped; 2.94 keeps it ACTIVE (research/nova-lab.md).
EVACUATE_MV = "2.94"
ENGINE = "controller-1/4242"
# Against an outside target (tests/target.py), the first three hosts of its hosts file
FIRST, SECOND, THIRD = (target_host_names() or ["compute1", "compute2", "compute3"])[:3]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout}s")
        time.sleep(interval)
    return result


@pytest.fixture
def conn(clean_lab: Any) -> Any:
    """A plain openstacksdk admin connection: the independent witness."""
    return clean_lab.connection()


@pytest.fixture
def nova(clean_lab: Any) -> Nova:
    return connect(cloud=clean_lab.cloud, clouds_yaml=clean_lab.clouds_yaml)


def raw_service(conn: Any, host: str) -> dict[str, Any]:
    resp = conn.compute.get(f"/os-services?binary=nova-compute&host={host}", microversion="2.53")
    (svc,) = resp.json()["services"]
    return svc


@pytest.mark.lab_only("the lab's hosts are in the lab.example domain")
def test_a_service_is_found_by_short_name_and_by_fqdn_with_domain(nova: Nova, conn: Any) -> None:
    witness = raw_service(conn, "compute2")
    assert nova.compute_service("compute2").id == witness["id"]
    assert nova.compute_service("compute2.lab.example", domain="lab.example").id == witness["id"]
    assert nova.compute_service("compute2", domain="lab.example").id == witness["id"]
    found = nova.compute_service("compute2")
    assert (found.host, found.state, found.status, found.forced_down) == (
        "compute2", "up", "enabled", False)
    assert nova.compute_hosts() == ["compute1", "compute2", "compute3"]
    nova.ping()


def test_an_unknown_host_is_not_found(nova: Nova) -> None:
    with pytest.raises(NovaError) as err:
        nova.compute_service("no-such-compute9")
    assert err.value.kind == "not_found"
    assert "no-such-compute9" in str(err.value)


def test_force_down_disable_and_enable_show_in_nova(nova: Nova, conn: Any) -> None:
    svc = nova.compute_service(THIRD)
    answer = nova.force_down(svc.id, True)
    assert answer.forced_down
    raw = raw_service(conn, THIRD)
    assert (raw["forced_down"], raw["state"]) == (True, "down")

    nova.disable(svc.id, "adapter test: maintenance")
    raw = raw_service(conn, THIRD)
    assert (raw["status"], raw["disabled_reason"]) == ("disabled", "adapter test: maintenance")
    with pytest.raises(NovaError) as err:
        nova.disable(svc.id, "x" * 256)
    assert err.value.kind == "refused"

    # No evacuation happened, so Nova lets force-down go; enabling clears the reason.
    assert not nova.force_down(svc.id, False).forced_down
    enabled = nova.enable(svc.id)
    assert (enabled.status, enabled.disabled_reason) == ("enabled", None)
    raw = raw_service(conn, THIRD)
    assert (raw["status"], raw["disabled_reason"], raw["forced_down"]) == ("enabled", None, False)


def test_the_ledger_cycle_is_visible_in_the_service_record(nova: Nova, conn: Any) -> None:
    values: dict[str, str] = {}
    sot = Ledger(nova, domain=None, mirror=_mirror(values))
    requested = sot.request(FIRST)
    assert raw_service(conn, FIRST)["disabled_reason"] == format_marker(requested)
    assert raw_service(conn, FIRST)["disabled_reason"].startswith(
        "openstack-ha:v1 evacuation=requested at=")
    assert values == {FIRST: "yes"}

    claimed = sot.claim(FIRST, ENGINE, None, timedelta(minutes=2))
    raw = raw_service(conn, FIRST)["disabled_reason"]
    assert raw == format_marker(claimed)
    assert f" by={ENGINE}" in raw
    assert values[FIRST].startswith("controller-1@")

    done = sot.finish(FIRST, True, 2, 0, "both ACTIVE", by=ENGINE)
    raw = raw_service(conn, FIRST)
    assert raw["disabled_reason"] == format_marker(done)
    assert ' evacuation=done ' in raw["disabled_reason"]
    assert raw["disabled_reason"].endswith(' evacuated=2 failed=0 note="both ACTIVE"')
    assert raw["status"] == "disabled"
    assert sot.read(FIRST).state is State.DONE
    assert values[FIRST] == "no"

    sot.clear(FIRST)
    raw = raw_service(conn, FIRST)
    assert (raw["status"], raw["disabled_reason"]) == ("disabled", None)
    assert values == {}


def _mirror(values: dict[str, str]) -> Any:
    from nova_evacuate.ledger import AttributeMirror

    def set_(name: str, value: str, node: str) -> None:
        values[node] = value

    def delete(name: str, node: str) -> None:
        values.pop(node, None)

    return AttributeMirror(set_, delete)


def test_force_up_is_refused_while_done_evacuations_remain(clean_lab: Any, nova: Nova,
                                                           conn: Any) -> None:
    victim = FIRST
    flavor = conn.compute.find_flavor("lab.tiny") or conn.compute.create_flavor(
        name="lab.tiny", ram=64, vcpus=1, disk=1)
    image = conn.image.find_image("lab-adapter") or conn.image.create_image(
        name="lab-adapter", data=b"\0" * 4096, disk_format="raw", container_format="bare")
    ids = [conn.compute.create_server(name=f"adapter-{i}", image_id=image.id, flavor_id=flavor.id,
                                      networks="none", availability_zone=f"nova:{victim}").id
           for i in range(2)]

    def servers() -> list[Any]:
        return [conn.compute.get_server(i) for i in ids]

    wait_for(lambda: all(s.status == "ACTIVE" for s in servers()), 90, "2 servers ACTIVE", 2)
    assert {s.compute_host for s in servers()} == {victim}

    clean_lab.crash(victim)
    svc = nova.compute_service(victim)
    assert nova.force_down(svc.id, True).forced_down
    for sid in ids:
        resp = conn.compute.post(f"/servers/{sid}/action", json={"evacuate": {}},
                                 microversion=EVACUATE_MV)
        assert resp.status_code == 200, resp.text
    wait_for(lambda: all(s.status == "ACTIVE" and s.compute_host != victim for s in servers()),
             90, "servers ACTIVE elsewhere", 2)

    def migrations() -> set[str]:
        return {m.status for m in conn.compute.migrations(source_compute=victim,
                                                          migration_type="evacuation")}

    wait_for(lambda: migrations() == {"done"}, 30, "evacuation records done")
    with pytest.raises(ForceUpRefused) as err:
        nova.force_down(svc.id, False)
    assert (err.value.kind, err.value.status) == ("refused", 400)
    assert victim in str(err.value)
    assert raw_service(conn, victim)["forced_down"] is True

    clean_lab.restore(victim)
    wait_for(lambda: migrations() == {"completed"}, 90, "evacuation records completed")

    def force_up() -> bool:
        try:
            return not nova.force_down(svc.id, False).forced_down
        except ForceUpRefused:
            return False

    wait_for(force_up, 30, "force-up accepted")

    def settled() -> bool:
        # nova-lab pitfall 10: a clear sent while the restarted service is still starting can
        # be undone by it; clear again until the record shows up and not forced down.
        raw = raw_service(conn, victim)
        if raw["forced_down"]:
            force_up()
            return False
        return raw["state"] == "up"

    wait_for(settled, 60, f"{victim} up and not forced down")


def test_a_wrong_password_is_an_auth_error_that_never_shows_the_password(
        clean_lab: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # oslo.log, set up by an earlier test in this process, leaves these at WARN
    for name in ("keystoneauth", "openstack"):
        caplog.set_level(logging.DEBUG, logger=name)
    wrong = "Wr0ng-Pa55word-for-the-lab"
    cloud = yaml.safe_load(clean_lab.clouds_yaml.read_text())["clouds"][clean_lab.cloud]
    auth, region = cloud["auth"], cloud.get("region_name")
    identity = {"auth_url": auth["auth_url"], "username": auth["username"],
                "project_name": auth["project_name"], "region_name": region}
    nova = connect(password=wrong, **identity)
    for call in (nova.ping, lambda: nova.compute_service(FIRST)):
        with pytest.raises(NovaError) as err:
            call()
        assert err.value.kind == "auth"
        assert wrong not in str(err.value)
        assert wrong not in repr(err.value)
    assert caplog.records, "DEBUG logging of keystoneauth was expected to say something"
    assert wrong not in caplog.text

    right = connect(password=auth["password"], interface="internalURL", **identity)
    right.ping()
    assert right.compute_service(FIRST).host == FIRST


@pytest.mark.lab_only("stops Keystone")
def test_keystone_stopped_is_unreachable(clean_lab: Any) -> None:
    lab = clean_lab.openstack
    lab.stop_service("keystone")
    try:
        started = time.monotonic()
        nova = connect(cloud="lab", clouds_yaml=clean_lab.clouds_yaml, timeout=10)
        with pytest.raises(NovaError) as err:
            nova.ping()
        assert err.value.kind == "unreachable"
        assert time.monotonic() - started < 30
    finally:
        lab.start_service("keystone")


def test_free_resources_are_each_providers_inventory_minus_its_usage(clean_lab: Any,
                                                                      nova: Nova,
                                                                      conn: Any) -> None:
    """Two Placement requests for the whole cloud (allocation candidates' provider summaries),
    checked against each provider's own inventories and usages read one by one."""
    from lab import workload

    api = clean_lab.connection(compute_api_version=workload.MICROVERSION)
    ids = workload.boot(api, SECOND, 2, prefix="capacity",
                        image_id=workload.image(api, "plain").id,
                        flavor_id=workload.flavor(api, "lab.tiny").id)
    workload.wait_active(api, ids)

    free = nova.free_resources()
    assert {FIRST, SECOND, THIRD} <= set(free)
    for rp in conn.placement.get("/resource_providers").json()["resource_providers"]:
        base = f"/resource_providers/{rp['uuid']}"
        inventories = conn.placement.get(f"{base}/inventories").json()["inventories"]
        usages = conn.placement.get(f"{base}/usages").json()["usages"]
        expected = [int((inventories[rc]["total"] - inventories[rc]["reserved"])
                        * inventories[rc]["allocation_ratio"]) - usages.get(rc, 0)
                    for rc in ("VCPU", "MEMORY_MB", "DISK_GB")]
        got = free[rp["name"]]
        assert [got.vcpus, got.ram_mb, got.disk_gb] == expected, rp["name"]
    assert free[SECOND].ram_mb < free[FIRST].ram_mb  # the two servers' use
    assert set(nova.free_resources([FIRST])) == {FIRST}


def test_evacuable_images_include_hidden_and_community_ones(nova: Nova, conn: Any) -> None:
    """Glance's default image list leaves out hidden images and community ones: a server
    booted from either is evacuable all the same when its image is tagged."""
    # openstacksdk would send os_hidden as the string "True", which Glance refuses: a patch
    changes = {"adapter-tagged": {}, "adapter-tagged-hidden": {"os_hidden": True},
               "adapter-tagged-community": {"visibility": "community"}, "adapter-untagged": {}}
    made = {}
    try:
        for name, change in changes.items():
            tag = {} if name == "adapter-untagged" else {"evacuable": "true"}
            image = made[name] = conn.image.create_image(
                name=name, data=b"\0" * 4096, disk_format="raw", container_format="bare",
                allow_duplicates=True, **tag)
            if change:
                answer = conn.image.patch(
                    f"/images/{image.id}",
                    json=[{"op": "replace", "path": f"/{k}", "value": v}
                          for k, v in change.items()],
                    headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
                assert answer.status_code == 200, answer.text
        listed = {i["id"] for i in conn.image.get("/images?evacuable=true").json()["images"]}
        # the default list's gap (community images: not for admins)
        assert made["adapter-tagged-hidden"].id not in listed
        tagged = nova.tagged_images()
        assert {made[n].id for n in changes if n != "adapter-untagged"} <= tagged
        assert made["adapter-untagged"].id not in tagged
    finally:
        for image in made.values():
            conn.image.delete_image(image, ignore_missing=True)
