"""The timeline against hostile files and paths (issue 11): writing it never follows a link,
never leaves it readable by everyone and never fails the caller; reading it skips what is
not an event, counts it and never raises; what it prints cannot drive the terminal; and
rendering is linear in the number of events."""

from __future__ import annotations

import grp
import json
import logging
import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openstack_ha import timeline

T = 1796000000.0
REPO = Path(__file__).resolve().parents[2]
# What a terminal acts on: C0 (newline included), DEL, C1, line/paragraph separators, and
# the bidirectional overrides; ESC is in C0.
TERMINAL_CONTROLS = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029",
                     "\u202e", "\u2066"}


def cluster_gid() -> int | None:
    try:
        return grp.getgrnam(timeline.CLUSTER_GROUP).gr_gid
    except KeyError:
        return None


def renderer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openstack_ha.timeline", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def line(**fields: object) -> str:
    return json.dumps(fields)


# ---------------------------------------------------------------------------- writing


def test_a_symlink_planted_as_the_timeline_is_not_followed(tmp_path, monkeypatch, caplog,
                                                          planted_link):
    victim = planted_link("log/timeline.jsonl", "root:secret\n")
    planted = tmp_path / "log" / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(planted))
    with caplog.at_level(logging.WARNING, logger=timeline.LOG.name):
        timeline.record("detected", "compute1")
    assert victim.read_text() == "root:secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert len(caplog.records) == 1 and "not written" in caplog.records[0].getMessage()


def test_a_dangling_symlink_does_not_create_its_target(tmp_path, monkeypatch):
    planted = tmp_path / "timeline.jsonl"
    planted.symlink_to(tmp_path / "created-by-root")
    monkeypatch.setenv(timeline.ENV, str(planted))
    timeline.record("detected", "compute1")
    assert not (tmp_path / "created-by-root").exists()


def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path, monkeypatch, caplog):
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "dir.jsonl").mkdir()
    for target in (fifo, tmp_path / "dir.jsonl"):
        monkeypatch.setenv(timeline.ENV, str(target))
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=timeline.LOG.name):
            timeline.record("detected", "compute1")
        assert time.monotonic() - started < 5
    assert len(caplog.records) == 2


def test_a_hard_link_to_another_file_is_not_appended_to(tmp_path, monkeypatch):
    victim = tmp_path / "passwd"
    victim.write_text("x\n")
    os.link(victim, tmp_path / "timeline.jsonl")
    monkeypatch.setenv(timeline.ENV, str(tmp_path / "timeline.jsonl"))
    timeline.record("detected", "compute1")
    assert victim.read_text() == "x\n"


def test_a_new_timeline_is_for_its_owner_and_the_cluster_group_only(tmp_path, monkeypatch):
    target = tmp_path / "openstack-ha" / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(target))
    old_umask = os.umask(0)  # the modes are set, not left to the caller's umask
    try:
        timeline.record("detected", "compute1", at=T)
    finally:
        os.umask(old_umask)
    gid = cluster_gid()
    file_mode, dir_mode = stat.S_IMODE(target.stat().st_mode), stat.S_IMODE(target.parent.stat().st_mode)
    if gid is None:
        assert (file_mode, dir_mode) == (0o640, 0o750)
    else:  # the alert agent (hacluster, group haclient) appends too
        assert (file_mode, dir_mode) == (0o660, 0o2770)
        if os.geteuid() == 0:
            assert target.stat().st_gid == gid and target.parent.stat().st_gid == gid
    assert file_mode & 0o007 == 0 and dir_mode & 0o007 == 0
    assert json.loads(target.read_text())["event"] == "detected"


