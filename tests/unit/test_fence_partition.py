"""fence_nova's partition judge (consul_config, partition_policy, partition_hold): the
settings' parsing, the hold's state file, and ``off`` with each network's Consul a real HTTP
server in this process (the lab's serf-backed face is tests/cluster/test_consul_partition.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_fence_actions as base
from hypothesis import given, settings
from hypothesis import strategies as st
from test_consul import FakeConsul, _serve, as_json, serf_check
from test_fence_actions import BRAKE_READS, HOST, World, fence

from fence_compute import actions, partition_hold
from fence_compute.fence_nova import FENCE_NOVA, check_config, unused_options
from fence_compute.protocol import ExitCode, Options
from nova_evacuate.metrics import fence_failure_reason
from openstack_ha import consul_config
from openstack_ha.consul_config import default_policy, load, parse_inline, settings_from_mapping
from openstack_ha.partition import parse_policy

world = base.world  # the fake world of fence_nova's handlers (power, Nova, Pacemaker)
TOKEN = "5e1c7a52-0d1a-4c3b-a1e0-5b6c7d8e9f00"

# ------------------------------------------------------------------ the settings


def test_inline_settings_take_defaults_and_bounds() -> None:
    settings = load("networks=management=http://127.0.0.1:8500,storage=http://127.0.0.2:8500"
                    " samples=2 interval=0.5")
    assert settings.networks == {"management": "http://127.0.0.1:8500",
                                 "storage": "http://127.0.0.2:8500"}
    assert (settings.samples, settings.interval, settings.timeout) == (2, 0.5, 2.0)
    assert settings.settle == 10.0
    assert settings.budget == 10.0 + 0.5 + 8.0
    assert settings.token is None


def test_a_file_gives_its_consul_section_only(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    conf = tmp_path / "openstack-ha.conf"
    conf.write_text(f"[DEFAULT]\ndebug = true\n[evacuation]\nparallel = 4\n"
                    f"[consul]\nnetworks = management=http://127.0.0.1:8500\n"
                    f"token_file = {token}\nsamples = 1\n")
    settings = load(str(conf))
    assert settings.networks == {"management": "http://127.0.0.1:8500"}
    assert settings.token == TOKEN and settings.samples == 1
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(("given", "expected"), [
    ("samples=3", "names no networks"),
    ("networks=management=http://127.0.0.1:8500 samples=0", "'samples' must be between 1 and 10"),
    ("networks=management=http://127.0.0.1:8500 interval=x", "'interval' must be a number"),
    ("networks=management=http://127.0.0.1:8500 timeout=nan", "'timeout' must be between"),
    ("networks=management=http://127.0.0.1:8500 sample=3", "unknown consul option 'sample'"),
    ("networks=management=http://127.0.0.1:8500 samples", "is not key=value"),
    ("networks=a=http://h networks=b=http://h", "given twice"),
    ("networks=management=ftp://h", "must start with http:// or https://"),
    ("networks=management=http://u:pw@h", "must not carry user info"),
    ("networks=management=http://h token_file=/nonexistent/t", "cannot be read"),
    ("networks=management=https://h ca_file=/nonexistent/ca", "cannot be used"),
    ("/nonexistent/openstack-ha.conf", "cannot be read"),
])
def test_bad_consul_config_is_one_line(given: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        load(given)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value) and "pw" not in str(caught.value)


def test_a_file_without_a_consul_section_or_not_ini_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("[DEFAULT]\ndebug = true\n")
    with pytest.raises(ValueError, match=r"has no \[consul\] section"):
        load(str(conf))
    conf.write_text("networks = management=http://h\n")
    with pytest.raises(ValueError, match="is not an INI file"):
        load(str(conf))


def test_a_token_file_of_anything_but_a_token_is_refused_without_showing_it(tmp_path) -> None:
    for content in (b"", b"\n\n", b"a b\n", b"\xff\xfe", b"x" * 5000):
        token = tmp_path / "token"
        token.write_bytes(content)
        with pytest.raises(ValueError) as caught:
            settings_from_mapping({"networks": "management=http://127.0.0.1:8500",
                                   "token_file": str(token)})
        assert "token" in str(caught.value) and "\n" not in str(caught.value)
        assert "a b" not in str(caught.value) and "xxxx" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*consul_config.OPTIONS, "other"]),
                       st.text(max_size=40), max_size=6))
def test_any_mapping_is_settings_or_one_line_value_error(values: dict[str, str]) -> None:
    try:
        settings = settings_from_mapping(values)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert 1 <= settings.samples <= 10 and 0 <= settings.interval <= 10
    assert 0.1 <= settings.timeout <= 30


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_inline_text_is_pairs_or_one_line_value_error(text: str) -> None:
    try:
        pairs = parse_inline(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert all(key and "=" not in key for key in pairs)


@pytest.mark.parametrize(("networks", "policy"), [
    (("management", "storage"), "storage=fence; *=fence; management=refuse"),
    (("management", "storage", "tenant"), "storage=fence; *=fence; management=refuse"),
    (("management",), "*=fence"),
    (("storage",), "*=fence"),
    (("mgmt", "ceph"), "*=fence"),
])
def test_the_default_policy_names_only_configured_networks(networks, policy) -> None:
    assert default_policy(networks) == policy
    parse_policy(policy, networks)  # and it parses over them


# ------------------------------------------------------------------ the hold's state


@pytest.mark.parametrize(("first", "last", "now", "expected"), [
    (None, None, 100.0, 100.0),  # no episode yet
    (10.0, 90.0, 100.0, 10.0),  # the episode goes on
    (10.0, 90.0, 90.0 + 3601, 3691.0),  # a gap of more than an hour: a new one
    (10.0, 200.0, 100.0, 100.0),  # the clock went back
    (50.0, 40.0, 100.0, 100.0),  # nonsense
])
def test_an_episode_of_refusals_starts_and_ends(first, last, now, expected) -> None:
    assert partition_hold.episode_start(first, last, now) == expected


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_any_state_file_reads_as_times_or_nothing(raw: bytes) -> None:
    first, last = partition_hold.parse_state(raw)
    assert (first is None) == (last is None)


def test_the_state_file_is_shared_across_attempts_and_ended(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(partition_hold, "STATE_DIR", str(tmp_path / "hold"))
    assert partition_hold.refused(HOST, 1000.0) == 1000.0
    assert partition_hold.refused(HOST, 1010.0) == 1000.0
    assert os.stat(tmp_path / "hold" / HOST).st_mode & 0o777 == 0o600
    partition_hold.end(HOST)
    assert partition_hold.refused(HOST, 1020.0) == 1020.0


def test_a_state_file_that_is_a_link_is_not_followed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(partition_hold, "STATE_DIR", str(tmp_path))
    (tmp_path / "elsewhere").write_text("{}")
    (tmp_path / HOST).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(partition_hold.HoldUnknown):
        partition_hold.refused(HOST, 1000.0)
    assert (tmp_path / "elsewhere").read_text() == "{}"


# ------------------------------------------------------------------ fence_nova off


class Network:
    """One network's Consul: a real HTTP server answering members and serfHealth for HOST."""

    def __init__(self, server: FakeConsul) -> None:
        self.server = server
        self.set("alive")

    def set(self, view: str) -> None:
        status, health = {"alive": (1, "passing"), "failed": (4, "critical"),
                          "leaving": (2, "passing")}[view]
        self.server.answers["/v1/agent/members"] = as_json(
            [{"Name": HOST, "Addr": "10.0.0.1", "Port": 8301, "Tags": {}, "Status": status}])
        self.server.answers[f"/v1/health/node/{HOST}"] = as_json([serf_check(HOST, health)])


