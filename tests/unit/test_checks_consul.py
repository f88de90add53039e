"""The ``consul:`` check kind: its grammar, its verdict, the probe against a real HTTP server
on a socket speaking Consul's ``/v1/agent/checks``, and ComputeLiveness's consul_* parameters.

Nothing here reaches a cluster: the agent's Pacemaker calls are replaced."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_consul import Answer, FakeConsul, _serve

from agents import checks, compute_liveness, ocf
from agents.checks import (
    MAX_CONSUL_NAME,
    Check,
    CheckSpecError,
    ConsulAgent,
    Prober,
    consul_verdict,
    parse_checks,
    read_token_file,
)
from agents.ocf import OCFExit
from openstack_ha.consul import AgentCheck, CheckStatus
from openstack_ha.secret_files import FileUnusable as ConsulFileUnusable

REPO = Path(__file__).resolve().parents[2]
LIVENESS = compute_liveness.AGENT
TOKEN = "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
ANY_CHAR = st.characters(exclude_categories=())  # surrogates included, as from os.environ


# --- grammar -------------------------------------------------------------------------------

def test_service_and_check_entries_parse_with_their_labels():
    parsed = parse_checks("consul:service=nova-compute; degraded consul:check=service:libvirtd;"
                          " consul:check=serfHealth")
    assert [(c.kind, c.argument, c.critical) for c in parsed] == [
        ("consul", "service=nova-compute", True), ("consul", "check=service:libvirtd", False),
        ("consul", "check=serfHealth", True)]
    assert [c.label for c in parsed] == [
        "consul:service=nova-compute", "consul:check=service:libvirtd", "consul:check=serfHealth"]


def test_the_same_name_as_service_and_as_check_are_two_checks():
    assert len(parse_checks("consul:service=x; consul:check=x")) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("consul:", "consul needs an argument"),
        ("consul:nova-compute", "expected consul:service=NAME or consul:check=ID"),
        ("consul:svc=nova", "expected consul:service=NAME or consul:check=ID"),
        ("consul:Service=nova", "expected consul:service=NAME or consul:check=ID"),
        ("consul:service=", "expected consul:service=NAME or consul:check=ID"),
        ("consul:service =nova", "expected consul:service=NAME or consul:check=ID"),
        ("consul:service=nova compute", "printable characters without white space"),
        ("consul:service=nova\tcompute", "printable characters without white space"),
        ("consul:check=a\u00a0b", "printable characters without white space"),
        ("consul:check=a\u200bb", "printable characters without white space"),
        ("consul:service=" + "x" * (MAX_CONSUL_NAME + 1), "1 to 256 printable characters"),
        ("consul:service=a; consul:service=a", "checks listed twice: consul:service=a"),
        ("consul:service=a\x1b[2J", "control character"),
    ],
)
def test_bad_consul_entries_are_one_refusal_naming_them(text, message):
    with pytest.raises(CheckSpecError) as info:
        parse_checks(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_name_of_the_longest_length_is_accepted():
    (check,) = parse_checks("consul:service=" + "n" * MAX_CONSUL_NAME)
    assert check.argument == "service=" + "n" * MAX_CONSUL_NAME


ARGUMENT = st.one_of(
    st.text(alphabet=ANY_CHAR, max_size=40),
    st.builds(lambda selector, name: f"{selector}={name}",
              st.sampled_from(["service", "check", "Service", "", "svc", "service "]),
              st.text(alphabet=st.one_of(st.sampled_from("abz09-_.:=/ \t\u00a0"), ANY_CHAR),
                      max_size=30)),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["", "critical ", "degraded "]), ARGUMENT)
@example("", "service=nova-compute")
@example("", "check=service:nova-compute")
@example("", "service=a=b")
def test_any_consul_entry_is_a_check_with_a_usable_name_or_the_one_refusal(severity, argument):
    try:
        (check,) = parse_checks(f"{severity}consul:{argument}")
    except CheckSpecError as exc:
        assert "\n" not in str(exc)
        return
    except ValueError as exc:  # ";" or a new line in the argument made more entries
        assert "\n" not in str(exc)
        return
    selector, _, name = check.argument.partition("=")
    assert selector in checks.CONSUL_SELECTORS
    assert 1 <= len(name) <= MAX_CONSUL_NAME
    assert name.isprintable() and not any(c.isspace() for c in name)
    assert check.label == f"consul:{check.argument}"
    assert check.critical is (severity != "degraded ")


NAME = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs",
                                                          "Zl", "Zp")),
               min_size=1, max_size=MAX_CONSUL_NAME).filter(
    lambda name: ";" not in name and not any(c.isspace() for c in name))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(checks.CONSUL_SELECTORS), NAME)
def test_every_printable_name_without_white_space_is_accepted_as_written(selector, name):
    (check,) = parse_checks(f"consul:{selector}={name}")
    assert (check.kind, check.argument) == ("consul", f"{selector}={name}")


# --- verdict -------------------------------------------------------------------------------

def agent_check(check_id: str, service: str, status: str) -> AgentCheck:
    return AgentCheck(check_id, f"{check_id} check", service, CheckStatus(status))


def test_passing_checks_of_the_service_are_alive():
    ok, detail = consul_verdict("service=nova-compute", [
        agent_check("service:nova-compute", "nova-compute", "passing"),
        agent_check("nova-compute-port", "nova-compute", "passing"),
        agent_check("service:libvirtd", "libvirtd", "critical")])
    assert (ok, detail) == (True, "service nova-compute: 2 consul check(s) passing")


def test_a_warning_is_alive_and_said():
    ok, detail = consul_verdict("service=nova-compute", [
        agent_check("service:nova-compute", "nova-compute", "warning"),
        agent_check("nova-compute-port", "nova-compute", "passing")])
    assert ok
    assert detail == "service nova-compute: alive, with a warning in consul:" \
                     " service:nova-compute warning"


def test_one_critical_check_is_not_alive_and_names_the_failing_checks():
    ok, detail = consul_verdict("service=nova-compute", [
        agent_check("a", "nova-compute", "passing"),
        agent_check("b", "nova-compute", "critical"),
        agent_check("c", "nova-compute", "warning")])
    assert not ok
    assert detail == "service nova-compute: not passing in consul: b critical, c warning"


def test_no_check_for_the_service_is_not_alive():
    ok, detail = consul_verdict("service=nova-compute",
                                [agent_check("service:libvirtd", "libvirtd", "passing")])
    assert not ok
    assert "no such check registered" in detail and "nova-compute" in detail


def test_a_check_is_selected_by_its_id_alone():
    agent_checks = [agent_check("disk", "", "critical"), agent_check("mem", "", "passing")]
    assert consul_verdict("check=mem", agent_checks) == (True, "check mem: 1 consul check(s) passing")
    assert consul_verdict("check=disk", agent_checks)[0] is False
    # ids and names are compared exactly, as Consul registers them
    assert consul_verdict("check=Mem", agent_checks)[0] is False
    assert consul_verdict("service=mem", agent_checks)[0] is False


def test_many_failing_checks_are_named_up_to_five_and_ids_made_printable():
    agent_checks = [agent_check(f"c{i}\x1b", "s", "critical") for i in range(8)]
    ok, detail = consul_verdict("service=s", agent_checks)
    assert not ok
    assert detail.endswith("c4? critical and 3 more")
    assert detail.isprintable()


# --- the probe against a real HTTP server --------------------------------------------------

def consul_check(check_id: str, service: str, status: str) -> dict[str, Any]:
    """One entry of ``/v1/agent/checks`` as HashiCorp documents it."""
    return {"Node": "compute-1", "CheckID": check_id, "Name": f"Service '{service}' check",
            "Status": status, "Notes": "", "Output": "HTTP GET http://127.0.0.1:8774/: 200 OK",
            "ServiceID": service, "ServiceName": service, "ServiceTags": [], "Type": "http"}


def agent_checks_of(*entries: dict[str, Any]) -> bytes:
    return json.dumps({entry["CheckID"]: entry for entry in entries}).encode()


class FakeAgent(FakeConsul):
    """A local Consul agent's ``/v1/agent/checks`` (test_consul's Consul): ``status``,
    ``body`` and ``delay`` as the test last set them; 403 with Consul's text (echoing the
    token it got) when ``expected_token`` is set and not sent."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.body = agent_checks_of()
        self.delay = 0.0

    def answer(self, path: str) -> Answer:
        if path != "/v1/agent/checks":
            return Answer(404, b"Not Found")
        return Answer(self.status, self.body, delay=self.delay)


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    yield from _serve(FakeAgent())