def test_an_older_world_readable_timeline_of_ours_loses_its_world_bits(tmp_path, monkeypatch):
    target = tmp_path / "timeline.jsonl"
    target.write_text("")
    target.chmod(0o664)
    monkeypatch.setenv(timeline.ENV, str(target))
    timeline.record("detected", "compute1")
    assert stat.S_IMODE(target.stat().st_mode) == 0o660


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize("call", [
    lambda: timeline.record("detected", "compute1", at=math.nan),
    lambda: timeline.record("detected", "compute1", at=math.inf),
    lambda: timeline.record("detected", "compute1", reason=Unprintable()),
    lambda: timeline.record("detected", "compute1", ratio=math.nan),
])
def test_recording_never_raises_and_warns_once(call, caplog):
    with caplog.at_level(logging.WARNING, logger=timeline.LOG.name):
        call()
    assert len(caplog.records) == 1


def test_a_long_field_is_cut_so_the_line_stays_readable(tmp_path, monkeypatch):
    target = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(target))
    timeline.record("fence_failed", "compute1", at=T, reason="x" * 100_000)
    events, skipped = timeline.read(str(target))
    assert skipped == 0 and len(events[0].data["reason"]) == timeline.MAX_FIELD_CHARS


# ---------------------------------------------------------------------------- reading

MALFORMED = [
    b"\xff\xfe not utf-8",
    b'{"ts": "1796000000", "event": "detected", "host": "c1"}',
    b'{"ts": NaN, "event": "detected", "host": "c1"}',
    b'{"ts": Infinity, "event": "detected", "host": "c1"}',
    b'{"ts": 1e400, "event": "detected", "host": "c1"}',
    b'{"ts": 1' + b"0" * 400 + b', "event": "detected", "host": "c1"}',
    b'{"ts": -1, "event": "detected", "host": "c1"}',
    b'{"ts": true, "event": "detected", "host": "c1"}',
    b'{"ts": 1796000000, "event": 7, "host": "c1"}',
    b'{"ts": 1796000000, "event": "detected", "host": ["c1"]}',
    b'{"ts": 1796000000, "event": "detected", "host": null}',
    b'{"ts": 1796000000, "event": "", "host": "c1"}',
    b'{"ts": 1796000000, "event": "detected"}',
    b'{"ts": 1796000000, "event": "detected", "host": "c1", "x": NaN}',
    b'{"ts": 1796000000, "event": "detected", "host": "c1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"ts": 1796000000, "event": "detected", "host": "c1", "x": ' + b"[" * 20 + b"]" * 20 + b"}",
    b'{"ts": 1796000000, "event": "detected", "host": "c1", "x": "' + b"a" * 70_000 + b'"}',
    b'{"ts": 1796000000, "event": "detected", "host": "' + b"h" * 300 + b'"}',
    b"[1, 2, 3]",
    b'"a string"',
    b"not json",
]


@pytest.mark.parametrize("bad", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_line_is_not_an_event(bad: bytes):
    assert timeline.parse_line(bad) is None


def test_malformed_lines_are_skipped_counted_and_summed_up_in_one_line(tmp_path):
    target = tmp_path / "timeline.jsonl"
    good = [line(ts=T, event="detected", host="compute1"),
            line(ts=T + 2, event="evacuation_requested", host="compute1")]
    target.write_bytes(b"\n".join([good[0].encode(), *MALFORMED, b"", b"   ", good[1].encode()])
                       + b"\n")
    events, skipped = timeline.read(str(target))
    assert [e.event for e in events] == ["detected", "evacuation_requested"]
    assert skipped == len(MALFORMED)
    done = renderer(str(target))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"openstack-ha-timeline: {len(MALFORMED)} lines of {target} skipped: not timeline events"]
    assert "fencing 2.0s" in done.stdout


def test_a_line_longer_than_the_bound_is_skipped_without_holding_it(tmp_path):
    target = tmp_path / "timeline.jsonl"
    with target.open("wb") as f:
        f.write(b'{"ts": 1796000000, "x": "' + b"a" * (3 * timeline.MAX_LINE_BYTES) + b'"}\n')
        f.write(line(ts=T, event="detected", host="compute1").encode() + b"\n")
        f.write(b"b" * (timeline.MAX_LINE_BYTES + 1))  # the last line, without a newline
    events, skipped = timeline.read(str(target))
    assert [e.event for e in events] == ["detected"] and skipped == 2


