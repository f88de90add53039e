"""The lab's disk writer (lab/rbd_guest.py) against a real Ceph (lab/ceph.py): what a server's
disk sees while one host, two hosts, or a fenced host and its successor write it.

Each writer runs as the lab runs it (``/usr/bin/python3 -I rbd_guest.py run``, Debian's librbd)
with a compute host's key, from 127.0.0.1: both hosts' writers share an address, so the fence
blocklists one writer's exact client address (``127.0.0.1:0/<nonce>``, read from ``rbd
status``) where the fence agent blocklists a host's whole address (``10.0.1.11:0/0``).

A cluster of its own (lab/ceph.py) on ports no other test uses, for this module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.ceph import FENCE_CLIENT, POOL, CephLab, clusters_left_running
from lab.rbd_guest import Record, acks_from_log, fenced_writes_after_takeover

pytestmark = pytest.mark.lab

ADDRESS = "127.0.0.1"
MON_PORTS = (53300, 56789)
DAEMON_PORTS = (53400, 53499)
STATE_PREFIX = "rbd-guest-ceph"
GUEST = Path(__file__).resolve().parents[2] / "lab" / "rbd_guest.py"
PYTHON = "/usr/bin/python3"  # Debian's, with python3-rados and python3-rbd
A, B = "compute1", "compute2"


def clusters_left_by_killed_runs() -> set[Path]:
    """This module's clusters still running after an earlier run was killed."""
    return clusters_left_running(
        lambda state: state.name == "ceph" and state.parent.name.startswith(STATE_PREFIX))


@pytest.fixture(scope="module")
def ceph(require_lab: Callable[..., None], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephLab]:
    require_lab("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd", PYTHON)
    if subprocess.run([PYTHON, "-I", "-c", "import rados, rbd"], check=False).returncode != 0:
        pytest.fail(f"{PYTHON} has no rados/rbd modules (python3-rados, python3-rbd)")
    for state in clusters_left_by_killed_runs():
        CephLab(state, ADDRESS, mon_ports=MON_PORTS, daemon_ports=DAEMON_PORTS).down()
    lab = CephLab(tmp_path_factory.mktemp(STATE_PREFIX) / "ceph", ADDRESS,
                  mon_ports=MON_PORTS, daemon_ports=DAEMON_PORTS)
    try:
        lab.up([A, B])
        yield lab
    finally:
        lab.down()


@dataclass
class Writer:
    """One host's writer process on one image, and its ack log."""

    host: str
    proc: subprocess.Popen[bytes]
    log: Path
    stderr: Path
    started_at: float  # epoch, as the ack log's times

    def acks(self) -> list[Record]:
        return acks_from_log(self._lines())[0]

    def errors(self) -> list[dict[str, Any]]:
        return acks_from_log(self._lines())[1]

    def _lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture
def image() -> str:
    return f"{uuid.uuid4()}_disk"


