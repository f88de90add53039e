"""The engine's disk check (nova_evacuate/disks.py) against a real Ceph: a hypervisor's
writer (``rbd bench`` as the compute's key, from 127.0.0.1) holds a server's disk; the
engine's read-only key sees it as the failed host's; once the fence agent's key blocklists
that client, the disk is free.

A cluster of its own (lab/ceph.py) on ports no other test uses, for this module.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from lab.ceph import EVACUATE_CLIENT, FENCE_CLIENT, POOL, CephLab
from nova_evacuate.disks import DiskCheckError, RbdDisks

pytestmark = pytest.mark.lab

ADDRESS = "127.0.0.1"


@pytest.fixture(scope="module")
def ceph(require_lab: Callable[..., None], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephLab]:
    require_lab("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd")
    lab = CephLab(tmp_path_factory.mktemp("ceph-disks") / "state", ADDRESS,
                  mon_ports=(43300, 46789), daemon_ports=(46800, 46899))
    try:
        lab.up(["compute1"])
        yield lab
    finally:
        lab.down()


@pytest.fixture
def disks(ceph: CephLab) -> RbdDisks:
    return RbdDisks(POOL, str(ceph.conf), EVACUATE_CLIENT, str(ceph.keyring(EVACUATE_CLIENT)))


@pytest.fixture
def writer(ceph: CephLab) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server's disk, open and written by compute1 as a hypervisor holds it."""
    server_id = str(uuid.uuid4())
    image = f"{POOL}/{server_id}_disk"
    base = ["rbd", "--conf", str(ceph.conf), "--id", "compute1"]
    subprocess.run([*base, "create", "--size", "16M", image], check=True, timeout=30)
    proc = subprocess.Popen([*base, "bench", "--io-type", "write", "--io-size", "4096",
                             "--io-threads", "1", "--io-total", "1G", image],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield server_id, proc
    finally:
        proc.kill()
        proc.wait(10)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(0.2)
    return found


def test_a_disk_the_failed_host_writes_is_held_until_its_client_is_blocklisted(ceph, disks, writer):
    server_id, _ = writer
    held = wait_for(lambda: disks.held_by(server_id, [ADDRESS]), 30, "the writer's watch")
    assert held.ip == ADDRESS
    # another host's storage address: not the failed host's writer
    assert disks.held_by(server_id, ["10.0.1.12"]) is None
    # the fence agent's key blocklists that client (its address only: the engine reads from
    # the same 127.0.0.1)
    ceph.ceph("osd", "blocklist", "add", held.address, "600", client=FENCE_CLIENT)
    try:
        assert disks.held_by(server_id, [ADDRESS]) is None
    finally:
        ceph.ceph("osd", "blocklist", "rm", held.address, client=FENCE_CLIENT)


def test_a_server_without_an_rbd_disk_has_nothing_to_check(disks):
    assert disks.watchers(str(uuid.uuid4())) is None
    assert disks.held_by(str(uuid.uuid4()), [ADDRESS]) is None


def test_the_engines_key_reads_but_cannot_write(ceph):
    done = subprocess.run(["rbd", "--conf", str(ceph.conf), "--id", EVACUATE_CLIENT, "create",
                           "--size", "1M", f"{POOL}/{uuid.uuid4()}_disk"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr


def test_a_key_without_access_or_a_silent_ceph_is_an_error_not_a_free_disk(ceph, writer, tmp_path):
    server_id, _ = writer
    # the fence agent's key has no osd caps: it cannot read the image's header
    no_osd = RbdDisks(POOL, str(ceph.conf), FENCE_CLIENT, str(ceph.keyring(FENCE_CLIENT)))
    with pytest.raises(DiskCheckError, match="rbd status"):
        no_osd.held_by(server_id, [ADDRESS])
    # a monitor that does not answer: bounded by the timeout
    silent = tmp_path / "ceph.conf"
    silent.write_text(ceph.conf.read_text().replace("43300", "43399").replace("46789", "46799"))
    started = time.monotonic()
    with pytest.raises(DiskCheckError, match="no answer within 2s"):
        RbdDisks(POOL, str(silent), EVACUATE_CLIENT, str(ceph.keyring(EVACUATE_CLIENT)),
                 timeout=2).held_by(server_id, [ADDRESS])
    assert time.monotonic() - started < 10