def test_an_unreadable_file_or_a_usage_error_is_one_line_and_exit_2(tmp_path):
    for args in ([str(tmp_path / "missing")], [str(tmp_path)], ["--bogus"], ["a", "b"]):
        done = renderer(*args)
        assert done.returncode == 2, args
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- printing

HOSTILE = {
    "clear": "compute1\x1b[2J\x1b[H",
    "clipboard": "vm\x1b]52;c;cm0gLXJmIH4=\x07",
    "forged": "vm-1\n  +   0.00s  evacuation_done        all fine",
    "c1": "vm\x9b2J",
    "separator": "vm\u2028forged",
    "bidi": "vm\u202egnp.exe",
    "del": "vm\x7f\x08\x08",
}


def hostile_file(path: Path) -> list[dict]:
    events = [{"ts": T, "event": "detected", "host": HOSTILE["clear"]},
              {"ts": T + 1, "event": "evacuation_requested\x1b[31m", "host": HOSTILE["clear"]}]
    events += [{"ts": T + 2 + i, "event": "fence_failed", "host": HOSTILE["clear"], "reason": text}
               for i, text in enumerate(HOSTILE.values())]
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return events


def test_text_from_the_file_cannot_drive_the_terminal(tmp_path):
    target = tmp_path / "timeline.jsonl"
    hostile_file(target)
    done = renderer(str(target))
    assert done.returncode == 0, done.stderr
    assert not TERMINAL_CONTROLS & (set(done.stdout) - {"\n"})
    # the header, one line per event and the MTTR: no line forged
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + 2 + len(HOSTILE) + 1
    assert lines[0].startswith("compute1: recovery starting")
    assert "reason=vm-1  +   0.00s  evacuation_done        all fine" in done.stdout
    assert "reason=vm]52;c;" not in done.stdout and "reason=vm" in lines[4]


