"""fence_nova's storage fence (fence_compute/storage.py and its place in actions.py).

The ``osd blocklist ls`` JSON parser (the storage map's: tests/unit/test_disks.py), the
configuration checks, the ``ceph``
CLI wrapper over a fake runner (argv, error kinds, read-back), and the fencing sequence over
the fakes of test_fence_actions.py plus a fake Ceph blocklist in the same call log: power
confirmed, then the blocklist confirmed, then Nova; a storage failure leaves Nova untouched;
unfencing removes the entries only after the evacuation is done and the power is back.
The same behaviour against a real Ceph: tests/functional/test_fence_storage_ceph.py.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import test_fence_actions as base
from hypothesis import given, settings
from hypothesis import strategies as st

from fence_compute import actions, storage
from fence_compute.fence_nova import FENCE_NOVA, check_config
from fence_compute.power import UNREACHABLE, PowerError
from fence_compute.protocol import ExitCode, FenceError, Options
from fence_compute.storage import CephBlocklist, StorageError, StorageOutcome, blocklist_entry
from nova_evacuate.disks import parse_blocklist
from nova_evacuate.ledger import State

# The fixture and helpers of the fencing-path unit tests, shared rather than copied.
world = base.world
fence, fenced, HOST = base.fence, base.fenced, base.HOST
BRAKE_READS, POWER_OFF, POWER_ON, MARKED = (base.BRAKE_READS, base.POWER_OFF, base.POWER_ON,
                                            base.MARKED)
READ_NOVA = base.READ_NOVA

STORAGE_MAP = "compute1=10.0.1.11+10.0.2.11,compute2=fd00:1::12"
ADDRESSES = ("10.0.1.11", "10.0.2.11")


# ---------------------------------------------------------------------------- parsers


def test_blocklist_ls_of_pacific_is_read() -> None:
    # as ceph 16.2.15 prints it: the address list, then the (empty) range list
    text = ('\n[{"addr":"[fd00::11]:0/0","until":"2027-12-03T07:41:36.746766+0000"},'
            '{"addr":"10.0.1.11:0/0","until":"2027-12-03T07:41:35.994770+0000"}][]')
    assert parse_blocklist(text) == {"[fd00::11]:0/0": "2027-12-03T07:41:36.746766+0000",
                                     "10.0.1.11:0/0": "2027-12-03T07:41:35.994770+0000"}
    assert parse_blocklist("[]") == {}


@pytest.mark.parametrize("text", ["", "  ", "{}", "[1]", '[{"until": "x"}]', "[]x", "[" * 5000,
                                  '"10.0.1.11:0/0"', '[{"addr": 3}]', "1" * 5000])
def test_blocklist_ls_that_is_not_a_list_of_entries_is_a_value_error(text) -> None:
    with pytest.raises(ValueError):
        parse_blocklist(text)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=20)


@given(st.one_of(st.text(), JSON.map(json.dumps), st.lists(JSON.map(json.dumps)).map("".join)))
@settings(max_examples=400, deadline=None)
def test_blocklist_parser_never_raises_anything_but_value_error(text: str) -> None:
    try:
        entries = parse_blocklist(text)
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items())


@given(st.lists(st.ip_addresses(), unique=True))
@settings(max_examples=200, deadline=None)
def test_every_entry_ceph_lists_is_read_back_as_written(addresses) -> None:
    listed = [{"addr": blocklist_entry(str(a)), "until": "2027-01-01T00:00:00.0+0000"}
              for a in addresses]
    assert set(parse_blocklist(json.dumps(listed) + "[]")) == {e["addr"] for e in listed}


def test_a_blocklist_entry_is_every_client_of_the_address_as_ceph_prints_it() -> None:
    assert blocklist_entry("10.0.1.11") == "10.0.1.11:0/0"
    assert blocklist_entry("fd00:1:0::11") == "[fd00:1::11]:0/0"


# ---------------------------------------------------------------------------- check_config


@pytest.fixture
def ceph_files(tmp_path: Path) -> dict[str, str]:
    conf, keyring = tmp_path / "ceph.conf", tmp_path / "ceph.client.openstack-ha.keyring"
    conf.write_text("[global]\nmon host = 127.0.0.1\n")
    keyring.write_text("[client.openstack-ha]\n\tkey = AQ==\n")
    keyring.chmod(0o600)
    return {"ceph_conf": str(conf), "ceph_keyring_file": str(keyring)}


def _check(**values: str) -> list[str]:
    given_values = {"plug": HOST, "cloud": "lab", "power_driver": "none", **values}
    return check_config(Options.for_agent(FENCE_NOVA, given_values))


def test_a_complete_storage_configuration_passes(ceph_files) -> None:
    assert _check(storage_fence="ceph", storage_map=STORAGE_MAP, **ceph_files) == []
    assert _check(storage_fence="ceph", storage_address="10.0.1.11", **ceph_files) == []
    assert _check() == []  # storage_fence=none needs nothing


@pytest.mark.parametrize(("values", "message"), [
    ({"ceph_conf": None}, "storage_fence=ceph needs 'ceph_conf'"),
    ({"ceph_keyring_file": "/nonexistent/keyring"}, "'ceph_keyring_file': /nonexistent/keyring"
     " is not a readable file"),
    ({"storage_map": None}, "needs the host's storage addresses"),
    ({"storage_address": "10.0.1.11"}, "not both"),
    ({"storage_map": "compute2=10.0.1.12"}, "no storage address for compute1"),
    ({"storage_map": "compute1=10.0.1.11,10.0.2.11"}, "option 'storage_map': entry 2"),
    ({"storage_map": None, "storage_address": "storage-1"}, "option 'storage_address'"),
    ({"blocklist_expire": "0"}, "'blocklist_expire' must be a positive"),
    ({"ceph_user": "client.openstack-ha"}, "'ceph_user' must be a Ceph user id"),
])
def test_an_incomplete_storage_configuration_is_refused(ceph_files, values, message) -> None:
    given_values = {"storage_fence": "ceph", "storage_map": STORAGE_MAP, **ceph_files, **values}
    errors = _check(**{k: v for k, v in given_values.items() if v is not None})
    assert len(errors) == 1 and message in errors[0], errors


def test_a_malformed_storage_map_is_refused_even_when_storage_fencing_is_off() -> None:
    (error,) = _check(storage_map="compute1=not-an-ip")
    assert error.startswith("option 'storage_map'")


@pytest.mark.parametrize(("values", "message"), [
    ({"storage_fence": "rbd"}, "storage_fence"),
    ({"storage_fence": "ceph"}, "ceph_conf"),
    ({"storage_fence": "ceph", "storage_map": "compute1=x"}, "storage_map"),
])
def test_bad_storage_input_fails_the_action_with_one_line_and_touches_nothing(
        world, caplog, values, message) -> None:
    outcome = fence("off", caplog, **values)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [] and outcome.errors and message in outcome.errors[0]
    assert all("Traceback" not in e for e in outcome.errors)


# ---------------------------------------------------------------------------- the ceph CLI


@dataclass
class FakeCli:
    """``subprocess.run`` as the ceph CLI: a blocklist in memory; ``answers`` maps a command
    word (add, rm, ls) to what that command returns or raises instead."""

    listed: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    ignore_add: bool = False  # acknowledges an add, lists nothing

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        assert "shell" not in kwargs and kwargs["timeout"] > 0
        self.calls.append(argv)
        verb = argv[argv.index("blocklist") + 1]
        answer = self.answers.get(verb)
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:
            return answer
        if verb == "add" and not self.ignore_add:
            self.listed[argv[argv.index("add") + 1]] = "2027-01-01T00:00:00.0+0000"
        elif verb == "rm":
            self.listed.pop(argv[argv.index("rm") + 1], None)
        elif verb == "ls":
            out = json.dumps([{"addr": a, "until": u} for a, u in self.listed.items()]) + "[]"
            return subprocess.CompletedProcess(argv, 0, "\n" + out, f"listed {len(self.listed)}")
        return subprocess.CompletedProcess(argv, 0, "", "")


def failed(rc: int, stderr: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], rc, "", stderr)


def blocklist(cli: FakeCli) -> CephBlocklist:
    return CephBlocklist("/etc/ceph/ceph.conf", "openstack-ha", "/etc/ceph/keyring",
                         expire=31536000, runner=cli)


def far() -> float:
    return storage.time.monotonic() + 60


def test_fence_adds_each_address_then_confirms_it_by_reading_the_blocklist() -> None:
    cli = FakeCli()
    outcome = blocklist(cli).fence(["10.0.1.11", "fd00::11"], far())
    assert outcome.confirmed and outcome.kind == "", outcome.reason
    assert cli.calls[0] == ["ceph", "--conf", "/etc/ceph/ceph.conf", "--id", "openstack-ha",
                            "--keyring", "/etc/ceph/keyring", "--connect-timeout", "10",
                            "osd", "blocklist", "add", "10.0.1.11:0/0", "31536000"]
    assert [c[-4:] for c in cli.calls[1:]] == [
        ["blocklist", "add", "[fd00::11]:0/0", "31536000"], ["blocklist", "ls", "--format", "json"]]
    assert set(cli.listed) == {"10.0.1.11:0/0", "[fd00::11]:0/0"}


def test_an_add_that_ceph_acknowledges_but_does_not_list_is_not_a_fence() -> None:
    outcome = blocklist(FakeCli(ignore_add=True)).fence(["10.0.1.11"], far())
    assert not outcome.confirmed and outcome.kind == storage.PROTOCOL
    assert "does not list it" in outcome.reason


@pytest.mark.parametrize(("answer", "kind", "message"), [
    (failed(13, "[errno 13] RADOS permission denied (error connecting to the cluster)\n"),
     storage.REFUSED, "refused by Ceph"),
    (failed(13, "Error EACCES: access denied\n"), storage.REFUSED, "access denied"),
    (failed(110, "[errno 110] RADOS timed out (error connecting to the cluster)\n"),
     storage.UNREACHABLE, "no Ceph monitor answered"),
    (failed(1, "2026-12-03T07:45:09.1+0000 7f -1 monclient(hunting): authenticate timed out"
               " after 7\ntimed out\n"), storage.UNREACHABLE, "timed out"),
    (subprocess.TimeoutExpired(["ceph"], 5), storage.TIMEOUT, "no answer within"),
    (FileNotFoundError(2, "No such file or directory: 'ceph'"), storage.PROTOCOL,
     "cannot run the ceph CLI"),
    (failed(22, "Error EINVAL: invalid command\n"), storage.PROTOCOL, "invalid command"),
])
def test_each_way_ceph_fails_is_one_kind_and_one_line(answer, kind, message) -> None:
    outcome = blocklist(FakeCli(answers={"add": answer})).fence(ADDRESSES, far())
    assert (outcome.confirmed, outcome.kind) == (False, kind)
    assert message in outcome.reason and "\n" not in outcome.reason


def test_an_unreadable_blocklist_is_a_bad_answer() -> None:
    cli = FakeCli(answers={"ls": subprocess.CompletedProcess([], 0, "listed 0 entries", "")})
    outcome = blocklist(cli).fence(ADDRESSES, far())
    assert outcome.kind == storage.PROTOCOL and "unreadable" in outcome.reason


def test_no_command_starts_without_time_left_and_each_is_bounded_by_the_deadline() -> None:
    cli = FakeCli()
    outcome = blocklist(cli).fence(ADDRESSES, storage.time.monotonic())
    assert (outcome.kind, cli.calls) == (storage.TIMEOUT, [])
    blocklist(cli).fence(ADDRESSES, storage.time.monotonic() + 4)
    assert cli.calls[0][cli.calls[0].index("--connect-timeout") + 1] == "1"


def test_unfence_removes_the_entries_and_confirms_they_are_gone() -> None:
    cli = FakeCli(listed={"10.0.1.11:0/0": "x", "10.0.2.11:0/0": "x", "10.9.9.9:0/0": "x"})
    outcome = blocklist(cli).unfence(ADDRESSES, far())
    assert outcome.confirmed, outcome.reason
    assert set(cli.listed) == {"10.9.9.9:0/0"}  # another host's entry stays


def test_unfence_whose_entries_stay_listed_fails() -> None:
    cli = FakeCli(listed={"10.0.1.11:0/0": "x"},
                  answers={"rm": subprocess.CompletedProcess([], 0, "", "")})
    outcome = blocklist(cli).unfence(["10.0.1.11"], far())
    assert not outcome.confirmed and "still lists 10.0.1.11" in outcome.reason


def test_state_says_which_addresses_are_blocklisted() -> None:
    cli = FakeCli(listed={"10.0.1.11:0/0": "x"})
    assert blocklist(cli).state(ADDRESSES, far()) == {"10.0.1.11": True, "10.0.2.11": False}
    with pytest.raises(StorageError) as raised:
        blocklist(FakeCli(answers={"ls": failed(110, "timed out")})).state(ADDRESSES, far())
    assert raised.value.kind == storage.UNREACHABLE


# ---------------------------------------------------------------------------- the sequence


@dataclass
class FakeBlocklist:
    """CephBlocklist as actions.py uses it, writing to the world's call log."""

    log: list[str]
    listed: set[str] = field(default_factory=set)
    failure: StorageOutcome | None = None  # fence/unfence answer this instead
    read_failure: StorageError | None = None

    def fence(self, addresses, deadline: float) -> StorageOutcome:
        self.log.append("ceph:fence " + " ".join(addresses))
        if self.failure is not None:
            return self.failure
        self.listed.update(addresses)
        return StorageOutcome(True, "Ceph lists them")

    def unfence(self, addresses, deadline: float) -> StorageOutcome:
        self.log.append("ceph:unfence " + " ".join(addresses))
        if self.failure is not None:
            return self.failure
        self.listed.difference_update(addresses)
        return StorageOutcome(True, "Ceph no longer lists them")

    def state(self, addresses, deadline: float) -> dict[str, bool]:
        self.entries(deadline)
        return {a: a in self.listed for a in addresses}

    def entries(self, deadline: float) -> dict[str, str]:
        self.log.append("ceph:ls")
        if self.read_failure is not None:
            raise self.read_failure
        return dict.fromkeys(self.listed, "until")


