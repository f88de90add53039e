"""fence_nova against the lab: a real BMC (ipmi_sim), real Keystone and Nova, real attrd.

The target is compute1: a pacemaker_remote node of the cluster lab (so the
``evacuate`` node attribute can be written) and a nova-compute host of the
OpenStack lab whose BMC power really stops it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from nova_evacuate import nova as nova_adapter
from nova_evacuate.ledger import Ledger
from openstack_ha import pacemaker

pytestmark = pytest.mark.lab

HOST = "compute1"


@pytest.fixture
def lab(pacemaker_lab, clean_lab):
    # fence_nova's brake reads the cluster: the node must be online in it, as in production
    if not pacemaker_lab.remote_ready(HOST):
        pacemaker_lab.reconnect(HOST)
    yield clean_lab
    subprocess.run(["attrd_updater", "-n", "evacuate", "-D", "-N", HOST], check=False)
    # a fenced node's connection is held: release it and have the node back in the cluster,
    # or the next test's fence sees it down (the mass-failure brake: 1 of 1)
    if pacemaker.release_connection(HOST) or not pacemaker_lab.remote_ready(HOST):
        pacemaker_lab.reconnect(HOST)


def connection_held(host: str = HOST) -> bool:
    """fence_nova holds the cluster's connection to a host it powered off (target-role)."""
    done = subprocess.run(["crm_resource", "--resource", host, "--meta", "--get-parameter",
                           "target-role"], capture_output=True, text=True, check=False)
    return done.returncode == 0 and done.stdout.strip() == "Stopped"


def fence(lab, action: str, host: str = HOST, timeout: float = 120, via: str = "ipmi",
          **extra: str):
    """fence_nova ACTION on HOST, through its BMC's IPMI face or (``via="redfish"``) its
    Redfish face (HTTPS, the lab's CA, a session)."""
    bmc = lab.hosts()[host]
    if via == "redfish":
        face = bmc["redfish"]
        power = {"power_driver": "redfish", "ip": urlsplit(face["url"]).hostname,
                 "ssl_ca_file": face["ca_file"], "redfish_auth": "session"}
    else:
        power = {"ip": bmc["address"], "ipport": str(bmc["port"])}
    options = {
        "action": action, "port": host, "nodename": host, "cloud": "lab", **power,
        "bmc_username": bmc["username"],
        "bmc_password": bmc["password"], "power_timeout": "8", "login_timeout": "3",
        # The brake is the end-to-end suite's subject; here the cluster lab's only remote node
        # is rebooted through its BMC between tests, and may still look down to Pacemaker.
        "max_down_percent": "100",
        # Every run authenticates with the password (Keystone's outages are tested here),
        # unless a test gives a token cache of its own
        "token_cache": "",
        **extra,
    }
    stdin = "".join(f"{k}={v}\n" for k, v in options.items() if v is not None)
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(lab.clouds_yaml)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fence_compute.fence_nova"], input=stdin, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    assert bmc["password"] not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done, time.monotonic() - started


def service(lab, host: str = HOST):
    conn = lab.openstack.connection()
    (svc,) = [s for s in conn.compute.services(binary="nova-compute") if s.host == host]
    return svc


def evacuate_attribute(host: str = HOST) -> str | None:
    done = subprocess.run(["attrd_updater", "-Q", "-n", "evacuate", "-N", host],
                          capture_output=True, text=True, check=False)
    # a deleted attribute can still be listed, with an empty value
    value = done.stdout.split('value="')[1].split('"')[0] if 'value="' in done.stdout else ""
    return value or None


def fenced_in_nova(lab):
    """HOST's service as fence_nova leaves it: forced down, disabled with the evacuation
    marker. Returns the service."""
    svc = service(lab)
    assert svc.is_forced_down and svc.status == "disabled"
    assert svc.disabled_reason.startswith("openstack-ha:v1 evacuation=requested ")
    return svc


def powered_off_and_fenced_in_nova(lab):
    """The BMC reports HOST off, its nova-compute is gone, and Nova has it fenced."""
    assert lab.bmc.power_state(HOST) is False
    assert not lab.openstack.compute_running(HOST)
    return fenced_in_nova(lab)


