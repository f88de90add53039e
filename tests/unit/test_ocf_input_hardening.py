"""Issue 11, the OCF agents' inputs: every bad value is one refusal line, never a traceback.

Each defect the audit reproduced is a test here (named after what it proves), followed by
property tests (hypothesis) of the parsers: the ``checks`` parser, OCF integers, booleans
and paths, the file names derived from the resource instance, and the log sanitiser.
Nothing here reaches the cluster: every Pacemaker call of the agents is replaced.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import syslog
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents import checks, compute_liveness, nova_evacuate_agent, ocf
from agents.checks import KINDS, Check, CheckSpecError, Prober, Process, parse_checks
from agents.ocf import OCFExit
from openstack_ha import logsetup

LIVENESS = compute_liveness.AGENT
EVACUATE = nova_evacuate_agent.AGENT
LONG_INSTANCE = "r" * 300


@pytest.fixture(autouse=True, scope="module")
def no_cluster() -> Iterator[None]:
    """No test here may touch a real cluster's attributes (a lab may be running)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a test reached Pacemaker: {args}")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("set_node_attribute", "delete_node_attribute", "local_node_name"):
            mp.setattr(compute_liveness.pacemaker, name, refuse)
        yield


def run(agent: ocf.Agent, action: str, rsc_tmp: Path, interval_ms: int = 0,
        instance: str = "x", **params: str) -> int:
    env = {
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": instance,
        "HA_LOGFACILITY": "none",
        "HA_RSCTMP": str(rsc_tmp),
        "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
        "OCF_RESKEY_CRM_meta_timeout": "20000",
        "OCF_RESKEY_CRM_meta_on_node": "node1",
        **{f"OCF_RESKEY_{k}": v for k, v in params.items()},
    }
    return ocf.run(agent, [action], env)


def assert_one_refusal_line(err: str) -> None:
    assert "Traceback" not in err
    reasons = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
    assert len(reasons) == 1, err


# --- defect 1: check specs -----------------------------------------------------------------