@pytest.fixture
def ceph(world, monkeypatch, ceph_files) -> FakeBlocklist:
    fake = FakeBlocklist(world.log)
    seen: list[Options] = []

    def make(options: Options) -> FakeBlocklist:
        seen.append(options)
        return fake

    monkeypatch.setattr(actions, "storage_blocklist", make)
    monkeypatch.setattr(base, "BASE", {**base.BASE, "storage_fence": "ceph",
                                       "storage_map": STORAGE_MAP, **ceph_files})
    return fake


CEPH_FENCE = ["ceph:fence 10.0.1.11 10.0.2.11", "timeline:storage_fenced"]


def test_off_confirms_power_then_storage_then_touches_nova(world, ceph, caplog) -> None:
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*BRAKE_READS, "timeline:fence_start", *POWER_OFF,
                         "timeline:power_off_confirmed", *CEPH_FENCE, *MARKED,
                         "pacemaker:hold_connection compute1"]
    assert world.fields("storage_fenced") == {"addresses": "10.0.1.11 10.0.2.11"}
    assert ceph.listed == set(ADDRESSES)


def test_off_with_storage_as_the_only_fence(world, ceph, caplog) -> None:
    outcome = fence("off", caplog, power_driver="none", ip=None)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "power:driver compute1",
                         "timeline:power_off_confirmed", *CEPH_FENCE, *MARKED,
                         "pacemaker:hold_connection compute1"]


