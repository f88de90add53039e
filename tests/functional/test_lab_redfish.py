"""The Redfish face of the lab's BMCs (lab/redfish_bmc.py, ``BmcLab.up(redfish=True)``), seen from
the host: sushy (the real client) and plain HTTPS requests, TLS verified with the lab CA; and the
IPMI face of the same BMC (ipmitool), which shares its power state and fault file."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from bmc_helpers import HOSTS, Lab, ipmi, make_healthy

from lab.bmc import NETNS, REDFISH_PY, BmcEndpoint, BmcLab, RedfishEndpoint, pid_alive

pytestmark = pytest.mark.lab

RESET = "/Actions/ComputerSystem.Reset"


@pytest.fixture(scope="module")
def bmc(redfish_bmc_lab: Lab) -> Lab:
    return redfish_bmc_lab


@pytest.fixture(autouse=True)
def healthy(bmc: Lab):
    """Every test starts with healthy, powered-on BMCs and empty hook logs (through ipmitool,
    not the code under test)."""
    make_healthy(bmc)


def call(face: RedfishEndpoint, method: str, path: str, *, body: Any = None,
         auth: tuple[str, str] | bool = True, token: str | None = None,
         verify: str | bool | None = None, timeout: float = 10) -> requests.Response:
    """One HTTPS request to FACE; auth True: HTTP Basic with its credentials, False: none."""
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment for the lab's addresses
        return session.request(
            method, face.url + path, json=body, timeout=timeout,
            auth=(face.username, face.password) if auth is True else auth or None,
            headers={"X-Auth-Token": token} if token else None,
            verify=face.ca_file if verify is None else verify)


def power(face: RedfishEndpoint) -> str:
    answer = call(face, "GET", face.system)
    assert answer.status_code == 200, answer.text
    return answer.json()["PowerState"]


def reset(face: RedfishEndpoint, reset_type: str, **kwargs: Any) -> requests.Response:
    return call(face, "POST", face.system + RESET, body={"ResetType": reset_type}, **kwargs)


def ipmi_status(ep: BmcEndpoint) -> str:
    proc = ipmi(ep, "status")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# ------------------------------------------------------------------------------ healthy


def test_endpoints_files_and_status(bmc: Lab):
    assert sorted(bmc.faces) == list(HOSTS)
    assert BmcLab(bmc.lab.state_dir).redfish_endpoints() == bmc.faces
    assert bmc.lab.endpoints() == bmc.ipmi  # the IPMI endpoints, as before
    for host, face in bmc.faces.items():
        ep = bmc.ipmi[host]
        assert face.url == f"https://{ep.address}:443"
        assert face.system.startswith("/redfish/v1/Systems/")
        assert (face.username, face.password) == (ep.username, ep.password)
        assert face.ca_file == str(bmc.lab.state_dir / "redfish" / "ca.pem")
        answer = call(face, "GET", face.system).json()
        assert (answer["Name"], answer["@odata.id"]) == (host, face.system)
    assert len({face.system for face in bmc.faces.values()}) == len(HOSTS)
    keys = sorted((bmc.lab.state_dir / "redfish").glob("*.key"))
    assert [k.stem for k in keys] == ["ca", *HOSTS]
    assert all(k.stat().st_mode & 0o077 == 0 for k in keys)
    status = bmc.lab.status()
    assert all(status["hosts"][h]["redfish"]["alive"] for h in HOSTS)
    assert not any(face.password in json.dumps(status) for face in bmc.faces.values())
    for pid in bmc.lab._pids():  # the passwords are in files, not in argv
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert not any(face.password.encode() in cmdline for face in bmc.faces.values())


def test_sushy_reads_power_and_switches_it_through_the_hooks(bmc: Lab):
    import sushy
    from sushy.auth import SessionOrBasicAuth

    face = bmc.faces["compute1"]
    # Closed here, while the BMC is up: left to Sushy.__del__, the session's DELETE runs whenever
    # the garbage collector frees the object, and against a BMC that is gone it retries for ~30 s
    # in whatever thread that is (it once stalled a pyghmi test of another module).
    auth = SessionOrBasicAuth(face.username, face.password)
    try:
        system = sushy.Sushy(face.url, auth=auth, verify=face.ca_file).get_system(face.system)
        assert system.power_state == sushy.PowerState.ON
        system.reset_system(sushy.ResetType.FORCE_OFF)
        # Checked right after the answer: the hook ran before the BMC answered.
        assert bmc.hook_log("compute1") == ["off"] and not bmc.lab.power_state("compute1")
        system.refresh()
        assert system.power_state == sushy.PowerState.OFF
        assert ipmi_status(bmc.ipmi["compute1"]) == "Chassis Power is off"  # one power state
        system.reset_system(sushy.ResetType.ON)
        assert bmc.hook_log("compute1") == ["off", "on"]
        system.refresh()
        assert system.power_state == sushy.PowerState.ON
        system.reset_system(sushy.ResetType.FORCE_RESTART)  # a hard reset: power cut, then boot
        assert bmc.hook_log("compute1") == ["off", "on", "off", "on"]
        # sushy logged in with a session (found through the root's Links.Sessions), not Basic.
        assert auth.can_refresh_session()
    finally:
        auth.close()
    log = bmc.redfish_log("compute1")
    assert "POST /redfish/v1/SessionService/Sessions 201" in log
    assert "DELETE /redfish/v1/SessionService/Sessions/" in log
    assert bmc.hook_log("compute2") == [] and bmc.lab.power_state("compute2")


def test_ipmi_power_off_is_seen_by_redfish(bmc: Lab):
    face = bmc.faces["compute2"]
    assert ipmi(bmc.ipmi["compute2"], "off").returncode == 0
    assert power(face) == "Off"
    assert reset(face, "ForceOff").status_code == 204  # already off: no second hook
    assert bmc.hook_log("compute2") == ["off"]


def test_session_and_basic_authentication(bmc: Lab):
    face = bmc.faces["compute1"]
    root = call(face, "GET", "/redfish/v1/", auth=False)
    assert root.status_code == 200
    assert root.json()["Links"]["Sessions"]["@odata.id"] == "/redfish/v1/SessionService/Sessions"
    assert root.json()["SessionService"]["@odata.id"] == "/redfish/v1/SessionService"
    login = call(face, "POST", "/redfish/v1/SessionService/Sessions", auth=False,
                 body={"UserName": face.username, "Password": face.password})
    assert login.status_code == 201
    token, location = login.headers["X-Auth-Token"], login.headers["Location"]
    assert location == login.json()["@odata.id"] and login.json()["UserName"] == face.username
    assert call(face, "GET", face.system, auth=False, token=token).status_code == 200
    sessions = call(face, "GET", "/redfish/v1/SessionService/Sessions", auth=False, token=token)
    assert {"@odata.id": location} in sessions.json()["Members"]
    assert call(face, "GET", "/redfish/v1/SessionService", token=token, auth=False).status_code == 200
    assert call(face, "DELETE", location, auth=False, token=token).status_code == 204
    assert call(face, "GET", face.system, auth=False, token=token).status_code == 401
    assert call(face, "GET", face.system).status_code == 200  # HTTP Basic
    log = bmc.redfish_log("compute1")
    assert token not in log and face.password not in log


def test_wrong_password_is_401_for_session_and_basic(bmc: Lab):
    face = bmc.faces["compute1"]
    for answer in (
        call(face, "GET", face.system, auth=(face.username, "wrong")),
        call(face, "GET", face.system, auth=False),
        call(face, "GET", face.system, auth=False, token="forged"),
        call(face, "POST", "/redfish/v1/SessionService/Sessions", auth=False,
             body={"UserName": face.username, "Password": "wrong"}),
    ):
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        error = answer.json()["error"]
        assert error["code"].startswith("Base.1.") and error["message"]
        assert error["@Message.ExtendedInfo"]


def test_tls_verifies_with_the_lab_ca_only(bmc: Lab):
    face = bmc.faces["compute3"]
    assert call(face, "GET", "/redfish/v1/", auth=False).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        call(face, "GET", "/redfish/v1/", auth=False, verify=True)  # the system's CAs
    # A client that connects and says nothing stalls neither the BMC nor its neighbours.
    with socket.create_connection((bmc.ipmi["compute3"].address, 443), timeout=5):
        assert call(face, "GET", "/redfish/v1/", auth=False, timeout=2).status_code == 200


def test_unsupported_reset_type_is_400(bmc: Lab):
    answer = reset(bmc.faces["compute1"], "Nmi")
    assert answer.status_code == 400
    info = answer.json()["error"]["@Message.ExtendedInfo"][0]
    assert info["MessageId"].endswith("ActionParameterValueNotInList")
    assert bmc.hook_log("compute1") == []


# ------------------------------------------------------------------------------ faults


def test_noreply_answers_nothing_until_healed(bmc: Lab):
    face = bmc.faces["compute1"]
    bmc.lab.set_fault("compute1", "noreply")
    for path in ("/redfish/v1/", face.system):
        with pytest.raises(requests.exceptions.ReadTimeout):
            call(face, "GET", path, timeout=1)
    assert power(bmc.faces["compute2"]) == "On"  # the other BMCs never noticed
    bmc.lab.set_fault("compute1", "none")
    t0 = time.monotonic()
    assert power(face) == "On"
    assert time.monotonic() - t0 < 1
    time.sleep(0.3)  # the hung requests look every 0.1 s, then drop their connection
    assert f"GET {face.system} dropped" in bmc.redfish_log("compute1")


def test_hang_after_login_answers_root_and_login_only(bmc: Lab):
    face = bmc.faces["compute2"]
    bmc.lab.set_fault("compute2", "hang-after-login")
    assert call(face, "GET", "/redfish/v1/", auth=False, timeout=2).status_code == 200
    login = call(face, "POST", "/redfish/v1/SessionService/Sessions", auth=False, timeout=2,
                 body={"UserName": face.username, "Password": face.password})
    assert login.status_code == 201
    with pytest.raises(requests.exceptions.ReadTimeout):
        reset(face, "ForceOff", auth=False, token=login.headers["X-Auth-Token"], timeout=1)
    assert bmc.lab.power_state("compute2") and bmc.hook_log("compute2") == []


def test_stuck_on_acknowledges_off_and_stays_on(bmc: Lab):
    face = bmc.faces["compute3"]
    bmc.lab.set_fault("compute3", "stuck-on")
    assert reset(face, "ForceOff").status_code == 204
    assert power(face) == "On" and bmc.hook_log("compute3") == []


def test_reject_refuses_off_with_a_redfish_error(bmc: Lab):
    face = bmc.faces["compute3"]
    bmc.lab.set_fault("compute3", "reject")
    answer = reset(face, "ForceOff")
    assert answer.status_code == 500 and answer.json()["error"]["@Message.ExtendedInfo"]
    assert power(face) == "On" and bmc.hook_log("compute3") == []


def test_slow_delays_each_request_of_that_bmc_only(bmc: Lab):
    face = bmc.faces["compute1"]
    bmc.lab.set_fault("compute1", "slow", 1)
    elapsed: list[float] = []

    def timed() -> None:
        t0 = time.monotonic()
        assert power(face) == "On"
        elapsed.append(time.monotonic() - t0)

    worker = threading.Thread(target=timed)
    worker.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert power(bmc.faces["compute2"]) == "On"
    assert time.monotonic() - t0 < 0.5
    worker.join(10)
    assert len(elapsed) == 1 and 1 <= elapsed[0] < 3


def test_badcreds_takes_the_bad_password_on_both_faces(bmc: Lab):
    face = bmc.faces["compute2"]
    login = call(face, "POST", "/redfish/v1/SessionService/Sessions", auth=False,
                 body={"UserName": face.username, "Password": face.password})
    token = login.headers["X-Auth-Token"]
    bmc.lab.set_fault("compute2", "badcreds")
    bad = bmc.lab._host("compute2")["bad_password"]
    assert call(face, "GET", face.system).status_code == 401
    assert call(face, "GET", face.system, auth=False, token=token).status_code == 401
    assert call(face, "GET", face.system, auth=(face.username, bad)).status_code == 200
    assert ipmi(bmc.ipmi["compute2"], "status").returncode != 0
    bmc.lab.set_fault("compute2", "none")
    assert power(face) == "On"


def test_conflict_when_off_is_409_like_idrac(bmc: Lab):
    face = bmc.faces["compute1"]
    bmc.lab.set_fault("compute1", "conflict-when-off")
    assert reset(face, "ForceOff").status_code == 204  # on: it powers off
    assert bmc.hook_log("compute1") == ["off"]
    answer = reset(face, "ForceOff")
    assert answer.status_code == 409
    info = answer.json()["error"]["@Message.ExtendedInfo"][0]
    assert info["MessageId"].startswith("IDRAC.") and "already powered OFF" in info["Message"]
    assert bmc.hook_log("compute1") == ["off"] and power(face) == "Off"


def test_badrequest_when_off_is_400_like_ilo(bmc: Lab):
    face = bmc.faces["compute3"]
    assert reset(face, "ForceOff").status_code == 204
    bmc.lab.set_fault("compute3", "badrequest-when-off")
    answer = reset(face, "ForceOff")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"].startswith("iLO.")
    assert error["@Message.ExtendedInfo"][0]["MessageId"].endswith("InvalidOperationForSystemState")
    assert bmc.hook_log("compute3") == ["off"]


def test_busy_is_503_with_retry_after_then_healthy(bmc: Lab):
    face = bmc.faces["compute2"]
    bmc.lab.set_fault("compute2", "busy", 1.5)
    t0 = time.monotonic()
    for answer in (call(face, "GET", "/redfish/v1/", auth=False), call(face, "GET", face.system),
                   reset(face, "ForceOff")):
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.json()["error"]["@Message.ExtendedInfo"]
    assert bmc.hook_log("compute2") == []
    assert ipmi_status(bmc.ipmi["compute2"]) == "Chassis Power is on"  # IPMI: healthy
    time.sleep(max(0.0, 1.6 - (time.monotonic() - t0)))
    assert power(face) == "On"


def test_late_off_answers_at_once_and_cuts_power_later(bmc: Lab):
    face = bmc.faces["compute3"]
    bmc.lab.set_fault("compute3", "late-off", 1.5)
    t0 = time.monotonic()
    assert reset(face, "ForceOff").status_code == 204
    assert time.monotonic() - t0 < 0.5
    assert power(face) == "On" and bmc.hook_log("compute3") == []
    while power(face) == "On" and time.monotonic() - t0 < 5:
        time.sleep(0.1)
    assert 1.4 <= time.monotonic() - t0 < 3
    assert bmc.hook_log("compute3") == ["off"]
    assert ipmi_status(bmc.ipmi["compute3"]) == "Chassis Power is off"


def test_late_off_is_dropped_when_the_fault_changes(bmc: Lab):
    face = bmc.faces["compute1"]
    bmc.lab.set_fault("compute1", "late-off", 1)
    assert reset(face, "ForceOff").status_code == 204
    bmc.lab.set_fault("compute1", "none")
    time.sleep(1.3)
    assert power(face) == "On" and bmc.hook_log("compute1") == []


def test_fault_seconds_are_validated(bmc: Lab):
    for mode in ("busy", "late-off", "slow"):
        with pytest.raises(ValueError):
            bmc.lab.set_fault("compute1", mode)
    for mode in ("conflict-when-off", "badrequest-when-off"):
        with pytest.raises(ValueError):
            bmc.lab.set_fault("compute1", mode, 1)
    assert bmc.lab.status()["hosts"]["compute1"]["fault"] == "none"


def _redfish_processes() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and bytes(REDFISH_PY) in (p / "cmdline").read_bytes() if pid_alive(int(p.name))]


def test_down_leaves_nothing_behind(bmc: Lab):
    # Last in this file: it takes the module's lab down (the fixture's down() is then a no-op).
    pids = bmc.lab._pids()
    assert len(pids) == 2 * len(HOSTS) + 1 and all(pid_alive(p) for p in pids)
    bmc.lab.down()
    assert not any(pid_alive(p) for p in pids)
    assert not Path(f"/run/netns/{NETNS}").exists()
    assert _redfish_processes() == []
    assert list((bmc.lab.state_dir / "redfish").glob("*.key")) == []
    assert bmc.lab.redfish_endpoints() == {} and bmc.lab.endpoints() == {}
    bmc.lab.down()  # twice is fine
