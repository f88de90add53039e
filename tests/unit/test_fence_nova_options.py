"""Every option fence_nova declares does something, or says it does nothing (issue 18).

The rule, kept from now on: each option of ``FENCE_NOVA`` is read by the fencing path
(fence_compute/actions.py) while it runs an action, or by the protocol layer before it
(:data:`PROTOCOL_READ`), or it is marked ``compat_only``: accepted so that a fence_compute
configuration loads, said to have no effect in metadata and ``--help``, and logged when
given a value (tests/unit/test_fence_actions.py). An option marked so is never read.

The reads are recorded (every typed read of :class:`Options`: ``text``, ``flag``,
``number``, ``seconds``, ``secret``) while every action runs in configurations that between
them reach each branch that reads an option, with only the outermost ports faked: the BMC
clients, the Keystone/Nova connection, the Ceph CLI, Pacemaker and the timeline. What an
action reads to log the options without effect goes through ``get`` and ``is_set``, which
are not recorded: saying that an option does nothing is no use of it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from fence_compute import actions
from fence_compute import redfish as redfish_module
from fence_compute.fence_nova import FENCE_NOVA
from fence_compute.protocol import COMPAT_ONLY_MARK, Options, metadata_xml, runner, usage_text
from fence_compute.storage import StorageOutcome
from nova_evacuate import nova as nova_module
from nova_evacuate.ledger import AttributeMirror, LedgerEntry, State, format_marker
from nova_evacuate.nova import ComputeService
from openstack_ha import pacemaker

HOST = "compute1"
# Read by the protocol layer (fence_compute/protocol/runner.py), before any handler runs.
PROTOCOL_READ = frozenset({"quiet", "verbose", "verbose_level", "debug_file", "delay"})
ACTIONS = ("off", "reboot", "on", "status", "monitor", "list", "validate-all")

# Between them, every branch of actions.py that reads an option.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "ipmi, Keystone options, one storage address": {
        "plug": HOST, "auth_url": "http://keystone:5000/v3", "username": "admin",
        "password": "keystone-secret", "tenant_name": "admin", "user_domain": "Corp",
        "project_domain": "Corp", "region_name": "regionTwo", "endpoint_type": "publicURL",
        "insecure": True, "token_cache": "/run/x", "domain": "example.org",
        "ip": "192.0.2.11", "ipport": 6230, "bmc_username": "admin",
        "bmc_password": "bmc-secret", "lanplus": True, "cipher": 17, "retry_on": 2,
        "storage_fence": "ceph", "ceph_conf": "/etc/ceph/ceph.conf", "ceph_user": "ha",
        "ceph_keyring_file": "/etc/ceph/keyring", "storage_address": "10.0.1.11",
        "blocklist_expire": 3600, "separator": ";", "leave_disabled": True,
        "kdump_wait": 5, "kdump_port": 7411, "kdump_address": "10.0.0.11",
    },
    "redfish, clouds.yaml, maps": {
        "plug": HOST, "cloud": "overcloud", "endpoint_type": "internal",
        "compute_domain": "example.org", "power_driver": "redfish",
        "bmc_map": "compute1=https://192.0.2.11:8443", "bmc_username": "admin",
        "bmc_password": "bmc-secret", "redfish_system": "1", "redfish_auth": "session",
        "ssl_ca_file": "/etc/pki/bmc-ca.pem", "unfence_power": "keep-off",
        "storage_fence": "ceph", "ceph_conf": "/etc/ceph/ceph.conf",
        "ceph_keyring_file": "/etc/ceph/keyring", "storage_map": "compute1=10.0.1.11",
    },
    "record_only": {"plug": HOST, "cloud": "overcloud", "record_only": "1"},
    # Consul unreachable (nothing listens on port 9): no opinion, the fence goes on
    "record_only, Consul": {
        "plug": HOST, "cloud": "overcloud", "record_only": "1",
        "consul_config": "networks=management=http://127.0.0.1:9,storage=http://127.0.0.1:9"
                         " settle=0 samples=1 timeout=0.5",
        "partition_policy": "*=fence; management=refuse", "partition_hold": 60},
}


@dataclass
class FakeBmc:
    state: str = "on"
    verifies: bool = True
    where: str = "BMC fake"

    def power_state(self, deadline: float) -> str:
        return self.state

    def set_power(self, state: str, deadline: float) -> None:
        self.state = state

    def close(self, deadline: float) -> None:
        return None


@dataclass
class FakeCeph:
    """CephBlocklist as actions.py builds it (its options as keywords) and uses it."""

    conf: str = ""
    user: str = ""
    keyring: str = ""
    expire: int = 0
    listed: set[str] = field(default_factory=set)

    def fence(self, addresses, deadline: float) -> StorageOutcome:
        self.listed.update(addresses)
        return StorageOutcome(True, "listed")

    def unfence(self, addresses, deadline: float) -> StorageOutcome:
        self.listed.difference_update(addresses)
        return StorageOutcome(True, "removed")

    def state(self, addresses, deadline: float) -> dict[str, bool]:
        return {a: a in self.listed for a in addresses}

    def entries(self, deadline: float) -> dict[str, str]:
        return dict.fromkeys(self.listed, "until")


@dataclass
class FakeNova:
    service: ComputeService
    domains: list[str | None] = field(default_factory=list)

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        self.domains.append(domain)
        return self.service

    def force_down(self, service_id: str, forced: bool) -> ComputeService:
        self.service = replace(self.service, forced_down=forced)
        return self.service

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        self.service = replace(self.service, status="disabled", disabled_reason=reason)
        return self.service

    def enable(self, service_id: str) -> ComputeService:
        self.service = replace(self.service, status="enabled", disabled_reason=None)
        return self.service

    def ping(self) -> None:
        return None

    def compute_hosts(self) -> list[str]:
        return [HOST]


def _service(action: str) -> ComputeService:
    if action != "on":
        return ComputeService("id-1", HOST, "up", "enabled", False, None, None)
    # on goes the whole way back only once the evacuation is done and the host is up
    done = format_marker(LedgerEntry(State.DONE, datetime(2026, 11, 30, tzinfo=UTC), "ctl/1"))
    return ComputeService("id-1", HOST, "up", "disabled", True, done, None)


def _no_cluster(*args: object, **kwargs: object) -> Any:
    raise pacemaker.NoCluster("no cluster in this test")


@dataclass
class Run:
    """What one action asked of the fakes."""

    reads: set[str] = field(default_factory=set)
    connects: list[dict[str, Any]] = field(default_factory=list)
    nova: FakeNova | None = None


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    run = Run()
    typed = Options._typed

    def recording(self: Options, name: str, types: tuple[str, ...], python_type: type):
        run.reads.add(name)
        return typed(self, name, types, python_type)

    def connect(**kwargs: Any) -> FakeNova:
        run.connects.append(kwargs)
        assert run.nova is not None
        return run.nova

    monkeypatch.setattr(Options, "_typed", recording)
    monkeypatch.setattr(actions, "IpmiPower", lambda creds, **kwargs: FakeBmc())
    monkeypatch.setattr(redfish_module, "RedfishPower", lambda creds, **kwargs: FakeBmc())
    monkeypatch.setattr(actions, "CephBlocklist", FakeCeph)
    # kdump_wait: no crash kernel speaks, and no port is bound
    monkeypatch.setattr(actions, "wait_for_kdump", lambda *args, **kwargs: None)
    monkeypatch.setattr(nova_module, "connect", connect)
    monkeypatch.setattr(actions.timeline, "record", lambda *args, **kwargs: None)
    monkeypatch.setattr(actions, "pacemaker_mirror",
                        lambda: AttributeMirror(set=lambda *a: None, delete=lambda *a: None))
    for name in ("remote_nodes_down", "handled_connections", "hold_connection",
                 "release_connection"):
        monkeypatch.setattr(actions.pacemaker, name, _no_cluster)
    monkeypatch.setattr(pacemaker, "_exec", _no_cluster)  # nothing else reaches a tool
    yield run


def _run(run: Run, action: str, values: dict[str, Any]) -> int:
    run.nova = FakeNova(_service(action))
    values = {k: v for k, v in values.items() if not (k == "plug" and action in ("list",
                                                                                 "monitor"))}
    return actions.HANDLERS[action](Options.for_agent(FENCE_NOVA, values))


@pytest.fixture
def read_by_the_fencing_path(fakes: Run) -> set[str]:
    """Every option some action reads in some configuration; each action must succeed, or
    the branches after its failure would go unread."""
    for name, values in CONFIGURATIONS.items():
        for action in ACTIONS:
            assert _run(fakes, action, values) in (0, 2), f"{action} with {name}"
    return fakes.reads


@pytest.mark.parametrize("option", FENCE_NOVA.options, ids=lambda o: o.name)
def test_every_option_is_used_or_marked_compatibility_only(option, read_by_the_fencing_path):
    if option.compat_only:
        assert option.name not in read_by_the_fencing_path | PROTOCOL_READ, (
            f"{option.name} is marked compat_only but the fencing path reads it")
    else:
        assert option.name in read_by_the_fencing_path | PROTOCOL_READ, (
            f"{option.name} is never read: use it, or mark it compat_only with the reason")


@pytest.mark.parametrize("name", sorted(PROTOCOL_READ))
def test_options_said_to_be_read_by_the_protocol_are(name):
    assert f'"{name}"' in inspect.getsource(runner)


COMPAT_ONLY = [o for o in FENCE_NOVA.options if o.compat_only]


def test_the_compatibility_only_options_are_those_fence_nova_has_no_use_for():
    assert sorted(o.name for o in COMPAT_ONLY) == [
        "disable_timeout", "instance_filtering", "no_shared_storage", "plug_separator",
        "shell_timeout", "stonith_status_sleep"]


@pytest.mark.parametrize("option", COMPAT_ONLY, ids=lambda o: o.name)
def test_metadata_and_help_say_a_compatibility_option_has_no_effect(option):
    shortdesc = f'<shortdesc lang="en">{option.shortdesc}{COMPAT_ONLY_MARK}</shortdesc>'
    assert shortdesc in metadata_xml(FENCE_NOVA)
    help_text = " ".join(usage_text(FENCE_NOVA).split())
    assert f"Accepted for compatibility only; it has no effect: {option.compat_only}." in help_text


def test_the_engine_option_that_selects_instances_is_named():
    (option,) = [o for o in COMPAT_ONLY if o.name == "instance_filtering"]
    assert "[evacuation] instance_filtering" in option.compat_only


# ---------------------------------------------------------------------------- Keystone and Nova


def test_explicit_keystone_options_all_reach_the_connection(fakes):
    values = CONFIGURATIONS["ipmi, Keystone options, one storage address"]
    assert _run(fakes, "status", {**values, "power_driver": "none"}) == 0
    (kwargs,) = fakes.connects
    assert {k: v for k, v in kwargs.items() if k != "timeout"} == {
        "auth_url": "http://keystone:5000/v3", "username": "admin",
        "password": "keystone-secret", "project_name": "admin", "user_domain_name": "Corp",
        "project_domain_name": "Corp", "region_name": "regionTwo", "interface": "publicURL",
        "insecure": True, "token_cache": "/run/x"}
    assert fakes.nova.domains == ["example.org"]


@pytest.mark.parametrize(("given", "interface"), [
    ({"endpoint_type": "publicURL"}, "publicURL"),
    ({}, None),  # the clouds.yaml entry's own interface, not fence_compute's default
])
def test_a_cloud_connection_takes_region_interface_and_insecure(fakes, given, interface):
    values = {"plug": HOST, "cloud": "overcloud", "power_driver": "none",
              "region_name": "regionTwo", "insecure": True, "compute_domain": "example.org",
              **given}
    assert _run(fakes, "status", values) == 0
    (kwargs,) = fakes.connects
    assert {k: v for k, v in kwargs.items() if k != "timeout"} == {
        "cloud": "overcloud", "region_name": "regionTwo", "interface": interface,
        "insecure": True, "token_cache": "/run/openstack-ha/keystone"}
    assert fakes.nova.domains == ["example.org"]  # compute_domain, domain's old spelling
