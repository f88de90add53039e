"""fence_nova's nudge to the worker on its node (openstack_ha.wake), over a real UNIX socket,
the nudge sent from another process as fence_nova sends it; and the worker's use of it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_host_return import FakeNova, Unfencer, fenced, worker

from nova_evacuate.ledger import State
from openstack_ha import wake

REPO = Path(__file__).resolve().parents[2]


def nudge_from_another_process(path: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom openstack_ha import wake\n"
                               "print(wake.nudge(sys.argv[1]))", str(path)],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip() == "True"


@pytest.fixture
def listener(tmp_path: Path):
    heard = wake.Listener(str(tmp_path / "run" / "worker.sock"))
    yield heard
    heard.close()


def test_a_nudge_from_another_process_wakes_the_listener_once(listener) -> None:
    path = Path(listener.path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
    assert nudge_from_another_process(path) and nudge_from_another_process(path)
    assert listener.wait(5)  # both read: one scan answers them all
    assert not listener.wait(0.05)


def test_without_a_listener_the_nudge_is_lost_and_says_so(tmp_path: Path) -> None:
    assert not wake.nudge(str(tmp_path / "worker.sock"))
    (tmp_path / "not-a-socket").write_text("")
    assert not wake.nudge(str(tmp_path / "not-a-socket"))


def test_a_new_listener_takes_the_path_over_and_the_old_one_leaves_it(tmp_path: Path) -> None:
    path = str(tmp_path / "worker.sock")
    old = wake.Listener(path)  # a worker killed: its socket file stays
    new = wake.Listener(path)
    old.close()  # the old one closing later must not remove the new one's path
    assert wake.nudge(path) and new.wait(5)
    new.close()
    assert not os.path.exists(path)


def test_a_nudge_makes_the_worker_scan_before_its_interval(listener, monkeypatch) -> None:
    nova = fenced(State.DONE)
    w = worker(nova, Unfencer())
    w.nova_interval, w.tick, w.nudges = 3600.0, 10.0, listener
    scans: list[float] = []
    monkeypatch.setattr(w, "scan", lambda: scans.append(time.monotonic()))
    w.step()  # the first step scans (nothing seen yet)
    assert len(scans) == 1
    w.step()  # no change, no nudge, the interval far away: no scan
    assert len(scans) == 1
    threading.Timer(0.2, wake.nudge, args=(listener.path,)).start()
    started = time.monotonic()
    assert w._pause()  # the tick is 10 s: the nudge ends it
    assert time.monotonic() - started < 5
    w.step(nudged=True)
    assert len(scans) == 2


def test_a_worker_whose_socket_broke_goes_on_polling(listener, monkeypatch) -> None:
    w = worker(FakeNova(fenced(State.DONE).service), Unfencer())
    w.tick, w.nudges = 0.01, listener

    def broken(timeout: float) -> bool:
        raise OSError("Bad file descriptor")

    monkeypatch.setattr(listener, "wait", broken)
    assert not w._pause() and w.nudges is None
    assert not w._pause()  # a plain tick from now on
