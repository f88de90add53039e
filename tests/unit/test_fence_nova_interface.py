"""fence_nova's declared interface: fence_compute's parameters, new ones, config rules.

Also runs ``fence_nova`` end to end as a process, the way Pacemaker does:
options on stdin, exit code and stderr observed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fence_compute.actions import HANDLERS
from fence_compute.bmc_map import BmcAddress, parse_bmc_map
from fence_compute.fence_nova import FENCE_NOVA, RecordOnly, check_config
from fence_compute.protocol import Options, metadata_xml, run
from openstack_ha import pacemaker

REPO = Path(__file__).resolve().parents[2]
FENCE_COMPUTE = Path("/usr/sbin/fence_compute")
METADATA_RNG = Path("/usr/share/cluster/relaxng/metadata.rng")
SECRET = "bmc-Sup3rSecret-pw"
KEYSTONE_SECRET = "keystone-Sup3rSecret-pw"
ENTRY = [sys.executable, "-c", "from fence_compute.fence_nova import main; main()"]

VALID = {
    "cloud": "overcloud",
    "ip": "10.0.0.11",
    "bmc_username": "admin",
    "bmc_password": SECRET,
}
REDFISH = {**VALID, "power_driver": "redfish"}


def _xml(text: str) -> ET.Element:
    return ET.fromstring(text)


def _parameters(root: ET.Element) -> dict[str, ET.Element]:
    return {p.get("name"): p for p in root.find("parameters")}


def _stdin(values: dict[str, str], **more: str) -> str:
    return "".join(f"{k}={v}\n" for k, v in {**values, **more}.items())


def _fence_nova(stdin: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*ENTRY, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def invoke(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    # The brake reads the cluster: none here, even when a lab's runs on this machine
    # (these fences name hosts of no cluster; the brake's own tests are test_brake.py)
    for reader in ("remote_nodes_down", "handled_connections"):
        monkeypatch.setattr(pacemaker, reader, _no_cluster)

    def _invoke(stdin: str) -> tuple[int, str]:
        caplog.clear()
        rc = run(FENCE_NOVA, HANDLERS, [], _Stdin(stdin), setup_logging=None)
        return rc, "\n".join(r.getMessage() for r in caplog.records)

    return _invoke


def _no_cluster(*_args: object, **_kwargs: object) -> None:
    raise pacemaker.NoCluster("no cluster in the unit tests")


class _Stdin:
    def __init__(self, text: str) -> None:
        self._text = text
        self.closed = False

    def isatty(self) -> bool:
        return False

    def read(self, size: int = -1) -> str:
        return self._text


# --------------------------------------------------------------------------
# compatibility with fence_compute


@pytest.fixture(scope="module")
def fence_compute_metadata() -> ET.Element:
    if not FENCE_COMPUTE.exists():
        pytest.skip("fence-agents' fence_compute is not installed")
    done = subprocess.run(
        [str(FENCE_COMPUTE), "-o", "metadata"], capture_output=True, text=True, check=True
    )
    return _xml(done.stdout)


def test_every_fence_compute_parameter_is_a_fence_nova_parameter(fence_compute_metadata):
    ours = _parameters(_xml(metadata_xml(FENCE_NOVA)))
    theirs = _parameters(fence_compute_metadata)
    assert sorted(set(theirs) - set(ours)) == []


def test_deprecated_and_obsoletes_structure_matches_fence_compute(fence_compute_metadata):
    ours = _parameters(_xml(metadata_xml(FENCE_NOVA)))
    theirs = _parameters(fence_compute_metadata)
    for name, param in theirs.items():
        assert ours[name].get("deprecated") == param.get("deprecated"), name
        assert ours[name].get("obsoletes") == param.get("obsoletes"), name


def test_fence_compute_short_flags_keep_their_meaning(fence_compute_metadata):
    ours = _parameters(_xml(metadata_xml(FENCE_NOVA)))
    for name, param in _parameters(fence_compute_metadata).items():
        mixed = param.find("getopt").get("mixed")
        if mixed.startswith("-") and not mixed.startswith("--"):
            assert ours[name].find("getopt").get("mixed").split(",")[0] == mixed.split(",")[0]


@pytest.mark.parametrize(
    ("stdin_key", "option", "value", "expected"),
    [
        ("login", "username", "admin", "admin"),
        ("user-domain", "user_domain", "Corp", "Corp"),
        ("project-domain", "project_domain", "Corp", "Corp"),
        ("compute-domain", "compute_domain", "example.com", "example.com"),
        ("port", "plug", "compute-1", "compute-1"),
        ("ipaddr", "ip", "10.0.0.12", "10.0.0.12"),
        ("insecure", "insecure", "1", True),
        ("instance_filtering", "instance_filtering", "0", False),
        ("no_shared_storage", "no_shared_storage", "true", True),
        ("endpoint_type", "endpoint_type", "publicURL", "publicURL"),
        ("record_only", "record_only", "1", "1"),
    ],
)
def test_an_existing_fence_compute_configuration_is_read_unchanged(
    stdin_key, option, value, expected
):
    seen: list[Options] = []
    handlers = {"monitor": lambda o: seen.append(o) or 0}
    base = {k: v for k, v in VALID.items() if k != option}
    stdin = _stdin(base, action="monitor", **{stdin_key: value})
    assert run(FENCE_NOVA, handlers, [], _Stdin(stdin), setup_logging=None) == 0
    assert seen[0].get(option) == expected


def test_fence_compute_passwd_script_sets_the_keystone_password():
    seen: list[Options] = []
    stdin = _stdin(
        {**VALID, "cloud": ""},
        action="monitor",
        auth_url="http://keystone:5000/v3",
        login="admin",
        passwd_script=f"/bin/echo {KEYSTONE_SECRET}",
    )
    handlers = {"monitor": lambda o: seen.append(o) or 0}
    assert run(FENCE_NOVA, handlers, [], _Stdin(stdin), setup_logging=None) == 0
    assert seen[0].password.reveal() == KEYSTONE_SECRET


# --------------------------------------------------------------------------
# the declared interface


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("action", "off"),
        ("endpoint_type", "internalURL"),
        ("user_domain", "Default"),
        ("project_domain", "Default"),
        ("instance_filtering", "1"),
        ("no_shared_storage", "0"),
        ("record_only", "False"),
        ("power_driver", "ipmi"),
        ("ipport", None),  # the driver's: 623 for ipmi, 443 for redfish
        ("redfish_system", None),
        ("redfish_auth", "auto"),
        ("ssl_insecure", "0"),
        ("ssl_ca_file", None),
        ("lanplus", "1"),
        ("cipher", "3"),
        ("leave_disabled", "0"),
        ("power_timeout", "20"),
        ("shell_timeout", "180"),
        ("delay", "0"),
        ("cloud", None),
        ("bmc_map", None),
        ("bmc_username", None),
        ("bmc_password", None),
        ("bmc_password_script", None),
        ("bmc_password_file", None),
        ("password_file", None),
    ],
)
def test_metadata_declares_each_parameter_with_its_default(name, default):
    param = _parameters(_xml(metadata_xml(FENCE_NOVA)))[name]
    assert param.find("content").get("default") == default
    assert param.find("shortdesc").text.strip()


def test_power_driver_is_a_choice_of_ipmi_redfish_or_none():
    content = _parameters(_xml(metadata_xml(FENCE_NOVA)))["power_driver"].find("content")
    assert content.get("type") == "select"
    assert [o.get("value") for o in content] == ["ipmi", "redfish", "none"]


def test_redfish_auth_is_a_choice_and_the_ssl_options_have_fence_agents_flags():
    params = _parameters(_xml(metadata_xml(FENCE_NOVA)))
    content = params["redfish_auth"].find("content")
    assert [o.get("value") for o in content] == ["session", "basic", "auto"]
    assert params["ssl_insecure"].find("getopt").get("mixed") == "--ssl-insecure"
    assert params["ssl_ca_file"].find("getopt").get("mixed") == "--ssl-ca-file=[path]"


def test_plug_is_required_and_secrets_are_not():
    params = _parameters(_xml(metadata_xml(FENCE_NOVA)))
    assert params["plug"].get("required") == "1"
    assert params["port"].get("required") == "1"
    assert {params[n].get("required") for n in ("password", "bmc_password")} == {"0"}


def test_metadata_declares_an_unfencing_device_with_off_by_default():
    root = _xml(metadata_xml(FENCE_NOVA))
    actions = {a.get("name"): a.get("automatic") for a in root.find("actions")}
    assert actions == {
        "on": "1",
        "off": None,
        "reboot": None,
        "status": None,
        "monitor": None,
        "list": None,
        "list-status": None,
        "metadata": None,
        "validate-all": None,
    }


@pytest.mark.skipif(
    not (METADATA_RNG.exists() and shutil.which("xmllint")),
    reason="fence-agents' metadata.rng or xmllint is not installed",
)
def test_metadata_validates_against_fence_agents_schema(tmp_path):
    doc = tmp_path / "fence_nova.xml"
    doc.write_text(metadata_xml(FENCE_NOVA))
    done = subprocess.run(
        ["xmllint", "--noout", "--relaxng", str(METADATA_RNG), str(doc)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------
# cross-option rules


def _check(**values) -> list[str]:
    return check_config(Options.for_agent(FENCE_NOVA, values))


@pytest.mark.parametrize(
    "values",
    [
        VALID,
        {**VALID, "ip": None, "bmc_map": "compute-1=10.0.0.11,compute-2=10.0.0.12:6230"},
        {"cloud": "overcloud", "power_driver": "none"},
        {
            "auth_url": "http://keystone:5000/v3",
            "username": "admin",
            "password": KEYSTONE_SECRET,
            "power_driver": "none",
        },
        {**VALID, "domain": "example.com", "compute_domain": "example.com"},
        {**VALID, "record_only": "disabled"},
        {**VALID, "endpoint_type": "internal"},
        {**VALID, "power_driver": "redfish"},
        {**VALID, "power_driver": "redfish", "ipport": 8443, "redfish_system": "1",
         "redfish_auth": "basic", "ssl_ca_file": __file__},
        {**VALID, "power_driver": "redfish", "ssl_insecure": True, "lanplus": False, "cipher": 1},
        {**VALID, "power_driver": "redfish", "ip": None,
         "bmc_map": "compute-1=https://[fd00::11]:8443/,compute-2=10.0.0.12"},
        {**VALID, "power_driver": "none", "ip": None, "bmc_map": "compute-1=https://bmc1"},
        # record_only leaves the power to another device: a fence_compute configuration
        # (no BMC at all) is complete, and power options it does not use are not checked
        {"cloud": "overcloud", "record_only": "1"},
        {"cloud": "overcloud", "record_only": "disabled"},
        {**VALID, "record_only": "yes", "bmc_map": "compute-1=10.0.0.11"},
        {**REDFISH, "record_only": "1", "bmc_username": None},
    ],
)
def test_a_complete_configuration_passes_the_checks(values):
    assert _check(**{k: v for k, v in values.items() if v is not None}) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**VALID, "cloud": None}, "missing: auth_url, username, a password"),
        (
            {**VALID, "cloud": None, "auth_url": "http://k", "username": "u"},
            "missing: a password (password, password_script or password_file)",
        ),
        ({**VALID, "ip": None}, "power_driver=ipmi needs the BMC address: 'ip'"),
        ({**VALID, "bmc_map": "compute-1=10.0.0.11"}, "give either 'ip' or 'bmc_map', not both"),
        ({**VALID, "bmc_password": None}, "power_driver=ipmi needs a BMC password"),
        ({**VALID, "ip": None, "bmc_map": "compute-1"}, "option 'bmc_map': entry 1"),
        ({**VALID, "ipport": 0}, "option 'ipport' must be between 1 and 65535"),
        ({"cloud": "overcloud", "record_only": "0"}, "power_driver=ipmi needs the BMC address"),
        ({**VALID, "record_only": "1", "ip": None, "bmc_map": "compute-1"},
         "option 'bmc_map': entry 1"),  # parsed whatever uses it
        ({**VALID, "domain": "a.com", "compute_domain": "b.com"}, "'compute_domain'"),
        ({**VALID, "record_only": "sometimes"}, "option 'record_only' must be a boolean"),
        ({**VALID, "endpoint_type": "privateURL"}, "option 'endpoint_type' must be one of"),
        ({**VALID, "ip": None, "bmc_map": "compute-1=https://bmc1,compute-2=10.0.0.12"},
         "bmc_map entry for compute-1 is a Redfish URL but power_driver=ipmi"),
        ({**REDFISH, "ip": None}, "power_driver=redfish needs the BMC address: 'ip'"),
        ({**REDFISH, "bmc_map": "compute-1=https://bmc1"}, "give either 'ip' or 'bmc_map', not both"),
        ({**REDFISH, "bmc_password": None}, "power_driver=redfish needs a BMC password"),
        ({**REDFISH, "bmc_username": None}, "power_driver=redfish needs 'bmc_username'"),
        ({**REDFISH, "ssl_insecure": True, "ssl_ca_file": __file__},
         "give either 'ssl_insecure' or 'ssl_ca_file', not both"),
        ({**REDFISH, "ssl_ca_file": "/nonexistent/ca.pem"},
         "option 'ssl_ca_file' must be a readable file (got '/nonexistent/ca.pem')"),
        ({**REDFISH, "redfish_system": "Systems/1"}, "option 'redfish_system' must be a path"),
        ({**REDFISH, "ip": "https://10.0.0.11"}, "option 'ip' is the BMC's address, not a URL"),
        ({**REDFISH, "ip": None, "bmc_map": "compute-1=http://bmc1"},
         "option 'bmc_map': entry 1 ('compute-1=http://bmc1') is an http:// URL: the BMC"
         " password would cross the network in clear text; use https://"),
    ],
)
def test_an_incomplete_or_contradictory_configuration_is_refused(values, message):
    errors = _check(**{k: v for k, v in values.items() if v is not None})
    assert any(message in e for e in errors), errors
    assert not any(SECRET in e for e in errors)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("compute-1=10.0.0.11", {"compute-1": BmcAddress("10.0.0.11")}),
        (
            "compute-1=10.0.0.11:6230, compute-2=bmc2.example.com,",
            {
                "compute-1": BmcAddress("10.0.0.11", 6230),
                "compute-2": BmcAddress("bmc2.example.com"),
            },
        ),
        ("c1=[fd00::11]:623", {"c1": BmcAddress("fd00::11", 623)}),
        ("c1=fd00::11", {"c1": BmcAddress("fd00::11")}),
        ("c1=https://10.0.0.11", {"c1": BmcAddress("10.0.0.11", None, "https")}),
        (
            "c1=HTTPS://bmc1.example.com:8443/,c2=10.0.0.12",
            {"c1": BmcAddress("bmc1.example.com", 8443, "https"), "c2": BmcAddress("10.0.0.12")},
        ),
        ("c1=https://[fd00::11]:443", {"c1": BmcAddress("fd00::11", 443, "https")}),
        ("c1=https://[fd00::11]", {"c1": BmcAddress("fd00::11", None, "https")}),
    ],
)
def test_bmc_map_parses_hosts_addresses_and_ports(text, expected):
    assert parse_bmc_map(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compute-1", "entry 1 ('compute-1') is not host=address[:port]"),
        ("compute-1=", "is not host=address[:port]"),
        ("=10.0.0.1", "is not host=address[:port]"),
        ("c1=10.0.0.1,C1=10.0.0.2", "host 'C1' is mapped twice (entries 1 and 2)"),
        ("c1=10.0.0.1:0", "port outside 1-65535"),
        ("c1=10.0.0.1:65536", "port outside 1-65535"),
        ("c1=10.0.0.1:ipmi", "port outside 1-65535"),
        ("c1=[fd00::1", "malformed [IPv6] address"),
        ("c1=10.0.0.1 c2=10.0.0.2", "contains white space"),
        (" , ", "no host=address entry"),
        ("c1=10.0.0.1:\u0663", "port outside 1-65535"),  # ASCII digits only
        ("c1=http://10.0.0.1", "entry 1 ('c1=http://10.0.0.1') is an http:// URL: the BMC"
         " password would cross the network in clear text; use https://"),
        ("c1=redfish://10.0.0.1", "has the scheme 'redfish'; only https:// is accepted"),
        ("c1=https://10.0.0.1/redfish/v1", "has a path, query or fragment"),
        ("c1=https://10.0.0.1?x=1", "has a path, query or fragment"),
        ("c1=https://10.0.0.1//", "has a path, query or fragment"),
        ("c1=https://fd00::11", "has an IPv6 address without brackets"),
        ("c1=https://", "entry 1 ('c1=https://') has no address"),
        ("c1=https://10.0.0.1:0", "port outside 1-65535"),
        ("c1=https://[fd00::11", "malformed [IPv6] address"),
        ("c1=https://10.0.0.1,c1=https://10.0.0.2", "host 'c1' is mapped twice"),
        ("c1=https://admin:S3cret@10.0.0.1/", "entry 1 ('c1=https://***@10.0.0.1/') has user info"
         " (user:password@) in its address: give the BMC's credentials in bmc_username and"
         " bmc_password"),
        ("c1=10.0.0.2,c2=https://admin:pa,ss@10.0.0.1", "entry 3 ('***@10.0.0.1') has user info"),
        ("c1=admin@10.0.0.1", "entry 1 ('c1=***@10.0.0.1') has user info"),
    ],
)
def test_bmc_map_refuses_ambiguous_or_malformed_entries(text, message):
    with pytest.raises(ValueError) as caught:
        parse_bmc_map(text)
    assert message in str(caught.value)
    assert "S3cret" not in str(caught.value) and "pa,ss" not in str(caught.value)


_MAP_PIECES = st.sampled_from(["c1", "=", ",", ":", "/", "//", "://", "[", "]", "@", "?", "#",
                               "https", "HTTPS", "http", "10.0.0.1", "fd00::11", "443", "0",
                               "99999", " ", "\u0663", "%", "a"])


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.lists(_MAP_PIECES, max_size=14).map("".join), st.text(max_size=40)))
@example("c1=https://[fd00::11]:443/")
@example("c1=https://:443")
@example("c1=https://[]")
def test_bmc_map_parses_or_raises_value_error_only(text):
    try:
        result = parse_bmc_map(text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for bmc in result.values():
        assert bmc.address and bmc.scheme in (None, "https")
        assert bmc.port is None or 1 <= bmc.port <= 65535
        if bmc.scheme:
            assert "/" not in bmc.address and "@" not in bmc.address


_PASSWORDS = st.from_regex(r"P[A-Za-z0-9!$%&*+,;=:/?#\[\]-]{6,14}", fullmatch=True)


@settings(max_examples=200, deadline=None, database=None)
@given(password=_PASSWORDS, before=st.sampled_from(["", "c0=10.0.0.9,", "c0=https://x:1/,"]),
       scheme=st.sampled_from(["https://", "http://", "HTTPS://", "ftp://", ""]),
       rest=st.sampled_from(["10.0.0.1", "[fd00::1]:443/", "bmc:0", "x/y", ""]))
def test_bmc_map_never_echoes_a_password_written_in_a_url(password, before, scheme, rest):
    text = f"{before}c1={scheme}admin:{password}@{rest}"
    with pytest.raises(ValueError) as caught:
        parse_bmc_map(text)
    assert password not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("False", RecordOnly.NO),
        ("0", RecordOnly.NO),
        ("1", RecordOnly.YES),
        ("true", RecordOnly.YES),
        ("2", RecordOnly.DISABLED),
        ("Disabled", RecordOnly.DISABLED),
    ],
)
def test_record_only_keeps_fence_compute_meaning(value, mode):
    assert RecordOnly.parse(value) is mode


# --------------------------------------------------------------------------
# failing closed without any service: nothing here may reach a network beyond
# loopback, so the BMC is 127.0.0.1 on a port where nothing answers and the
# cloud is one no clouds.yaml names.

UNREACHABLE = {
    **VALID, "ip": "127.0.0.1", "ipport": "9", "login_timeout": "1", "power_timeout": "2",
}


@pytest.mark.parametrize("action", ["off", "reboot", "status"])
def test_power_actions_fail_closed_when_the_bmc_does_not_answer(invoke, action):
    rc, log = invoke(_stdin(UNREACHABLE, action=action, port="compute-1", nodename="compute-1"))
    assert rc == 1
    assert "127.0.0.1:9" in log
    assert SECRET not in log


def test_on_fails_closed_without_powering_on_when_nova_cannot_say_the_evacuation_is_done(invoke):
    # unfencing reads the ledger before anything else: no Nova, no power-on
    rc, log = invoke(_stdin(UNREACHABLE, action="on", port="compute-1", nodename="compute-1"))
    assert rc == 1
    assert "cannot read its evacuation from Nova" in log and "not unfencing" in log
    assert "127.0.0.1:9" not in log
    assert SECRET not in log


def test_off_leaves_nova_untouched_when_power_off_is_not_confirmed(invoke):
    rc, log = invoke(_stdin(UNREACHABLE, action="off", port="compute-1", nodename="compute-1"))
    assert rc == 1
    assert "power-off not confirmed" in log and "Nova left untouched" in log


@pytest.mark.parametrize("action", ["list", "list-status", "monitor"])
def test_nova_actions_fail_closed_without_a_cloud(invoke, action):
    rc, log = invoke(_stdin({**UNREACHABLE, "power_driver": "none", "ip": None}, action=action))
    assert rc == 1
    assert "overcloud" in log
    assert SECRET not in log


def test_redfish_off_fails_closed_when_nothing_answers(invoke):
    stdin = _stdin({**UNREACHABLE, "power_driver": "redfish"}, action="off", port="compute-1",
                   nodename="compute-1")
    t0 = time.monotonic()
    rc, log = invoke(stdin)
    assert rc == 1 and time.monotonic() - t0 < 10
    assert "BMC https://127.0.0.1:9 is unreachable: Connection refused" in log
    assert "power-off not confirmed" in log and "Nova left untouched" in log
    assert SECRET not in log


def test_an_unknown_redfish_auth_is_one_error_line_and_exit_1(invoke):
    rc, log = invoke(_stdin(REDFISH, action="validate-all", redfish_auth="digest"))
    assert rc == 1
    errors = [line for line in log.splitlines() if "redfish_auth" in line]
    assert errors == ["option 'redfish_auth' must be one of: session, basic, auto (got 'digest')"]


def test_validate_all_of_a_redfish_device_loads_no_http_library():
    code = (
        "import sys\n"
        "from fence_compute.fence_nova import FENCE_NOVA, check_config\n"
        "from fence_compute.protocol import Options\n"
        "options = Options.for_agent(FENCE_NOVA, {'cloud': 'c', 'power_driver': 'redfish',"
        " 'bmc_map': 'c1=https://bmc1', 'bmc_username': 'u', 'bmc_password': 'p'})\n"
        "print(check_config(options), sorted({m.split('.')[0] for m in sys.modules}"
        " & {'sushy', 'requests', 'urllib3'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[] []"


def test_validate_all_passes_on_a_complete_configuration(invoke):
    rc, log = invoke(_stdin(VALID, action="validate-all"))
    assert rc == 0, log


def test_validate_all_errors_never_echo_secrets(invoke, tmp_path):
    secret_file = tmp_path / "bmc"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    rc, log = invoke(
        _stdin(
            {"password": KEYSTONE_SECRET, "bmc_password_file": str(secret_file)},
            action="validate-all",
        )
    )
    assert rc == 1
    assert "bmc_password_file" in log
    assert SECRET not in log
    assert KEYSTONE_SECRET not in log


def test_importing_fence_nova_loads_no_openstack_or_ipmi_library():
    code = (
        "import sys, fence_compute.fence_nova\n"
        "heavy = ('openstack', 'keystoneauth1', 'pyghmi', 'oslo_log', 'novaclient', 'sushy',"
        " 'requests')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------
# end to end, as Pacemaker runs it


def test_fence_nova_prints_metadata_when_pacemaker_asks():
    done = _fence_nova("action=metadata\n")
    assert done.returncode == 0
    assert _xml(done.stdout).get("name") == "fence_nova"
    assert done.stdout == metadata_xml(FENCE_NOVA)
    assert done.stderr == ""


def test_fence_nova_prints_metadata_for_dash_o():
    done = _fence_nova("", "-o", "metadata")
    assert done.returncode == 0
    assert _xml(done.stdout).get("name") == "fence_nova"


def test_fence_nova_validate_all_succeeds_on_a_valid_configuration():
    done = _fence_nova(_stdin(VALID, action="validate-all", pcmk_extra="1"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_fence_nova_validate_all_fails_on_an_invalid_configuration():
    done = _fence_nova(_stdin({**VALID, "cloud": ""}, action="validate-all"))
    assert done.returncode == 1
    assert "missing: auth_url, username" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(("consul", "expected"), [
    ({"consul_config": "/nonexistent/openstack-ha.conf"}, "cannot be read"),
    ({"consul_config": "networks=management=http://u:pw@127.0.0.1:8500"},
     "must not carry user info"),
    ({"consul_config": "networks=management=http://127.0.0.1:9 samples=many"},
     "'samples' must be a whole number"),
    ({"consul_config": "networks=management=http://127.0.0.1:9",
      "partition_policy": "management=refuse"}, "cannot be about every network"),
    ({"consul_config": "networks=management=http://127.0.0.1:9,storage=http://127.0.0.1:9",
      "partition_policy": "storage=fence; storage+management=maybe"},
     "the action must be fence or refuse"),
])
def test_fence_nova_refuses_bad_consul_options_in_one_line(consul, expected):
    """Bad consul_config or partition_policy: exit 1 before any action, one line, before any
    Consul is read (nothing listens on port 9)."""
    for action in ("validate-all", "off"):
        done = _fence_nova(_stdin(VALID, action=action, port="compute-1", **consul))
        assert done.returncode == 1, done.stderr
        lines = [line for line in done.stderr.splitlines() if expected in line]
        assert len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr and "pw" not in done.stderr


def test_fence_nova_refuses_a_malformed_stdin_line():
    done = _fence_nova(_stdin(VALID, action="off", port="compute-1") + f"{SECRET}\n")
    assert done.returncode == 1
    assert "expected key=value" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_fence_nova_off_fails_closed_end_to_end():
    done = _fence_nova(_stdin(UNREACHABLE, action="off", port="compute-1", nodename="compute-1"))
    assert done.returncode == 1
    assert "power-off not confirmed" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout
