"""fence_kdump's message and fence_nova's kdump_wait (fence_compute/kdump.py, actions.off).

The parser is held to "only the exact valid datagram, never a traceback" by property tests;
the listener runs over real UDP on the loopback (127.0.0.1 as the host, 127.0.0.2 as some
other machine); the fencing path runs with the fakes of tests/unit/test_fence_actions.py,
its wait for the crash kernel replaced at its seam (``actions.wait_for_kdump``). The real
fence_kdump_send, from a lab node's namespace, is tests/functional/test_fence_kdump.py's.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_fence_actions import (  # noqa: F401 - world: the fixture crash_kernel asks for
    BRAKE_READS,
    HOST,
    MARKED,
    POWER_OFF,
    World,
    fence,
    world,
)

from fence_compute import actions, kdump
from fence_compute.fence_nova import FENCE_NOVA, unused_options
from fence_compute.kdump import (
    MAGIC,
    VERSION_1,
    KdumpError,
    KdumpMessage,
    KdumpSeen,
    message,
    parse_addresses,
    parse_message,
    wait_for_kdump,
)
from fence_compute.protocol import ExitCode, Options
from nova_evacuate.nova import NovaError

VALID = struct.pack("=II", 0x1B302A40, 0x1)  # as fence_kdump_send packs it

# ---------------------------------------------------------------------------- the datagram


def test_the_datagram_fence_kdump_send_sends_is_a_message() -> None:
    assert message() == VALID and len(VALID) == 8
    assert parse_message(VALID) == KdumpMessage(VERSION_1)


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=64))
@example(b"")
@example(VALID + b"\0")  # fence_kdump would read its first 8 bytes; here it is no message
@example(VALID[:7])
@example(struct.pack("=II", MAGIC, 2))
@example(struct.pack("=II", MAGIC + 1, VERSION_1))
@example(struct.pack(">II", MAGIC, VERSION_1) if struct.pack("=I", 1) != struct.pack(">I", 1)
         else struct.pack("<II", MAGIC, VERSION_1))  # the other byte order
def test_only_the_exact_valid_datagram_is_a_message(data: bytes) -> None:
    parsed = parse_message(data)  # never raises
    assert (parsed is not None) == (data == VALID)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_a_wrong_magic_or_version_is_no_message(magic: int, version: int) -> None:
    parsed = parse_message(struct.pack("=II", magic, version))
    assert (parsed is not None) == (magic == MAGIC and version == VERSION_1)


# ---------------------------------------------------------------------------- the addresses


@pytest.mark.parametrize(("text", "addresses"), [
    ("10.251.1.2", ("10.251.1.2",)),
    (" 10.251.1.2 , fd00::2 ", ("10.251.1.2", "fd00::2")),
    ("::ffff:10.251.1.2,10.251.1.2", ("10.251.1.2",)),  # one address, spelt twice
    ("FD00:0::2%eth0", ("fd00::2",)),
])
def test_kdump_address_is_a_list_of_ip_literals(text: str, addresses: tuple[str, ...]) -> None:
    assert parse_addresses(text) == addresses


@pytest.mark.parametrize("text", ["", "compute1", "10.251.1.2,", "10.251.1.256", "10.0.0.1/24"])
def test_anything_else_in_kdump_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_addresses(text)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=40))
def test_kdump_address_raises_nothing_but_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_addresses(text)


def test_a_name_resolves_as_fence_kdump_resolves_its_nodename() -> None:
    assert kdump.resolve("localhost")  # at least one of 127.0.0.1, ::1
    with pytest.raises(KdumpError, match="set kdump_address"):
        kdump.resolve("no-such-host.invalid")


# ---------------------------------------------------------------------------- the listener


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sender:
    """fence_kdump_send as a thread: ``data`` from ``source`` to 127.0.0.1:``port`` every
    ``interval`` seconds until stopped."""

    def __init__(self, port: int, data: bytes = VALID, source: str = "127.0.0.1",
                 interval: float = 0.05) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.port, self.data, self.interval = port, data, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.sock.sendto(self.data, ("127.0.0.1", self.port))
            self.stop.wait(self.interval)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def port() -> int:
    return free_udp_port()


def test_a_message_from_the_host_ends_the_wait_at_once(port: int) -> None:
    with Sender(port):
        started = time.monotonic()
        seen = wait_for_kdump(["127.0.0.1"], "127.0.0.1", port, 10)
    assert isinstance(seen, KdumpSeen) and seen.source == "127.0.0.1"
    assert time.monotonic() - started < 5 and seen.elapsed < 5


def test_a_message_from_another_address_is_ignored(port: int) -> None:
    with Sender(port, source="127.0.0.2"):
        assert wait_for_kdump(["127.0.0.1"], "127.0.0.1", port, 0.5) is None


def test_the_host_is_heard_among_other_senders(port: int) -> None:
    with Sender(port, source="127.0.0.2"), Sender(port, data=b"\0" * 8), Sender(port):
        seen = wait_for_kdump(["192.0.2.7", "127.0.0.1"], "127.0.0.1", port, 10)
    assert seen is not None and seen.source == "127.0.0.1"


@pytest.mark.parametrize("data", [
    struct.pack("=II", MAGIC ^ 1, VERSION_1), struct.pack("=II", MAGIC, 2), VALID + b"x",
    VALID[:4], b""])
def test_a_datagram_that_is_no_message_is_ignored(port: int, data: bytes) -> None:
    with Sender(port, data=data):
        assert wait_for_kdump(["127.0.0.1"], "127.0.0.1", port, 0.5) is None


def test_without_a_message_the_wait_ends_at_its_timeout(port: int) -> None:
    started = time.monotonic()
    assert wait_for_kdump(["127.0.0.1"], "127.0.0.1", port, 0.4) is None
    assert 0.4 <= time.monotonic() - started < 3


def test_a_port_taken_is_one_clear_line(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        with pytest.raises(KdumpError) as raised:
            wait_for_kdump(["127.0.0.1"], "127.0.0.1", port, 5)
    text = str(raised.value)
    assert "\n" not in text and f"port {port}" in text
    assert "another fence_kdump or fence_nova is listening" in text


def test_the_listening_address_follows_the_host_addresses_family() -> None:
    assert kdump.listen_address(["10.251.1.2"]) == "0.0.0.0"
    assert kdump.listen_address(["10.251.1.2", "fd00::2"]) == "::"


# ---------------------------------------------------------------------------- the options


def problems(caplog: pytest.LogCaptureFixture, **values: str | None) -> list[str]:
    """The configuration errors of fence_nova's BASE options with ``values``, as
    ``validate-all`` reports them (it touches nothing whatever they are)."""
    return fence("validate-all", caplog, **values).errors


def test_kdump_wait_is_off_by_default_and_within_its_bound(caplog) -> None:
    (option,) = [o for o in FENCE_NOVA.options if o.name == "kdump_wait"]
    assert option.typed_default == 0
    assert problems(caplog, kdump_wait="3600") == []
    assert problems(caplog, kdump_wait="3600.5") == [
        "option 'kdump_wait' must be at most 3600 seconds (got 3600.5)"]


@pytest.mark.parametrize("value", ["-1", "ten", "nan", "inf", "1e9", "1_0", ""])
def test_kdump_wait_is_parsed_as_strictly_as_every_number_of_seconds(crash_kernel, caplog,
                                                                      value: str) -> None:
    outcome = fence("off", caplog, kdump_wait=value)
    assert outcome.rc == ExitCode.FAILURE
    assert any("kdump_wait" in e for e in outcome.errors), outcome.errors
    assert crash_kernel["world"].log == []  # nothing touched


@pytest.mark.parametrize(("values", "problem"), [
    ({"kdump_port": "0"}, "option 'kdump_port' must be between 1 and 65535 (got 0)"),
    ({"kdump_port": "65536"}, "option 'kdump_port' must be between 1 and 65535 (got 65536)"),
    ({"kdump_address": "compute1"}, "option 'kdump_address' 'compute1' is not an IP address"),
    ({"kdump_address": "10.0.0.1", "ip": None, "bmc_map": "compute1=192.0.2.11"},
     "option 'kdump_address' holds one host's addresses"),
    ({"kdump_wait": "30", "power_driver": "none"}, "option 'kdump_wait' needs a device that"
     " powers the host off; with power_driver=none"),
    ({"kdump_wait": "30", "record_only": "1"}, "option 'kdump_wait' needs a device that powers"
     " the host off; with record_only"),
])
def test_kdump_options_that_cannot_work_are_refused(caplog, values: dict[str, str | None],
                                                   problem: str) -> None:
    found = problems(caplog, **values)
    assert len(found) == 1 and found[0].startswith(problem), found


def test_kdump_wait_0_leaves_nothing_to_refuse_without_a_power_driver(caplog) -> None:
    assert problems(caplog, kdump_wait="0", power_driver="none") == []


def test_the_kdump_port_and_addresses_without_a_wait_are_said_unused() -> None:
    options = Options.for_agent(FENCE_NOVA, {"plug": HOST, "cloud": "lab",
                                             "kdump_port": 7411, "kdump_address": "10.0.0.1"})
    why = "kdump_wait is 0: off waits for no fence_kdump message"
    assert {k: v for k, v in unused_options(options).items() if k.startswith("kdump")} == {
        "kdump_port": why, "kdump_address": why}


def test_the_help_of_kdump_wait_names_the_deadline_it_must_fit() -> None:
    (option,) = [o for o in FENCE_NOVA.options if o.name == "kdump_wait"]
    assert ("pcmk_off_timeout must exceed kdump_wait + login_timeout + power_wait +"
            " power_timeout + 30 s") in option.longdesc


# ---------------------------------------------------------------------------- off with kdump_wait


@pytest.fixture
def crash_kernel(request: pytest.FixtureRequest,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """test_fence_actions' world (``world``), and the wait for the host's message faked at its
    seam. Set ``said`` to the KdumpSeen the wait returns (None: silence) or ``error`` to the
    KdumpError it raises; ``asked`` holds each wait's arguments, ``resolved`` each name."""
    fakes: World = request.getfixturevalue("world")
    state: dict[str, Any] = {"said": KdumpSeen("10.251.1.2", 1.5), "error": None, "asked": [],
                             "resolved": [], "world": fakes}

    def wait(addresses, listen_address, port, timeout, **kwargs):
        fakes.log.append("kdump:wait")
        state["asked"].append((tuple(addresses), listen_address, port, timeout))
        if state["error"] is not None:
            raise state["error"]
        return state["said"]

    def resolve(name: str) -> tuple[str, ...]:
        state["resolved"].append(name)
        return ("10.251.1.2",)

    monkeypatch.setattr(actions, "wait_for_kdump", wait)
    monkeypatch.setattr(actions, "resolve", resolve)
    yield state


