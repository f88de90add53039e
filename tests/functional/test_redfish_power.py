"""The Redfish power driver and the verified power sequence against the lab's BMCs, over HTTPS:
sushy-tools' emulator with the lab's own systems driver, sessions and faults (lab/redfish_bmc.py).

The IPMI fault matrix of test_ipmi_power.py, repeated for Redfish, plus the Redfish quirks: an
error answer to ForceOff from a BMC that already is off (Dell's 409, HPE's 400), a BMC busy
(503), and a power-off accepted but carried out seconds later. Each attempt runs in a fresh
process, as fence_nova does; the child gets the password on stdin and prints the outcome as
JSON, and its DEBUG log is checked along with it for the password.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from bmc_helpers import Lab, Run, attempt_in_child, ipmi, make_healthy

from lab.bmc import RedfishEndpoint

pytestmark = pytest.mark.lab

DEADLINE = 5.0  # s
MARGIN = 5.0  # s on top: interpreter start, sushy's import, the logout, a loaded CI machine

_CHILD = """
import dataclasses, json, logging, sys, time
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from fence_compute.power import PowerError, power_confirmed
from fence_compute.redfish import RedfishCredentials, RedfishPower
a = json.loads(sys.stdin.read())
driver = RedfishPower(RedfishCredentials(a["url"], a["username"], a["password"], a["system"],
                                         a["auth"], a["verify"]))
start = time.monotonic()
try:
    if a["step"] == "set":  # one ComputerSystem.Reset, without the sequence's first read
        try:
            driver.set_power(a["action"], start + a["deadline"])
            result = {"acknowledged": True}
        except PowerError as exc:
            result = {"acknowledged": False, "kind": exc.kind, "reason": exc.message}
    else:
        result = dataclasses.asdict(power_confirmed(driver, a["action"], start + a["deadline"]))
finally:
    driver.close(time.monotonic() + 1.0)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def bmc(redfish_bmc_lab: Lab) -> Lab:
    return redfish_bmc_lab


@pytest.fixture(autouse=True)
def healthy(bmc: Lab):
    make_healthy(bmc)
    yield
    for host in bmc.faces:
        bmc.lab.set_fault(host, "none")


def attempt(face: RedfishEndpoint, action: str = "off", *, step: str = "sequence",
            auth: str = "session", verify: bool | str | None = None,
            deadline: float = DEADLINE) -> Run:
    """One attempt in a fresh process (sys.executable: the suite's venv, with sushy)."""
    request = {"url": face.url, "username": face.username, "password": face.password,
               "system": face.system, "auth": auth, "action": action, "step": step,
               "verify": face.ca_file if verify is None else verify, "deadline": deadline}
    run = attempt_in_child(_CHILD, request, face.password, deadline)
    assert "Traceback" not in run.output
    print(f"{face.host} {action}: {run.wall:.2f}s {run.outcome}")  # shown with -s / -rA
    return run


@pytest.mark.parametrize("auth", ["session", "basic"])
def test_healthy_off_is_confirmed_then_already_off_then_on(bmc: Lab, auth: str):
    face = bmc.faces["compute1"]
    seen = len(bmc.redfish_log("compute1"))
    run = attempt(face, auth=auth)
    assert run.outcome | {"elapsed": 0} == {
        "confirmed": True, "already": False, "elapsed": 0, "kind": "", "attempts": 1,
        "reason": f"BMC {face.url} reports off"}
    assert not bmc.lab.power_state("compute1") and bmc.hook_log("compute1") == ["off"]
    again = attempt(face, auth=auth)
    assert again.outcome["already"] and again.outcome["confirmed"]
    on = attempt(face, "on", auth=auth)
    assert on.outcome["confirmed"] and not on.outcome["already"]
    assert bmc.lab.power_state("compute1") and bmc.hook_log("compute1") == ["off", "on"]
    log = bmc.redfish_log("compute1")[seen:]
    sessions = log.count("POST /redfish/v1/SessionService/Sessions 201")
    assert sessions == (3 if auth == "session" else 0)
    assert log.count("DELETE /redfish/v1/SessionService/Sessions/") == sessions  # logged out


