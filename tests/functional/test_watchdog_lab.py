"""``openstack-ha-watchdog`` against the lab's real Keystone, Nova and Glance (issue 17,
parts 1 and 2).

A mix of flavors and images, one server on each combination (flavor only, image only,
image overriding flavor, ``disabled``, ``poweroff``, none), audited by the command run as a
process (``--json``, the cloud from a clouds.yaml named by OS_CLIENT_CONFIG_FILE and chosen
by OS_CLOUD) and checked against the table below; ``enforce`` plans without changing,
applies exactly its plan, and plans nothing the second time; a value Nova refuses is one
line; bad arguments are exit 2 in one line; the clouds.yaml password never shows; the
audit's request count does not grow with the number of servers.

The command runs as a Keystone user of its own (admin on project admin) whose password
is unlike any other word in the output: the lab's own admin password is ``admin``, which
the output may well hold for other reasons. Nothing boots from a volume here: the lab has
no Cinder (the unit tests cover that row). What Nova and Glance stored is read back with
plain openstacksdk requests, never through the code under test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import workload
from nova_evacuate import watchdog as wd
from nova_evacuate import watchdog_cli
from nova_evacuate.nova import connect
from tests.target import target_host_names

pytestmark = [pytest.mark.lab, pytest.mark.target,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = Path(__file__).resolve().parents[2]
CLOUD = "watchdog-lab"
USER = "watchdog-auditor"
PASSWORD = "Wd-Aud1t-Pa55word-7f3c9e"  # the test user's: must never be printed
WRONG_PASSWORD = "Wd-Wr0ng-Pa55word-b81d24"
IMAGE_PATCH = "application/openstack-images-v2.1-json-patch"
MV = workload.MICROVERSION
# Against an outside target (tests/target.py), the first three hosts of its hosts file
FIRST, SECOND, THIRD = (target_host_names() or ["compute1", "compute2", "compute3"])[:3]

# name → hw:watchdog_action (None: unset)
FLAVORS = {"wd.none": None, "wd.reset": "reset", "wd.disabled": "disabled",
           "wd.poweroff": "poweroff"}
# name → hw_watchdog_action (None: unset)
IMAGES = {"wd-plain": None, "wd-img-reset": "reset", "wd-img-poweroff": "poweroff",
          "wd-img-disabled": "disabled"}
# server name → flavor, image, host, then what the audit must say: action, source,
# covered, evacuable (the configuration excludes ^wd-skip- from evacuation)
TABLE = {
    "wd-ok-flavor-only": ("wd.reset", "wd-plain", FIRST, "reset", "flavor", True, True),
    "wd-ok-image-only": ("wd.none", "wd-img-reset", SECOND, "reset", "image", True, True),
    "wd-ok-image-over-flavor": ("wd.poweroff", "wd-img-reset", THIRD,
                                "reset", "image", True, True),
    "wd-image-poweroff-over-reset": ("wd.reset", "wd-img-poweroff", FIRST,
                                     "poweroff", "image", False, True),
    "wd-flavor-disabled": ("wd.disabled", "wd-plain", SECOND,
                           "disabled", "flavor", False, True),
    "wd-flavor-poweroff": ("wd.poweroff", "wd-plain", THIRD,
                           "poweroff", "flavor", False, True),
    "wd-image-disabled": ("wd.none", "wd-img-disabled", FIRST,
                          "disabled", "image", False, True),
    "wd-none": ("wd.none", "wd-plain", SECOND, "disabled", "default", False, True),
    "wd-skip-none": ("wd.none", "wd-plain", THIRD, "disabled", "default", False, False),
}
BULK = 20  # more servers for the second request count


# ---------------------------------------------------------------------------- the cloud


def flavor_value(conn: Any, flavor_id: str) -> str | None:
    specs = conn.compute.get(f"/flavors/{flavor_id}/os-extra_specs", microversion=MV).json()
    return specs["extra_specs"].get(wd.FLAVOR_KEY)


def image_value(conn: Any, image_id: str) -> str | None:
    return conn.image.get(f"/images/{image_id}").json().get(wd.IMAGE_KEY)


def unset_flavor(conn: Any, flavor_id: str) -> None:
    conn.compute.delete(f"/flavors/{flavor_id}/os-extra_specs/{wd.FLAVOR_KEY}", microversion=MV)


def unset_image(conn: Any, image_id: str) -> None:
    conn.image.patch(f"/images/{image_id}", json=[{"op": "remove", "path": f"/{wd.IMAGE_KEY}"}],
                     headers={"Content-Type": IMAGE_PATCH})


def remove_leftovers(conn: Any) -> None:
    """What an interrupted earlier run may have left: the test's flavors and images."""
    for flavor in conn.compute.flavors(is_public=None):
        if flavor.name in FLAVORS:
            conn.compute.delete_flavor(flavor, ignore_missing=True)
    for image in conn.image.images():
        if image.name in IMAGES:
            conn.image.delete_image(image, ignore_missing=True)
    user = conn.identity.find_user(USER)
    if user is not None:
        conn.identity.delete_user(user)