@pytest.mark.parametrize("kind", storage.KINDS)
def test_off_whose_storage_fence_fails_leaves_nova_untouched(world, ceph, caplog, kind) -> None:
    ceph.failure = StorageOutcome(False, f"ceph osd blocklist: {kind} here", kind)
    outcome = fence("off", caplog, power_driver="none", ip=None)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "power:driver compute1",
                         "timeline:power_off_confirmed", "ceph:fence 10.0.1.11 10.0.2.11",
                         "timeline:fence_failed"]
    assert world.fields("fence_failed")["reason"] == (
        f"storage fence not confirmed: ceph osd blocklist: {kind} here")
    assert "Nova left untouched" in outcome.errors[0]
    assert not world.nova.service.forced_down


def test_off_whose_power_off_fails_never_fences_storage(world, ceph, caplog) -> None:
    world.bmc.stuck = True
    outcome = fence("off", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert not any(e.startswith(("ceph:", "nova:")) for e in world.log)


def test_a_host_without_storage_address_is_a_fence_error_not_a_traceback() -> None:
    options = Options.for_agent(FENCE_NOVA, {"plug": HOST, "storage_map": "compute2=10.0.1.12"})
    with pytest.raises(FenceError, match="compute1 has no storage address in storage_map"):
        actions.storage_addresses(options, HOST)
    options = Options.for_agent(FENCE_NOVA, {"plug": HOST})
    with pytest.raises(FenceError, match="set storage_address or storage_map"):
        actions.storage_addresses(options, HOST)
    options = Options.for_agent(FENCE_NOVA, {"plug": HOST, "storage_address": "[fd00::11]"})
    assert actions.storage_addresses(options, HOST) == ("fd00::11",)


@pytest.mark.parametrize("state", [State.REQUESTED, State.CLAIMED])
def test_on_while_the_evacuation_is_pending_keeps_the_blocklist(world, ceph, caplog,
                                                                state) -> None:
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(state)
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, "timeline:unfence_refused"]
    assert ceph.listed == set(ADDRESSES)