BAD_SPECS = [
    pytest.param("cmdline:a{4294967296}", "bad regular expression", id="repeat-overflow"),
    pytest.param("cmdline:" + "(" * 2000 + ")" * 2000, "bad regular expression",
                 id="deep-nesting"),
    pytest.param("degraded tcp:a..b:9", "neither an IP address nor a host name", id="idna"),
    pytest.param("tcp:növa.example:9", "neither an IP address nor a host name", id="non-ascii"),
    pytest.param("tcp:[::zz]:9", "is not an IPv6 address", id="bad-ipv6"),
    pytest.param("tcp:host:٣", "expected HOST:PORT", id="unicode-port"),
    pytest.param("unit:-Hhost", "not a systemd unit name", id="unit-option"),
    pytest.param("unit:a b.service", "not a systemd unit name", id="unit-space"),
    pytest.param("unit:x/../y", "not a systemd unit name", id="unit-slash"),
    pytest.param("socket:/run/x\x00y", "control character", id="nul"),
    pytest.param("process:nova\x1b[2J", "control character", id="escape"),
    pytest.param("process:nova\udcff", "invalid UTF-8", id="not-utf8"),
    pytest.param("process:x;" * 65, "more than 64 entries", id="too-many"),
    pytest.param("process:" + "x" * 9000, "at most 8192", id="too-long"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_a_bad_check_spec_is_one_refusal_naming_it(spec, message):
    with pytest.raises(CheckSpecError) as info:
        parse_checks(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 300


def test_crlf_line_ends_still_separate_checks_but_a_lone_cr_is_refused():
    assert [c.label for c in parse_checks("process:a\r\nprocess:b\r\n")] == [
        "process:a", "process:b"]
    with pytest.raises(CheckSpecError, match="control character"):
        parse_checks("process:a\rb")


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS[:4])
@pytest.mark.parametrize(
    ("action", "interval_ms", "expected"),
    [("validate-all", 0, OCFExit.ERR_CONFIGURED), ("start", 0, OCFExit.ERR_CONFIGURED),
     ("monitor", 0, OCFExit.NOT_RUNNING), ("monitor", 10000, OCFExit.ERR_CONFIGURED),
     ("stop", 0, OCFExit.SUCCESS)],
)
def test_a_bad_check_spec_never_gives_a_traceback_in_any_action(
        tmp_path, capsys, spec, message, action, interval_ms, expected):
    assert run(LIVENESS, action, tmp_path, interval_ms, checks=spec) == expected
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if expected == OCFExit.ERR_CONFIGURED:
        assert_one_refusal_line(err)
        assert message in err


def test_a_degraded_check_that_cannot_run_stays_degraded():
    # parse_checks refuses this host; a Check built past it must still only fail itself
    broken = Check("tcp", "a..b:9", critical=False)
    result = Prober(timeout=1).probe(broken, 1)
    assert not result.ok
    assert checks.verdict([result]).state == "degraded"


def test_a_catastrophic_cmdline_regex_is_bounded_by_the_check_timeout():
    long_line = ("a" * 40 + "b",)  # (a+)+$ backtracks 2**40 times on it
    prober = Prober(timeout=0.5, processes=lambda: [Process(42, "x", long_line)])
    (check,) = parse_checks("cmdline:(a+)+$")
    began = time.monotonic()
    result = prober.probe(check, 0.5)
    assert time.monotonic() - began < 3
    assert not result.ok
    assert "no result within 0.5s" in result.detail


def test_a_cmdline_regex_still_finds_its_processes():
    prober = Prober(timeout=2, processes=lambda: [
        Process(7, "python3", ("/usr/bin/python3", "/usr/bin/nova-compute")),
        Process(8, "bash", ("bash",)),
        Process(9, "nova", ("nova-compute", "--debug")),
    ])
    (check,) = parse_checks("cmdline:nova-compute")
    result = prober.probe(check, 2)
    assert (result.ok, result.detail) == (True, "running as pid 7, 9")
    (check,) = parse_checks("cmdline:^absent$")
    assert not prober.probe(check, 2).ok


# --- defect 8: unit values never reach systemctl as options --------------------------------

def test_a_unit_name_follows_a_double_dash(monkeypatch):
    seen = []

    class Done:
        returncode = 0
        stderr = b""

    def fake_run(argv, **kwargs):
        seen.append(argv)
        return Done()

    monkeypatch.setattr(checks.subprocess, "run", fake_run)
    (check,) = parse_checks("unit:libvirtd.service")
    assert Prober(timeout=1).probe(check, 1).ok
    assert seen == [["systemctl", "is-active", "--quiet", "--", "libvirtd.service"]]


@pytest.mark.parametrize("unit", ["libvirtd", "libvirtd.service", "getty@tty1.service",
                                  "dev-disk-by\\x2duuid-1.device", "nova_compute:x.scope"])
def test_real_unit_names_are_accepted(unit):
    assert parse_checks(f"unit:{unit}")[0].argument == unit


# --- defect 2: a long resource instance name -----------------------------------------------

def test_a_300_character_instance_starts_probes_and_stops(tmp_path, monkeypatch, capsys):
    published = []
    monkeypatch.setattr(compute_liveness.pacemaker, "set_node_attribute",
                        lambda name, value, node, timeout: published.append((node, value)))
    monkeypatch.setattr(compute_liveness.pacemaker, "delete_node_attribute",
                        lambda name, node, timeout: published.append((node, None)))
    params = {"instance": LONG_INSTANCE, "checks": "cmd:true"}
    assert run(LIVENESS, "start", tmp_path, **params) == OCFExit.SUCCESS
    assert run(LIVENESS, "monitor", tmp_path, **params) == OCFExit.SUCCESS
    assert run(LIVENESS, "stop", tmp_path, **params) == OCFExit.SUCCESS
    assert run(LIVENESS, "monitor", tmp_path, **params) == OCFExit.NOT_RUNNING
    assert published == [("node1", "ok"), ("node1", "ok"), ("node1", None)]
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in capsys.readouterr().err


def test_a_300_character_instance_of_nova_evacuate_probes_and_stops(tmp_path, capsys):
    pid_file, _ = nova_evacuate_agent._paths(ocf.Context(
        "stop", {}, (), 0, 20, time.monotonic(),
        {"OCF_RESOURCE_INSTANCE": LONG_INSTANCE, "HA_RSCTMP": str(tmp_path)}))
    Path(pid_file).write_text("999999999\n")  # a worker that is gone
    assert run(EVACUATE, "stop", tmp_path, instance=LONG_INSTANCE) == OCFExit.SUCCESS
    assert not Path(pid_file).exists()
    assert run(EVACUATE, "monitor", tmp_path, instance=LONG_INSTANCE) == OCFExit.NOT_RUNNING
    assert "Traceback" not in capsys.readouterr().err


def test_usual_instance_names_keep_their_file_names():
    # a state file written before the upgrade is found after it
    assert ocf.instance_file("/run/ra", "ComputeLiveness", "liveness:2", ".state") == \
        "/run/ra/ComputeLiveness-liveness:2.state"
    assert ocf.instance_file("/run/ra", "NovaEvacuate", "", ".pid") == \
        "/run/ra/NovaEvacuate-NovaEvacuate.pid"


# --- defect 3: logging never crashes on any string -----------------------------------------

def test_logging_survives_invalid_utf8_nul_and_escapes_in_syslog(monkeypatch, capsys):
    sent: list[str] = []

    def strict_syslog(priority: int, message: str) -> None:
        # what the C module does: encode to UTF-8, refuse NUL
        if "\x00" in message:
            raise ValueError("embedded null character")
        message.encode("utf-8")
        sent.append(message)

    monkeypatch.setattr(syslog, "syslog", strict_syslog)
    monkeypatch.setattr(syslog, "openlog", lambda *a, **k: None)
    logsetup.setup_logging("test-agent", use_syslog=True, prefix="Agent(in\udcffst)")
    try:
        logging.getLogger("t").warning("value %r and %s", "a\udcffb", "c\x00d\x1b[2Je\u202ef")
    finally:
        logsetup.setup_logging("test-agent")  # back to a handler without syslog
    assert len(sent) == 1
    assert "Agent(in\\xffst)" in sent[0]
    assert "'a\\udcffb'" in sent[0] and "c\\x00d\\x1b[2Je\\u202ef" in sent[0]
    assert "\x1b" not in capsys.readouterr().err


def test_an_instance_name_with_dollar_and_percent_is_logged_as_written(capsys):
    # oslo.config substitutes "$name" in option values and logging "%(name)s":
    # an instance called "x${HOME}%(foo)s" must reach the log unchanged
    logsetup.setup_logging("test-agent", prefix="NovaEvacuate(x${HOME}$$%(foo)s%)")
    try:
        logging.getLogger("t").warning("hello")
    finally:
        logsetup.setup_logging("test-agent")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert "NovaEvacuate(x${HOME}$$%(foo)s%) hello" in err


def test_the_exit_reason_is_one_printable_line(capsys):
    ocf.exit_reason("first\nsecond\x1b]52;c;evil\x07 \udcff")
    err = capsys.readouterr().err
    assert err == "ocf-exit-reason:first\\x0asecond\\x1b]52;c;evil\\x07 \\xff\n"


# --- defect 4: meta-data reads no parameter; integers are ASCII and bounded ----------------

@pytest.mark.parametrize("agent", [LIVENESS, EVACUATE], ids=lambda a: a.name)
def test_meta_data_ignores_every_parameter_and_variable(agent, capsys):
    junk = {f"OCF_RESKEY_{p.name}": "٣\udcff" for p in agent.parameters}
    env = {**junk, "HA_debug": "³", "HA_LOGFACILITY": "\udcff",
           "OCF_RESKEY_CRM_meta_interval": "٣", "OCF_RESKEY_CRM_meta_timeout": "³",
           "OCF_RESOURCE_INSTANCE": "\udcff" * 300}
    assert ocf.run(agent, ["meta-data"], env) == OCFExit.SUCCESS
    out = capsys.readouterr().out
    assert ET.fromstring(out.split("\n", 2)[2]).get("name") == agent.name


@pytest.mark.parametrize("value", ["٣", "³", "1_0", "0x10", "nan", "inf", "1e3", "2.5", "",
                                   " ", "+", "10" * 10, "0", "3601", "-5"])
def test_integer_parameters_take_ascii_digits_within_bounds(tmp_path, capsys, value):
    assert run(LIVENESS, "validate-all", tmp_path, check_timeout=value or "x") == \
        OCFExit.ERR_CONFIGURED
    assert_one_refusal_line(capsys.readouterr().err)
    assert run(EVACUATE, "validate-all", tmp_path, nova_interval=value or "x",
               config_file="") == OCFExit.ERR_CONFIGURED
    assert_one_refusal_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["1", " 30 ", "+7", "3600"])
def test_good_integers_still_parse(value):
    params, errors = ocf.read_parameters(LIVENESS, {"OCF_RESKEY_check_timeout": value})
    assert (params["check_timeout"], errors) == (int(value), [])


def test_pacemaker_meta_numbers_take_ascii_digits_only():
    assert ocf._meta_int({"OCF_RESKEY_CRM_meta_timeout": "٣٠٠٠٠"}, "timeout", 20000) == 20000
    assert ocf._meta_int({"OCF_RESKEY_CRM_meta_timeout": "9" * 5000}, "timeout", 7) == 7
    assert ocf._meta_int({"OCF_RESKEY_CRM_meta_timeout": "30000"}, "timeout", 7) == 30000


# --- defect 5: paths with NUL or control characters ----------------------------------------

@pytest.mark.parametrize("name", ["log_file", "config_file"])
@pytest.mark.parametrize("path", ["/var/log/a\x00b", "/var/log/a\nb", "/var/log/\x1b[2J",
                                  "/var/log/\udcff"])
def test_a_path_with_a_control_character_is_one_refusal(tmp_path, capsys, name, path):
    assert run(EVACUATE, "validate-all", tmp_path, **{name: path}) == OCFExit.ERR_CONFIGURED
    err = capsys.readouterr().err
    assert_one_refusal_line(err)
    assert "holds a control character or invalid UTF-8" in err


def test_a_relative_log_file_is_refused(tmp_path):
    assert run(EVACUATE, "validate-all", tmp_path, log_file="nova.log") == \
        OCFExit.ERR_CONFIGURED


# --- defect 6: empty means what meta-data says ---------------------------------------------

def test_empty_config_file_means_none_and_empty_log_file_means_syslog_only():
    params, errors = ocf.read_parameters(
        EVACUATE, {"OCF_RESKEY_config_file": "", "OCF_RESKEY_log_file": ""})
    assert (params["config_file"], params["log_file"], errors) == ("", "", [])
    longdesc = {p.name: p.longdesc for p in EVACUATE.parameters}
    assert "Empty: none" in longdesc["config_file"]
    assert "empty: syslog only" in longdesc["log_file"]


def test_unset_config_file_and_log_file_get_their_defaults():
    params, _ = ocf.read_parameters(EVACUATE, {})
    assert params["config_file"] == "/etc/openstack-ha/openstack-ha.conf"
    assert params["log_file"] == "/var/log/openstack-ha/nova-evacuate.log"


def test_an_empty_config_file_validates_with_no_file(tmp_path):
    assert run(EVACUATE, "validate-all", tmp_path, config_file="") == OCFExit.SUCCESS


def test_with_an_empty_log_file_the_worker_logs_to_syslog(tmp_path, monkeypatch):
    spawned = {}

    class Worker:
        pid = 4242

    def popen(argv, **kwargs):
        spawned.update(argv=argv, env=kwargs["env"], stdout=kwargs["stdout"])
        return Worker()

    monkeypatch.setattr(nova_evacuate_agent.subprocess, "Popen", popen)
    ctx = ocf.Context("start", {"config_file": "", "log_file": "", "cloud": "-x",
                                "nova_interval": 10}, (), 0, 20, time.monotonic(),
                      {"HA_LOGFACILITY": "local3", "OCF_RESKEY_log_file": ""})
    out = nova_evacuate_agent._open_log("")
    try:
        nova_evacuate_agent._spawn(ctx, out, str(tmp_path / "w.pid"), str(tmp_path / "w.status"))
    finally:
        os.close(out)
    assert spawned["env"][logsetup.SYSLOG_FACILITY_ENV] == "daemon"
    assert "--cloud=-x" in spawned["argv"]  # a value is never read as an option
    assert not any(a.startswith("--config-file") for a in spawned["argv"])
    assert "--no-config-file" in spawned["argv"]  # not the default file either
    assert (tmp_path / "w.pid").read_text() == "4242\n"


# --- defect 7: files written as root follow no link ----------------------------------------

def test_a_planted_symlink_as_log_file_is_refused_and_its_target_untouched(
        tmp_path, monkeypatch, capsys, planted_link):
    target = planted_link("log/nova-evacuate.log", "secret\n")
    log = tmp_path / "log" / "nova-evacuate.log"
    monkeypatch.setattr(nova_evacuate_agent, "_check_config", lambda ctx: None)
    monkeypatch.setattr(nova_evacuate_agent.subprocess, "Popen",
                        lambda *a, **k: pytest.fail("a worker was started"))
    assert run(EVACUATE, "start", tmp_path, log_file=str(log)) == OCFExit.ERR_PERM
    assert_one_refusal_line(capsys.readouterr().err)
    assert target.read_text() == "secret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("NovaEvacuate-*"))  # refused before any side effect


def test_a_new_log_file_is_created_0640_and_an_existing_one_appended(tmp_path):
    path = tmp_path / "new.log"
    fd = logsetup.open_for_append(str(path))
    os.write(fd, b"one\n")
    os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o666)
    fd = logsetup.open_for_append(str(path))
    os.write(fd, b"two\n")
    os.close(fd)
    assert path.read_text() == "one\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # narrowed


@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "hardlink", "fifo", "dir"])
def test_open_for_append_refuses_anything_but_a_plain_file(tmp_path, kind):
    target = tmp_path / "target"
    target.write_text("keep\n")
    path = tmp_path / "log"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "hardlink":
        os.link(target, path)
    elif kind == "fifo":
        os.mkfifo(path)  # no reader: an open for writing would block
    else:
        path.mkdir()
    with pytest.raises(OSError):
        logsetup.open_for_append(str(path))
    assert target.read_text() == "keep\n"
    assert not (tmp_path / "nowhere").exists()


def test_write_file_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep\n")
    state = tmp_path / "x.state"
    (tmp_path / "x.state.tmp").symlink_to(target)
    state.symlink_to(target)
    ocf.write_file(str(state), "ok\n")
    assert target.read_text() == "keep\n"
    assert not state.is_symlink() and state.read_text() == "ok\n"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


# --- defect 9: properties ------------------------------------------------------------------

ANY_CHAR = st.characters(exclude_categories=())  # surrogates included, as from os.environ
ARGUMENT = st.text(alphabet=st.one_of(
    st.sampled_from("abz09-_.:/@[]=;\\ ()+*?{}^$|'\"\t\n"), ANY_CHAR), max_size=30)
ENTRY = st.builds(
    lambda severity, kind, argument: f"{severity}{kind}:{argument}",
    st.sampled_from(["", "critical ", "degraded ", "Degraded "]),
    st.sampled_from([*KINDS, "proc", ""]), ARGUMENT)
SPEC = st.one_of(st.text(alphabet=ANY_CHAR, max_size=60),
                 st.lists(ENTRY, max_size=4).map("; ".join))


@settings(max_examples=200, deadline=None)
@given(SPEC)
@example("cmdline:a{4294967296}")
@example("degraded tcp:a..b:9")
@example("unit:-Hhost")
@example("tcp:[::1]:65535; net:s=fe80::1%eth0; cmd:/bin/true -x; socket:/s; process:p")
def test_any_spec_parses_to_typed_checks_or_is_the_one_refusal(text):
    try:
        parsed = parse_checks(text)
    except CheckSpecError as exc:
        assert "\n" not in str(exc)
        return
    assert parsed and all(isinstance(c, Check) for c in parsed)
    for check in parsed:
        assert check.kind in KINDS and isinstance(check.critical, bool)
        assert check.argument and not checks._FORBIDDEN.search(check.argument)
        assert check.label  # never raises for a parsed check
        if check.kind == "cmdline":
            checks.compile_cmdline(check.argument)
        elif check.kind == "tcp":
            host, port = checks.split_host_port(check.argument)
            assert host.isascii() and 0 < port < 65536
            host.encode("idna")  # what getaddrinfo will do with it
        elif check.kind == "unit":
            assert not check.argument.startswith("-")


