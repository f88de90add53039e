"""The simulated BMCs of lab/bmc.py, seen the way the fence path sees a BMC: ipmitool -I lanplus -C 3,
fence_ipmilan and the pyghmi client, from the host."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.bmc import NETNS, BmcEndpoint, BmcLab, PowerHooks, pid_alive

pytestmark = pytest.mark.lab

HOSTS = ("compute1", "compute2")
BROKEN = "compute3"  # its off hook fails, and it has no on hook (a BMC with no host behind it)
HOSTNET = os.readlink("/proc/self/ns/net")


@dataclass
class Lab:
    lab: BmcLab
    eps: dict[str, BmcEndpoint]
    tmp: Path

    def hook_log(self, host: str) -> list[str]:
        path = self.tmp / f"{host}.hooks"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def bmc(tmp_path_factory: pytest.TempPathFactory, require_lab):
    """Two BMCs whose hooks log "on|off <network namespace>" to a file per host. Skips where the
    lab cannot run, unless OPENSTACK_HA_REQUIRE_LAB=1 (CI), where a skip would pass for nothing."""
    require_lab("ipmi_sim", "ipmitool", "fence_ipmilan")
    tmp = tmp_path_factory.mktemp("bmc-lab")

    def hook(host: str, action: str) -> list[str]:
        return ["sh", "-c", f'echo "{action} $(readlink /proc/self/ns/net)" >> {tmp}/{host}.hooks']

    lab = BmcLab(tmp / "state")
    hooks = {h: PowerHooks(on=hook(h, "on"), off=hook(h, "off")) for h in HOSTS}
    eps = lab.up({**hooks, BROKEN: PowerHooks(off=["sh", "-c", "echo cannot; exit 3"])})
    try:
        yield Lab(lab, eps, tmp)
    finally:
        lab.down()


@pytest.fixture(autouse=True)
def healthy(bmc: Lab):
    """Every test starts with healthy, powered-on BMCs and empty hook logs."""
    for host in (*HOSTS, BROKEN):
        bmc.lab.set_fault(host, "none")
        if not bmc.lab.power_state(host):
            assert ipmi(bmc.eps[host], "on").returncode == 0
        (bmc.tmp / f"{host}.hooks").unlink(missing_ok=True)


def ipmi(ep: BmcEndpoint, action: str, *, fast: bool = False, password: str | None = None):
    """``ipmitool chassis power ACTION``; fast: give up after one 1 s retry (for a dead BMC)."""
    argv = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", ep.address, "-p", str(ep.port),
            "-U", ep.username, "-E", *(["-N", "1", "-R", "1"] if fast else []),
            "chassis", "power", action]
    env = {"PATH": os.environ["PATH"], "IPMI_PASSWORD": password or ep.password}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def status(ep: BmcEndpoint) -> str:
    proc = ipmi(ep, "status")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_endpoints_are_readable_by_another_process(bmc: Lab):
    assert BmcLab(bmc.lab.state_dir).endpoints() == bmc.eps
    assert sorted(bmc.eps) == [*HOSTS, BROKEN]
    assert len({(ep.address, ep.port) for ep in bmc.eps.values()}) == len(bmc.eps)
    assert len({ep.password for ep in bmc.eps.values()}) == len(bmc.eps)
    for ep in bmc.eps.values():
        assert ep.address.startswith("10.251.100.") and ep.username == "admin"
    assert bmc.lab.state_file.stat().st_mode & 0o077 == 0
    out = subprocess.run([sys.executable, "-m", "lab.bmc", "status", "--state-dir",
                          str(bmc.lab.state_dir)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert json.loads(out)["up"] is True
    assert not any(ep.password in out for ep in bmc.eps.values())
    # The passwords live in files, not in the argv of the long-running processes.
    for pid in [*bmc.lab._pids()]:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert not any(ep.password.encode() in cmdline for ep in bmc.eps.values())


def test_healthy_off_runs_the_hook_on_the_host_before_acknowledging(bmc: Lab):
    ep = bmc.eps["compute1"]
    assert status(ep) == "Chassis Power is on"
    assert ipmi(ep, "off").returncode == 0
    # Checked right after ipmitool returns: the hook ran before the BMC answered, and on the
    # host's network namespace, not the BMC's.
    assert bmc.hook_log("compute1") == [f"off {HOSTNET}"]
    assert not bmc.lab.power_state("compute1")
    assert status(ep) == "Chassis Power is off"
    assert ipmi(ep, "off").returncode == 0  # already off: acknowledged, no second hook
    assert ipmi(ep, "on").returncode == 0
    assert bmc.hook_log("compute1") == [f"off {HOSTNET}", f"on {HOSTNET}"]
    assert status(ep) == "Chassis Power is on"
    assert ipmi(ep, "reset").returncode == 0  # a hard reset: power cut, then boot
    assert bmc.hook_log("compute1") == [f"off {HOSTNET}", f"on {HOSTNET}"] * 2
    assert bmc.hook_log("compute2") == [] and bmc.lab.power_state("compute2")


def test_a_failing_off_hook_is_an_ipmi_error_and_the_host_stays_on(bmc: Lab):
    # "BMC says off" must imply "the host's processes are dead": if the hook could not make
    # sure of that, the BMC refuses rather than lies.
    ep = bmc.eps[BROKEN]
    proc = ipmi(ep, "off")
    assert proc.returncode != 0 and "Unspecified error" in proc.stderr
    assert bmc.lab.power_state(BROKEN) and status(ep) == "Chassis Power is on"
    assert "cannot" in (bmc.lab.state_dir / "hosts" / BROKEN / "chassis.log").read_text()


def test_fence_ipmilan_status_off_on(bmc: Lab):
    ep = bmc.eps["compute2"]

    def fence(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["fence_ipmilan", "--lanplus", "-C", "3", "-a", ep.address, "-u", str(ep.port),
             "-l", ep.username, "-p", ep.password, "-o", action],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})

    assert fence("status").stdout.strip() == "Status: ON"
    assert fence("off").returncode == 0
    assert bmc.hook_log("compute2") == [f"off {HOSTNET}"]
    proc = fence("status")
    assert (proc.returncode, proc.stdout.strip()) == (2, "Status: OFF")  # fence-agent convention
    assert fence("on").returncode == 0
    assert fence("status").returncode == 0 and bmc.lab.power_state("compute2")


def test_pyghmi_gets_and_sets_power(bmc: Lab):
    from pyghmi.ipmi import command

    ep = bmc.eps["compute1"]
    seen: list[str] = []

    def client() -> None:
        # bytes credentials: with str, a second Command for this BMC hangs (ipmi-lab.md)
        cmd = command.Command(bmc=ep.address, port=ep.port, userid=ep.username.encode(),
                              password=ep.password.encode())
        try:
            seen.append(cmd.get_power()["powerstate"])
            cmd.set_power("off")
            seen.append(cmd.get_power()["powerstate"])
            cmd.set_power("on")
            seen.append(cmd.get_power()["powerstate"])
        finally:
            cmd.ipmi_session.logout()

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    worker.join(30)  # pyghmi can hang forever; a deadline of our own
    assert not worker.is_alive(), "pyghmi did not return within 30 s"
    assert seen == ["on", "off", "on"]
    assert bmc.hook_log("compute1") == [f"off {HOSTNET}", f"on {HOSTNET}"]


def test_noreply_answers_nothing_until_healed(bmc: Lab):
    ep = bmc.eps["compute1"]
    bmc.lab.set_fault("compute1", "noreply")
    proc = ipmi(ep, "status", fast=True)
    assert proc.returncode != 0
    assert "Set Session Privilege" not in proc.stderr  # not even the session opened
    bmc.lab.set_fault("compute1", "none")
    t0 = time.monotonic()
    assert status(ep) == "Chassis Power is on"
    assert time.monotonic() - t0 < 1
    assert status(bmc.eps["compute2"]) == "Chassis Power is on"  # the other BMC never noticed


def test_hang_after_login_opens_the_session_then_goes_silent(bmc: Lab):
    ep = bmc.eps["compute1"]
    bmc.lab.set_fault("compute1", "hang-after-login")
    proc = ipmi(ep, "off", fast=True)
    assert proc.returncode != 0
    # RAKP 1-4 went through; the first in-session request (Set Session Privilege) did not.
    assert "Set Session Privilege Level to ADMINISTRATOR failed" in proc.stderr
    assert bmc.lab.power_state("compute1") and bmc.hook_log("compute1") == []


def test_stuck_on_acknowledges_off_and_stays_on(bmc: Lab):
    ep = bmc.eps["compute1"]
    bmc.lab.set_fault("compute1", "stuck-on")
    assert ipmi(ep, "off").returncode == 0
    assert status(ep) == "Chassis Power is on"
    assert bmc.lab.power_state("compute1") and bmc.hook_log("compute1") == []


def test_reject_refuses_off_with_an_ipmi_error(bmc: Lab):
    ep = bmc.eps["compute1"]
    bmc.lab.set_fault("compute1", "reject")
    proc = ipmi(ep, "off")
    assert proc.returncode != 0
    assert "Set Chassis Power Control to Down/Off failed: Unspecified error" in proc.stderr
    assert status(ep) == "Chassis Power is on"
    assert bmc.hook_log("compute1") == []


def test_slow_delays_get_and_set(bmc: Lab):
    # Below ipmitool's 1 s retry: above it ipmi_sim also serves the retransmissions, serially,
    # and each sleeps again (2 s -> 4 s per command).
    ep = bmc.eps["compute1"]
    bmc.lab.set_fault("compute1", "slow", 0.6)
    for action, expected in (("status", "Chassis Power is on"), ("off", "Down/Off")):
        t0 = time.monotonic()
        proc = ipmi(ep, action)
        assert proc.returncode == 0 and expected in proc.stdout
        assert 0.6 <= time.monotonic() - t0 < 3
    assert not bmc.lab.power_state("compute1")
    assert bmc.hook_log("compute1") == [f"off {HOSTNET}"]


def test_badcreds_fails_authentication_until_healed(bmc: Lab):
    ep = bmc.eps["compute1"]
    bmc.lab.set_fault("compute1", "badcreds")
    proc = ipmi(ep, "status", fast=True)
    assert proc.returncode != 0 and "Unable to establish IPMI v2" in proc.stderr
    assert status(bmc.eps["compute2"]) == "Chassis Power is on"
    bmc.lab.set_fault("compute1", "none")
    assert status(ep) == "Chassis Power is on"


def test_unknown_fault_is_refused(bmc: Lab):
    with pytest.raises(ValueError):
        bmc.lab.set_fault("compute1", "on-fire")
    with pytest.raises(ValueError):
        bmc.lab.set_fault("compute1", "slow")  # slow needs seconds


def _udp_listeners_in_subnet() -> list[str]:
    found = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        ip = socket.inet_ntoa(struct.pack("<I", int(line.split()[1].split(":")[0], 16)))
        if ip.startswith("10.251.100."):
            found.append(ip)
    return found


def test_down_leaves_nothing_behind(bmc: Lab):
    # Last in this file: it takes the module's lab down (the fixture's down() is then a no-op).
    pids = bmc.lab._pids()
    assert len(pids) == len(bmc.eps) + 1 and all(pid_alive(p) for p in pids)
    bmc.lab.down()
    assert not any(pid_alive(p) for p in pids)
    assert not Path(f"/run/netns/{NETNS}").exists()
    assert not Path("/sys/class/net/ohalab-hb").exists()
    assert _udp_listeners_in_subnet() == []
    assert bmc.lab.endpoints() == {}
    bmc.lab.down()  # twice is fine
