"""fence_nova's storage fence against a real Ceph (lab/ceph.py: Ceph 16.2, cephx, the fence
agent's key with mon 'allow r, allow command "osd blocklist"' and nothing more).

:class:`fence_compute.storage.CephBlocklist` adds, confirms and removes entries that the admin
key reads back; a wrong key or user is refused; a stopped Ceph is unreachable within the
deadline. Then ``off`` and ``on`` through the agent's runner, with ``power_driver=none`` (the
storage fence alone) and a fake Nova, prove the entry is in Ceph's map before Nova's service is
forced down and gone after unfencing once the evacuation is done.

One cluster for the module, on 127.0.0.1 with ports of its own; the last test stops it.
(Named ``..._ceph`` because pytest, without packages under tests/, cannot collect two test
modules named alike: the unit tests are tests/unit/test_fence_storage.py.)
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fence_compute import actions, storage
from fence_compute.fence_nova import FENCE_NOVA
from fence_compute.protocol import ExitCode, run
from fence_compute.storage import CephBlocklist, blocklist_entry, parse_blocklist
from lab.ceph import FENCE_CLIENT, CephLab, clusters_left_running, keyring_text
from nova_evacuate.ledger import AttributeMirror, LedgerEntry, State, format_marker, parse_marker
from nova_evacuate.nova import ComputeService
from openstack_ha import timeline

pytestmark = pytest.mark.lab

ADDRESS = "127.0.0.1"
# Ports of this module's own: neither Ceph's well-known ones nor test_lab_ceph.py's.
MON_PORTS = (23300, 26789)
DAEMON_PORTS = (26800, 26899)
STATE_PREFIX = "fence-storage-ceph"
HOST = "compute1"


def clusters_left_by_killed_runs() -> set[Path]:
    """This module's clusters still running after an earlier run was killed."""
    return clusters_left_running(
        lambda state: state.name == "ceph" and state.parent.name.startswith(STATE_PREFIX))


@pytest.fixture(scope="module")
def ceph(require_lab: Callable[..., None], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephLab]:
    require_lab("ceph-mon", "ceph-mgr", "ceph-osd", "ceph")
    for state in clusters_left_by_killed_runs():
        CephLab(state, ADDRESS, mon_ports=MON_PORTS, daemon_ports=DAEMON_PORTS).down()
    tmp = tmp_path_factory.mktemp(STATE_PREFIX)
    lab = CephLab(tmp / "ceph", ADDRESS, mon_ports=MON_PORTS, daemon_ports=DAEMON_PORTS)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def fence_key(lab: CephLab, **changes: str) -> CephBlocklist:
    values = {"conf": str(lab.conf), "user": FENCE_CLIENT, "keyring": str(lab.keyring(FENCE_CLIENT))}
    return CephBlocklist(**{**values, **changes})


def listed_by_admin(lab: CephLab) -> dict[str, str]:
    """The blocklist as the admin key reads it, through the ceph CLI."""
    return parse_blocklist(lab.ceph("osd", "blocklist", "ls", "--format", "json").stdout)


def soon(seconds: float = 30) -> float:
    return time.monotonic() + seconds


def test_fence_adds_confirms_and_unfence_removes(ceph: CephLab) -> None:
    addresses = ["10.0.1.11", "fd00:1::11"]
    outcome = fence_key(ceph).fence(addresses, soon())
    assert outcome.confirmed, outcome.reason
    listed = listed_by_admin(ceph)
    assert {"10.0.1.11:0/0", "[fd00:1::11]:0/0"} <= set(listed)
    # a year, not Ceph's default hour
    assert listed["10.0.1.11:0/0"][:4] == str(datetime.now(UTC).year + 1)
    assert fence_key(ceph).state([*addresses, "10.0.1.99"], soon()) == {
        "10.0.1.11": True, "fd00:1::11": True, "10.0.1.99": False}

    again = fence_key(ceph).fence(addresses, soon())  # a repeated off repeats no harm
    assert again.confirmed, again.reason

    removed = fence_key(ceph).unfence(addresses, soon())
    assert removed.confirmed, removed.reason
    assert not {"10.0.1.11:0/0", "[fd00:1::11]:0/0"} & set(listed_by_admin(ceph))
    assert fence_key(ceph).unfence(addresses, soon()).confirmed  # nothing left to remove