_ASCII_INT = re.compile(r"[+-]?[0-9]+")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(alphabet=ANY_CHAR, max_size=20),
                 st.integers(min_value=-(2**40), max_value=2**40).map(str),
                 st.text(alphabet="0123456789+- \t٣³_", max_size=14)))
def test_integer_parsing_takes_exactly_bounded_ascii_integers(text):
    core = text.strip(" \t\r\n")
    expected = int(core) if _ASCII_INT.fullmatch(core) and len(core) < 14 else None
    if expected is not None and not ocf.INT_MIN <= expected <= ocf.INT_MAX:
        expected = None
    try:
        value = ocf.parse_integer(text)
    except ValueError as exc:
        assert expected is None, exc
    else:
        assert value == expected


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(alphabet=ANY_CHAR, max_size=10),
                 st.sampled_from(["yes", " No", "TRUE", "off", "1", "0", "y", "N "])))
def test_boolean_parsing_is_a_bool_or_a_value_error(text):
    try:
        value = ocf.parse_boolean(text)
    except ValueError:
        assert text.strip(" \t\r\n").lower() not in {"1", "yes", "true", "on", "y", "0", "no",
                                                       "false", "off", "n"}
    else:
        assert value is (text.strip(" \t\r\n").lower() in {"1", "yes", "true", "on", "y"})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ANY_CHAR, max_size=40))
def test_a_path_parameter_is_printable_and_absolute_or_refused(text):
    try:
        path = ocf.parse_path(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert path == text and path.startswith("/") and path.isprintable()
        os.fsencode(path)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ANY_CHAR, max_size=400))