def test_a_host_dumping_is_not_powered_off_but_is_recovered(caplog, crash_kernel):
    fakes = crash_kernel["world"]
    outcome = fence("off", caplog, kdump_wait="20", kdump_address="10.251.1.2")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    # no power action at all: the message stands in for the power-off's confirmation, and
    # Nova's steps follow exactly as after one
    assert fakes.log == [*BRAKE_READS, "timeline:fence_start", "kdump:wait",
                         "timeline:kdump_detected", *MARKED, "pacemaker:hold_connection compute1"]
    assert fakes.bmc.state == "on"
    assert fakes.fields("kdump_detected") == {"source": "10.251.1.2", "waited": "1.5s"}
    assert crash_kernel["asked"] == [(("10.251.1.2",), "0.0.0.0", 7410, 20.0)]
    assert "not powering it off" in caplog.text


def test_a_silent_host_is_powered_off_as_usual(caplog, crash_kernel):
    fakes = crash_kernel["world"]
    crash_kernel["said"] = None
    outcome = fence("off", caplog, kdump_wait="5", kdump_port="7411", kdump_address="10.251.1.2")
    assert outcome.rc == ExitCode.SUCCESS, outcome.errors
    assert fakes.log == [*BRAKE_READS, "timeline:fence_start", "kdump:wait", *POWER_OFF,
                         "timeline:power_off_confirmed", *MARKED,
                         "pacemaker:hold_connection compute1"]
    assert fakes.bmc.state == "off"
    assert crash_kernel["asked"][0][2:] == (7411, 5.0)


