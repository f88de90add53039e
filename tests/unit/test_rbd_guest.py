"""The lab's disk writer (lab/rbd_guest.py): its record format and the check a fence test makes
on what the writers left, without Ceph (the module imports librbd only where it uses it).
tests/functional/test_rbd_guest_ceph.py runs it against a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.rbd_guest import (
    RECORD_SIZE,
    Record,
    acks_from_log,
    fenced_writes_after_takeover,
    format_record,
    parse_record,
    records_from_image_bytes,
)


def test_a_record_is_64_ascii_bytes_ending_in_a_newline_and_reads_back() -> None:
    data = format_record(17, "compute1", 1796292057.1523)
    assert len(data) == RECORD_SIZE and data.endswith(b" \n") and data.isascii()
    assert data.startswith(b"OHA1 seq=17 host=compute1 t=1796292057.152 ")
    assert parse_record(data) == Record(17, "compute1", 1796292057.152)


def test_the_longest_host_and_an_eleven_digit_seq_still_fit() -> None:
    host = "h" * 20
    record = parse_record(format_record(10**11 - 1, host, 9999999999.999))
    assert record == Record(10**11 - 1, host, 9999999999.999)


@pytest.mark.parametrize("host", ["", "compute 1", "comp\nute", "h" * 21, "compute1=x", "ü"])
def test_a_host_that_is_not_a_plain_name_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        format_record(1, host, 1.0)


@pytest.mark.parametrize("data", [
    b"",
    bytes(RECORD_SIZE),  # an empty slot: the image reads zeros where nothing was written
    format_record(3, "compute1", 1.0)[:-1] + b" ",  # no newline
    format_record(3, "compute1", 1.0) + b" ",  # 65 bytes
    format_record(3, "compute1", 1.0).replace(b"OHA1", b"OHA2"),
    format_record(3, "compute1", 1.0).replace(b"seq=3", b"seq=x"),
    format_record(3, "compute1", 1.0)[:40] + bytes(RECORD_SIZE - 40),  # torn
    b"OHA1 seq=1 host=a t=1.000\n".rjust(RECORD_SIZE),
])
def test_what_is_not_exactly_one_record_is_none(data: bytes) -> None:
    assert parse_record(data) is None


@given(st.binary(max_size=2 * RECORD_SIZE))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_a_record_or_none_never_an_error(data: bytes) -> None:
    record = parse_record(data)
    assert record is None or (isinstance(record, Record) and len(data) == RECORD_SIZE)


@given(st.integers(0, 10**11 - 1), st.from_regex(r"\A[A-Za-z0-9._-]{1,20}\Z"),
       st.floats(0, 9999999999.0))
@settings(max_examples=200, deadline=None)
def test_every_record_written_reads_back(seq: int, host: str, t: float) -> None:
    record = parse_record(format_record(seq, host, t))
    assert record is not None and (record.seq, record.host) == (seq, host)
    assert record.t == pytest.approx(t, abs=0.0006)


def test_an_image_area_gives_its_records_in_offset_order_skipping_empty_slots() -> None:
    area = bytearray(8 * RECORD_SIZE)
    for seq, host in ((1, "compute1"), (2, "compute1"), (5, "compute2")):
        area[seq * RECORD_SIZE:(seq + 1) * RECORD_SIZE] = format_record(seq, host, float(seq))
    area += b"OHA1 seq=9"  # a partial slot at the end is no record
    assert records_from_image_bytes(bytes(area)) == [
        Record(1, "compute1", 1.0), Record(2, "compute1", 2.0), Record(5, "compute2", 5.0)]


def test_an_ack_log_gives_acks_and_errors_and_skips_torn_lines() -> None:
    lines = [
        json.dumps({"seq": 1, "host": "compute1", "image": "x_disk", "t": 10.5, "ok": True}),
        '{"seq": 2, "host": "comp',  # the line a SIGKILL cut
        json.dumps({"seq": 2, "host": "compute1", "image": "x_disk", "t": 11.0, "ok": False,
                    "error": "ConnectionShutdown: [errno 108]", "errno": 108}),
        "[]",
    ]
    acks, errors = acks_from_log(lines)
    assert acks == [Record(1, "compute1", 10.5)]
    assert [e["errno"] for e in errors] == [108]


# ---------------------------------------------------------------------------- the fence check

A, B = "compute1", "compute2"


def test_a_clean_takeover_has_no_fenced_write_after_the_new_hosts_first() -> None:
    records = [Record(1, A, 1.0), Record(2, A, 1.5), Record(3, B, 9.0), Record(4, B, 9.5)]
    assert fenced_writes_after_takeover(records, A, B) == []
    assert fenced_writes_after_takeover(records, A, B, by="t") == []


def test_interleaved_writers_are_reported_in_seq_order() -> None:
    # both alive: the lock ping-pongs and the new host's records land among the old one's
    records = [Record(1, A, 1.0), Record(2, B, 1.1), Record(3, A, 1.5), Record(4, B, 1.6),
               Record(5, A, 2.0)]
    assert fenced_writes_after_takeover(records, A, B) == [Record(3, A, 1.5), Record(5, A, 2.0)]


def test_time_order_catches_what_seq_order_cannot() -> None:
    # two ack logs: both hosts acknowledged the same sequence numbers (the second writer
    # continued from the first's last record); the fenced host went on after the new one began
    acks = [Record(7, A, 1.0), Record(8, A, 1.5), Record(8, B, 1.6), Record(8, A, 1.7)]
    assert fenced_writes_after_takeover(acks, A, B) == []  # no A seq above B's first 8
    assert fenced_writes_after_takeover(acks, A, B, by="t") == [Record(8, A, 1.7)]


def test_the_order_given_does_not_matter_and_other_hosts_are_ignored() -> None:
    records = [Record(5, A, 3.0), Record(4, "compute3", 2.5), Record(3, B, 2.0), Record(1, A, 1.0)]
    assert fenced_writes_after_takeover(records, A, B) == [Record(5, A, 3.0)]
    assert fenced_writes_after_takeover(reversed(records), A, B, by="t") == [Record(5, A, 3.0)]


def test_without_a_record_of_the_new_host_nothing_follows_it() -> None:
    assert fenced_writes_after_takeover([Record(1, A, 1.0)], A, B) == []
    assert fenced_writes_after_takeover([], A, B, by="t") == []
    with pytest.raises(ValueError, match="by="):
        fenced_writes_after_takeover([], A, B, by="offset")


def test_the_module_imports_without_librbd() -> None:
    # The lab venv and the test venv have no rados bindings: importing must not need them.
    code = ("import sys; sys.modules['rados'] = sys.modules['rbd'] = None; "
            "import lab.rbd_guest as g; print(g.parse_record(b''))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=30, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "None"), done.stderr