READ_POWER = ["power:driver compute1", "power:state", "power:close"]
UNBLOCK = ["ceph:ls", *READ_POWER, "ceph:unfence 10.0.1.11 10.0.2.11",
           "timeline:storage_unfenced"]


def test_on_once_the_evacuation_is_done_unblocks_while_off_then_powers_on(world, ceph,
                                                                          caplog) -> None:
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    world.held = {HOST}
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*READ_NOVA, *UNBLOCK, *POWER_ON,
                         "pacemaker:release_connection compute1",
                         "nova:force_down False", "timeline:unfenced"]
    assert ceph.listed == set()


def test_on_of_a_host_without_entries_only_powers_on(world, ceph, caplog) -> None:
    """A retry after the entries went, or a host its level-1 device fenced by power alone."""
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log[:len(READ_NOVA) + 1] == [*READ_NOVA, "ceph:ls"]
    assert "ceph:unfence 10.0.1.11 10.0.2.11" not in world.log and world.bmc.state == "on"


def test_on_of_a_host_that_never_went_off_keeps_the_blocklist(world, ceph, caplog) -> None:
    """The zombie: level 2 fenced its storage while it ran on (its BMC silent). Its BMC
    answers again and says on: its guests may still run, so the entries stay."""
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(State.DONE)
    world.bmc.state, world.held = "on", {HOST}
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, "ceph:ls", *READ_POWER, "timeline:unfence_refused"]
    assert "it may write again only once powered off" in outcome.errors[0]
    assert ceph.listed == set(ADDRESSES) and world.held == {HOST}


