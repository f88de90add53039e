"""The outside target's description (tests/target.py): a hosts file and a clouds.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.target import Target, TargetError, parse_hosts, target_host_names

CRASH = ["ssh", "root@compute1", "echo c > /proc/sysrq-trigger"]
RESTORE = ["ipmitool", "-H", "10.0.0.11", "-E", "chassis", "power", "on"]


def test_each_host_says_how_to_crash_it_and_bring_it_back() -> None:
    hosts = parse_hosts(json.dumps({
        "compute1": {"crash": CRASH, "restore": RESTORE, "power_driver": "ipmi"},
        "compute2": {"crash": ["true"], "restore": ["true"]}}))
    assert list(hosts) == ["compute1", "compute2"]
    assert hosts["compute1"].crash == tuple(CRASH)
    assert hosts["compute1"].restore == tuple(RESTORE)


@pytest.mark.parametrize("text, says", [
    ("", "not JSON"),
    ("[]", "one entry per compute host"),
    ("{}", "one entry per compute host"),
    ('{"compute1": "ssh"}', "compute1 must be an object"),
    ('{"compute1": {"restore": ["true"]}}', "compute1.crash"),
    ('{"compute1": {"crash": "reboot", "restore": ["true"]}}', "compute1.crash"),
    ('{"compute1": {"crash": [], "restore": ["true"]}}', "compute1.crash"),
    ('{"compute1": {"crash": ["true"], "restore": ["", "x"]}}', "compute1.restore"),
    ('{"compute1": {"crash": ["true"], "restore": [1]}}', "compute1.restore"),
])
def test_an_unusable_hosts_file_is_one_line_naming_the_entry(text: str, says: str) -> None:
    with pytest.raises(TargetError, match=says):
        parse_hosts(text)


@given(st.text(max_size=200))
def test_any_text_is_parsed_or_refused_with_target_error(text: str) -> None:
    try:
        hosts = parse_hosts(text)
    except TargetError:
        return
    assert hosts and all(h.crash and h.restore for h in hosts.values())


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12))
def test_any_json_document_is_parsed_or_refused_with_target_error(document: object) -> None:
    try:
        hosts = parse_hosts(json.dumps(document))
    except TargetError:
        return
    assert all(isinstance(part, str) and part for h in hosts.values()
               for part in (*h.crash, *h.restore))


def test_the_target_comes_from_the_environment(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"c1": {"crash": ["true"], "restore": ["true"]}}))
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    assert Target.from_environment({}) is None
    target = Target.from_environment({"OPENSTACK_HA_TARGET": str(hosts), "OS_CLOUD": "devstack",
                                      "OS_CLIENT_CONFIG_FILE": str(clouds)})
    assert target is not None
    assert (target.cloud, target.clouds_yaml, list(target.target_hosts)) == (
        "devstack", clouds, ["c1"])
    assert target_host_names({"OPENSTACK_HA_TARGET": str(hosts)}) == ["c1"]
    assert target_host_names({}) == []
    with pytest.raises(TargetError, match="OS_CLOUD"):
        Target.from_environment({"OPENSTACK_HA_TARGET": str(hosts)})


def test_a_failing_crash_command_is_an_error_that_names_the_host(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"c1": {"crash": ["false"], "restore": ["true"]}}))
    target = Target(hosts, cloud="x", clouds_yaml=tmp_path / "clouds.yaml")
    target.restore("c1")
    with pytest.raises(TargetError, match="c1: crash command false exited 1"):
        target.crash("c1")