def probe(text: str, consul: ConsulAgent, timeout: float = 2.0) -> list[tuple[bool, str]]:
    results = Prober(timeout=timeout, consul=consul).run(parse_checks(text), float("inf"))
    return [(r.ok, r.detail) for r in results]


@pytest.mark.parametrize(
    ("status", "ok", "detail"),
    [("passing", True, "service nova-compute: 1 consul check(s) passing"),
     ("warning", True, "service nova-compute: alive, with a warning in consul:"
                       " service:nova-compute warning"),
     ("critical", False, "service nova-compute: not passing in consul:"
                         " service:nova-compute critical")],
)
def test_the_probe_reads_the_agents_checks(agent, status, ok, detail):
    agent.body = agent_checks_of(consul_check("service:nova-compute", "nova-compute", status),
                                 consul_check("service:libvirtd", "libvirtd", "critical"))
    assert probe("consul:service=nova-compute", ConsulAgent(agent.url)) == [(ok, detail)]
    assert [path for path, _ in agent.requests] == ["/v1/agent/checks"]


def test_a_service_with_no_check_registered_fails(agent):
    agent.body = agent_checks_of(consul_check("service:libvirtd", "libvirtd", "passing"))
    [(ok, detail)] = probe("consul:service=nova-compute", ConsulAgent(agent.url))
    assert not ok and "no such check registered" in detail