def test_a_wrong_key_or_user_is_refused(ceph: CephLab, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.keyring"
    wrong.write_text(keyring_text(f"client.{FENCE_CLIENT}", "AQBZFjZnAAAAABAAJKbwUdyXsJRWlTwuSuPpPA=="))
    wrong.chmod(0o600)
    for blocklist in (fence_key(ceph, keyring=str(wrong)), fence_key(ceph, user="nobody")):
        outcome = blocklist.fence(["10.0.1.12"], soon())
        assert (outcome.confirmed, outcome.kind) == (False, storage.REFUSED), outcome.reason
        assert "refused by Ceph" in outcome.reason and "\n" not in outcome.reason
    assert "10.0.1.12:0/0" not in listed_by_admin(ceph)


# ---------------------------------------------------------------------------- the agent


@dataclass
class FakeNova:
    """Nova's compute service of HOST; at each force-down it notes what Ceph lists then."""

    lab: CephLab
    service: ComputeService = field(default_factory=lambda: ComputeService(
        "id-1", HOST, "down", "enabled", False, None, None))
    log: list[str] = field(default_factory=list)
    listed_at_force_down: list[set[str]] = field(default_factory=list)

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        self.log.append("compute_service")
        return self.service

    def force_down(self, service_id: str, forced: bool) -> ComputeService:
        self.log.append(f"force_down {forced}")
        if forced:
            self.listed_at_force_down.append(set(listed_by_admin(self.lab)))
        self.service = replace(self.service, forced_down=forced)
        return self.service

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        self.log.append("disable")
        self.service = replace(self.service, status="disabled", disabled_reason=reason)
        return self.service

    def ping(self) -> None:
        self.log.append("ping")

    def enable(self, service_id: str) -> ComputeService:
        self.log.append("enable")
        self.service = replace(self.service, status="enabled", disabled_reason=None)
        return self.service


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def nova(ceph: CephLab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeNova:
    """Nova is a fake (our own port); nothing of Pacemaker or the machine's timeline is reached."""
    fake = FakeNova(ceph)
    monkeypatch.setattr(actions, "_nova", lambda options, target: fake)
    monkeypatch.setattr(actions.pacemaker, "hold_connection", lambda node, since, timeout=10: True)
    monkeypatch.setattr(actions.pacemaker, "drop_hold", lambda node, timeout=10: None)
    monkeypatch.setattr(actions.pacemaker, "release_connection", lambda node, timeout=10: True)
    monkeypatch.setattr(actions, "pacemaker_mirror", lambda: AttributeMirror(
        set=lambda name, value, node: None, delete=lambda name, node: None))
    monkeypatch.setenv(timeline.ENV, str(tmp_path / "timeline.jsonl"))
    return fake


def fence_nova(lab: CephLab, action: str, address: str) -> int:
    options = {
        "action": action, "plug": HOST, "cloud": "lab", "power_driver": "none",
        "max_down_percent": "100",  # no brake: Pacemaker's view is not read
        "storage_fence": "ceph", "ceph_conf": str(lab.conf), "ceph_user": FENCE_CLIENT,
        "ceph_keyring_file": str(lab.keyring(FENCE_CLIENT)), "storage_address": address,
    }
    stdin = "".join(f"{k}={v}\n" for k, v in options.items())
    return run(FENCE_NOVA, actions.HANDLERS, [], _Stdin(stdin), stdout=io.StringIO(),
               sleep=lambda _: None, setup_logging=None)


def test_off_blocklists_before_nova_and_on_unblocks_once_the_evacuation_is_done(
        ceph: CephLab, nova: FakeNova, monkeypatch: pytest.MonkeyPatch) -> None:
    address, entry = "10.0.1.21", blocklist_entry("10.0.1.21")
    assert fence_nova(ceph, "off", address) == ExitCode.SUCCESS
    assert nova.listed_at_force_down and entry in nova.listed_at_force_down[0]
    assert nova.service.forced_down and parse_marker(nova.service.disabled_reason).state is State.REQUESTED
    assert entry in listed_by_admin(ceph)
    assert fence_nova(ceph, "status", address) == ExitCode.STATUS_OFF  # from Nova, as before
    assert fence_nova(ceph, "monitor", address) == ExitCode.SUCCESS

    # still pending: unfencing refuses and the entry stays
    assert fence_nova(ceph, "on", address) == ExitCode.FAILURE
    assert entry in listed_by_admin(ceph)

    # done, but this device (power_driver=none) cannot see that the host went off: a level-2
    # fence of a host that may still run; the entry stays
    done = format_marker(LedgerEntry(State.DONE, datetime.now(UTC), "ctl1/42"))
    nova.service = replace(nova.service, disabled_reason=done)
    assert fence_nova(ceph, "on", address) == ExitCode.FAILURE
    assert entry in listed_by_admin(ceph)

    # the device that owns the power reads it off (here: its reading, without a BMC): the
    # entry is removed from the real Ceph before the power comes back
    monkeypatch.setattr(actions, "_bmc_power_state", lambda options, target: "off")
    assert fence_nova(ceph, "on", address) == ExitCode.SUCCESS
    assert entry not in listed_by_admin(ceph)


def test_ceph_stopped_is_unreachable_within_the_deadline_and_nova_is_untouched(
        ceph: CephLab, nova: FakeNova, tmp_path: Path) -> None:
    # keep a client's files, then stop the cluster (down removes its conf and keys)
    conf, keyring = tmp_path / "ceph.conf", tmp_path / "fence.keyring"
    conf.write_text(ceph.conf.read_text())
    keyring.write_bytes(ceph.keyring(FENCE_CLIENT).read_bytes())
    os.chmod(keyring, 0o600)
    ceph.down()

    started = time.monotonic()
    outcome = CephBlocklist(str(conf), FENCE_CLIENT, str(keyring)).fence(["10.0.1.13"], soon(8))
    elapsed = time.monotonic() - started
    assert (outcome.confirmed, outcome.kind) == (False, storage.UNREACHABLE), outcome.reason
    assert elapsed < 8.5, elapsed

    lab_files = replace_conf(ceph, conf, keyring)
    monkey_deadline = time.monotonic()
    assert fence_nova(lab_files, "off", "10.0.1.13") == ExitCode.FAILURE
    assert time.monotonic() - monkey_deadline < 60
    # read while the power was cut (fence_nova reads Nova meanwhile), nothing written
    assert set(nova.log) <= {"compute_service"} and not nova.service.forced_down


def replace_conf(lab: CephLab, conf: Path, keyring: Path) -> CephLab:
    """A view of the stopped cluster whose conf and fence key are the copies kept."""
    view = CephLab(conf.parent / "gone", ADDRESS, mon_ports=MON_PORTS, daemon_ports=DAEMON_PORTS)
    view.conf = conf
    view.keyring = lambda client: keyring  # type: ignore[method-assign]
    return view