class Cloud:
    """The test's flavors, images, servers and user, and how to run the command."""

    def __init__(self, lab: Any, conn: Any, workdir: Path) -> None:
        self.lab, self.conn, self.workdir = lab, conn, workdir
        self.flavors: dict[str, Any] = {}
        self.images: dict[str, Any] = {}
        self.servers: dict[str, str] = {}  # name → id
        self.outputs: list[str] = []  # everything the command printed, for the secret check

    def witness(self) -> dict[tuple[str, str], str | None]:
        """Every test flavor's and image's watchdog value, read with plain requests."""
        return {**{("flavor", n): flavor_value(self.conn, f.id) for n, f in self.flavors.items()},
                **{("image", n): image_value(self.conn, i.id) for n, i in self.images.items()}}

    def conf(self, cloud: str | None = None, **evacuation: str) -> Path:
        """The suite's configuration file; without ``cloud`` it names none, so OS_CLOUD picks
        it (a ``[cloud] cloud`` set in the file would beat OS_CLOUD: nova_evacuate/cloud_args.py)."""
        # filtering off: every server is selected whatever else the session tagged
        options = {"instance_filtering": "False", "exclude_names": "^wd-skip-", **evacuation}
        path = self.workdir / f"openstack-ha-{len(list(self.workdir.glob('*.conf')))}.conf"
        path.write_text((f"[cloud]\ncloud = {cloud}\n" if cloud else "") + "[evacuation]\n"
                        + "".join(f"{k} = {v}\n" for k, v in options.items()))
        return path

    def run(self, *args: str, cloud: str = CLOUD, conf: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.workdir / "clouds.yaml"), OS_CLOUD=cloud)
        done = subprocess.run(
            [sys.executable, "-m", "nova_evacuate.watchdog_cli", *args, "--config-file",
             str(conf or self.conf())], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=timeout)
        self.outputs += [done.stdout, done.stderr]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    def json(self, *args: str, expect: int, **kw: Any) -> dict[str, Any]:
        done = self.run(*args, "--json", **kw)
        assert done.returncode == expect, done.stderr[-3000:]
        return json.loads(done.stdout)


