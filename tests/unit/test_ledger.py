"""The ledger (nova_evacuate/ledger.py): transitions, the marker, and the Ledger over fakes.

The last part runs the real Nova adapter (nova_evacuate/nova.py) over a recording fake
connection and pins what goes on the wire: URL, body and microversion of each call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nova_evacuate.ledger import (
    AttributeMirror,
    Ledger,
    LedgerEntry,
    LedgerError,
    State,
    attribute_value,
    claimable,
    evacuation_finished,
    format_marker,
    next_entry,
    pacemaker_mirror,
    parse_marker,
)
from nova_evacuate.nova import (
    SERVICES_MICROVERSION,
    ComputeService,
    ForceUpRefused,
    Nova,
    NovaError,
    connect,
)

ROOT = Path(__file__).resolve().parents[2]

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
EXPIRY = timedelta(seconds=60)
ME, OTHER = "ctl-1/4242", "ctl-2/77"


def entry(state: State, at: datetime = T0, by: str = ME, **kw: Any) -> LedgerEntry:
    return LedgerEntry(state, at, by, **kw)


REQUESTED = entry(State.REQUESTED, by="fence_nova")
CLAIMED = entry(State.CLAIMED)
DONE = entry(State.DONE, evacuated=3, failed=0)
FAILED = entry(State.FAILED, evacuated=1, failed=2)

# ---------------------------------------------------------------------------- transitions

LATER = T0 + timedelta(seconds=10)
MUCH_LATER = T0 + EXPIRY

ALLOWED = [
    # (current, wanted, now, by, expected state, expected at, expected by)
    (None, State.REQUESTED, LATER, "fence_nova", State.REQUESTED, LATER, "fence_nova"),
    (DONE, State.REQUESTED, LATER, "fence_nova", State.REQUESTED, LATER, "fence_nova"),
    (FAILED, State.REQUESTED, LATER, "fence_nova", State.REQUESTED, LATER, "fence_nova"),
    (REQUESTED, State.REQUESTED, LATER, "fence_nova", State.REQUESTED, T0, "fence_nova"),
    (CLAIMED, State.REQUESTED, LATER, "fence_nova", State.CLAIMED, T0, ME),
    (CLAIMED, State.REQUESTED, LATER, ME, State.REQUESTED, LATER, ME),  # a release
    (REQUESTED, State.CLAIMED, LATER, ME, State.CLAIMED, LATER, ME),
    (CLAIMED, State.CLAIMED, LATER, ME, State.CLAIMED, LATER, ME),
    (CLAIMED, State.CLAIMED, MUCH_LATER, OTHER, State.CLAIMED, MUCH_LATER, OTHER),
    (CLAIMED, State.DONE, LATER, ME, State.DONE, LATER, ME),
    (CLAIMED, State.FAILED, LATER, ME, State.FAILED, LATER, ME),
    (DONE, State.DONE, LATER, ME, State.DONE, LATER, ME),
    (FAILED, State.DONE, LATER, ME, State.DONE, LATER, ME),
]

REFUSED = [
    (None, State.CLAIMED, ME),
    (DONE, State.CLAIMED, ME),
    (FAILED, State.CLAIMED, ME),
    (CLAIMED, State.CLAIMED, OTHER),  # LATER: the claim is 10 s old, not expired
    (None, State.DONE, ME),
    (None, State.FAILED, ME),
    (REQUESTED, State.DONE, ME),
    (REQUESTED, State.FAILED, ME),
    (CLAIMED, State.DONE, OTHER),
    (DONE, State.DONE, OTHER),
    (FAILED, State.FAILED, OTHER),
]


@pytest.mark.parametrize(("current", "wanted", "now", "by", "state", "at", "who"), ALLOWED)
def test_allowed_transitions(current, wanted, now, by, state, at, who) -> None:
    new = next_entry(current, wanted, now, by, EXPIRY, evacuated=4, failed=0)
    assert (new.state, new.at, new.by) == (state, at, who)


@pytest.mark.parametrize(("current", "wanted", "by"), REFUSED)
def test_refused_transitions_name_the_transition(current, wanted, by) -> None:
    with pytest.raises(LedgerError) as err:
        next_entry(current, wanted, LATER, by, EXPIRY)
    assert f"{current.state if current else 'nothing'} → {wanted} by {by} refused" in str(err.value)


EXPIRY = timedelta(seconds=60)


@pytest.mark.parametrize(("current", "by", "age", "gone", "expected"), [
    (None, ME, 0, False, False),                    # nothing requested
    (State.REQUESTED, ME, 0, False, True),
    (State.DONE, ME, 0, False, False),              # a new failure is a request first
    (State.FAILED, OTHER, 999, True, False),
    (State.CLAIMED, ME, 0, False, True),            # renewal by its holder
    (State.CLAIMED, OTHER, 59, False, False),       # another's live claim
    (State.CLAIMED, OTHER, 60, False, True),        # expired
    (State.CLAIMED, OTHER, 1, True, True),          # its holder is gone: at once
])
def test_the_one_claim_rule(current, by, age, gone, expected) -> None:
    existing = entry(current) if current else None
    assert claimable(existing, by, T0 + timedelta(seconds=age), EXPIRY,
                     holder_gone=gone) is expected


def test_next_entry_follows_the_claim_rule() -> None:
    live = entry(State.CLAIMED, by=OTHER)
    with pytest.raises(LedgerError):
        next_entry(live, State.CLAIMED, T0 + timedelta(seconds=1), ME, EXPIRY)
    # a holder known to be gone is passed as an expiry of zero
    taken = next_entry(live, State.CLAIMED, T0 + timedelta(seconds=1), ME, timedelta(0))
    assert taken.state is State.CLAIMED and taken.by == ME


def test_a_claim_exactly_as_old_as_the_expiry_can_be_taken_over() -> None:
    assert next_entry(CLAIMED, State.CLAIMED, T0 + EXPIRY, OTHER, EXPIRY).by == OTHER
    with pytest.raises(LedgerError):
        next_entry(CLAIMED, State.CLAIMED, T0 + EXPIRY - timedelta(seconds=1), OTHER, EXPIRY)


def test_finishing_records_the_counts_and_note() -> None:
    new = next_entry(CLAIMED, State.FAILED, LATER, ME, EXPIRY, evacuated=5, failed=1,
                     note="web-3: No valid host")
    assert (new.evacuated, new.failed, new.note) == (5, 1, "web-3: No valid host")


def test_the_operators_prior_reason_is_carried_through_every_transition() -> None:
    current = replace(REQUESTED, prior="RAM swap, ticket 42")
    for wanted, by in ((State.CLAIMED, ME), (State.DONE, ME), (State.REQUESTED, "fence_nova")):
        current = next_entry(current, wanted, LATER, by, EXPIRY)
        assert current.prior == "RAM swap, ticket 42"


def test_finished_means_done_failed_or_nothing_pending() -> None:
    assert evacuation_finished(None)
    assert evacuation_finished(DONE)
    assert evacuation_finished(FAILED)
    assert not evacuation_finished(REQUESTED)
    assert not evacuation_finished(CLAIMED)


# ---------------------------------------------------------------------------- marker


def test_the_marker_reads_as_documented() -> None:
    assert format_marker(REQUESTED) == (
        "openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova")
    assert format_marker(replace(DONE, note="all ACTIVE")) == (
        "openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=ctl-1/4242"
        ' evacuated=3 failed=0 note="all ACTIVE"')


@pytest.mark.parametrize("original", [
    REQUESTED, CLAIMED, DONE, FAILED,
    entry(State.DONE, note='a "quoted" \\ back\\slash = sign', prior="maintenance: by=me"),
    entry(State.CLAIMED, by="compute-controller-0.example.com/4194304"),
    entry(State.FAILED, evacuated=0, failed=1_000_000, note="ünïcode ✓"),
])
def test_marker_round_trip(original: LedgerEntry) -> None:
    marker = format_marker(original)
    assert len(marker) <= 255
    assert parse_marker(marker) == original


def test_times_are_stored_in_whole_seconds_utc() -> None:
    odd = datetime(2026, 11, 30, 13, 0, 0, 999_999, tzinfo=UTC).astimezone()
    assert parse_marker(format_marker(entry(State.REQUESTED, odd))).at == T0 + timedelta(hours=1)


@pytest.mark.parametrize("reason", [
    None, "", "maintenance", "AUTO: Connection to libvirt lost",
    "openstack-ha maintenance window", "Openstack-HA:v1 evacuation=done",
    " openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova",
])
def test_a_reason_not_ours_is_ignored(reason: str | None) -> None:
    assert parse_marker(reason) is None


@pytest.mark.parametrize("reason", [
    "openstack-ha:",
    "openstack-ha:v2 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova",
    "openstack-ha:v1",
    "openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z",
    "openstack-ha:v1 evacuation=lost at=2026-11-30T12:00:00Z by=fence_nova",
    "openstack-ha:v1 evacuation=requested at=yesterday by=fence_nova",
    "openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova by=x",
    "openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova colour=red",
    "openstack-ha:v1 evacuation=requested at=2026-11-30T12:00:00Z by=fence_nova trailing",
    'openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=a/1 note="unterminated',
    "openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=a/1 evacuated=-1",
    "openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=two words",
    "openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=a/1 evacuated=1x",
])
def test_a_malformed_marker_of_ours_is_refused(reason: str) -> None:
    with pytest.raises(LedgerError):
        parse_marker(reason)


@pytest.mark.parametrize("count", ["١٢", "１", "²", "1" * 8, "9" * 5000])
def test_counts_are_ascii_digits_within_the_bound(count: str) -> None:
    with pytest.raises(LedgerError):
        parse_marker(f"openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=a/1"
                     f" evacuated={count}")


def test_a_long_unreadable_marker_is_refused_at_once() -> None:
    # the tokens were searched for, not matched in place: 100,000 characters took 22 s
    import time

    started = time.monotonic()
    with pytest.raises(LedgerError):
        parse_marker("openstack-ha:v1 a=" + "b" * 100_000 + '"')
    assert time.monotonic() - started < 5  # measured 0.003 s: this only catches quadratic


_MARKER_KEYS = st.sampled_from(["evacuation", "at", "by", "evacuated", "failed", "note", "prior",
                                "colour", "Evacuation", ""])
_MARKER_VALUES = st.one_of(
    st.sampled_from(["requested", "claimed", "done", "failed", "2026-11-30T12:00:00Z",
                     "0000-01-01T00:00:00Z", "fence_nova", "ctl-1/4242", "0", "1000000",
                     "1000001", "١٢", '"a \\"quoted\\" note"', '"unterminated', '""', "=", '"']),
    st.text(max_size=20))
_MARKERS = st.builds(
    lambda tokens, sep, head: head + sep.join(f"{k}={v}" for k, v in tokens),
    st.lists(st.tuples(_MARKER_KEYS, _MARKER_VALUES), max_size=9),
    st.sampled_from([" ", "  ", "\t", "\x0b", "\u2028"]),
    st.sampled_from(["openstack-ha:v1 ", "openstack-ha:v1", "openstack-ha:v2 ", "openstack-ha:"]))


@given(st.one_of(st.text(), _MARKERS, st.text().map(lambda s: "openstack-ha:v1 " + s)))
@example("openstack-ha:v1 evacuation=done at=2026-11-30T12:00:00Z by=a/1 evacuated=١٢")
@settings(max_examples=200, deadline=None)
def test_any_reason_is_an_entry_none_or_a_refusal(reason: str) -> None:
    """Whatever Nova holds as a disable reason: a typed entry that round-trips, None (not
    ours), or LedgerError (ours but unreadable), never another exception."""
    try:
        found = parse_marker(reason)
    except LedgerError as exc:
        assert reason.startswith("openstack-ha:") and str(exc)
        return
    if found is None:
        assert not reason.startswith("openstack-ha:")
        return
    assert isinstance(found, LedgerEntry) and isinstance(found.state, State)
    assert parse_marker(format_marker(found)) == found


def test_a_long_note_is_shortened_then_dropped_before_the_prior_reason() -> None:
    long = entry(State.DONE, evacuated=999_999, failed=999_999, note="x" * 300,
                 prior="operator: " + "y" * 40)
    marker = format_marker(long)
    assert len(marker) <= 255
    back = parse_marker(marker)
    assert back.prior == long.prior
    assert back.note.endswith("...")
    assert back.note.startswith("xxxx")
    assert len(marker) == 255


def test_when_even_the_prior_reason_does_not_fit_it_is_shortened_after_the_note_is_gone() -> None:
    long = entry(State.DONE, by="n" * 100 + "/4294967295", evacuated=1, failed=1,
                 note="x" * 300, prior="p" * 250)
    back = parse_marker(format_marker(long))
    assert back.note == ""
    assert back.prior.startswith("ppp") and back.prior.endswith("...")
    assert len(format_marker(long)) <= 255


def test_the_fixed_fields_alone_always_fit() -> None:
    worst = entry(State.REQUESTED, by="n" * 100 + "/4294967295", evacuated=1_000_000,
                  failed=1_000_000)
    assert len(format_marker(worst)) <= 255
    assert parse_marker(format_marker(worst)) == worst


def test_notes_become_one_printable_line() -> None:
    assert entry(State.DONE, note="two\nlines\tand\x00nul").note == "two lines and nul"


@pytest.mark.parametrize("by", ["", "two words", 'quo"te', "node@1", "/12", "n" * 101])
def test_an_entry_refuses_a_writer_the_marker_cannot_carry(by: str) -> None:
    with pytest.raises(ValueError):
        LedgerEntry(State.REQUESTED, T0, by)


def test_an_entry_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError):
        LedgerEntry(State.REQUESTED, datetime(2026, 1, 1), "fence_nova")


def test_attribute_values_follow_novaevacuate() -> None:
    assert attribute_value(REQUESTED) == "yes"
    assert attribute_value(CLAIMED) == f"ctl-1@{int(T0.timestamp())}"
    assert attribute_value(entry(State.CLAIMED, by="ctl-2")) == f"ctl-2@{int(T0.timestamp())}"
    assert attribute_value(DONE) == "no"
    assert attribute_value(FAILED) == "no"


# ---------------------------------------------------------------------------- Ledger over fakes


@dataclass
class FakeNova:
    """An in-memory fake of the Nova port the ledger uses: one record per host."""

    services: dict[str, ComputeService] = field(default_factory=dict)
    writes: list[tuple[str, str | None]] = field(default_factory=list)
    after_write: Any = None  # called after each disable: a racing engine's write lands here
    keep: bool = True  # False: Nova "saves" something else than asked

    def add(self, host: str, reason: str | None = None, status: str = "enabled") -> None:
        self.services[host] = ComputeService(f"id-{host}", host, "down", status, True, reason, None)

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        return self.services[host]

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        host = service_id.removeprefix("id-")
        self.writes.append((host, reason))
        saved = replace(self.services[host], status="disabled", disabled_reason=reason)
        self.services[host] = saved
        if self.after_write:
            hook, self.after_write = self.after_write, None
            hook(self)
        return saved if self.keep else replace(saved, disabled_reason="something else")


@dataclass
class FakeMirror:
    values: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, value: str, node: str) -> None:
        assert name == "evacuate"
        self.values[node] = value

    def delete(self, name: str, node: str) -> None:
        self.values.pop(node, None)


@pytest.fixture
def nova() -> FakeNova:
    fake = FakeNova()
    fake.add("compute1")
    return fake


@pytest.fixture
def mirror() -> FakeMirror:
    return FakeMirror()


@pytest.fixture
def sot(nova: FakeNova, mirror: FakeMirror) -> Ledger:
    return Ledger(nova, AttributeMirror(mirror.set, mirror.delete), clock=lambda: T0)


def reason(nova: FakeNova) -> str | None:
    return nova.services["compute1"].disabled_reason


def test_a_request_disables_with_the_marker_and_mirrors_yes(sot, nova, mirror) -> None:
    got = sot.request("compute1")
    assert reason(nova) == format_marker(got) == format_marker(REQUESTED)
    assert nova.services["compute1"].status == "disabled"
    assert nova.services["compute1"].forced_down is True  # untouched: not the ledger's job
    assert mirror.values == {"compute1": "yes"}
    assert sot.read("compute1") == REQUESTED


def test_a_repeated_request_keeps_the_first_time_and_writes_nothing(sot, nova, mirror) -> None:
    sot.request("compute1")
    again = sot.request("compute1", LATER)
    assert again.at == T0
    assert len(nova.writes) == 1
    assert mirror.values == {"compute1": "yes"}


def test_a_request_keeps_the_operators_own_reason(sot, nova) -> None:
    nova.add("compute1", reason="RAM swap, ticket 42", status="disabled")
    sot.request("compute1")
    assert sot.read("compute1").prior == "RAM swap, ticket 42"


def test_the_whole_cycle_is_visible_in_the_record_and_the_mirror(sot, nova, mirror) -> None:
    sot.request("compute1")
    claimed = sot.claim("compute1", ME, LATER, EXPIRY)
    assert mirror.values["compute1"] == f"ctl-1@{int(LATER.timestamp())}"
    assert parse_marker(reason(nova)) == claimed
    done = sot.finish("compute1", True, 3, 0, "all ACTIVE", by=ME, now=LATER)
    assert reason(nova) == format_marker(done)
    assert (done.state, done.evacuated, done.failed, done.note) == (State.DONE, 3, 0, "all ACTIVE")
    assert mirror.values["compute1"] == "no"
    assert evacuation_finished(sot.read("compute1"))


def test_a_failed_evacuation_is_recorded_as_failed(sot) -> None:
    sot.request("compute1")
    sot.claim("compute1", ME, None, EXPIRY)
    assert sot.finish("compute1", False, 1, 2, by=ME).state is State.FAILED


def test_a_claim_overwritten_before_the_read_back_is_lost(sot, nova, mirror) -> None:
    sot.request("compute1")
    rival = format_marker(entry(State.CLAIMED, LATER, OTHER))
    nova.after_write = lambda fake: fake.disable("id-compute1", rival)
    with pytest.raises(LedgerError, match="lost"):
        sot.claim("compute1", ME, LATER, EXPIRY)
    assert mirror.values == {"compute1": "yes"}  # the loser does not touch the mirror


def test_claims_interleaved_write_read_write_read_both_succeed__the_race_left_open(sot, nova) -> None:
    # Documented in ledger.py: Nova has no compare-and-set; this pins the known limit.
    sot.request("compute1")
    first = sot.claim("compute1", ME, LATER, EXPIRY)
    nova.services["compute1"] = replace(nova.services["compute1"], disabled_reason=format_marker(
        replace(REQUESTED)))  # engine 2 read 'requested' before engine 1 wrote
    second = sot.claim("compute1", OTHER, LATER, EXPIRY)
    assert (first.by, second.by) == (ME, OTHER)


def test_a_live_claim_of_another_engine_is_refused(sot) -> None:
    sot.request("compute1")
    sot.claim("compute1", OTHER, T0, EXPIRY)
    with pytest.raises(LedgerError, match="refused"):
        sot.claim("compute1", ME, LATER, EXPIRY)
    with pytest.raises(LedgerError, match="refused"):
        sot.finish("compute1", True, 1, 0, by=ME)


def test_a_marker_nova_did_not_keep_is_an_error(sot, nova) -> None:
    nova.keep = False
    with pytest.raises(LedgerError, match="did not keep"):
        sot.request("compute1")


def test_clear_restores_the_operators_reason_and_deletes_the_attribute(sot, nova, mirror) -> None:
    nova.add("compute1", reason="RAM swap, ticket 42", status="disabled")
    sot.request("compute1")
    sot.claim("compute1", ME, None, EXPIRY)
    sot.finish("compute1", True, 2, 0, by=ME)
    sot.clear("compute1")
    assert (nova.services["compute1"].status, reason(nova)) == ("disabled", "RAM swap, ticket 42")
    assert mirror.values == {}
    assert sot.read("compute1") is None


def test_clear_without_a_prior_reason_leaves_the_service_disabled_without_one(sot, nova) -> None:
    sot.request("compute1")
    sot.claim("compute1", ME, None, EXPIRY)
    sot.finish("compute1", True, 0, 0, by=ME)
    sot.clear("compute1")
    assert (nova.services["compute1"].status, reason(nova)) == ("disabled", None)


@pytest.mark.parametrize("steps", [1, 2])
def test_clear_is_refused_while_the_evacuation_is_pending(sot, nova, mirror, steps) -> None:
    sot.request("compute1")
    if steps == 2:
        sot.claim("compute1", ME, None, EXPIRY)
    with pytest.raises(LedgerError, match="not clearing"):
        sot.clear("compute1")
    assert parse_marker(reason(nova)) is not None


def test_clear_of_a_host_never_fenced_touches_only_the_mirror(sot, nova, mirror) -> None:
    mirror.values["compute1"] = "no"
    sot.clear("compute1")
    assert nova.writes == []
    assert mirror.values == {}


def test_a_ledger_without_a_mirror_works_on_nova_alone(nova) -> None:
    sot = Ledger(nova, clock=lambda: T0)
    sot.request("compute1")
    assert sot.read("compute1") == REQUESTED


@pytest.mark.skipif(not Path("/var/lib/pacemaker").exists(), reason="Pacemaker not installed")
def test_the_pacemaker_mirror_warns_and_the_ledger_goes_on_when_attrd_fails(
        nova, tmp_path, monkeypatch, caplog) -> None:
    # attrd_updater that fails as it does when attrd is not running: Nova holds the truth,
    # so the request stands and one warning says the worker writes the attribute later
    tool = tmp_path / "attrd_updater"
    tool.write_text("#!/bin/sh\necho 'Could not connect to attrd' >&2\nexit 102\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    mirror = pacemaker_mirror()
    assert mirror is not None
    sot = Ledger(nova, mirror, clock=lambda: T0)
    sot.request("compute1")
    assert sot.read("compute1") == REQUESTED
    nova.add("compute2")
    sot.clear("compute2")  # never fenced: only the mirror's delete
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "not written" in warnings[0] and "next scan" in warnings[0]


def test_no_mirror_where_pacemaker_is_not_installed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no attrd_updater
    assert pacemaker_mirror() is None


# ---------------------------------------------------------------------------- on the wire


@dataclass
class Response:
    status_code: int
    body: Any = None
    reason: str = ""

    @property
    def content(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return self.body


def wire_service(host: str, **kw: Any) -> dict[str, Any]:
    body = {"id": f"uuid-{host}", "binary": "nova-compute", "host": host, "zone": "nova",
            "state": "up", "status": "enabled", "forced_down": False, "disabled_reason": None,
            "updated_at": "2026-11-30T12:00:00.000000"}
    return {**body, **kw}


class FakeCompute:
    def __init__(self, *answers: Response) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, Any, str | None]] = []

    def request(self, path: str, method: str, json: Any = None, microversion: str | None = None):
        self.sent.append((method, path, json, microversion))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeConnection:
    def __init__(self, *answers: Response) -> None:
        self.compute = FakeCompute(*answers)


def nova_over(*answers: Any) -> tuple[Nova, FakeCompute]:
    conn = FakeConnection(*answers)
    return Nova(conn, secrets=["s3cret-pw"]), conn.compute


EXAMPLE = {"services": [wire_service("compute1"), wire_service("compute2.lab.example"),
                        wire_service("compute3")]}


def test_the_microversion_is_pinned_to_2_53() -> None:
    assert SERVICES_MICROVERSION == "2.53"


@pytest.mark.parametrize(("host", "domain", "found"), [
    ("compute1", None, "compute1"),
    ("compute1.lab.example", None, "compute1"),
    ("compute2", None, "compute2.lab.example"),  # fence_compute's short-name match
    ("compute2", "lab.example", "compute2.lab.example"),
    ("COMPUTE2.lab.example", "lab.example", "compute2.lab.example"),
])
def test_a_service_is_found_by_short_or_qualified_name(host, domain, found) -> None:
    sot, wire = nova_over(Response(200, EXAMPLE))
    assert sot.compute_service(host, domain).host == found
    assert wire.sent == [("GET", "/os-services?binary=nova-compute", None, "2.53")]


def test_two_services_that_could_be_the_host_are_ambiguous() -> None:
    both = {"services": [wire_service("compute1"), wire_service("compute1.lab.example")]}
    sot, _ = nova_over(Response(200, both))
    with pytest.raises(NovaError) as err:
        sot.compute_service("compute1")
    assert err.value.kind == "ambiguous"
    assert "compute1, compute1.lab.example" in str(err.value)


@pytest.mark.parametrize(("host", "domain"), [("compute9", None), ("compute2", "other.example")])
def test_an_unknown_host_is_not_found(host, domain) -> None:
    sot, _ = nova_over(Response(200, EXAMPLE))
    with pytest.raises(NovaError) as err:
        sot.compute_service(host, domain)
    assert err.value.kind == "not_found"


@pytest.mark.parametrize(("call", "body"), [
    (lambda n: n.force_down("uuid-1", True), {"forced_down": True}),
    (lambda n: n.force_down("uuid-1", False), {"forced_down": False}),
    (lambda n: n.disable("uuid-1", "why"), {"status": "disabled", "disabled_reason": "why"}),
    (lambda n: n.disable("uuid-1", None), {"status": "disabled"}),
    (lambda n: n.enable("uuid-1"), {"status": "enabled"}),
])
def test_updates_send_only_their_keys_by_id_at_2_53(call, body) -> None:
    sot, wire = nova_over(Response(200, {"service": wire_service("compute1")}))
    assert call(sot).host == "compute1"
    assert wire.sent == [("PUT", "/os-services/uuid-1", body, "2.53")]


def test_a_reason_over_255_characters_is_refused_before_sending() -> None:
    sot, wire = nova_over()
    with pytest.raises(NovaError) as err:
        sot.disable("uuid-1", "x" * 256)
    assert err.value.kind == "refused"
    assert wire.sent == []


def test_novas_refusal_to_force_up_is_recognisable() -> None:
    message = ("Unable to force up host compute1 as `done` evacuation migration records remain"
               " associated with the host. Ensure the compute service has been restarted,"
               " allowing these records to move to `completed` before retrying this request.")
    sot, _ = nova_over(Response(400, {"badRequest": {"code": 400, "message": message}}))
    with pytest.raises(ForceUpRefused) as err:
        sot.force_down("uuid-1", False)
    assert (err.value.kind, err.value.status) == ("refused", 400)
    assert "compute1" in str(err.value)


@pytest.mark.parametrize(("status", "kind"), [
    (400, "refused"), (401, "auth"), (403, "auth"), (404, "not_found"), (409, "refused"),
    (500, "api"), (503, "unreachable"),
])
def test_http_errors_map_to_kinds(status, kind) -> None:
    sot, _ = nova_over(Response(status, {"x": {"message": "no"}}))
    with pytest.raises(NovaError) as err:
        sot.force_down("uuid-1", True)
    assert (type(err.value), err.value.kind) == (NovaError, kind)


def test_library_exceptions_become_nova_errors_without_the_password() -> None:
    from keystoneauth1 import exceptions as ks

    sot, _ = nova_over(ks.Unauthorized("bad password s3cret-pw"), ks.ConnectFailure("refused"))
    with pytest.raises(NovaError) as err:
        sot.compute_service("compute1")
    assert err.value.kind == "auth"
    assert "s3cret-pw" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(NovaError) as err:
        sot.compute_hosts()
    assert err.value.kind == "unreachable"


def test_connect_refuses_missing_keystone_options() -> None:
    with pytest.raises(NovaError) as err:
        connect(auth_url="http://127.0.0.1:5000/v3", username="admin", password="")
    assert err.value.kind == "auth"
    assert "password" in str(err.value)


def test_importing_the_ledger_and_the_adapter_does_not_import_openstacksdk() -> None:
    code = ("import sys, nova_evacuate.ledger, nova_evacuate.nova;"
            " sys.exit(any(m.split('.')[0] in ('openstack', 'keystoneauth1') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    assert done.returncode == 0


def test_a_failure_while_authenticating_for_the_first_call_is_mapped_too() -> None:
    from keystoneauth1 import exceptions as ks

    class Unreachable:
        @property
        def compute(self) -> Any:  # openstacksdk authenticates when .compute is first used
            raise ks.DiscoveryFailure("Could not find versioned identity endpoints")

    with pytest.raises(NovaError) as err:
        Nova(Unreachable()).compute_services()
    assert err.value.kind == "unreachable"