def test_json_output_is_the_events_exactly(tmp_path):
    target = tmp_path / "timeline.jsonl"
    events = hostile_file(target)
    done = renderer(str(target), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.isascii()  # JSON escapes every control character
    (recovery,) = json.loads(done.stdout)
    assert recovery["events"] == events and recovery["host"] == HOSTILE["clear"]


@given(st.text())
@example("\x1b]52;c;AAAA\x1b\\x")
@example("\x1b[0;" + "1" * 1000)
@settings(max_examples=200, deadline=None)
def test_terminal_text_leaves_no_control_character(text: str):
    clean = timeline.terminal_text(text)
    assert not TERMINAL_CONTROLS & set(clean)
    assert timeline.terminal_text(clean) == clean
    clean.encode("utf-8")  # no lone surrogate left to fail the print


# ---------------------------------------------------------------------------- properties

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
event_like = st.fixed_dictionaries(
    {"ts": st.one_of(st.floats(min_value=0, max_value=timeline.MAX_TS), st.floats(),
                     st.integers(), st.text(max_size=5), st.booleans()),
     "event": st.one_of(st.sampled_from(["detected", "instance_done"]), json_values),
     "host": st.one_of(st.text(min_size=1, max_size=300), json_values)},
    optional={"name": json_values, "reason": json_values})


def check_event(event: timeline.Event | None) -> None:
    if event is None:
        return
    assert math.isfinite(event.ts) and 0 <= event.ts <= timeline.MAX_TS
    assert isinstance(event.event, str) and 0 < len(event.event) <= timeline.MAX_EVENT_NAME
    assert isinstance(event.host, str) and 0 < len(event.host) <= timeline.MAX_HOST
    json.dumps(event.data, allow_nan=False, indent=2)  # --json prints it back, exactly


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_bytes_are_an_event_or_skipped_never_an_exception(raw: bytes):
    check_event(timeline.parse_line(raw))


@given(event_like)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_json_line_is_a_bounded_event_or_skipped(data: dict):
    raw = json.dumps(data).encode()  # NaN and Infinity included: Python writes them
    event = timeline.parse_line(raw)
    check_event(event)
    if event is not None:
        recovery = timeline.recoveries([event])[0]
        rendered = timeline.render(recovery)
        assert not TERMINAL_CONTROLS & (set(rendered) - {"\n"})


@given(st.lists(st.one_of(st.binary(max_size=80), event_like.map(lambda d: json.dumps(d).encode())),
                max_size=20))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
def test_any_file_reads_renders_and_prints_as_json(tmp_path, lines: list[bytes]):
    target = tmp_path / "fuzz.jsonl"
    target.write_bytes(b"\n".join(raw.replace(b"\n", b" ") for raw in lines))
    events, skipped = timeline.read(str(target))
    assert len(events) + skipped <= len(lines)
    for recovery in timeline.recoveries(events):
        timeline.render(recovery)
        json.dumps({"start": recovery.start, **recovery.parts(),
                    "events": [e.data for e in recovery.events]}, allow_nan=False)


# ---------------------------------------------------------------------------- linear


class CountedName(str):
    """An event name that counts how often it is compared: the rendering's work."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountedName.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def rendering_work(count: int) -> int:
    events = [timeline.Event(T + i, CountedName("detected" if i == 0 else "instance_done"),
                             "compute1", {}) for i in range(count)]
    CountedName.comparisons = 0
    for recovery in timeline.recoveries(events):
        timeline.render(recovery)
        recovery.parts()
    return CountedName.comparisons


def test_rendering_is_linear_in_the_number_of_events():
    # one recovery with many instance events was quadratic (20,000 events took 18 s):
    # doubling the events now doubles the work
    small, large = rendering_work(2000), rendering_work(4000)
    assert large <= 2.2 * small


def test_fifty_thousand_events_render_at_once(tmp_path):
    target = tmp_path / "timeline.jsonl"
    target.write_text("".join(
        line(ts=T + i / 100, event="detected" if i == 0 else "instance_done", host="compute1",
             name=f"vm-{i}") + "\n" for i in range(50_000)))
    started = time.monotonic()
    events, skipped = timeline.read(str(target))
    (recovery,) = timeline.recoveries(events)
    text = timeline.render(recovery)
    # measured about 0.3 s; the bound only catches a return to quadratic (minutes)
    assert time.monotonic() - started < 20
    assert skipped == 0 and "(49999 instance events; first and last shown)" in text


# ---------------------------------------------------------------------------- alert agent


def test_the_alert_agent_puts_only_a_resource_id_into_its_xpath(monkeypatch):
    from agents import timeline_alert

    def no_query(*args, **kwargs):
        raise AssertionError("cibadmin must not be asked")

    monkeypatch.setattr(timeline_alert.subprocess, "run", no_query)
    for rsc in ("x'] | //*[@id='y", "a b", "", "r" * 300, "-Hhost"):
        assert timeline_alert._is_remote_connection(rsc) is False


def test_the_alert_agent_records_hostile_names_as_data(tmp_path):
    target = tmp_path / "timeline.jsonl"
    env = {b"PATH": os.environb.get(b"PATH", b"/usr/bin"), b"PYTHONPATH": bytes(REPO),
           timeline.ENV.encode(): bytes(target), b"CRM_alert_kind": b"node",
           b"CRM_alert_desc": b"lost", b"CRM_alert_node": b"compute1\xff\x1b[2J\n"}
    done = subprocess.run([sys.executable, "-m", "agents.timeline_alert"], env=env, cwd=REPO,
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stderr == b""
    events, skipped = timeline.read(str(target))
    assert skipped == 0 and events[0].event == "node_lost"
    shown = timeline.render(timeline.recoveries(events)[0])
    assert shown.startswith("compute1: recovery starting")