def test_without_kdump_address_the_host_name_is_resolved(caplog, crash_kernel):
    assert fence("off", caplog, kdump_wait="5").rc == ExitCode.SUCCESS
    assert crash_kernel["resolved"] == [HOST]


def test_a_wait_that_cannot_be_made_fails_the_fence_and_touches_nothing(caplog, crash_kernel):
    fakes = crash_kernel["world"]
    crash_kernel["error"] = KdumpError("cannot listen for fence_kdump messages on UDP 0.0.0.0"
                                       " port 7410: Address already in use")
    outcome = fence("off", caplog, kdump_wait="5", kdump_address="10.251.1.2")
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute1: cannot listen for fence_kdump messages on UDP 0.0.0.0"
                              " port 7410: Address already in use"]
    assert fakes.log == [*BRAKE_READS, "timeline:fence_start", "kdump:wait",
                         "timeline:fence_failed"]
    assert fakes.bmc.state == "on" and not fakes.nova.service.forced_down


def test_the_brake_comes_before_the_wait(caplog, crash_kernel):
    fakes = crash_kernel["world"]
    fakes.down = {HOST: True, "compute2": True, "compute3": False}
    assert fence("off", caplog, kdump_wait="5").rc == ExitCode.FAILURE
    assert crash_kernel["asked"] == []


def test_the_power_deadline_starts_after_the_wait(caplog, crash_kernel, monkeypatch):
    crash_kernel["said"] = None
    deadlines: list[float] = []
    real_power = actions._power

    def power(options, target, state):
        deadlines.append(target.power_deadline - time.monotonic())
        return real_power(options, target, state)

    monkeypatch.setattr(actions, "_power", power)
    assert fence("off", caplog, kdump_wait="100", kdump_address="10.251.1.2",
                 login_timeout="5", power_timeout="20").rc == ExitCode.SUCCESS
    # the faked wait returned at once: all of it is still ahead, with the power's own budget
    assert 100 + 25 - 5 < deadlines[0] <= 100 + 25


def test_nova_unreachable_after_a_kdump_message_says_what_the_host_does(caplog, crash_kernel):
    fakes = crash_kernel["world"]
    fakes.nova.failures["force_down"] = NovaError("unreachable", "force down service: HTTP 503")
    outcome = fence("off", caplog, kdump_wait="5", kdump_address="10.251.1.2")
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["compute1 runs its crash kernel, but Nova: force down service:"
                              " HTTP 503"]
    assert fakes.bmc.state == "on"