def test_an_empty_agent_fails_every_consul_check(agent):
    [(ok, detail)] = probe("consul:check=serfHealth", ConsulAgent(agent.url))
    assert not ok and "check serfHealth: no such check registered" in detail


def test_several_consul_entries_make_one_request(agent):
    agent.body = agent_checks_of(consul_check("service:nova-compute", "nova-compute", "passing"),
                                 consul_check("service:libvirtd", "libvirtd", "warning"))
    results = probe("consul:service=nova-compute; consul:service=libvirtd;"
                    " consul:check=service:libvirtd", ConsulAgent(agent.url))
    assert [ok for ok, _ in results] == [True, True, True]
    assert len(agent.requests) == 1


def test_the_token_is_read_from_its_file_and_sent_in_the_header(agent, tmp_path):
    token_file = tmp_path / "consul.token"
    token_file.write_text(f"  {TOKEN}\n")
    agent.expected_token = TOKEN
    agent.body = agent_checks_of(consul_check("service:nova-compute", "nova-compute", "passing"))
    [(ok, _)] = probe("consul:service=nova-compute", ConsulAgent(agent.url, str(token_file)))
    assert ok
    [(_, headers)] = agent.requests
    assert headers["X-Consul-Token"] == TOKEN


def test_403_fails_the_check_and_shows_no_token(agent, tmp_path):
    token_file = tmp_path / "consul.token"
    token_file.write_text("0000aaaa-wrong-token\n")
    agent.expected_token = TOKEN
    [(ok, detail)] = probe("consul:service=nova-compute", ConsulAgent(agent.url, str(token_file)))
    assert not ok
    assert "HTTP 403" in detail and "unknown to Consul" in detail
    assert "0000aaaa-wrong-token" not in detail and TOKEN not in detail
    [(ok, detail)] = probe("consul:service=nova-compute", ConsulAgent(agent.url))
    assert not ok and "HTTP 403" in detail