def write_clouds_yaml(lab: Any, path: Path) -> None:
    """A clouds.yaml of two entries for the test's user: the right password and a wrong one
    (JSON is YAML)."""
    import yaml  # openstacksdk's dependency

    base = yaml.safe_load(lab.clouds_yaml.read_text())["clouds"][lab.cloud]
    entries = {}
    for name, password in ((CLOUD, PASSWORD), (f"{CLOUD}-wrong", WRONG_PASSWORD)):
        entries[name] = {**base, "auth": {**base["auth"], "username": USER,
                                          "password": password}}
    path.write_text(json.dumps({"clouds": entries}, indent=2))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def cloud(openstack_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    openstack_lab.reset()
    conn = openstack_lab.connection(compute_api_version=MV)
    remove_leftovers(conn)
    workdir = tmp_path_factory.mktemp("watchdog")
    test = Cloud(openstack_lab, conn, workdir)
    try:
        project = conn.identity.find_project("admin")
        user = conn.identity.create_user(name=USER, password=PASSWORD, domain_id="default",
                                         default_project_id=project.id)
        conn.identity.assign_project_role_to_user(project, user, conn.identity.find_role("admin"))
        write_clouds_yaml(openstack_lab, workdir / "clouds.yaml")
        for name, value in FLAVORS.items():
            test.flavors[name] = workload.flavor(
                conn, name, extra_specs={wd.FLAVOR_KEY: value} if value else None)
        for name, value in IMAGES.items():
            test.images[name] = workload.image(conn, name, **(
                {wd.IMAGE_KEY: value} if value else {}))
        assert test.witness() == {**{("flavor", n): v for n, v in FLAVORS.items()},
                                  **{("image", n): v for n, v in IMAGES.items()}}
        for name, (flavor, image, host, *_) in TABLE.items():
            (test.servers[name],) = workload.boot(
                conn, host, 1, prefix=name, image_id=test.images[image].id,
                flavor_id=test.flavors[flavor].id)
        workload.wait_active(conn, test.servers.values(), timeout=300)
        yield test
        everything = "\n".join(test.outputs)
        for secret in (PASSWORD, WRONG_PASSWORD):
            assert secret not in everything
    finally:
        for server_id in test.servers.values():
            with contextlib.suppress(Exception):
                conn.compute.delete_server(server_id, ignore_missing=True)
        remove_leftovers(conn)


def server_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The audit's rows of the table's servers, by the table's name (boot adds "-000")."""
    return {s["name"].removesuffix("-000"): s for s in report["servers"]
            if s["name"].removesuffix("-000") in TABLE}


# ---------------------------------------------------------------------------- audit


def test_the_audit_matches_the_table(cloud: Cloud) -> None:
    report = cloud.json("audit", expect=1)
    rows = server_rows(report)
    assert set(rows) == set(TABLE)
    for name, (flavor, image, host, action, source, covered, evacuable) in TABLE.items():
        row = rows[name]
        assert (row["action"], row["source"], row["covered"], row["evacuable"]) == (
            action, source, covered, evacuable), name
        assert (row["flavor"]["name"], row["image"]["name"], row["host"]) == (
            flavor, image, host), name
        assert row["flavor"]["value"] == FLAVORS[flavor]  # the server's embedded copy
        assert not row["image"]["changed_since_launch"], name
    by_id = {cloud.servers[n]: n for n in TABLE}
    assert {by_id[i] for i in report["evacuable_not_covered"]} == {
        n for n, row in TABLE.items() if row[6] and not row[5]}
    assert [by_id[i] for i in report["other_not_covered"]] == ["wd-skip-none"]
    # grouped: the evacuable servers without recovery come first
    first = [by_id.get(s["id"]) for s in report["servers"][:len(report["evacuable_not_covered"])]]
    assert set(first) == {n for n, row in TABLE.items() if row[6] and not row[5]}
    assert rows["wd-skip-none"]["not_evacuable"] == "name matches exclude_names"
    assert rows["wd-image-poweroff-over-reset"]["reason"] == (
        "action 'poweroff' from image wd-img-poweroff, overriding flavor wd.reset's 'reset'")
    assert rows["wd-none"]["reason"] == (
        "no watchdog: neither flavor wd.none nor image wd-plain sets one")
    assert {(f["name"], f["value"]) for f in report["flavors_not_reset"]
            if f["name"] in FLAVORS} == {("wd.disabled", "disabled"), ("wd.poweroff", "poweroff")}
    assert {(i["name"], i["value"]) for i in report["images_not_reset"]
            if i["name"] in IMAGES} == {("wd-img-poweroff", "poweroff"),
                                        ("wd-img-disabled", "disabled")}
    assert report["counts"]["servers"] == len(TABLE) and report["cloud"] == CLOUD

    text = cloud.run("audit")
    assert text.returncode == 1 and text.stderr == ""
    assert "Evacuable servers whose guest would not be recovered (5):" in text.stdout
    assert text.stdout.rstrip().splitlines()[-1].startswith("NOT COVERED: 5 of 8 evacuable")
    assert f"read {len(TABLE)} servers," in text.stdout and "API requests" in text.stdout


def test_the_audit_exits_0_when_every_evacuable_server_is_covered(cloud: Cloud) -> None:
    report = cloud.json("audit", expect=0, conf=cloud.conf(exclude_names="^wd-(?!ok-)"))
    assert report["ok"] and report["counts"]["evacuable"] == 3
    assert report["evacuable_not_covered"] == []


def test_the_command_line_cloud_beats_os_cloud_and_a_wrong_one_is_exit_2(cloud: Cloud) -> None:
    done = cloud.run("audit", "--os-cloud", "no-such-cloud")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("openstack-ha-watchdog: configuration: cannot use cloud"
                           f" 'no-such-cloud' from --os-cloud: not in {cloud.workdir}/clouds.yaml")
    # and before the subcommand, as the openstack client takes it: the right one works
    done = cloud.run("--os-cloud", CLOUD, "audit", cloud="no-such-cloud")
    assert done.returncode == 1, done.stderr
    # a cloud the configuration file names beats OS_CLOUD (the cluster's file, an operator's shell)
    done = cloud.run("audit", cloud="no-such-cloud", conf=cloud.conf(cloud=CLOUD))
    assert done.returncode == 1, done.stderr


def test_a_wrong_password_is_one_line_and_never_shown(cloud: Cloud) -> None:
    done = cloud.run("audit", cloud=f"{CLOUD}-wrong")
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("openstack-ha-watchdog: cannot read the cloud: list servers:"
                           " authentication refused")
    assert WRONG_PASSWORD not in done.stderr and PASSWORD not in done.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["enforce"], "error: enforce needs --flavor, --image or --all-evacuable (see --help)"),
    (["audit", "--bogus"], "error: unrecognized arguments: --bogus (see --help)"),
    (["enforce", "--flavor", "wd.no-such-flavor"],
     "no flavor has the name or id 'wd.no-such-flavor'"),
    (["enforce", "--image", "wd-no-such-image", "--apply"],
     "no image has the name or id 'wd-no-such-image'"),
])
def test_bad_arguments_are_exit_2_in_one_line(cloud: Cloud, argv: list[str],
                                              message: str) -> None:
    before = cloud.witness()
    done = cloud.run(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"openstack-ha-watchdog: {message}"]
    assert cloud.witness() == before