@pytest.fixture
def start_writer(ceph: CephLab, image: str, tmp_path: Path) -> Iterator[Callable[[str], Writer]]:
    """start_writer(host): HOST's writer on this test's image, with HOST's key."""
    started: list[Writer] = []

    def start(host: str) -> Writer:
        base = f"{image}.{host}.{len(started)}"  # a log of its own for each process
        log, stderr = tmp_path / f"{base}.jsonl", tmp_path / f"{base}.err"
        started_at = time.time()
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(
                [PYTHON, "-I", str(GUEST), "run", "--conf", str(ceph.conf), "--id", host,
                 "--keyring", str(ceph.keyring(host)), "--pool", POOL, "--image", image,
                 "--host", host, "--log", str(log)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        started.append(Writer(host, proc, log, stderr, started_at))
        return started[-1]

    yield start
    for writer in started:
        writer.stop()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(0.1)
    return found


def rbd_json(ceph: CephLab, *args: str) -> Any:
    done = subprocess.run(["rbd", "--conf", str(ceph.conf), "--id", "admin", *args, "--format", "json"],
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def watchers(ceph: CephLab, image: str) -> list[str]:
    """The client addresses watching IMAGE (a writer's open image watches its header)."""
    return [w["address"] for w in rbd_json(ceph, "status", f"{POOL}/{image}")["watchers"]]


def lock_owners(ceph: CephLab, image: str) -> list[str]:
    return [locker["address"] for locker in rbd_json(ceph, "lock", "ls", f"{POOL}/{image}")]


def dump(ceph: CephLab, image: str, host: str = B) -> list[Record]:
    """The records in IMAGE, in offset order, read by the writer's own ``dump`` (read-only)."""
    done = subprocess.run([PYTHON, "-I", str(GUEST), "dump", "--conf", str(ceph.conf), "--id", host,
                           "--keyring", str(ceph.keyring(host)), "--pool", POOL, "--image", image],
                          capture_output=True, text=True, timeout=30, check=True)
    return [Record(r["seq"], r["host"], r["t"]) for r in json.loads(done.stdout)]


def blocklist(ceph: CephLab, address: str) -> None:
    """The fence agent's key blocklists ADDRESS (one client: its nonce is part of it)."""
    ceph.ceph("osd", "blocklist", "add", address, "600", client=FENCE_CLIENT)


# ---------------------------------------------------------------------------- one writer


def test_a_writer_holds_its_disk_and_writes_two_records_a_second(ceph, image, start_writer):
    writer = start_writer(A)
    wait_for(writer.acks, 20, "the first ack")
    # it created the disk as Nova does (layering, exclusive-lock), and holds it: one watcher,
    # which owns the exclusive lock
    info = rbd_json(ceph, "info", f"{POOL}/{image}")
    assert set(info["features"]) == {"layering", "exclusive-lock"} and info["size"] == 4 << 20
    [address] = watchers(ceph, image)
    assert address.startswith(f"{ADDRESS}:0/")
    assert lock_owners(ceph, image) == [address]

    before = len(writer.acks())
    time.sleep(3)
    assert 5 <= len(writer.acks()) - before <= 7  # one every 0.5 s
    acks = writer.acks()
    assert [a.seq for a in acks] == list(range(1, len(acks) + 1))
    assert {a.host for a in acks} == {A}

    # every acknowledged record is in the image, at seq * 64; reading it takes no lock
    records = {r.seq: r for r in dump(ceph, image)}
    assert all(records[a.seq].host == A for a in acks)
    assert lock_owners(ceph, image) == [address]

    # SIGTERM: a clean stop, which releases the lock and the watch
    assert writer.stop() == 0
    assert writer.errors() == []
    assert watchers(ceph, image) == [] and lock_owners(ceph, image) == []


def test_a_restarted_writer_continues_the_sequence(ceph, image, start_writer):
    first = start_writer(A)
    wait_for(lambda: len(first.acks()) >= 3, 20, "three acks")
    assert first.stop() == 0
    last = first.acks()[-1].seq
    again = start_writer(A)
    wait_for(again.acks, 20, "the restarted writer's first ack")
    assert again.acks()[0].seq == last + 1


# ---------------------------------------------------------------------------- two writers


def test_two_live_writers_both_write_the_lock_ping_pongs(ceph, image, start_writer):
    """No fence: the old host still runs when the server lands on the new one. Both keep writing
    (librbd hands the lock over on every request, as it does for QEMU), and the check finds the
    old host's writes after the new host's first: the danger a fence prevents."""
    old = start_writer(A)
    wait_for(lambda: len(old.acks()) >= 2, 20, "the old host's acks")
    new = start_writer(B)
    wait_for(new.acks, 20, "the new host's first ack")
    time.sleep(2)
    assert old.proc.poll() is None and new.proc.poll() is None
    assert len(watchers(ceph, image)) == 2
    first_new = new.acks()[0]
    assert first_new.seq > old.acks()[0].seq  # it continued the old host's sequence
    acks = old.acks() + new.acks()
    assert len(new.acks()) >= 4
    # the old host's acks after the new one's first: in time, and in sequence numbers too
    assert len(fenced_writes_after_takeover(acks, A, B, by="t")) >= 3
    assert fenced_writes_after_takeover(acks, A, B, by="seq")
    # the image holds both hosts' records after the new host's first (which slot keeps whose
    # record depends on the two writers' phase: both write the same sequence numbers)
    assert {r.host for r in dump(ceph, image) if r.seq >= first_new.seq} <= {A, B}


# ---------------------------------------------------------------------------- the fence


def test_fence_then_takeover_no_record_of_the_fenced_host_follows_the_new_hosts(
        ceph, image, start_writer):
    """The order of a recovery: the failed host is fenced (blocklisted), then the server is
    rebuilt on another host. The fenced writer gets an I/O error; the new one takes the lock at
    once and continues from the fenced host's last record; nothing of the fenced host follows."""
    old = start_writer(A)
    wait_for(lambda: len(old.acks()) >= 3, 20, "the old host's acks")
    [address] = watchers(ceph, image)
    blocklist(ceph, address)
    try:
        assert old.proc.wait(10) == 3
        [error] = old.errors()
        assert error["errno"] == 108 and "ConnectionShutdown" in error["error"]
        assert error["seq"] == old.acks()[-1].seq + 1 and error["host"] == A
        assert old.stderr.read_text() == ""

        new = start_writer(B)
        wait_for(lambda: len(new.acks()) >= 4, 20, "the new host's acks")
        assert new.acks()[0].seq == old.acks()[-1].seq + 1  # the failed write never landed
        assert new.acks()[0].t - new.started_at < 5  # no wait for the lock the fenced one held
        assert address not in watchers(ceph, image)

        records = dump(ceph, image)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        hosts = [r.host for r in records]
        assert hosts == [A] * len(old.acks()) + [B] * (len(hosts) - len(old.acks()))
        assert fenced_writes_after_takeover(records, A, B) == []
        assert fenced_writes_after_takeover(old.acks() + new.acks(), A, B, by="t") == []
    finally:
        ceph.ceph("osd", "blocklist", "rm", address, client=FENCE_CLIENT)


def test_fencing_a_live_old_host_stops_it_clobbering_the_new_hosts_disk(ceph, image, start_writer):
    """Both hosts write (the server was rebuilt before the fence); the fence ends the old one's
    writes: its failed write lands nowhere, and from then on every record the new host has
    acknowledged is the one the image holds."""
    old = start_writer(A)
    wait_for(lambda: len(old.acks()) >= 2, 20, "the old host's acks")
    [address] = watchers(ceph, image)
    new = start_writer(B)
    wait_for(lambda: len(new.acks()) >= 2, 20, "the new host's acks")
    assert fenced_writes_after_takeover(old.acks() + new.acks(), A, B, by="t")  # both write

    blocklist(ceph, address)
    try:
        assert old.proc.wait(10) == 3
        [error] = old.errors()
        assert error["errno"] == 108
        time.sleep(2)
        assert new.proc.poll() is None
        after_fence = [a for a in new.acks() if a.t > error["t"]]
        assert len(after_fence) >= 3  # the new host goes on, unhindered

        records = {r.seq: r for r in dump(ceph, image)}
        assert not [r for r in records.values() if r.host == A and r.seq > old.acks()[-1].seq]
        assert all(records[a.seq].host == B for a in after_fence)
        # the ack logs: nothing of the old host after its fence took effect
        assert fenced_writes_after_takeover(old.acks() + after_fence, A, B, by="t") == []
    finally:
        ceph.ceph("osd", "blocklist", "rm", address, client=FENCE_CLIENT)


# ---------------------------------------------------------------------------- startup failures


@pytest.mark.parametrize(("change", "expected"), [
    ({"--conf": "/nonexistent/ceph.conf"}, "conf_read_file"),
    ({"--keyring": "/nonexistent/keyring"}, "error connecting to the cluster"),
    ({"--pool": "nopool"}, "error opening pool 'nopool'"),
    ({"--host": "not a host"}, "host 'not a host'"),
    ({"--log": "/nonexistent/dir/guest.jsonl"}, "No such file or directory"),
])
def test_a_guest_that_cannot_start_says_why_in_one_line_and_exits_2(ceph, image, tmp_path, change,
                                                                     expected):
    options = {"--conf": str(ceph.conf), "--id": A, "--keyring": str(ceph.keyring(A)),
               "--pool": POOL, "--image": image, "--host": A, "--log": str(tmp_path / "g.jsonl"),
               **change}
    done = subprocess.run([PYTHON, "-I", str(GUEST), "run", *[x for kv in options.items() for x in kv]],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and expected in done.stderr