# fault, seconds, host, kind, words in the reason, (min, max) seconds of the sequence. Hosts
# rotate, so that what one fault leaves behind cannot reach the next case.
FAULTS = [
    ("noreply", 0, "compute2", "timeout", "no answer within", (DEADLINE - 0.5, DEADLINE + 0.5)),
    ("hang-after-login", 0, "compute3", "timeout", "no answer within",
     (DEADLINE - 0.5, DEADLINE + 0.5)),
    ("stuck-on", 0, "compute1", "timeout",
     "power off acknowledged, but it still reports on at the deadline", (DEADLINE - 1, DEADLINE)),
    ("reject", 0, "compute2", "refused", "refused power off: HTTP 500", (0.0, 2.0)),
    ("badcreds", 0, "compute3", "credentials", "HTTP 401", (0.0, 2.0)),
    ("busy", 60, "compute1", "timeout", "busy (HTTP 503)", (DEADLINE - 1.5, DEADLINE + 0.5)),
    ("late-off", 60, "compute2", "timeout",
     "power off acknowledged, but it still reports on at the deadline", (DEADLINE - 1, DEADLINE)),
]


@pytest.mark.parametrize(("fault", "seconds", "host", "kind", "words", "took"), FAULTS,
                         ids=[f[0] for f in FAULTS])
def test_a_faulty_bmc_is_never_reported_off(bmc: Lab, fault: str, seconds: float, host: str,
                                            kind: str, words: str, took: tuple[float, float]):
    bmc.lab.set_fault(host, fault, seconds)
    run = attempt(bmc.faces[host])
    assert (run.outcome["confirmed"], run.outcome["kind"]) == (False, kind), run.outcome
    assert words in run.outcome["reason"]
    assert run.outcome["reason"].startswith(f"BMC {bmc.faces[host].url}")
    assert took[0] <= run.outcome["elapsed"] <= took[1]
    assert run.wall < DEADLINE + MARGIN
    bmc.lab.set_fault(host, "none")  # before the check: a late-off is dropped with it
    assert bmc.lab.power_state(host) and bmc.hook_log(host) == []


@pytest.mark.parametrize(("fault", "status"), [("conflict-when-off", "409"),
                                                ("badrequest-when-off", "400")])
def test_an_error_answer_to_off_counts_only_when_the_bmc_then_reports_off(bmc: Lab, fault: str,
                                                                          status: str):
    face = bmc.faces["compute3"]
    assert ipmi(bmc.ipmi["compute3"], "off").returncode == 0  # off behind the driver's back
    bmc.lab.set_fault("compute3", fault)
    run = attempt(face, step="set")
    assert run.outcome == {"acknowledged": True}
    assert f"refused power off: HTTP {status}" in run.output
    assert "counts as acknowledged" in run.output
    assert f"ComputerSystem.Reset {status}" in bmc.redfish_log("compute3")
    # The same error from a BMC whose host is on is a refusal: reject answers 500 while on
    assert ipmi(bmc.ipmi["compute3"], "on").returncode == 0
    bmc.lab.set_fault("compute3", "reject")
    refused = attempt(face, step="set")
    assert (refused.outcome["acknowledged"], refused.outcome["kind"]) == (False, "refused")
    assert bmc.lab.power_state("compute3")


def test_a_busy_bmc_is_asked_again_until_it_answers(bmc: Lab):
    bmc.lab.set_fault("compute1", "busy", 1.5)
    run = attempt(bmc.faces["compute1"])
    assert run.outcome["confirmed"] and run.outcome["elapsed"] >= 1.0
    assert not bmc.lab.power_state("compute1")
    assert "503" in bmc.redfish_log("compute1")


def test_a_late_power_off_is_confirmed_only_once_the_bmc_reports_it(bmc: Lab):
    bmc.lab.set_fault("compute2", "late-off", 2)
    run = attempt(bmc.faces["compute2"])
    assert run.outcome["confirmed"] and run.outcome["elapsed"] >= 1.9, run.outcome
    assert not bmc.lab.power_state("compute2") and bmc.hook_log("compute2") == ["off"]


def test_tls_is_verified_by_default(bmc: Lab, tmp_path: Path):
    face = bmc.faces["compute1"]
    # The system's trust store does not know the lab's CA.
    default = attempt(face, step="set", verify=True)
    assert (default.outcome["acknowledged"], default.outcome["kind"]) == (False, "protocol")
    assert "TLS certificate could not be verified" in default.outcome["reason"]
    assert "ssl_ca_file" in default.outcome["reason"]
    # Another CA: the same.
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "other.key"),
                    "-out", str(other), "-days", "1", "-subj", "/CN=another CA"],
                   check=True, capture_output=True)
    wrong = attempt(face, step="set", verify=str(other))
    assert wrong.outcome["kind"] == "protocol"
    assert "could not be verified" in wrong.outcome["reason"]
    assert bmc.lab.power_state("compute1") and bmc.hook_log("compute1") == []
    # Verification off: it works, and says so.
    insecure = attempt(face, verify=False)
    assert insecure.outcome["confirmed"]
    assert "not verified (ssl_insecure)" in insecure.output