@pytest.mark.parametrize(("body", "expected"), [
    (b"{not json", "the answer is not JSON"),
    (b"[]", "not an object"),
    (b'{"x": {"CheckID": "x", "Name": "n", "ServiceName": "s", "Status": "dead"}}',
     "not passing, warning or critical"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_an_answer_that_is_not_consuls_fails_the_check_in_one_line(agent, body, expected):
    agent.body = body
    [(ok, detail)] = probe("consul:service=nova-compute", ConsulAgent(agent.url))
    assert not ok and expected in detail
    assert detail.startswith(f"consul {agent.url}/v1/agent/checks: ")
    assert "\n" not in detail and "Traceback" not in detail


def test_nobody_listening_fails_the_check():
    with socket.socket() as s:  # a port that was free a moment ago, now closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [(ok, detail)] = probe("consul:service=nova-compute", ConsulAgent(f"http://127.0.0.1:{port}"))
    assert not ok and "Connection refused" in detail and "\n" not in detail


def test_a_slow_agent_is_bounded_by_the_check_timeout(agent):
    agent.delay = 5
    began = time.monotonic()
    [(ok, detail)] = probe("consul:service=nova-compute", ConsulAgent(agent.url), timeout=0.5)
    assert time.monotonic() - began < 3
    assert not ok and "no answer within 0.5s" in detail


def test_an_agent_that_cannot_be_read_fails_only_a_degraded_check(agent):
    agent.status, agent.body = 500, b"rpc error"
    prober = Prober(timeout=1, consul=ConsulAgent(agent.url),
                    processes=lambda: [checks.Process(1, "init", ("/sbin/init",))])
    results = prober.run(parse_checks("degraded consul:service=nova-compute; process:init"),
                         float("inf"))
    assert [(r.check.label, r.ok) for r in results] == [
        ("consul:service=nova-compute", False), ("process:init", True)]
    assert checks.verdict(results).attribute == "degraded:consul:service=nova-compute"
    assert "HTTP 500" in results[0].detail


def test_a_token_file_that_vanished_fails_the_check_not_the_prober(agent, tmp_path):
    [(ok, detail)] = probe("consul:service=nova-compute",
                           ConsulAgent(agent.url, str(tmp_path / "gone.token")))
    assert not ok and "consul_token_file" in detail and "No such file" in detail
    assert agent.requests == []


# --- the token file ------------------------------------------------------------------------

def test_a_token_file_is_read_stripped(tmp_path):
    path = tmp_path / "t"
    path.write_text(f"{TOKEN}\r\n")
    assert read_token_file(str(path), "consul_token_file") == TOKEN


@pytest.mark.parametrize(("content", "error", "message"), [
    (b"", ValueError, "is empty"),
    (b" \n", ValueError, "is empty"),
    (b"x" * 5000, ValueError, "larger than 4096 bytes"),
])
def test_a_token_file_without_a_token_is_a_value_error(tmp_path, content, error, message):
    path = tmp_path / "t"
    path.write_bytes(content)
    with pytest.raises(error, match=message) as info:
        read_token_file(str(path), "consul_token_file")
    assert not isinstance(info.value, ConsulFileUnusable)


@pytest.mark.parametrize("content", [b"two words\n", "caf\u00e9-token".encode(), b"a\x00b"])
def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it(tmp_path, content):
    path = tmp_path / "t"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        ConsulAgent(token_file=str(path)).client(timeout=1)
    assert "not shown" in str(info.value)
    assert "words" not in str(info.value) and "caf" not in str(info.value)


def test_a_fifo_or_a_directory_is_not_a_token_file_and_nothing_waits(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    began = time.monotonic()
    for path in (fifo, tmp_path):
        with pytest.raises(ConsulFileUnusable, match="is not a regular file"):
            read_token_file(str(path), "consul_token_file")
    with pytest.raises(ConsulFileUnusable, match=r"consul_ca_file .* is not a regular file"):
        ConsulAgent("https://127.0.0.1:8501", ca_file=str(fifo)).client(timeout=1)
    assert time.monotonic() - began < 2


def test_a_missing_token_file_is_unusable_on_this_node(tmp_path):
    with pytest.raises(ConsulFileUnusable, match="No such file"):
        read_token_file(str(tmp_path / "none"), "consul_token_file")


# --- the agent's parameters ----------------------------------------------------------------

def run(action: str, rsc_tmp: Path, interval_ms: int = 0, **params: str) -> int:
    env = {
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": "liveness",
        "HA_LOGFACILITY": "none",
        "HA_RSCTMP": str(rsc_tmp),
        "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
        "OCF_RESKEY_CRM_meta_timeout": "20000",
        "OCF_RESKEY_CRM_meta_on_node": "node1",
        **{f"OCF_RESKEY_{k}": v for k, v in params.items()},
    }
    return ocf.run(LIVENESS, [action], env)


@pytest.fixture(autouse=True)
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """The node attribute writes the agent makes (none reaches a cluster)."""
    writes: list[tuple[str, str | None]] = []
    monkeypatch.setattr(compute_liveness.pacemaker, "set_node_attribute",
                        lambda name, value, node, timeout: writes.append((node, value)))
    monkeypatch.setattr(compute_liveness.pacemaker, "delete_node_attribute",
                        lambda name, node, timeout: writes.append((node, None)))

    def refuse(timeout: float) -> str:
        raise AssertionError("the node name comes from OCF_RESKEY_CRM_meta_on_node")

    monkeypatch.setattr(compute_liveness.pacemaker, "local_node_name", refuse)
    return writes


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """ocf.run routes logging to the stderr capsys captures; later tests in the session must
    not log into that closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def one_reason(err: str) -> str:
    assert "Traceback" not in err
    reasons = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
    assert len(reasons) == 1, err
    return reasons[0]


def test_the_consul_parameters_are_in_the_meta_data():
    root = ET.fromstring(LIVENESS.metadata_xml())
    parameters = {p.get("name"): p for p in root.iter("parameter")}
    assert parameters["consul_url"].find("content").get("default") == "http://127.0.0.1:8500"
    assert parameters["consul_token_file"].find("content").get("default") == ""
    assert parameters["consul_ca_file"].find("content").get("default") == ""
    assert "consul:service=NAME" in parameters["checks"].findtext("longdesc")


def test_the_defaults_parse_and_name_the_local_agent():
    params, errors = ocf.read_parameters(LIVENESS, {})
    assert errors == []
    assert compute_liveness._consul_agent(ocf.Context("monitor", params, (), 0, 20, 0, {})) == \
        ConsulAgent("http://127.0.0.1:8500", "", "")


@pytest.mark.parametrize(("url", "message"), [
    ("127.0.0.1:8500", "must start with http:// or https://"),
    ("ftp://127.0.0.1", "must start with http:// or https://"),
    ("http://127.0.0.1:8500/v1", "without a path"),
    ("http://127.0.0.1:99999", "bad port"),
    ("http://", "names no host"),
    ("http://127.0.0.1:8500 ", "white space"),
])
def test_a_bad_consul_url_is_err_configured_in_one_line(tmp_path, capsys, url, message):
    assert run("validate-all", tmp_path, consul_url=url) == OCFExit.ERR_CONFIGURED
    reason = one_reason(capsys.readouterr().err)
    assert "parameter 'consul_url'" in reason and message in reason


def test_a_url_with_user_info_is_refused_without_showing_it(tmp_path, capsys):
    assert run("validate-all", tmp_path, consul_url="http://admin:hunter2@127.0.0.1:8500") == \
        OCFExit.ERR_CONFIGURED
    err = capsys.readouterr().err
    assert "user info" in one_reason(err) and "hunter2" not in err


@pytest.mark.parametrize("url", ["http://127.0.0.1:8500/?token=hunter2",
                                 "http://127.0.0.1:8500#hunter2"])
def test_a_url_with_a_query_or_fragment_is_refused_without_showing_it(tmp_path, capsys, url):
    # Consul reads ?token=: the refusal must not carry it to the logs and pcs status
    assert run("validate-all", tmp_path, consul_url=url) == OCFExit.ERR_CONFIGURED
    err = capsys.readouterr().err
    assert "without a query or fragment" in one_reason(err) and "hunter2" not in err


@pytest.mark.parametrize("name", ["consul_token_file", "consul_ca_file"])
def test_a_relative_file_parameter_is_err_configured(tmp_path, capsys, name):
    assert run("validate-all", tmp_path, **{name: "consul.token"}) == OCFExit.ERR_CONFIGURED
    assert "expected an absolute path" in one_reason(capsys.readouterr().err)


@pytest.mark.parametrize("action", ["validate-all", "start"])
def test_a_token_file_holding_no_token_is_err_configured(tmp_path, capsys, published, action):
    token_file = tmp_path / "consul.token"
    token_file.write_text("\n")
    assert run(action, tmp_path, checks="consul:service=nova-compute",
               consul_token_file=str(token_file)) == OCFExit.ERR_CONFIGURED
    assert f"consul_token_file {token_file} is empty" in one_reason(capsys.readouterr().err)
    assert published == []  # refused before any check ran


def test_a_token_that_cannot_be_a_header_is_err_configured_without_showing_it(tmp_path, capsys):
    token_file = tmp_path / "consul.token"
    token_file.write_text("s3cret value\n")
    assert run("validate-all", tmp_path, consul_token_file=str(token_file)) == \
        OCFExit.ERR_CONFIGURED
    err = capsys.readouterr().err
    assert "not shown" in one_reason(err) and "s3cret" not in err


@pytest.mark.parametrize("action", ["validate-all", "start"])
def test_a_token_file_missing_on_this_node_is_err_installed(tmp_path, capsys, action):
    # as NovaEvacuate's configuration file: this node's instance only, not the whole clone
    assert run(action, tmp_path, consul_token_file=str(tmp_path / "none")) == \
        OCFExit.ERR_INSTALLED
    assert "No such file" in one_reason(capsys.readouterr().err)


def test_an_unusable_ca_file_for_https_is_err_configured(tmp_path, capsys):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not a certificate\n")
    assert run("validate-all", tmp_path, consul_url="https://127.0.0.1:8501",
               consul_ca_file=str(ca_file)) == OCFExit.ERR_CONFIGURED
    assert "consul ca_file" in one_reason(capsys.readouterr().err)


def test_consul_settings_validate_without_reaching_the_agent(tmp_path, capsys):
    token_file = tmp_path / "consul.token"
    token_file.write_text(TOKEN + "\n")
    assert run("validate-all", tmp_path, checks="consul:service=nova-compute",
               consul_url="http://192.0.2.1:8500", consul_token_file=str(token_file)) == \
        OCFExit.SUCCESS
    assert "Traceback" not in capsys.readouterr().err


def test_start_and_monitor_use_the_agent_and_publish_its_verdict(agent, tmp_path, capsys,
                                                                  published):
    token_file = tmp_path / "consul.token"
    token_file.write_text(TOKEN)
    agent.expected_token = TOKEN
    agent.body = agent_checks_of(consul_check("service:nova-compute", "nova-compute", "passing"))
    params = {"checks": "consul:service=nova-compute", "consul_url": agent.url,
              "consul_token_file": str(token_file), "check_timeout": "2"}
    assert run("start", tmp_path, **params) == OCFExit.SUCCESS
    agent.body = agent_checks_of(consul_check("service:nova-compute", "nova-compute", "critical"))
    assert run("monitor", tmp_path, 10000, **params) == OCFExit.ERR_GENERIC
    assert published == [("node1", "ok"), ("node1", "failed:consul:service=nova-compute")]
    err = capsys.readouterr().err
    assert "critical check consul:service=nova-compute failed: service nova-compute: not" \
           " passing in consul: service:nova-compute critical" in one_reason(err)
    assert TOKEN not in err


def test_a_monitor_whose_agent_is_down_fails_with_one_line(tmp_path, capsys, published):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "ComputeLiveness-liveness.state").write_text("ok\n")
    assert run("monitor", tmp_path, 10000, checks="consul:service=nova-compute",
               consul_url=f"http://127.0.0.1:{port}") == OCFExit.ERR_GENERIC
    assert "Connection refused" in one_reason(capsys.readouterr().err)


def test_the_agent_as_pacemaker_runs_it_refuses_a_bad_token_file_in_one_line(tmp_path):
    token_file = tmp_path / "consul.token"
    token_file.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OCF_ROOT": "/usr/lib/ocf",
           "HA_LOGFACILITY": "none", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_checks": "consul:service=nova-compute",
           "OCF_RESKEY_consul_token_file": str(token_file)}
    done = subprocess.run([sys.executable, "-m", "agents.compute_liveness", "validate-all"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == OCFExit.ERR_CONFIGURED
    assert "is empty" in one_reason(done.stderr)


def test_a_monitor_without_consul_checks_does_not_load_the_consul_client():
    code = ("import sys\n"
            "from agents import checks, compute_liveness, ocf\n"
            "params, errors = ocf.read_parameters(compute_liveness.AGENT,"
            " {'OCF_RESKEY_checks': 'cmd:true'})\n"
            "assert not errors, errors\n"
            "prober = checks.Prober(timeout=2, consul=checks.ConsulAgent(params['consul_url']))\n"
            "assert prober.run(params['checks'], float('inf'))[0].ok\n"
            "print('openstack_ha.consul' in sys.modules, 'ssl' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_parsed_consul_check_outside_the_grammar_fails_only_itself():
    # parse_checks refuses this; a Check built past it must still only fail itself
    result = Prober(timeout=1, consul=ConsulAgent("http://127.0.0.1:1")).probe(
        Check("consul", "nonsense", critical=False), 1)
    assert not result.ok and "\n" not in result.detail