@pytest.fixture
def networks() -> Iterator[dict[str, Network]]:
    servers = [_serve(FakeConsul()) for _ in range(2)]
    management, storage = (next(server) for server in servers)
    yield {"management": Network(management), "storage": Network(storage)}
    for server in servers:
        next(server, None)


@pytest.fixture
def hold_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(partition_hold, "STATE_DIR", str(tmp_path / "hold"))
    monkeypatch.setattr(actions, "MIN_REFUSAL_SECONDS", 0.0)
    return tmp_path / "hold"


def consul_options(networks: dict[str, Network], **extra: str) -> dict[str, str]:
    inline = ",".join(f"{name}={network.server.url}" for name, network in networks.items())
    settle = extra.pop("settle", "0")
    return {"consul_config": f"networks={inline} samples=2 interval=0.05 timeout=1"
                             f" settle={settle}", **extra}


def test_off_refuses_when_only_management_is_lost(world: World, caplog, networks,
                                                  hold_dir) -> None:
    networks["management"].set("failed")
    outcome = fence("off", caplog, **consul_options(networks))
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "timeline:fence_failed"]
    reason = world.fields("fence_failed")["reason"]
    assert reason.startswith("partition refused: management=failed storage=alive: only"
                             " management is lost")
    assert "left of partition_hold=300s" in reason
    assert fence_failure_reason(reason) == "partition"
    assert "power and Nova left untouched" in outcome.errors[0]
    assert world.bmc.state == "on" and not world.nova.service.forced_down
    assert (hold_dir / HOST).exists()