def nova_untouched(lab):
    """HOST's service neither forced down nor disabled, no evacuation requested."""
    svc = service(lab)
    assert not svc.is_forced_down and svc.status == "enabled"
    assert evacuate_attribute() is None
    return svc


def test_off_powers_off_forces_down_and_requests_evacuation(lab):
    done, _ = fence(lab, "off")
    assert done.returncode == 0, done.stderr
    svc = powered_off_and_fenced_in_nova(lab)
    # The node attribute evacuate=yes is only the worker's wake-up signal: Pacemaker drops a
    # remote node's attributes once its connection stops (held here), and Nova's record
    # above is the ledger.
    assert connection_held()
    status, _ = fence(lab, "status")
    assert status.returncode == 2

    again, _ = fence(lab, "off")  # already fenced: succeeds, changes nothing
    assert again.returncode == 0, again.stderr
    assert service(lab).disabled_reason == svc.disabled_reason


@pytest.mark.parametrize(
    ("fault", "seconds"),
    # "slow" is covered by test_ipmi_power: ipmi_sim serves every resend of a slow
    # command in turn, so a late "off" would land in the next test.
    [("stuck-on", 0), ("reject", 0), ("noreply", 0), ("badcreds", 0), ("hang-after-login", 0)],
)
def test_off_fails_and_leaves_nova_untouched_when_power_off_is_not_confirmed(lab, fault, seconds):
    lab.bmc.set_fault(HOST, fault, seconds)
    done, took = fence(lab, "off")
    assert done.returncode == 1
    assert "power-off not confirmed" in done.stderr and "Nova left untouched" in done.stderr
    assert took < 3 + 8 + 15  # login + power timeout, with a generous margin
    nova_untouched(lab)


def redfish_requests(lab, host: str = HOST) -> list[str]:
    """``METHOD PATH STATUS`` of each request HOST's Redfish face served (lab/redfish_bmc.py)."""
    log = lab.bmc.state_dir / "hosts" / host / "redfish.log"
    return log.read_text().splitlines() if log.exists() else []


def test_off_through_redfish_powers_off_forces_down_and_requests_evacuation(lab):
    before = len(redfish_requests(lab))
    done, _ = fence(lab, "off", via="redfish")
    assert done.returncode == 0, done.stderr
    powered_off_and_fenced_in_nova(lab)
    assert connection_held()
    served = redfish_requests(lab)[before:]
    assert any("ComputerSystem.Reset 204" in line for line in served), served
    assert sum("SessionService/Sessions 201" in line for line in served) == 1  # one login
    status, _ = fence(lab, "status", via="redfish")
    assert status.returncode == 2, status.stderr
    monitor, _ = fence(lab, "monitor", via="redfish", port=None, nodename=None)
    assert monitor.returncode == 0, monitor.stderr


@pytest.mark.parametrize(
    ("fault", "seconds"),
    [("stuck-on", 0), ("reject", 0), ("noreply", 0), ("badcreds", 0), ("hang-after-login", 0),
     ("busy", 60)],
)
def test_off_through_redfish_fails_and_leaves_nova_untouched_when_not_confirmed(lab, fault,
                                                                                seconds):
    lab.bmc.set_fault(HOST, fault, seconds)
    done, took = fence(lab, "off", via="redfish", login_timeout="2", power_timeout="4")
    assert done.returncode == 1
    assert "power-off not confirmed" in done.stderr and "Nova left untouched" in done.stderr
    assert took < 2 + 4 + 10  # login + power timeout, with a generous margin
    lab.bmc.set_fault(HOST, "none")
    assert lab.bmc.power_state(HOST) is True
    nova_untouched(lab)


def test_off_through_redfish_waits_for_a_power_off_carried_out_late(lab):
    # The BMC accepts ForceOff at once and cuts the power 2 s later: the fence succeeds, and
    # Nova is touched, only once the BMC reports Off.
    lab.bmc.set_fault(HOST, "late-off", 2)
    done, took = fence(lab, "off", via="redfish")
    assert done.returncode == 0, done.stderr
    assert took >= 2
    assert lab.bmc.power_state(HOST) is False and service(lab).is_forced_down


