"""``openstack-ha-watchdog`` without a cloud: the effective watchdog action as Nova computes
it, the audit's grouping and verdict, the enforce plan (idempotent, explicit values kept),
the command-line parsers (the cloud's precedence is tests/unit/test_cloud_args.py's), and
the command end to end over a fake Nova: its output, exit codes and request count."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nova_evacuate import watchdog as wd
from nova_evacuate import watchdog_cli
from nova_evacuate.cloud_args import add_cloud_arguments, cloud_arg
from nova_evacuate.nova import NovaError
from nova_evacuate.plan import Aggregate, Inventory, Policy, Server, select
from openstack_ha.timeline import terminal_text

REPO = Path(__file__).resolve().parents[2]
LAUNCHED = datetime(2026, 1, 1, tzinfo=UTC)
CONTROLS = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029"}


def server(name: str, *, flavor: str = "f.none", specs: dict[str, str] | None = None,
           image: str | None = "img-plain", host: str | None = "compute1",
           metadata: dict[str, str] | None = None) -> Server:
    return Server(id=f"id-{name}", name=name, status="ACTIVE", host=host, image_id=image,
                  flavor_name=flavor, flavor_extra_specs=specs or {}, metadata=metadata or {})


def flavor_specs(value: str | None) -> dict[str, str]:
    return {} if value is None else {wd.FLAVOR_KEY: value}


# ---------------------------------------------------------------------------- the action


# (flavor's hw:watchdog_action, image's hw_watchdog_action) → (action, source, recovers)
EFFECTIVE = [
    pytest.param("reset", None, "reset", "flavor", True, id="flavor only"),
    pytest.param(None, "reset", "reset", "image", True, id="image only"),
    pytest.param("poweroff", "reset", "reset", "image", True, id="image overrides flavor"),
    pytest.param("reset", "poweroff", "poweroff", "image", False, id="image poweroff wins"),
    pytest.param("disabled", None, "disabled", "flavor", False, id="flavor disabled"),
    pytest.param("reset", "disabled", "disabled", "image", False, id="image disabled wins"),
    pytest.param("poweroff", None, "poweroff", "flavor", False, id="flavor poweroff"),
    pytest.param("pause", None, "pause", "flavor", False, id="flavor pause"),
    pytest.param("none", None, "none", "flavor", False, id="action none"),
    pytest.param(None, None, "disabled", "default", False, id="neither"),
    pytest.param("", None, "disabled", "default", False, id="empty flavor spec is unset"),
    pytest.param("reset", "", "", "image", False, id="empty image property is a value"),
    pytest.param("bogus", None, "bogus", "flavor", False, id="unknown value kept"),
]


@pytest.mark.parametrize(("flavor", "image", "action", "source", "recovers"), EFFECTIVE)
def test_the_effective_action_is_novas(flavor, image, action, source, recovers):
    found = wd.effective_action(flavor, image)
    assert (found.action, found.source, found.recovers) == (action, source, recovers)


def nova_libvirt(extra_specs: dict[str, str], image_properties: dict[str, str]) -> str:
    """Nova 34's LibvirtDriver._guest_add_watchdog_action, its two lines as written (an
    image property Nova stores is set or absent: ImageMetaProps.get returns the default
    only for an unset field)."""
    watchdog_action = (extra_specs.get("hw:watchdog_action") or "disabled")
    return image_properties.get("hw_watchdog_action", watchdog_action)


optional_value = st.one_of(st.none(), st.sampled_from(sorted(wd.NOVA_ACTIONS)), st.text(max_size=8))


@given(flavor=optional_value, image=optional_value)
@settings(max_examples=300, deadline=None)
def test_the_mirror_matches_novas_code_for_every_value(flavor, image):
    props = {} if image is None else {wd.IMAGE_KEY: image}
    assert wd.effective_action(flavor, image).action == nova_libvirt(flavor_specs(flavor), props)


# ---------------------------------------------------------------------------- the audit

IMAGES = (wd.Image("img-plain", "plain"), wd.Image("img-reset", "img-reset", "reset"),
          wd.Image("img-poweroff", "img-poweroff", "poweroff"),
          wd.Image("img-disabled", "img-disabled", "disabled"))
FLAVORS = (wd.Flavor("1", "f.none"), wd.Flavor("2", "f.reset", "reset"),
           wd.Flavor("3", "f.disabled", "disabled"), wd.Flavor("4", "f.poweroff", "poweroff"),
           wd.Flavor("5", "f.empty", ""))

# server name → (flavor, its value, image id; None: booted from volume)
#             → (action, source, covered, words the reason holds)
AUDIT_TABLE = {
    "flavor-only": (("f.reset", "reset", "img-plain"), ("reset", "flavor", True, "")),
    "image-only": (("f.none", None, "img-reset"), ("reset", "image", True, "")),
    "image-over-flavor": (("f.poweroff", "poweroff", "img-reset"), ("reset", "image", True, "")),
    "image-poweroff-over-reset": (("f.reset", "reset", "img-poweroff"),
                                  ("poweroff", "image", False,
                                   "action 'poweroff' from image img-poweroff, overriding"
                                   " flavor f.reset's 'reset'")),
    "flavor-disabled": (("f.disabled", "disabled", "img-plain"),
                        ("disabled", "flavor", False, "action 'disabled' from flavor f.disabled")),
    "image-disabled": (("f.none", None, "img-disabled"),
                       ("disabled", "image", False, "action 'disabled' from image img-disabled")),
    "flavor-poweroff": (("f.poweroff", "poweroff", "img-plain"),
                        ("poweroff", "flavor", False, "action 'poweroff' from flavor f.poweroff")),
    "none": (("f.none", None, "img-plain"),
             ("disabled", "default", False,
              "no watchdog: neither flavor f.none nor image plain sets one")),
    "volume-reset": (("f.reset", "reset", None), ("reset", "flavor", True, "booted from volume")),
    "volume-none": (("f.none", None, None),
                    ("disabled", "default", False,
                     "no watchdog: flavor f.none sets none (booted from volume: no image;")),
    "image-gone": (("f.reset", "reset", "img-deleted"),
                   ("reset", "flavor", True, "image img-deleted is not in Glance")),
    "flavor-bogus": (("f.old", "bogus", "img-plain"),
                     ("bogus", "flavor", False, "not an action Nova knows")),
}


def table_servers() -> list[Server]:
    return [server(name, flavor=f, specs=flavor_specs(v), image=i)
            for name, ((f, v, i), _) in AUDIT_TABLE.items()]


def snapshot(servers: Iterable[Server], **kw: Any) -> wd.Snapshot:
    return wd.Snapshot(servers=tuple(servers), flavors=kw.pop("flavors", FLAVORS),
                       images=kw.pop("images", IMAGES), **kw)


@pytest.mark.parametrize("name", sorted(AUDIT_TABLE))
def test_each_server_gets_the_action_nova_gives_it_and_why(name):
    result = wd.audit(snapshot(table_servers()), Policy())
    (row,) = [r for r in result.servers if r.server.name == name]
    action, source, covered, words = AUDIT_TABLE[name][1]
    assert (row.effective.action, row.effective.source, row.covered) == (action, source, covered)
    assert words in row.reason
    assert row.boot_from_volume == (AUDIT_TABLE[name][0][2] is None)


def test_the_flavor_that_counts_is_the_servers_embedded_copy_not_todays():
    # f.none has no watchdog today; the server was built when it had reset
    built = server("old-copy", flavor="f.none", specs={wd.FLAVOR_KEY: "reset"})
    (row,) = wd.audit(snapshot([built]), Policy()).servers
    assert row.covered and row.effective.source == "flavor"


def test_the_audit_groups_evacuable_uncovered_first_and_lists_flavors_and_images():
    policy = Policy(exclude_names=("^skip-",))
    servers = [*table_servers(), server("skip-none"), server("skip-reset", flavor="f.reset",
                                                             specs={wd.FLAVOR_KEY: "reset"})]
    result = wd.audit(snapshot(servers), policy)
    uncovered = {n for n, (_, (_, _, covered, _)) in AUDIT_TABLE.items() if not covered}
    assert {r.server.name for r in result.evacuable_uncovered} == uncovered
    assert [r.server.name for r in result.other_uncovered] == ["skip-none"]
    assert result.other_uncovered[0].not_evacuable == "name matches exclude_names"
    order = [r.server.name for r in result.servers]
    assert order[:len(uncovered)] == sorted(uncovered) and order[len(uncovered)] == "skip-none"
    assert [f.name for f in result.flavors_not_reset] == ["f.disabled", "f.poweroff"]  # not ""
    assert [i.name for i in result.images_not_reset] == ["img-disabled", "img-poweroff"]
    assert not result.ok and result.evacuable_count == len(AUDIT_TABLE)


def test_the_verdict_counts_only_evacuable_servers():
    policy = Policy(exclude_names=("^skip-",))
    result = wd.audit(snapshot([server("skip-none"), server("ok", flavor="f.reset",
                                                            specs={wd.FLAVOR_KEY: "reset"})]),
                      policy)
    assert result.ok and len(result.other_uncovered) == 1
    assert wd.audit(snapshot([]), policy).ok


def test_an_image_changed_after_the_server_was_launched_does_not_cover_it():
    """Nova copies image properties at boot: a reset set on the image later reaches the
    server only with a rebuild. Glance keeps whole seconds; a change within the launch's
    second is not seen as later."""
    image = wd.Image("img-new", "img-new", "reset", updated_at=1000.0)
    built = server("built-before", flavor="f.none", image="img-new")
    for launched, covered in ((999.9, False), (999.0, False), (1000.4, True), (1001.0, True)):
        result = wd.audit(snapshot([built], images=(image,),
                                   launched_at={built.id: launched}), Policy())
        (row,) = result.servers
        assert row.covered == covered, launched
        assert row.image_changed_since_launch == (not covered)
        if not covered:
            assert "changed after the server was launched" in row.reason
    # the flavor resets it: covered whatever the copy (unless the copy set another
    # action, which no API shows), and so is a changed image that sets nothing
    by_flavor = server("by-flavor", flavor="f.reset", specs={wd.FLAVOR_KEY: "reset"},
                       image="img-new")
    for changed in (image, wd.Image("img-new", "plain", None, updated_at=5000.0)):
        (row,) = wd.audit(snapshot([by_flavor], images=(changed,),
                                   launched_at={by_flavor.id: 10.0}), Policy()).servers
        assert row.covered and row.image_changed_since_launch


# ---------------------------------------------------------------------------- evacuable


def test_evacuable_is_the_engines_selection_host_by_host():
    tagged = ("f.evac", {"evacuable": "true"})
    servers = [server("a", host="compute1"), server("b", host="compute1", flavor=tagged[0],
                                                    specs=tagged[1]),
               server("c", host="compute2"), server("d", host=None)]
    aggregates = (Aggregate("ha", frozenset({"compute2"}), {"evacuable": "true"}),)
    why, selection = wd.evacuable_servers(
        snapshot(servers, any_tagged_flavor=True, aggregates=aggregates), Policy())
    assert why == {"id-a": "not tagged evacuable (image, flavor or aggregate)", "id-b": "",
                   "id-c": "", "id-d": "on no compute host"}
    assert selection == ("compute2 is in an aggregate tagged evacuable: every instance",
                         "only instances with an evacuable image or flavor")
    everything, _ = wd.evacuable_servers(
        snapshot(servers, any_tagged_flavor=True), Policy(instance_filtering=False))
    assert {k for k, v in everything.items() if not v} == {"id-a", "id-b", "id-c"}


host_names = st.sampled_from(["compute1", "compute2", "compute3", None])


@given(hosts=st.lists(host_names, max_size=12), tagged=st.sets(st.integers(0, 11)),
       excluded=st.sets(st.integers(0, 11)), aggregate_hosts=st.sets(host_names))
@settings(max_examples=150, deadline=None)
def test_evacuable_servers_equals_plan_select_on_each_host(hosts, tagged, excluded,
                                                           aggregate_hosts):
    servers = [server(("skip-" if i in excluded else "vm-") + str(i), host=h,
                      image="img-evac" if i in tagged else "img-plain")
               for i, h in enumerate(hosts)]
    aggregates = (Aggregate("a", frozenset(h for h in aggregate_hosts if h),
                            {"evacuable": "true"}),)
    snap = snapshot(servers, tagged_images=frozenset({"img-evac"}) if tagged else frozenset(),
                    aggregates=aggregates)
    policy = Policy(exclude_names=("^skip-",))
    why, _ = wd.evacuable_servers(snap, policy)
    for host in {h for h in hosts if h}:
        chosen, skipped, _ = select(Inventory(host, [s for s in servers if s.host == host],
                                              snap.tagged_images, False, aggregates), policy)
        assert {s.id for s in chosen} == {s.id for s in servers if s.host == host
                                          and why[s.id] == ""}
        assert all(why[s.server.id] == s.reason for s in skipped)
    assert all(why[s.id] == "on no compute host" for s in servers if s.host is None)


# ---------------------------------------------------------------------------- enforce


def target(kind: str, value: str | None, name: str | None = None) -> wd.Target:
    name = name or f"{kind}-{value}"
    return wd.Target(kind, f"id-{name}", name, value)  # type: ignore[arg-type]


def test_the_plan_sets_unset_ones_keeps_explicit_ones_and_skips_reset_ones():
    targets = [target("flavor", None), target("flavor", ""), target("flavor", "disabled"),
               target("flavor", "reset"), target("image", None), target("image", "poweroff")]
    plan = wd.plan_enforce(targets, wd.audit(snapshot([]), Policy()))
    assert [c.target.name for c in plan.changes] == ["flavor-", "flavor-None", "image-None"]
    assert all(c.new == "reset" for c in plan.changes)
    assert [t.name for t in plan.kept] == ["flavor-disabled", "image-poweroff"]
    assert [t.name for t in plan.already] == ["flavor-reset"]
    forced = wd.plan_enforce(targets, wd.audit(snapshot([]), Policy()), override=True)
    assert len(forced.changes) == 5 and not forced.kept


def applied(targets: list[wd.Target], plan: wd.EnforcePlan) -> list[wd.Target]:
    new = {(c.target.kind, c.target.id): c.new for c in plan.changes}
    return [wd.Target(t.kind, t.id, t.name, new.get((t.kind, t.id), t.value)) for t in targets]


targets_strategy = st.lists(st.builds(
    wd.Target, kind=st.sampled_from(["flavor", "image"]), id=st.sampled_from("abcdef"),
    name=st.just("n"), value=st.one_of(st.none(), st.sampled_from(
        ["", "reset", "disabled", "poweroff", "none", "pause", "bogus"]))), max_size=10)


@given(targets=targets_strategy, override=st.booleans())
@settings(max_examples=300, deadline=None)
def test_enforce_is_idempotent_and_never_overwrites_without_override(targets, override):
    empty = wd.audit(snapshot([]), Policy())
    # one value per flavor or image, as a cloud has
    targets = list({(t.kind, t.id): t for t in targets}.values())
    plan = wd.plan_enforce(targets, empty, override=override)
    for change in plan.changes:
        assert change.target.value != "reset"
        assert override or change.target.unset
    assert not wd.plan_enforce(applied(targets, plan), empty, override=override).changes
    assert len(plan.changes) + len(plan.kept) + len(plan.already) == len(targets)


def test_servers_the_changes_reach_only_by_resize_or_rebuild_are_listed():
    servers = [
        server("by-image", flavor="f.disabled", specs={wd.FLAVOR_KEY: "disabled"}),
        server("by-flavor", flavor="f.none", image="img-other"),
        server("image-says-disabled", flavor="f.none", image="img-disabled"),
        server("already", flavor="f.reset", specs={wd.FLAVOR_KEY: "reset"}),
        server("untouched", flavor="f.poweroff", specs={wd.FLAVOR_KEY: "poweroff"},
               image="img-other"),
    ]
    images = (*IMAGES, wd.Image("img-other", "other"))
    snap = snapshot(servers, images=images)
    result = wd.audit(snap, Policy())
    targets = [wd.resolve("flavor", "f.none", snap.flavors), wd.resolve("image", "plain", images)]
    plan = wd.plan_enforce(targets, result)
    assert {(s.server.name, s.needs, s.by, s.now, s.after.action) for s in plan.stale} == {
        ("by-image", "rebuild", "image plain", "disabled", "reset"),
        ("by-flavor", "resize", "flavor f.none", "disabled", "reset")}


def test_targets_resolve_by_id_then_by_one_name():
    flavors = (wd.Flavor("10", "m1"), wd.Flavor("m1", "other"), wd.Flavor("11", "twin"),
               wd.Flavor("12", "twin"))
    assert wd.resolve("flavor", "m1", flavors).id == "m1"  # an id wins over a name
    assert wd.resolve("flavor", "10", flavors).name == "m1"
    with pytest.raises(LookupError, match="several flavors are named 'twin' \\(11, 12\\)"):
        wd.resolve("flavor", "twin", flavors)
    with pytest.raises(LookupError, match="no image has the name or id 'nope'"):
        wd.resolve("image", "nope", IMAGES)


def test_all_evacuable_targets_the_flavors_and_images_of_evacuable_servers_only():
    servers = [server("a", flavor="f.none", image="img-plain"),
               server("b", flavor="f.reset", specs={wd.FLAVOR_KEY: "reset"}, image=None),
               server("c", flavor="f.gone", image="img-gone"),
               server("skip-d", flavor="f.poweroff", image="img-poweroff")]
    snap = snapshot(servers)
    targets, missing = wd.evacuable_targets(wd.audit(snap, Policy(exclude_names=("^skip-",))),
                                            snap)
    assert [(t.kind, t.name) for t in targets] == [("flavor", "f.none"), ("flavor", "f.reset"),
                                                   ("image", "plain")]
    assert missing == ["flavor f.gone no longer exists", "image img-gone is not in Glance"]


# ---------------------------------------------------------------------------- parsers


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_a_name_or_id_is_accepted_exactly_when_printable_bounded_and_trimmed(text):
    ok = 1 <= len(text) <= 255 and terminal_text(text) == text and text.strip() == text
    try:
        assert watchdog_cli.name_or_id(text) == text and ok
    except argparse.ArgumentTypeError as exc:
        assert not ok
        assert "\n" not in str(exc)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_a_cloud_name_is_accepted_exactly_when_one_printable_token(text):
    ok = 1 <= len(text) <= 255 and terminal_text(text) == text and text.split() == [text]
    try:
        assert cloud_arg(text) == text and ok
    except argparse.ArgumentTypeError:
        assert not ok


names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@given(flavors=st.lists(names, max_size=4), images=st.lists(names, max_size=4),
       every=st.booleans(), override=st.booleans(), apply=st.booleans(), as_json=st.booleans(),
       cloud=st.one_of(st.none(), names), before=st.booleans())
@settings(max_examples=200, deadline=None)
def test_enforce_arguments_parse_to_what_was_given(flavors, images, every, override, apply,
                                                   as_json, cloud, before):
    argv = [f"--{opt}={v}" for opt, values in (("flavor", flavors), ("image", images))
            for v in values]
    argv += [flag for flag, on in (("--all-evacuable", every), ("--override", override),
                                   ("--apply", apply), ("--json", as_json)) if on]
    cloud_opts = [f"--os-cloud={cloud}"] if cloud else []  # "=": a name may start with "-"
    argv = [*cloud_opts, "enforce", *argv] if before else ["enforce", *argv, *cloud_opts]
    # argparse takes a value of "--" for the end of the options: refused, never passed on
    if not (flavors or images or every) or "--" in (*flavors, *images, cloud):
        with pytest.raises(SystemExit) as exit_:
            watchdog_cli.parse_args(argv)
        assert exit_.value.code == 2
        return
    args = watchdog_cli.parse_args(argv)
    assert (args.flavors, args.images, args.all_evacuable, args.override, args.apply,
            args.json, args.cloud) == (flavors, images, every, override, apply, as_json, cloud)


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["audit", "--bogus"], ["enforce"], ["enforce", "--override", "--apply"],
    ["enforce", "--flavor", ""], ["enforce", "--flavor", " lead"], ["enforce", "--image"],
    ["enforce", "--image", "a\x1b[2Jb"], ["audit", "--os-cloud", "two words"],
    ["audit", "--cloud"], ["--json", "audit"],
    ["enforce", "--image=--"], ["enforce", "--flavor=--"], ["--os-cloud=--", "audit"],
    ["audit", "--config-file=--"],
])
def test_bad_arguments_are_exit_2_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        watchdog_cli.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("openstack-ha-watchdog: error: ")
    assert not CONTROLS & set(err.rstrip("\n"))


def test_the_command_refuses_bad_arguments_in_one_line_without_a_traceback():
    done = subprocess.run([sys.executable, "-m", "nova_evacuate.watchdog_cli", "enforce"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "openstack-ha-watchdog: error: enforce needs --flavor, --image or --all-evacuable"
        " (see --help)"]


# ---------------------------------------------------------------------------- cloud_args


def test_cloud_and_config_file_are_taken_before_or_after_a_subcommand():
    p = argparse.ArgumentParser()
    add_cloud_arguments(p)
    sub = p.add_subparsers(dest="command").add_parser("audit")
    add_cloud_arguments(sub, defaults=False)
    before = p.parse_args(["--cloud", "a", "--config-file", "x.conf", "audit"])
    after = p.parse_args(["audit", "--os-cloud", "a", "--config-file", "x.conf"])
    neither = p.parse_args(["audit"])
    assert (before.cloud, before.config_files) == (after.cloud, after.config_files) == (
        "a", ["x.conf"])
    assert (neither.cloud, neither.config_files) == (None, None)


# ---------------------------------------------------------------------------- the command


class FakeNova:
    """What watchdog_cli uses of :class:`nova_evacuate.nova.Nova`; every method is one
    request, as the real one's are (each list fits one page here). Every server was
    launched at LAUNCHED; an image changed since has a later ``updated_at``, and the
    servers keep their copies, as in Nova."""

    def __init__(self, snap: wd.Snapshot) -> None:
        self.snap = snap
        self.flavor_values = {f.id: f.watchdog_action for f in snap.flavors}
        self.image_values = {i.id: i.watchdog_action for i in snap.images}
        self.image_updated = {i.id: LAUNCHED.timestamp() - 60 for i in snap.images}
        self.sent: list[str] = []

    def count_requests(self):
        start = len(self.sent)
        return lambda: len(self.sent) - start

    def servers_with_launch_times(self):
        self.sent.append("GET /servers/detail")
        return [(s, LAUNCHED) for s in self.snap.servers]

    def flavors(self):
        self.sent.append("GET /flavors/detail")
        return [wd.Flavor(f.id, f.name, self.flavor_values[f.id]) for f in self.snap.flavors]

    def images(self):
        self.sent.append("GET /v2/images")
        return [wd.Image(i.id, i.name, self.image_values[i.id], self.image_updated[i.id])
                for i in self.snap.images]

    def tagged_images(self):
        self.sent.append("GET /v2/images?evacuable=true")
        return frozenset()

    def any_flavor_tagged(self):
        self.sent.append("GET /flavors/detail")
        return False

    def aggregates(self):
        self.sent.append("GET /os-aggregates")
        return []

    def set_flavor_extra_spec(self, flavor_id, key, value):
        self.sent.append(f"POST /flavors/{flavor_id}/os-extra_specs")
        if value not in wd.NOVA_ACTIONS:
            raise NovaError("refused", f"set extra spec of flavor {flavor_id}: Nova answered 400:"
                                       f" Validation failed;\n{value!r} is not one of ...", 400)
        self.flavor_values[flavor_id] = value

    def set_image_property(self, image_id, key, value, *, replace):
        self.sent.append(f"PATCH /v2/images/{image_id}")
        assert replace == (self.image_values[image_id] is not None)
        self.image_values[image_id] = value
        self.image_updated[image_id] = LAUNCHED.timestamp() + 3600


@pytest.fixture
def conf_file(tmp_path: Path) -> Path:
    path = tmp_path / "openstack-ha.conf"
    path.write_text("[cloud]\ncloud = fake\n[evacuation]\nexclude_names = ^skip-\n")
    return path


def run_cli(monkeypatch, fake: FakeNova, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(watchdog_cli, "connect_to_cloud", lambda conf, choice, environ: fake)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    code = watchdog_cli.run(watchdog_cli.parse_args(list(argv)), out, {})
    return code, out.getvalue(), err.getvalue()


def test_the_audit_reports_exits_1_and_says_what_it_cost(monkeypatch, conf_file):
    fake = FakeNova(snapshot([*table_servers(), server("skip-none")]))
    code, out, err = run_cli(monkeypatch, fake, "audit", "--config-file", str(conf_file))
    assert code == 1 and err == ""
    assert "Evacuable servers whose guest would not be recovered (7):" in out
    assert "Other servers whose guest would not be recovered (not evacuable) (1):" in out
    assert "skip-none (id-skip-none) on compute1: no watchdog" in out
    assert "read 13 servers, 5 flavors and 4 images in" in out
    assert out.rstrip().splitlines()[-1].startswith("NOT COVERED: 7 of 12 evacuable servers")
    assert f"with {len(fake.sent)} API requests" in out

    code, out, _ = run_cli(monkeypatch, fake, "audit", "--json", "--config-file", str(conf_file))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["cloud"] == "fake"
    assert report["counts"]["evacuable_not_covered"] == 7
    assert report["other_not_covered"] == ["id-skip-none"]
    rows = {s["name"]: s for s in report["servers"]}
    for name, (_, (action, source, covered, _)) in AUDIT_TABLE.items():
        assert (rows[name]["action"], rows[name]["source"], rows[name]["covered"]) == (
            action, source, covered)
    assert rows["volume-none"]["image"] is None and rows["volume-none"]["boot_from_volume"]
    assert report["api_requests"] == 6


def test_the_audit_exits_0_when_every_evacuable_server_is_covered(monkeypatch, conf_file):
    fake = FakeNova(snapshot([server("ok", flavor="f.reset", specs={wd.FLAVOR_KEY: "reset"}),
                              server("skip-none")]))
    code, out, _ = run_cli(monkeypatch, fake, "audit", "--config-file", str(conf_file))
    assert code == 0 and out.rstrip().splitlines()[-1].startswith("OK: ")


@pytest.mark.parametrize("count", [1, 10, 500])
def test_the_audits_requests_do_not_grow_with_the_servers(monkeypatch, conf_file, count):
    fake = FakeNova(snapshot([server(f"vm-{i}") for i in range(count)]))
    code, out, _ = run_cli(monkeypatch, fake, "audit", "--json", "--config-file", str(conf_file))
    assert code == 1 and json.loads(out)["api_requests"] == 6 == len(fake.sent)


def test_enforce_plans_then_applies_then_plans_nothing(monkeypatch, conf_file):
    fake = FakeNova(snapshot(table_servers()))
    argv = ("enforce", "--flavor", "f.none", "--flavor", "f.disabled", "--image", "plain",
            "--config-file", str(conf_file))
    code, out, _ = run_cli(monkeypatch, fake, *argv)
    assert code == 0 and not [r for r in fake.sent if not r.startswith("GET")]
    assert "would set flavor f.none (1): hw:watchdog_action unset -> reset" in out
    assert "would set image plain (img-plain): hw_watchdog_action unset -> reset" in out
    assert "keep flavor f.disabled (3): hw:watchdog_action='disabled' is explicit" in out
    assert "flavor-disabled (id-flavor-disabled) on compute1: disabled now, reset after a" \
           " rebuild (image plain)" in out

    code, out, _ = run_cli(monkeypatch, fake, *argv, "--apply", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["applied"]
    assert [(c["kind"], c["name"], c["done"]) for c in plan["changes"]] == [
        ("flavor", "f.none", True), ("image", "plain", True)]
    assert (fake.flavor_values["1"], fake.image_values["img-plain"]) == ("reset", "reset")
    assert fake.flavor_values["3"] == "disabled"
    # image-disabled (f.none) is not: its image's disabled wins over the flavor's reset
    assert {(s["name"], s["needs"]) for s in plan["stale_servers"]} == {
        ("flavor-disabled", "rebuild"), ("flavor-poweroff", "rebuild"), ("none", "rebuild"),
        ("flavor-bogus", "rebuild"), ("volume-none", "resize")}

    writes = len([r for r in fake.sent if not r.startswith("GET")])
    code, out, _ = run_cli(monkeypatch, fake, *argv, "--apply", "--json")
    again = json.loads(out)
    assert code == 0 and again["changes"] == [] and [k["name"] for k in again["kept"]] == [
        "f.disabled"]
    assert len([r for r in fake.sent if not r.startswith("GET")]) == writes
    # the servers still run with their old copies: listed again, until resized or rebuilt
    # (what a server's image copy holds is not readable once the image changed)
    first = [(s["name"], s["needs"]) for s in plan["stale_servers"]]
    assert [(s["name"], s["needs"]) for s in again["stale_servers"]] == first
    assert {s["now"] for s in again["stale_servers"] if s["needs"] == "rebuild"} == {None}
    code, out, _ = run_cli(monkeypatch, fake, "audit", "--json", "--config-file", str(conf_file))
    rows = {s["name"]: s for s in json.loads(out)["servers"]}
    assert code == 1 and not rows["none"]["covered"]
    assert rows["none"]["image"]["changed_since_launch"]
    assert "was changed after the server was launched" in rows["none"]["reason"]


def test_enforce_override_replaces_an_explicit_value(monkeypatch, conf_file):
    fake = FakeNova(snapshot(table_servers()))
    code, out, _ = run_cli(monkeypatch, fake, "enforce", "--image", "img-disabled", "--override",
                           "--apply", "--config-file", str(conf_file))
    assert code == 0 and fake.image_values["img-disabled"] == "reset"
    assert "  set image img-disabled (img-disabled): hw_watchdog_action 'disabled' -> reset" in out


def test_enforce_of_a_flavor_that_does_not_exist_is_exit_2_in_one_line(monkeypatch, conf_file):
    fake = FakeNova(snapshot([]))
    code, out, err = run_cli(monkeypatch, fake, "enforce", "--flavor", "nope",
                             "--config-file", str(conf_file))
    assert (code, out) == (2, "")
    assert err.splitlines() == ["openstack-ha-watchdog: no flavor has the name or id 'nope'"]


def test_a_value_nova_refuses_is_reported_in_one_line_and_exit_1():
    fake = FakeNova(snapshot([]))
    flavor = wd.Target("flavor", "1", "f.none", None)
    out, err = io.StringIO(), io.StringIO()
    code = watchdog_cli.apply_changes(fake, [wd.Change(flavor, "bogus"),
                                             wd.Change(wd.Target("flavor", "2", "f2", None))],
                                      out, err)
    assert code == 1 and out.getvalue() == ""
    (line,) = err.getvalue().splitlines()
    assert line.startswith("openstack-ha-watchdog: flavor f.none (1) not changed: set extra"
                           " spec of flavor 1: Nova answered 400: Validation failed;")
    assert fake.sent == ["POST /flavors/1/os-extra_specs"]  # the rest is not tried


def test_a_cloud_that_cannot_be_read_is_exit_1_in_one_line(monkeypatch, conf_file):
    fake = FakeNova(snapshot([]))

    def unreachable():
        raise NovaError("unreachable", "list servers: cannot reach the cloud (ConnectFailure)")

    fake.servers_with_launch_times = unreachable  # type: ignore[method-assign]
    code, out, err = run_cli(monkeypatch, fake, "audit", "--config-file", str(conf_file))
    assert (code, out) == (1, ""), err
    assert err.splitlines() == ["openstack-ha-watchdog: cannot read the cloud: list servers:"
                                " cannot reach the cloud (ConnectFailure)"]


def test_names_from_nova_are_printed_without_control_characters(monkeypatch, conf_file):
    evil = "vm\x1b[2J\nFAKE LINE\u2028"
    fake = FakeNova(snapshot([server(evil)]))
    _, out, _ = run_cli(monkeypatch, fake, "audit", "--config-file", str(conf_file))
    assert not CONTROLS & (set(out) - {"\n"})
    assert not any(line.startswith("FAKE LINE") for line in out.splitlines())
    _, out, _ = run_cli(monkeypatch, fake, "audit", "--json", "--config-file", str(conf_file))
    assert json.loads(out)["servers"][0]["name"] == evil  # --json keeps it exact


# ---------------------------------------------------------------------------- the adapter


class Answer:
    def __init__(self, body: Any, status_code: int = 200) -> None:
        self.body, self.status_code = body, status_code
        self.content = json.dumps(body).encode() if body is not None else b""
        self.text, self.reason = self.content.decode(), ""

    def json(self) -> Any:
        return self.body


class Wire:
    """One service of a connection: what it was sent, and its answers in order."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[Any, ...]] = []

    def request(self, path: str, method: str, json: Any = None, microversion: str | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        self.sent.append((method, path, json, microversion, headers))
        return self.answers.pop(0)


def adapter(compute: Wire | None = None, image: Wire | None = None) -> Any:
    from nova_evacuate.nova import Nova

    hooks: dict[str, list[Any]] = {"response": []}
    session = SimpleNamespace(session=SimpleNamespace(hooks=hooks))
    return Nova(SimpleNamespace(compute=compute, image=image, session=session)), hooks


def test_the_adapter_reads_servers_with_their_launch_and_flavors_at_2_94():
    compute = Wire(
        Answer({"servers": [
            {"id": "s1", "name": "a", "status": "ACTIVE", "image": {"id": "i1"},
             "flavor": {"original_name": "m1", "extra_specs": {wd.FLAVOR_KEY: "reset"}},
             "OS-SRV-USG:launched_at": "2026-12-01T12:00:00.000000"},
            {"id": "s2", "name": "b", "status": "BUILD", "image": "", "flavor": {},
             "OS-SRV-USG:launched_at": None}]}),
        Answer({"flavors": [{"id": "1", "name": "m1", "extra_specs": {wd.FLAVOR_KEY: "reset"}},
                            {"id": "2", "name": "m2"}]}))
    nova, _ = adapter(compute)
    (s1, at1), (s2, at2) = nova.servers_with_launch_times()
    assert (s1.flavor_extra_specs, s1.image_id, at1) == (
        {wd.FLAVOR_KEY: "reset"}, "i1", datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert (s2.image_id, at2) == (None, None)  # booted from volume, never launched
    assert nova.flavors() == [wd.Flavor("1", "m1", "reset"), wd.Flavor("2", "m2", None)]
    assert [(m, p, v) for m, p, _, v, _ in compute.sent] == [
        ("GET", "/servers/detail?all_tenants=1&limit=1000", "2.94"),
        ("GET", "/flavors/detail?is_public=None&limit=1000", "2.94")]


def test_the_adapter_lists_every_image_hidden_ones_too_page_by_page():
    image = Wire(
        Answer({"images": [{"id": "i1", "name": "a", wd.IMAGE_KEY: "poweroff",
                            "updated_at": "2026-12-01T12:00:00Z"}],
                "next": "/v2/images?marker=i1&visibility=all"}),
        Answer({"images": [{"id": "i2", "name": "b"}]}),
        Answer({"images": [{"id": "i3", "name": "hidden", "os_hidden": True}]}))
    nova, _ = adapter(image=image)
    assert nova.images() == [
        wd.Image("i1", "a", "poweroff", datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp()),
        wd.Image("i2", "b"), wd.Image("i3", "hidden")]
    assert [p for _, p, *_ in image.sent] == [
        "/images?visibility=all&os_hidden=false&limit=1000",
        "/images?marker=i1&visibility=all",
        "/images?visibility=all&os_hidden=true&limit=1000"]


def test_the_adapter_writes_the_extra_spec_at_2_86_and_the_property_as_a_json_patch():
    compute, image = Wire(Answer({"extra_specs": {wd.FLAVOR_KEY: "reset"}})), Wire(
        Answer({}), Answer({}))
    nova, _ = adapter(compute, image)
    nova.set_flavor_extra_spec("m1.small/x", wd.FLAVOR_KEY, "reset")
    nova.set_image_property("i1", wd.IMAGE_KEY, "reset", replace=False)
    nova.set_image_property("i1", wd.IMAGE_KEY, "reset", replace=True)
    assert compute.sent == [("POST", "/flavors/m1.small%2Fx/os-extra_specs",
                             {"extra_specs": {wd.FLAVOR_KEY: "reset"}}, "2.86", None)]
    patch_type = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    assert image.sent == [
        ("PATCH", "/images/i1", [{"op": op, "path": "/hw_watchdog_action", "value": "reset"}],
         None, patch_type) for op in ("add", "replace")]


def test_the_adapter_says_which_service_refused_a_write():
    compute = Wire(Answer({"badRequest": {"code": 400, "message": "Validation failed; 'bogus'"
                                                                  " is not one of: none, reset."}},
                          400))
    image = Wire(Answer({"message": "403 Forbidden"}, 403))
    nova, _ = adapter(compute, image)
    with pytest.raises(NovaError) as refused:
        nova.set_flavor_extra_spec("1", wd.FLAVOR_KEY, "bogus")
    assert (refused.value.kind, str(refused.value)) == (
        "refused", "set extra spec of flavor 1: Nova answered 400: Validation failed; 'bogus' is"
                   " not one of: none, reset.")
    with pytest.raises(NovaError) as forbidden:
        nova.set_image_property("i1", wd.IMAGE_KEY, "reset", replace=False)
    assert forbidden.value.kind == "auth"
    assert str(forbidden.value).startswith("set property of image i1: Glance answered 403:")


def test_the_adapter_counts_every_response_of_its_session():
    nova, hooks = adapter()
    count = nova.count_requests()
    assert count() == 0
    for _ in range(3):
        for hook in hooks["response"]:
            hook(object())
    assert count() == 3