@pytest.mark.parametrize(("management", "storage"), [
    ("failed", "failed"),  # failed everywhere: the policy fences
    ("alive", "failed"),  # failed on storage: the policy fences
    ("leaving", "alive"),  # a view not known: no refusal
    ("alive", "alive"),  # Consul sees it alive everywhere: no rule, Pacemaker decides
])
def test_off_proceeds_unless_refused(world, caplog, networks, hold_dir, management,
                                     storage) -> None:
    networks["management"].set(management)
    networks["storage"].set(storage)
    outcome = fence("off", caplog, **consul_options(networks))
    assert outcome.rc == ExitCode.SUCCESS
    assert world.log[:len(BRAKE_READS) + 1] == [*BRAKE_READS, "timeline:fence_start"]
    assert world.bmc.state == "off" and world.nova.service.forced_down
    assert not (hold_dir / HOST).exists()
    # what Consul said is on the fence's first line
    seen = world.fields("fence_start")["consul"]
    shown = {"leaving": "unknown"}  # Consul's member status → the network's view
    assert seen.startswith(f"management={shown.get(management, management)}"
                           f" storage={storage}: ")
    if management == storage == "failed":
        assert "failed on every network; fencing (partition_policy rule *=fence)" in seen


def test_off_waits_for_consul_to_notice_then_refuses(world, caplog, networks,
                                                    hold_dir) -> None:
    """The cluster lost the node before gossip did: every network still sees it alive, so
    off reads again until one sees it otherwise (settle), then judges."""
    timer = threading.Timer(0.8, networks["management"].set, args=("failed",))
    timer.start()
    started = time.monotonic()
    outcome = fence("off", caplog, **consul_options(networks, settle="5"))
    timer.join()
    assert outcome.rc == ExitCode.FAILURE
    assert 0.8 <= time.monotonic() - started < 4
    assert "only management is lost" in world.fields("fence_failed")["reason"]
    assert world.bmc.state == "on"


def test_off_fences_a_node_consul_still_sees_alive_once_settle_is_over(world, caplog,
                                                                       networks,
                                                                       hold_dir) -> None:
    started = time.monotonic()
    assert fence("off", caplog, **consul_options(networks, settle="1")).rc == ExitCode.SUCCESS
    assert 1 <= time.monotonic() - started < 4
    assert world.bmc.state == "off"


def test_off_with_consul_unreachable_fences_as_without_it(world, caplog, networks,
                                                          hold_dir) -> None:
    options = consul_options(networks)
    for network in networks.values():
        network.server.shutdown()
        network.server.server_close()
    started = time.monotonic()
    assert fence("off", caplog, **options).rc == ExitCode.SUCCESS
    assert time.monotonic() - started < 5
    assert world.bmc.state == "off"
    assert any("no network gives a view" in m for m in caplog.messages)


def test_a_refusal_lasts_partition_hold_then_the_fence_proceeds(world, caplog, networks,
                                                                hold_dir) -> None:
    networks["management"].set("failed")
    options = consul_options(networks, partition_hold="1")
    assert fence("off", caplog, **options).rc == ExitCode.FAILURE
    time.sleep(1.1)
    outcome = fence("off", caplog, **options)
    assert outcome.rc == ExitCode.SUCCESS
    assert any("partition_hold=1s is over: fencing" in w for w in outcome.warnings)
    assert world.bmc.state == "off"
    assert not (hold_dir / HOST).exists()  # the next partition starts a hold of its own


def test_a_healed_partition_stays_refused_until_the_hold_is_over(world, caplog, networks,
                                                                 hold_dir) -> None:
    """Pacemaker keeps the node unclean after its link is back; seen alive everywhere now,
    it is no more right to fence it than before."""
    networks["management"].set("failed")
    assert fence("off", caplog, **consul_options(networks)).rc == ExitCode.FAILURE
    networks["management"].set("alive")
    outcome = fence("off", caplog, **consul_options(networks))
    assert outcome.rc == ExitCode.FAILURE
    reason = [fields for event, fields in world.events if event == "fence_failed"][-1]["reason"]
    assert reason.startswith("partition refused: management=alive storage=alive: nothing"
                             " seen since its partition was refused says it failed")
    assert "pcs stonith confirm compute1" in reason
    assert world.bmc.state == "on"
    partition_hold.end(HOST)  # (what a fence that proceeds does) no episode: Pacemaker decides
    assert fence("off", caplog, **consul_options(networks)).rc == ExitCode.SUCCESS


@pytest.mark.parametrize(("management", "storage", "refused"), [
    ("leaving", "alive", True),  # gossip rejoining: a view not known, no sign of failure
    ("alive", "leaving", True),
    ("alive", "failed", False),  # failed on storage: the policy fences
    ("failed", "failed", False),  # failed everywhere
])
def test_within_a_refused_partition_only_a_sign_of_failure_ends_the_refusal(
        world, caplog, networks, hold_dir, management, storage, refused) -> None:
    networks["management"].set("failed")
    assert fence("off", caplog, **consul_options(networks)).rc == ExitCode.FAILURE
    networks["management"].set(management)
    networks["storage"].set(storage)
    outcome = fence("off", caplog, **consul_options(networks))
    assert (outcome.rc == ExitCode.FAILURE) is refused
    assert (world.bmc.state == "on") is refused