# ---------------------------------------------------------------------------- enforce


def test_enforce_plans_applies_exactly_its_plan_and_then_plans_nothing(cloud: Cloud) -> None:
    before = cloud.witness()
    try:
        # --all-evacuable: the flavors and images of the evacuable servers (not wd-skip-'s
        # alone, but it shares them)
        plan = cloud.json("enforce", "--all-evacuable", expect=0)
        assert {(c["kind"], c["name"], c["value"], c["new"]) for c in plan["changes"]} == {
            ("flavor", "wd.none", None, "reset"), ("image", "wd-plain", None, "reset")}
        assert {(k["kind"], k["name"], k["value"]) for k in plan["kept"]} == {
            ("flavor", "wd.disabled", "disabled"), ("flavor", "wd.poweroff", "poweroff"),
            ("image", "wd-img-poweroff", "poweroff"), ("image", "wd-img-disabled", "disabled")}
        assert {(a["kind"], a["name"]) for a in plan["already"]} == {
            ("flavor", "wd.reset"), ("image", "wd-img-reset")}
        assert not plan["applied"] and cloud.witness() == before

        argv = ("enforce", "--flavor", "wd.none", "--flavor", "wd.disabled",
                "--image", cloud.images["wd-plain"].id)  # a name or an id
        plan = cloud.json(*argv, expect=0)
        planned = {(c["kind"], c["name"]) for c in plan["changes"]}
        assert planned == {("flavor", "wd.none"), ("image", "wd-plain")}
        assert [(k["name"], k["value"]) for k in plan["kept"]] == [("wd.disabled", "disabled")]
        assert cloud.witness() == before  # without --apply nothing changes

        applied = cloud.json(*argv, "--apply", expect=0)
        after = cloud.witness()
        assert {k for k in after if after[k] != before[k]} == planned
        assert all(after[k] == "reset" for k in planned)
        assert [(c["name"], c["done"]) for c in applied["changes"]] == [
            ("wd.none", True), ("wd-plain", True)]
        # servers keep the copies Nova made when they were built: wd-image-disabled is not
        # listed (its image's disabled wins), nor wd-ok-image-only (covered)
        stale = {(server_name(cloud, s["id"]), s["needs"]) for s in applied["stale_servers"]}
        assert stale == {("wd-flavor-disabled", "rebuild"), ("wd-flavor-poweroff", "rebuild"),
                         ("wd-none", "rebuild"), ("wd-skip-none", "rebuild")}

        again = cloud.json(*argv, "--apply", expect=0)
        assert again["changes"] == [] and cloud.witness() == after
        assert {(server_name(cloud, s["id"]), s["needs"]) for s in again["stale_servers"]} == stale
        text = cloud.run(*argv)
        assert "nothing to change" in text.stdout and "resize" in text.stdout

        # the audit still sees the servers' old copies
        rows = server_rows(cloud.json("audit", expect=1))
        assert not rows["wd-none"]["covered"] and rows["wd-none"]["image"]["changed_since_launch"]
        assert "changed after the server was launched" in rows["wd-none"]["reason"]
        assert rows["wd-ok-flavor-only"]["covered"]  # its flavor resets it either way

        forced = cloud.json("enforce", "--flavor", "wd.disabled", "--override", expect=0)
        assert [(c["name"], c["value"], c["new"]) for c in forced["changes"]] == [
            ("wd.disabled", "disabled", "reset")]
        assert cloud.witness() == after
    finally:
        unset_flavor(cloud.conn, cloud.flavors["wd.none"].id)
        unset_image(cloud.conn, cloud.images["wd-plain"].id)
    assert cloud.witness() == before