def test_redfish_tls_is_verified_unless_ssl_insecure(lab):
    # The lab's CA is not in the system's trust store: without ssl_ca_file the BMC's
    # certificate cannot be verified, which is a failure with one line saying what to set.
    unverified, _ = fence(lab, "monitor", via="redfish", port=None, nodename=None,
                          ssl_ca_file=None)
    assert unverified.returncode == 1
    assert "TLS certificate could not be verified" in unverified.stderr
    assert "ssl_ca_file" in unverified.stderr
    insecure, _ = fence(lab, "monitor", via="redfish", port=None, nodename=None,
                        ssl_ca_file=None, ssl_insecure="1")
    assert insecure.returncode == 0, insecure.stderr
    assert "not verified (ssl_insecure)" in insecure.stderr


def test_off_with_keystone_down_fails_after_power_off_and_a_retry_completes(lab):
    lab.openstack.stop_service("keystone")
    try:
        done, _ = fence(lab, "off")
        assert done.returncode == 1
        assert "is powered off, but Nova" in done.stderr
        assert lab.bmc.power_state(HOST) is False
    finally:
        lab.openstack.start_service("keystone")
    retry, _ = fence(lab, "off")
    assert retry.returncode == 0, retry.stderr
    assert service(lab).is_forced_down


def finish_evacuation(lab) -> None:
    """What the evacuation engine does when it has finished this host."""
    client = nova_adapter.connect(cloud="lab", clouds_yaml=lab.clouds_yaml)
    ledger = Ledger(client, domain=None)
    ledger.claim(HOST, "test/1", None, timedelta(seconds=60))
    ledger.finish(HOST, True, evacuated=0, failed=0, by="test/1")


def return_host(lab, leave_disabled: bool = False, timeout: float = 90) -> None:
    """The NovaEvacuate worker's host-return step, scanned until nothing is left to do."""
    from nova_evacuate.engine import Settings
    from nova_evacuate.worker import Worker

    worker = Worker(lambda: nova_adapter.connect(cloud="lab", clouds_yaml=lab.clouds_yaml),
                    Settings(), leave_disabled=leave_disabled)
    deadline = time.monotonic() + timeout
    while True:
        svc = service(lab)
        if not svc.is_forced_down and not (svc.disabled_reason or "").startswith("openstack-ha:"):
            return
        assert time.monotonic() < deadline, f"not returned: {svc.status} {svc.disabled_reason}"
        worker.scan()
        time.sleep(1)


def test_on_refuses_at_once_while_the_evacuation_is_pending_and_keeps_the_power_off(lab):
    assert fence(lab, "off")[0].returncode == 0
    refused, took = fence(lab, "on")
    assert refused.returncode == 1
    assert "evacuation requested" in refused.stderr and "stays powered off" in refused.stderr
    assert took < 15  # one Nova read: no waiting on the evacuation
    assert lab.bmc.power_state(HOST) is False
    assert not lab.openstack.compute_running(HOST)
    assert service(lab).status == "disabled"
    assert connection_held()

    finish_evacuation(lab)
    done, took = fence(lab, "on")
    assert done.returncode == 0, done.stderr
    assert took < 3 + 8 + 15
    assert lab.bmc.power_state(HOST) is True
    assert lab.openstack.compute_running(HOST)
    assert not connection_held()  # Pacemaker may connect to it again
    return_host(lab)
    svc = service(lab)
    assert svc.status == "enabled" and not svc.disabled_reason and not svc.is_forced_down
    assert evacuate_attribute() is None


def test_on_with_unfence_power_keep_off_leaves_the_host_off(lab):
    assert fence(lab, "off")[0].returncode == 0
    finish_evacuation(lab)
    done, _ = fence(lab, "on", unfence_power="keep-off")
    assert done.returncode == 0, done.stderr
    assert lab.bmc.power_state(HOST) is False
    assert not lab.openstack.compute_running(HOST)
    assert service(lab).status == "disabled"
    assert connection_held()
    # the operator powers it on after the inspection; the next unfencing releases it
    assert lab.ipmitool(HOST, "chassis", "power", "on").returncode == 0
    again, _ = fence(lab, "on", unfence_power="keep-off")
    assert again.returncode == 0, again.stderr
    assert not connection_held()