def test_unfencing_ends_the_episode(world, caplog, networks, hold_dir) -> None:
    """After pcs stonith confirm Pacemaker unfences the node: a next partition is a new one."""
    networks["management"].set("failed")
    assert fence("off", caplog, **consul_options(networks)).rc == ExitCode.FAILURE
    assert (hold_dir / HOST).exists()
    fence("on", caplog, **consul_options(networks))
    assert not (hold_dir / HOST).exists()


def test_partition_hold_0_only_logs(world, caplog, networks, hold_dir) -> None:
    networks["management"].set("failed")
    outcome = fence("off", caplog, **consul_options(networks, partition_hold="0"))
    assert outcome.rc == ExitCode.SUCCESS
    assert any("only management is lost" in w for w in outcome.warnings)


def test_a_hold_that_cannot_be_kept_refuses_nothing(world, caplog, networks, tmp_path,
                                                   monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(partition_hold, "STATE_DIR", str(blocker / "hold"))
    networks["management"].set("failed")
    outcome = fence("off", caplog, **consul_options(networks))
    assert outcome.rc == ExitCode.SUCCESS
    assert any("cannot be kept" in e for e in outcome.errors)


def test_a_refused_attempt_lasts_at_least_min_refusal_seconds(world, caplog, networks,
                                                              hold_dir, monkeypatch) -> None:
    monkeypatch.setattr(actions, "MIN_REFUSAL_SECONDS", 0.6)
    networks["management"].set("failed")
    started = time.monotonic()
    assert fence("off", caplog, **consul_options(networks)).rc == ExitCode.FAILURE
    assert time.monotonic() - started >= 0.6


def test_the_token_goes_in_its_header_only(world, caplog, networks, hold_dir,
                                           tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    for network in networks.values():
        network.server.expected_token = TOKEN
    networks["management"].set("failed")
    options = consul_options(networks)
    options["consul_config"] += f" token_file={token}"
    outcome = fence("off", caplog, **options)
    assert outcome.rc == ExitCode.FAILURE  # refused: both networks were read
    assert all(headers.get("X-Consul-Token") == TOKEN
               for network in networks.values() for _, headers in network.server.requests)
    assert not any(TOKEN in path for network in networks.values()
                   for path, _ in network.server.requests)
    assert TOKEN not in caplog.text and TOKEN not in repr(world.events)


# ------------------------------------------------------------------ check_config


def errors_of(**given: str) -> list[str]:
    return check_config(Options.for_agent(FENCE_NOVA, {
        "plug": HOST, "cloud": "lab", "ip": "192.0.2.11", "bmc_username": "admin",
        "bmc_password": "x", **given}))


@pytest.mark.parametrize(("given", "expected"), [
    ({"consul_config": "networks=management=http://h,storage=http://g",
      "partition_policy": "tenant=refuse"}, "'tenant' is not a configured consul network"),
    ({"consul_config": "networks=management=http://h,storage=http://g",
      "partition_policy": "*=refuse"}, "cannot be about every network"),
    ({"consul_config": "networks=management=http://h,storage=http://g,tenant=http://t",
      "partition_policy": "storage=fence; management+storage=refuse"}, "contradicts"),
    ({"consul_config": "samples=3"}, "names no networks"),
    ({"consul_config": "/etc/nonexistent.conf"}, "cannot be read"),
    ({"consul_config": "networks=management=http://h", "partition_hold": 3601},
     "'partition_hold' must be at most 3600"),
])
def test_bad_partition_options_are_configuration_errors(given, expected) -> None:
    errors = errors_of(**given)
    assert any(expected in error for error in errors), errors


def test_the_default_policy_is_valid_for_any_accepted_networks() -> None:
    assert errors_of(consul_config="networks=management=http://h,storage=http://g") == []
    assert errors_of(consul_config="networks=mgmt=http://h") == []


def test_partition_options_without_consul_config_are_said_unused() -> None:
    options = Options.for_agent(FENCE_NOVA, {"plug": HOST, "cloud": "lab",
                                             "partition_policy": "*=fence",
                                             "partition_hold": 10})
    unused = unused_options(options)
    assert "consul_config is not set" in unused["partition_policy"]
    assert "partition_hold" in unused


def test_the_metadata_declares_the_partition_options() -> None:
    names = {option.name for option in FENCE_NOVA.options}
    assert {"consul_config", "partition_policy", "partition_hold"} <= names
