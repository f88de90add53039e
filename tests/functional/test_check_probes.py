"""Each kind of check against a real process, socket, address or command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from agents.checks import Prober, parse_checks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")


def probe(text: str, timeout: float = 2.0):
    (check,) = parse_checks(text)
    return Prober(timeout=timeout).probe(check, timeout)


@pytest.fixture
def named_process():
    # exec -a gives the process the name a daemon would have
    proc = subprocess.Popen(["bash", "-c", "exec -a fake-nova-compute sleep 60"])
    time.sleep(0.2)
    yield proc
    proc.kill()
    proc.wait()


def test_process_check_sees_a_running_process_and_not_after_sigkill(named_process):
    assert probe("process:fake-nova-compute").ok
    assert probe("cmdline:^fake-nova-compute 60$").ok
    named_process.kill()
    named_process.wait()
    result = probe("process:fake-nova-compute")
    assert not result.ok
    assert result.detail == "no process named 'fake-nova-compute'"


def test_a_zombie_does_not_count_as_alive():
    # The child is killed but not reaped: it stays a zombie, as a killed daemon
    # does until init reaps it.
    pid = os.fork()
    if pid == 0:
        os.execvp("bash", ["bash", "-c", "exec -a zombie-daemon sleep 60"])
    try:
        time.sleep(0.3)
        assert probe("process:zombie-daemon").ok
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().split(")")[1].split()[0] == "Z"
        assert not probe("process:zombie-daemon").ok
    finally:
        os.waitpid(pid, 0)


def test_unix_socket_check_needs_a_listener(tmp_path):
    path = str(tmp_path / "libvirt-sock")
    assert "FileNotFoundError" in probe(f"socket:{path}").detail
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        assert not probe(f"socket:{path}").ok  # bound but not listening: refused
        server.listen()
        assert probe(f"socket:{path}").ok


def test_tcp_check_needs_a_listener():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert "ConnectionRefusedError" in probe(f"tcp:127.0.0.1:{port}").detail
        server.listen()
        assert probe(f"tcp:127.0.0.1:{port}").ok


@needs_root
def test_net_check_pings_an_address_and_times_out_on_silence():
    assert probe("net:loopback=127.0.0.1").ok
    # A veth pair whose far end has no address: nobody answers ARP for the
    # target, so no reply ever comes, as with a dead storage network.
    subprocess.run(
        ["ip", "link", "add", "ohatest0", "type", "veth", "peer", "name", "ohatest1"], check=True
    )
    try:
        subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", "ohatest0"], check=True)
        subprocess.run(["ip", "link", "set", "ohatest0", "up"], check=True)
        subprocess.run(["ip", "link", "set", "ohatest1", "up"], check=True)
        started = time.monotonic()
        result = probe("net:storage=192.0.2.77", timeout=1.0)
        assert not result.ok
        assert time.monotonic() - started < 3
        assert result.detail == "192.0.2.77 on network storage did not answer within 1.0s"
    finally:
        subprocess.run(["ip", "link", "del", "ohatest0"], check=False)


def test_command_check_uses_the_exit_status_and_its_timeout(tmp_path):
    assert probe("cmd:/bin/true").ok
    script = tmp_path / "check-ceph"
    script.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    script.chmod(0o755)
    failed = probe(f"cmd:{script} --pool vms")
    assert not failed.ok
    assert failed.detail.endswith("exit 3 broken")
    assert "not found" in probe("cmd:/nonexistent/check").detail
    started = time.monotonic()
    assert "no result within" in probe("cmd:/bin/sleep 10", timeout=0.5).detail
    assert time.monotonic() - started < 3


def test_unit_check_fails_closed_without_systemd():
    result = probe("unit:libvirtd.service")
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd is running here; the unit's real state decides")
    assert not result.ok
