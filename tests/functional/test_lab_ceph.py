"""The lab's Ceph cluster (lab/ceph.py), seen the way the fence agent and a hypervisor see it:
the ``ceph`` and ``rbd`` CLIs with nothing but the conf and a key from the state dir.

One cluster, on 127.0.0.1, for the whole module; the last test takes it down and checks that
nothing is left behind.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.ceph import DAEMONS, FENCE_CLIENT, POOL, CephLab, clusters_left_running
from lab.procs import all_pids, cmdline

pytestmark = pytest.mark.lab

ADDRESS = "127.0.0.1"
# Not the well-known 3300/6789 that a lab's own Ceph may be using on this address meanwhile:
# clients read the ports from the conf.
MON_PORTS = (13300, 16789)
COMPUTES = ("compute1", "compute2")
EACCES = 13


def clusters_left_by_killed_runs() -> set[Path]:
    """This module's clusters still running after an earlier run was killed: they hold
    MON_PORTS."""
    return clusters_left_running(
        lambda state: state.name == "state" and state.parent.name.startswith("ceph-lab")
        and "pytest-" in str(state))


@pytest.fixture(scope="module")
def ceph(require_lab: Callable[..., None], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephLab]:
    require_lab("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd")
    for state in clusters_left_by_killed_runs():
        CephLab(state).down()
    lab = CephLab(tmp_path_factory.mktemp("ceph-lab") / "state", ADDRESS, mon_ports=MON_PORTS)
    try:
        lab.up(COMPUTES)
        yield lab
    finally:
        lab.down()


def ceph_as(lab: CephLab, client: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``ceph`` as CLIENT with only the conf: it names the monitor and the keyring."""
    return subprocess.run(["ceph", "--conf", str(lab.conf), "--id", client, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def rbd_as(lab: CephLab, client: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rbd", "--conf", str(lab.conf), "--id", client, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def watchers(lab: CephLab, image: str) -> list[str]:
    """The client addresses watching IMAGE (``rbd status``: "watcher=ADDR client.N cookie=C")."""
    out = rbd_as(lab, "compute1", "status", image).stdout
    return [word.removeprefix("watcher=") for word in out.split() if word.startswith("watcher=")]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(0.2)


def test_health_is_ok(ceph: CephLab) -> None:
    proc = ceph_as(ceph, "admin", "health", "detail")
    assert proc.stdout.strip() == "HEALTH_OK", proc.stdout


def test_pool_vms_has_size_one_and_the_rbd_application(ceph: CephLab) -> None:
    pools = {p["pool_name"]: p for p in json.loads(
        ceph_as(ceph, "admin", "osd", "pool", "ls", "detail", "--format", "json").stdout)}
    assert pools[POOL]["size"] == 1
    assert pools[POOL]["min_size"] == 1
    assert "rbd" in pools[POOL]["application_metadata"]


def test_daemons_listen_on_the_given_address_only(ceph: CephLab) -> None:
    pids = {str(ceph.daemon_pid(daemon)) for daemon in DAEMONS}
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    ours = [line.split()[3] for line in listening.splitlines()
            if any(f"pid={pid}," in line for pid in pids)]
    assert {f"{ADDRESS}:{port}" for port in MON_PORTS} <= set(ours)
    assert all(local.rsplit(":", 1)[0] == ADDRESS for local in ours), ours


def test_keyrings_are_private(ceph: CephLab) -> None:
    for client in ("admin", FENCE_CLIENT, *COMPUTES):
        mode = stat.S_IMODE(ceph.keyring(client).stat().st_mode)
        assert mode == 0o600, f"{client}: {oct(mode)}"


def test_a_compute_holds_its_disk_with_the_exclusive_lock_until_blocklisted(ceph: CephLab) -> None:
    """A hypervisor's view: compute1's key creates vms/<uuid>_disk and writes it through librbd,
    holding the exclusive lock; once the fence agent's key blocklists that client, its writes
    fail and its watch is gone, which is what the engine's check before a rebuild reads."""
    image = f"{POOL}/{uuid.uuid4()}_disk"
    created = rbd_as(ceph, "compute1", "create", "--size", "16M", image)
    assert created.returncode == 0, created.stderr
    writer = subprocess.Popen(
        ["rbd", "--conf", str(ceph.conf), "--id", "compute1", "bench", "--io-type", "write",
         "--io-size", "4K", "--io-threads", "1", "--io-pattern", "seq", "--io-total", "10G", image],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    address = ""
    try:
        wait_until(lambda: bool(watchers(ceph, image)), 20, "a watcher on the image")
        (address,) = watchers(ceph, image)
        locks = rbd_as(ceph, "compute1", "lock", "ls", image).stdout
        assert "1 exclusive lock" in locks and address in locks, locks
        assert writer.poll() is None, "the writer stopped on its own"

        added = ceph_as(ceph, FENCE_CLIENT, "osd", "blocklist", "add", address, "3600")
        assert added.returncode == 0, added.stderr
        _, errors = writer.communicate(timeout=30)
        assert writer.returncode != 0, "the writer outlived its blocklisting"
        assert "Cannot send after transport endpoint shutdown" in errors, errors[-500:]
        wait_until(lambda: not watchers(ceph, image), 20, "the blocklisted watch gone")
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if address:
            ceph_as(ceph, "admin", "osd", "blocklist", "rm", address)
    removed = rbd_as(ceph, "compute1", "rm", image)
    assert removed.returncode == 0, removed.stderr


def test_the_fence_key_adds_lists_and_removes_blocklist_entries(ceph: CephLab) -> None:
    address = f"{ADDRESS}:0/{uuid.uuid4().int % 2**31}"

    def listed() -> bool:
        proc = ceph_as(ceph, FENCE_CLIENT, "osd", "blocklist", "ls")
        assert proc.returncode == 0, proc.stderr
        return address in proc.stdout.split()

    added = ceph_as(ceph, FENCE_CLIENT, "osd", "blocklist", "add", address, "3600")
    assert added.returncode == 0, added.stderr
    assert listed()
    removed = ceph_as(ceph, FENCE_CLIENT, "osd", "blocklist", "rm", address)
    assert removed.returncode == 0, removed.stderr
    assert not listed()


@pytest.mark.parametrize("command", [
    ("auth", "ls"),
    ("auth", "get", "client.admin"),
    ("osd", "pool", "delete", POOL, POOL, "--yes-i-really-really-mean-it"),
    ("osd", "pool", "set", POOL, "size", "2"),
    ("config-key", "ls"),
    ("osd", "blocklist", "clear"),
], ids=" ".join)
def test_the_fence_key_is_refused_everything_else(ceph: CephLab, command: tuple[str, ...]) -> None:
    proc = ceph_as(ceph, FENCE_CLIENT, *command)
    assert proc.returncode == EACCES, (proc.returncode, proc.stderr)
    assert "access denied" in proc.stderr


def test_the_fence_key_can_neither_read_nor_write_the_pool(ceph: CephLab, tmp_path: Path) -> None:
    data = tmp_path / "disk"
    data.write_bytes(b"x" * 4096)
    name = f"{POOL}/{uuid.uuid4()}_disk"
    assert rbd_as(ceph, FENCE_CLIENT, "import", str(data), name).returncode != 0
    assert rbd_as(ceph, FENCE_CLIENT, "ls", POOL).returncode != 0
    assert name.split("/")[1] not in rbd_as(ceph, "admin", "ls", POOL).stdout


def test_up_again_keeps_the_cluster_and_adds_keys(ceph: CephLab) -> None:
    pids = [ceph.daemon_pid(daemon) for daemon in DAEMONS]
    ceph.up([*COMPUTES, "compute3"])
    assert [ceph.daemon_pid(daemon) for daemon in DAEMONS] == pids
    assert stat.S_IMODE(ceph.keyring("compute3").stat().st_mode) == 0o600
    listed = rbd_as(ceph, "compute3", "ls", POOL)
    assert listed.returncode == 0, listed.stderr


def test_cli_status(ceph: CephLab) -> None:
    proc = subprocess.run([sys.executable, "-m", "lab.ceph", "--state-dir", str(ceph.state_dir),
                           "--address", ADDRESS, "status"],
                          capture_output=True, text=True, timeout=30, check=True)
    status = json.loads(proc.stdout)
    assert status["health"] == "HEALTH_OK"
    assert all(status["daemons"].values())


def test_down_leaves_nothing_behind(ceph: CephLab) -> None:
    """Last: takes the module's cluster down (the fixture's own down() then does nothing)."""
    state = str(ceph.state_dir).encode()
    ceph.down()
    leftovers = [pid for pid in all_pids() if any(state in arg for arg in cmdline(pid))]
    assert leftovers == [], leftovers
    assert [p.name for p in ceph.state_dir.iterdir()] == ["log"]
    assert not [p for p in ceph.state_dir.rglob("*") if p.is_socket()]
    ceph.down()  # again: nothing to do, no error
    assert not os.path.exists(ceph.conf)