def test_on_of_a_storage_only_device_never_removes_entries(world, ceph, caplog) -> None:
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(State.DONE)
    outcome = fence("on", caplog, power_driver="none", ip=None)
    assert outcome.rc == ExitCode.FAILURE
    assert "power_driver=none cannot confirm it is off" in outcome.errors[0]
    assert ceph.listed == set(ADDRESSES)
    assert not any(e.startswith(("nova:force_down", "pacemaker:release")) for e in world.log)


def test_record_only_fences_storage_without_touching_power(world, ceph, caplog) -> None:
    # storage fencing is no power action: record_only leaves only the power to another device
    outcome = fence("off", caplog, record_only="1")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log == [*BRAKE_READS, "timeline:fence_start", "timeline:power_off_confirmed",
                         *CEPH_FENCE, *MARKED, "pacemaker:hold_connection compute1"]
    assert world.bmc.state == "on"


def test_on_with_record_only_never_removes_entries(world, ceph, caplog) -> None:
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(State.DONE)
    outcome = fence("on", caplog, record_only="1")
    assert outcome.rc == ExitCode.FAILURE
    assert "record_only cannot confirm it is off" in outcome.errors[0]
    assert ceph.listed == set(ADDRESSES)
    assert not any(e.startswith("power:") for e in world.log)