def server_name(cloud: Cloud, server_id: str) -> str:
    return {i: n for n, i in cloud.servers.items()}.get(server_id, server_id)


def test_a_value_nova_refuses_is_reported_in_one_line(cloud: Cloud) -> None:
    """The command only ever writes ``reset``, so no command line makes Nova refuse a
    value: the test gives :func:`watchdog_cli.apply_changes`, the function ``--apply``
    runs, a value Nova's extra-spec validation (2.86) refuses. A test-only option would
    ship a way to write any value; this reaches the same request and the same one line."""
    flavor = cloud.flavors["wd.none"]
    before = cloud.witness()
    nova = connect(cloud=CLOUD, clouds_yaml=cloud.workdir / "clouds.yaml")
    out, err = io.StringIO(), io.StringIO()
    code = watchdog_cli.apply_changes(
        nova, [wd.Change(wd.Target("flavor", flavor.id, flavor.name, None), "bogus")], out, err)
    assert code == 1 and out.getvalue() == ""
    (line,) = err.getvalue().splitlines()
    assert line.startswith(f"openstack-ha-watchdog: flavor wd.none ({flavor.id}) not changed:"
                           f" set extra spec of flavor {flavor.id}: Nova answered 400:")
    assert "bogus" in line and PASSWORD not in line
    cloud.outputs.append(err.getvalue())
    assert cloud.witness() == before


# ---------------------------------------------------------------------------- measure


def test_the_audits_requests_do_not_grow_with_the_servers(cloud: Cloud) -> None:
    small = cloud.json("audit", expect=1)
    bulk = workload.boot(cloud.conn, THIRD, BULK, prefix="wd-bulk",
                         image_id=cloud.images["wd-plain"].id,
                         flavor_id=cloud.flavors["wd.none"].id)
    try:
        workload.wait_active(cloud.conn, bulk, timeout=300)
        started = time.monotonic()
        large = cloud.json("audit", expect=1)
        wall = time.monotonic() - started
        print(f"\naudit of {small['counts']['servers']} servers: {small['api_requests']} API"
              f" requests, {small['took_seconds']:.2f} s")
        print(f"audit of {large['counts']['servers']} servers: {large['api_requests']} API"
              f" requests, {large['took_seconds']:.2f} s ({wall:.2f} s with the process)")
        assert large["counts"]["servers"] == small["counts"]["servers"] + BULK
        assert large["api_requests"] == small["api_requests"]
    finally:
        for server_id in bulk:
            with contextlib.suppress(Exception):
                cloud.conn.compute.delete_server(server_id, ignore_missing=True)