def test_on_with_leave_disabled_keeps_the_service_disabled(lab):
    assert fence(lab, "off")[0].returncode == 0
    finish_evacuation(lab)
    done, _ = fence(lab, "on", leave_disabled="1")
    assert done.returncode == 0, done.stderr
    return_host(lab, leave_disabled=True)
    svc = service(lab)
    assert svc.status == "disabled" and not svc.is_forced_down
    assert not (svc.disabled_reason or "").startswith("openstack-ha:")


def test_unknown_host_fails_with_a_clear_message_and_changes_nothing(lab):
    done, _ = fence(lab, "off", power_driver="none", ip=None, port="compute9", nodename="compute9")
    assert done.returncode == 1
    assert "compute9" in done.stderr
    assert all(s.status == "enabled" for s in lab.openstack.connection().compute.services())


def test_reboot_fences_and_leaves_the_power_off_until_the_evacuation_is_done(lab):
    done, _ = fence(lab, "reboot")
    assert done.returncode == 0, done.stderr
    powered_off_and_fenced_in_nova(lab)


def test_list_prints_the_compute_hosts_nova_knows(lab):
    done, _ = fence(lab, "list", port=None, nodename=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["compute1,", "compute2,", "compute3,"]


def test_monitor_checks_keystone_nova_and_the_bmc(lab):
    ok, _ = fence(lab, "monitor", port=None, nodename=None)
    assert ok.returncode == 0, ok.stderr
    lab.bmc.set_fault(HOST, "noreply")
    silent_bmc, _ = fence(lab, "monitor", port=None, nodename=None)
    assert silent_bmc.returncode == 1
    assert "did not answer" in silent_bmc.stderr


def test_status_without_a_power_driver_reads_nova(lab):
    before, _ = fence(lab, "status", power_driver="none", ip=None)
    assert before.returncode == 0, before.stderr
    assert fence(lab, "off", power_driver="none", ip=None)[0].returncode == 0
    after, _ = fence(lab, "status", power_driver="none", ip=None)
    assert after.returncode == 2


def test_off_with_record_only_fences_in_nova_and_leaves_the_power_on(lab):
    # fence_compute's record_only=1: another device of the topology level owns the power, so
    # the BMC is never reached (here nothing powers the host off: it stays on)
    done, _ = fence(lab, "off", record_only="1")
    assert done.returncode == 0, done.stderr
    assert "left to another device" in done.stderr
    assert lab.bmc.power_state(HOST) is True
    fenced_in_nova(lab)
    status, _ = fence(lab, "status", record_only="1")  # from Nova: forced down
    assert status.returncode == 2, status.stderr


def test_off_with_record_only_disabled_succeeds_and_changes_nothing(lab):
    done, _ = fence(lab, "off", record_only="disabled")
    assert done.returncode == 0, done.stderr
    assert "record_only=disabled" in done.stderr and "treats compute1 as fenced" in done.stderr
    assert lab.bmc.power_state(HOST) is True
    assert not nova_untouched(lab).disabled_reason
    assert not connection_held()


def test_a_token_kept_by_one_run_spares_the_next_its_password_check(lab, tmp_path):
    tokens = tmp_path / "tokens"
    done, _ = fence(lab, "monitor", token_cache=str(tokens))
    assert done.returncode == 0, done.stderr
    (saved,) = tokens.iterdir()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    token = json.loads(saved.read_text())["auth_token"]
    assert token not in done.stdout + done.stderr

    # the next run starts from it: Keystone issues no token (a new one would be saved)
    again, _ = fence(lab, "monitor", token_cache=str(tokens))
    assert again.returncode == 0, again.stderr
    assert json.loads(saved.read_text())["auth_token"] == token

    # a token Keystone does not accept (revoked: Nova's token middleware caches validations
    # for minutes, so one it never issued stands in): Nova answers 401, the run
    # authenticates with the password and keeps the new token
    state = json.loads(saved.read_text())
    saved.write_text(json.dumps({**state, "auth_token": "gAAAAABnotatoken"}))
    after, _ = fence(lab, "monitor", token_cache=str(tokens))
    assert after.returncode == 0, after.stderr
    assert json.loads(saved.read_text())["auth_token"] not in (token, "gAAAAABnotatoken")
