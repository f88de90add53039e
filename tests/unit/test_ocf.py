"""The OCF layer: dispatch, exit codes, parameters, meta-data."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agents import ocf
from agents.ocf import Action, Agent, OCFError, OCFExit, Parameter

DTD = Path("/usr/share/resource-agents/ra-api-1.dtd")


def _handler_seen(ctx):
    _handler_seen.last = ctx
    return None


def _failing(ctx):
    raise OCFError(OCFExit.ERR_INSTALLED, "libvirt is missing")


def _crashing(ctx):
    raise KeyError("boom")


AGENT = Agent(
    name="Sample",
    version="0.1",
    shortdesc="a sample & <agent>",
    longdesc="for tests",
    parameters=(
        Parameter("name", "a name", "required name", required=True),
        Parameter("count", "a count", "an integer", content_type="integer", default="3"),
        Parameter("flag", "a flag", "a boolean", content_type="boolean", default="false"),
    ),
    actions=(
        Action("start", timeout=20, handler=_handler_seen),
        Action("stop", timeout=20, handler=_handler_seen),
        Action("monitor", timeout=20, interval=10, handler=_handler_seen),
        Action("validate-all", timeout=5, handler=_handler_seen),
        Action("reload", timeout=5, handler=_failing),
        Action("notify", timeout=5, handler=_crashing),
    ),
)

GOOD = {"OCF_RESKEY_name": "x"}


def run(action, env, capsys=None):
    code = ocf.run(AGENT, [action] if action is not None else [], {"HA_LOGFACILITY": "none", **env})
    return code


def test_valid_parameters_reach_the_handler_typed_with_defaults():
    assert run("start", {**GOOD, "OCF_RESKEY_flag": "yes"}) == OCFExit.SUCCESS
    assert _handler_seen.last.params == {"name": "x", "count": 3, "flag": True}


def test_missing_required_parameter_is_err_configured_with_exit_reason(capsys):
    assert run("start", {}) == OCFExit.ERR_CONFIGURED
    err = capsys.readouterr().err
    assert "ocf-exit-reason:required parameter 'name' is not set" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("count", "three", "parameter 'count': expected an integer, got 'three'"),
        ("flag", "maybe", "parameter 'flag': expected a boolean"),
    ],
)
def test_wrong_type_is_err_configured_naming_the_parameter(capsys, name, value, message):
    assert run("validate-all", {**GOOD, f"OCF_RESKEY_{name}": value}) == OCFExit.ERR_CONFIGURED
    assert message in capsys.readouterr().err


def test_probe_with_bad_configuration_reports_not_running_not_fatal():
    env = {"OCF_RESKEY_CRM_meta_interval": "0"}
    assert run("monitor", env) == OCFExit.NOT_RUNNING


def test_recurring_monitor_with_bad_configuration_is_err_configured():
    env = {"OCF_RESKEY_CRM_meta_interval": "10000"}
    assert run("monitor", env) == OCFExit.ERR_CONFIGURED


def test_stop_is_never_refused_for_configuration():
    assert run("stop", {"OCF_RESKEY_count": "bad"}) == OCFExit.SUCCESS
    assert _handler_seen.last.config_errors


def test_unknown_action_is_err_unimplemented(capsys):
    assert run("promote", GOOD) == OCFExit.ERR_UNIMPLEMENTED
    assert "unknown action 'promote'" in capsys.readouterr().err


def test_no_action_is_err_args_with_usage(capsys):
    assert run(None, GOOD) == OCFExit.ERR_ARGS
    assert "usage: Sample {start|stop|monitor" in capsys.readouterr().err


def test_handler_error_gives_its_code_and_one_exit_reason(capsys):
    assert run("reload", GOOD) == OCFExit.ERR_INSTALLED
    assert "ocf-exit-reason:libvirt is missing" in capsys.readouterr().err


def test_unexpected_exception_is_err_generic_without_traceback(capsys):
    assert run("notify", GOOD) == OCFExit.ERR_GENERIC
    err = capsys.readouterr().err
    assert "ocf-exit-reason:notify: unexpected error: KeyError: 'boom'" in err
    assert "Traceback" not in err


def test_timeout_comes_from_pacemaker_meta_in_milliseconds():
    run("start", {**GOOD, "OCF_RESKEY_CRM_meta_timeout": "45000"})
    assert _handler_seen.last.timeout_s == 45.0
    assert 44 < _handler_seen.last.remaining() <= 45


def test_meta_data_needs_no_parameters_and_is_escaped(capsys):
    assert run("meta-data", {}) == OCFExit.SUCCESS
    out = capsys.readouterr().out
    root = ET.fromstring(out.split("\n", 2)[2])
    assert root.get("name") == "Sample"
    assert root.find("shortdesc").text == "a sample & <agent>"
    params = {p.get("name"): p for p in root.iter("parameter")}
    assert params["name"].get("required") == "1"
    assert params["count"].find("content").attrib == {"type": "integer", "default": "3"}
    actions = {a.get("name"): a.attrib for a in root.iter("action")}
    assert actions["monitor"] == {"name": "monitor", "timeout": "20s", "interval": "10s"}
    assert {"meta-data", "usage", "start", "stop", "validate-all"} <= set(actions)


@pytest.mark.skipif(not DTD.exists(), reason="resource-agents' ra-api-1.dtd is not installed")
def test_meta_data_is_valid_against_ra_api_dtd(tmp_path, capsys):
    run("meta-data", {})
    doc = tmp_path / "meta.xml"
    doc.write_text(capsys.readouterr().out)
    done = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(DTD), str(doc)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_an_agent_runs_as_a_process_and_answers_meta_data():
    done = subprocess.run(
        [sys.executable, "-m", "agents.compute_liveness", "meta-data"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0
    assert '<resource-agent name="ComputeLiveness"' in done.stdout


def _needs_a_file(text):
    if not Path(text).is_file():
        raise ValueError(f"{text} does not exist")
    return text


def _parser_crashing(text):
    raise TypeError("parser bug")


# Issue 10, defect 6: a default that does not parse on this node (a file the controllers have
# and a compute node does not) made read_parameters raise, and every action a traceback.
FILE_AGENT = Agent(
    name="FileSample", version="0.1", shortdesc="s", longdesc="l",
    parameters=(Parameter("conf", "a file", "a file", default="/nonexistent/x.conf",
                          parse=_needs_a_file),),
    actions=AGENT.actions,
)


@pytest.mark.parametrize(
    ("action", "interval", "expected"),
    [("monitor", "0", OCFExit.NOT_RUNNING), ("stop", "0", OCFExit.SUCCESS),
     ("start", "0", OCFExit.ERR_CONFIGURED), ("validate-all", "0", OCFExit.ERR_CONFIGURED),
     ("monitor", "10000", OCFExit.ERR_CONFIGURED)],
)
def test_a_default_that_does_not_parse_is_a_configuration_error_not_a_crash(
        capsys, action, interval, expected):
    env = {"HA_LOGFACILITY": "none", "OCF_RESKEY_CRM_meta_interval": interval}
    assert ocf.run(FILE_AGENT, [action], env) == expected
    assert "Traceback" not in capsys.readouterr().err
    if action == "stop":
        assert _handler_seen.last.params == {"conf": None}


def test_run_never_raises_whatever_fails_outside_the_handler(capsys):
    agent = Agent(name="Broken", version="0.1", shortdesc="s", longdesc="l",
                  parameters=(Parameter("p", "p", "p", default="x", parse=_parser_crashing),),
                  actions=AGENT.actions)
    assert ocf.run(agent, ["start"], {"HA_LOGFACILITY": "none"}) == OCFExit.ERR_GENERIC
    err = capsys.readouterr().err
    assert "ocf-exit-reason:start: unexpected error: TypeError: parser bug" in err
    assert "Traceback" not in err
