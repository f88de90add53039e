"""Parsing the ``checks`` parameter and turning results into a verdict (pure)."""

from __future__ import annotations

import pytest

from agents.checks import (
    DEFAULT_CHECKS,
    Check,
    CheckResult,
    Prober,
    Process,
    parse_checks,
    process_matches,
    verdict,
)


def test_entries_are_parsed_in_order_with_severity():
    checks = parse_checks(
        "process:nova-compute; degraded unit:libvirtd.service\n"
        "socket:/run/libvirt/libvirt-sock;tcp:[::1]:6640; critical net:storage=192.0.2.10;"
        " cmd:/usr/bin/test -e /etc/hosts"
    )
    assert [(c.kind, c.critical) for c in checks] == [
        ("process", True), ("unit", False), ("socket", True), ("tcp", True), ("net", True),
        ("cmd", True),
    ]
    assert [c.label for c in checks] == [
        "process:nova-compute", "unit:libvirtd.service", "socket:/run/libvirt/libvirt-sock",
        "tcp:[::1]:6640", "net:storage", "cmd:test",
    ]


def test_the_default_checks_parse():
    assert parse_checks(DEFAULT_CHECKS)[0].label == "process:nova-compute"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no checks given"),
        ("proc:nova", "KIND one of process"),
        ("nova-compute", "expected KIND:ARGUMENT"),
        ("process:", "process needs an argument"),
        ("socket:run/x", "expected an absolute path"),
        ("tcp:localhost", "expected HOST:PORT"),
        ("tcp:localhost:70000", "port must be 1-65535"),
        ("net:10.0.0.1", "expected net:NAME=ADDRESS"),
        ("net:storage=storage-host", "is not an IP address"),
        ("cmdline:nova(", "bad regular expression"),
        ("cmd:'unclosed", "No closing quotation"),
        ("process:a; process:a", "checks listed twice: process:a"),
    ],
)
def test_bad_checks_are_refused_naming_the_entry(text, message):
    with pytest.raises(ValueError, match=None) as info:
        parse_checks(text)
    assert message in str(info.value)


def _result(label: str, ok: bool, critical: bool = True) -> CheckResult:
    kind, _, arg = label.partition(":")
    return CheckResult(Check(kind, arg, critical), ok, "detail")


def test_all_passing_is_ok():
    assert verdict([_result("process:a", True)]).attribute == "ok"


def test_a_failed_degraded_check_is_alive_but_named():
    v = verdict([_result("process:a", True), _result("process:b", False, critical=False)])
    assert (v.state, v.attribute, v.alive) == ("degraded", "degraded:process:b", True)


def test_a_failed_critical_check_wins_over_an_earlier_degraded_one():
    v = verdict([_result("process:b", False, critical=False), _result("socket:/s", False)])
    assert (v.state, v.attribute, v.alive) == ("failed", "failed:socket:/s", False)


@pytest.mark.parametrize(
    ("name", "process", "matches"),
    [
        ("nova-compute", Process(1, "nova-compute", ("/usr/bin/python3", "/usr/bin/nova-compute")), True),
        ("nova-compute", Process(1, "python3", ("/usr/bin/python3", "/usr/bin/nova-compute", "-v")), True),
        ("libvirtd", Process(1, "libvirtd", ("/usr/sbin/libvirtd", "--listen")), True),
        ("nova-compute", Process(1, "bash", ("bash", "-c", "nova-compute")), False),
        ("nova-compute", Process(1, "nova-compute-x", ("/usr/bin/nova-compute-x",)), False),
        ("nova-compute", Process(1, "kworker", ()), False),
    ],
)
def test_process_matching_looks_past_the_interpreter(name, process, matches):
    assert process_matches(name, process) is matches


def test_checks_stop_at_the_first_critical_failure_and_read_proc_once():
    reads = []

    def processes():
        reads.append(1)
        return [Process(7, "libvirtd", ("libvirtd",))]

    prober = Prober(timeout=1, processes=processes)
    checks = parse_checks("process:libvirtd; degraded process:ovs; process:nova; process:x")
    results = prober.run(checks, deadline=float("inf"))
    assert [(r.check.label, r.ok) for r in results] == [
        ("process:libvirtd", True), ("process:ovs", False), ("process:nova", False),
    ]
    assert len(reads) == 1