@example(LONG_INSTANCE)
def test_any_instance_gives_a_usable_file_name(instance):
    path = ocf.instance_file("/run/ra", "ComputeLiveness", instance, ".state")
    directory, name = os.path.split(path)
    assert directory == "/run/ra"
    assert len(os.fsencode(name + ".tmp")) <= 255  # write_file's temporary name too
    assert ocf.instance_file("/run/ra", "ComputeLiveness", instance, ".state") == path
    assert ocf.instance_file("/run/ra", "ComputeLiveness", instance + "x", ".state") != path


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ANY_CHAR, max_size=60))
def test_printable_text_always_encodes_and_holds_no_control(text):
    shown = logsetup.printable(text, keep="")
    shown.encode("utf-8")
    assert shown.isprintable() or not any(
        ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in shown)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=SPEC, timeout=st.text(alphabet=ANY_CHAR, max_size=6),
       attribute=st.text(alphabet=ANY_CHAR, max_size=8))
def test_liveness_probe_stop_and_validate_never_fail_on_any_parameter(
        tmp_path, capsys, spec, timeout, attribute):
    params = {"checks": spec, "check_timeout": timeout, "attribute": attribute}
    assert run(LIVENESS, "monitor", tmp_path, **params) == OCFExit.NOT_RUNNING
    assert run(LIVENESS, "stop", tmp_path, **params) == OCFExit.SUCCESS
    assert run(LIVENESS, "validate-all", tmp_path, **params) in (
        OCFExit.SUCCESS, OCFExit.ERR_CONFIGURED)
    assert "Traceback" not in capsys.readouterr().err


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({p.name: st.text(alphabet=ANY_CHAR, max_size=12)
                                     for p in EVACUATE.parameters}))
def test_nova_evacuate_parameters_parse_or_are_reported_never_raise(values):
    params, errors = ocf.read_parameters(
        EVACUATE, {f"OCF_RESKEY_{k}": v for k, v in values.items()})
    assert set(params) == {p.name for p in EVACUATE.parameters}
    assert all("\n" not in e for e in errors)
    if isinstance(params["nova_interval"], int):
        assert 1 <= params["nova_interval"] <= 3600


def test_this_module_runs_without_the_cluster_tools():
    # the autouse fixture is what keeps these tests off a real cluster
    with pytest.raises(AssertionError, match="reached Pacemaker"):
        compute_liveness.pacemaker.set_node_attribute("a", "b", "c", timeout=1)
    assert sys.modules["agents.compute_liveness"].pacemaker is compute_liveness.pacemaker


def test_the_worker_reads_no_file_with_no_config_file(monkeypatch):
    """An empty config_file means no file, even where the default one exists."""
    from nova_evacuate import conf as confmod
    from nova_evacuate import worker

    read: list[object] = []

    def load(files):
        read.append(files)
        raise ValueError("stop here")

    monkeypatch.setattr(confmod, "load", load)
    assert worker.main(["--no-config-file", "--no-pacemaker"]) == 2
    assert read == [[]]


# --- [storage] checked as a whole: one refusal naming the option ---------------------------

def bad_storage_config(tmp_path: Path, case: str) -> Path:
    """A configuration file whose ``[storage]`` the engine refuses: a malformed storage_map
    (refused with the disk check off as well), or a keyring that is not there (rbd_pool set)."""
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\n", encoding="utf-8")
    section = {
        "storage_map": "[storage]\nstorage_map = compute-1=nowhere\n",
        "ceph_keyring_file": (f"[storage]\nrbd_pool = vms\nceph_conf = {ceph_conf}\n"
                              f"ceph_keyring_file = {tmp_path / 'missing.keyring'}\n"),
    }[case]
    path = tmp_path / "openstack-ha.conf"
    path.write_text(section, encoding="utf-8")
    return path


@pytest.mark.parametrize("action", ["validate-all", "start"])
@pytest.mark.parametrize("case", ["storage_map", "ceph_keyring_file"])
def test_a_bad_storage_section_is_err_configured_in_one_line(tmp_path, capsys, action, case):
    config = bad_storage_config(tmp_path, case)
    assert run(EVACUATE, action, tmp_path, config_file=str(config)) == OCFExit.ERR_CONFIGURED
    err = capsys.readouterr().err
    assert_one_refusal_line(err)
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    (reason,) = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
    assert f"[storage] {case}: " in reason and f"[storage] {case}: " in errors[0]