def test_on_whose_bmc_is_silent_keeps_the_blocklist(world, ceph, caplog) -> None:
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(State.DONE)
    world.bmc.failure = PowerError(UNREACHABLE, "BMC 192.0.2.11:623 did not answer")
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert ceph.listed == set(ADDRESSES)
    assert not any(e.startswith("ceph:unfence") for e in world.log)


def test_on_whose_blocklist_removal_fails_keeps_the_host_off(world, ceph, caplog) -> None:
    ceph.listed = set(ADDRESSES)
    ceph.failure = StorageOutcome(False, "ceph osd blocklist: no Ceph monitor answered",
                                  storage.UNREACHABLE)
    world.nova.service = fenced(State.DONE)
    world.bmc.state, world.held = "off", {HOST}
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert world.log == [*READ_NOVA, "ceph:ls", *READ_POWER,
                         "ceph:unfence 10.0.1.11 10.0.2.11", "timeline:unfence_refused"]
    assert "storage stays fenced" in outcome.errors[0]
    assert world.bmc.state == "off" and world.held == {HOST}


def test_on_whose_blocklist_is_unreadable_keeps_the_host_off(world, ceph, caplog) -> None:
    ceph.read_failure = StorageError(storage.UNREACHABLE, "no Ceph monitor answered")
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    outcome = fence("on", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert "blocklist unreadable" in outcome.errors[0] and world.bmc.state == "off"


def test_on_with_unfence_power_keep_off_unblocks_the_host_it_leaves_off(world, ceph,
                                                                        caplog) -> None:
    ceph.listed = set(ADDRESSES)
    world.nova.service = fenced(State.DONE)
    world.bmc.state = "off"
    outcome = fence("on", caplog, unfence_power="keep-off")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert ceph.listed == set() and world.bmc.state == "off"


def test_status_reports_power_and_logs_the_blocklist(world, ceph, caplog) -> None:
    ceph.listed = {"10.0.1.11"}
    world.bmc.state = "off"
    outcome = fence("status", caplog)
    assert outcome.rc == ExitCode.STATUS_OFF
    assert "10.0.1.11 blocklisted, 10.0.2.11 not blocklisted" in caplog.text
    ceph.read_failure = StorageError(storage.UNREACHABLE, "no Ceph monitor answered")
    world.bmc.state = "on"
    outcome = fence("status", caplog)
    assert outcome.rc == ExitCode.SUCCESS  # status is about power; Ceph only logged
    assert "blocklist state unknown" in outcome.warnings[0]


def test_monitor_checks_that_ceph_answers_this_key(world, ceph, caplog) -> None:
    outcome = fence("monitor", caplog)
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert world.log[-1] == "ceph:ls"
    ceph.read_failure = StorageError(storage.REFUSED, "refused by Ceph")
    outcome = fence("monitor", caplog)
    assert outcome.rc == ExitCode.FAILURE
    assert "Ceph: refused: refused by Ceph" in outcome.errors[0]
