"""Issue 11, the fence agent's inputs: nothing on stdin or argv can skip a step, hang the
agent, or make it print a secret.

- stdin lines end at "\\n" only; a line holding another control character refuses the
  whole input, before any power or Nova step (the ``\\x0b power_driver=none`` reproducer);
- a FIFO or any non-regular file as a ``*_file`` secret is refused without blocking;
- a parse error never shows a value that looks like the next option, nor any secret;
- credentials written in ``auth_url`` are redacted wherever fence_nova logs or records;
- property tests: arbitrary stdin and argv give the documented exit code and one-line
  refusals, never a traceback, and only typed, bounded values reach a handler.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from fence_compute import actions, protocol
from fence_compute.fence_nova import FENCE_NOVA
from fence_compute.protocol import (
    MAX_INTEGER,
    MAX_SECONDS,
    ExitCode,
    Options,
    Secret,
    redact_text,
    redact_url,
    run,
    url_secrets,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "S3cr-hunter2-Zq"
KEYSTONE_PASSWORD = "Ks-PaSsWoRd-9x"
TOKEN = "tok-ABCDEF123456"
AUTH_URL = f"https://admin:{KEYSTONE_PASSWORD}@127.0.0.1:9/v3?token={TOKEN}"
# A complete fence_nova configuration whose BMC and cloud are nowhere (loopback port 9).
CONFIG = (
    "cloud=overcloud\nip=127.0.0.1\nipport=9\nbmc_username=admin\n"
    f"bmc_password={SECRET}\nport=compute-1\nnodename=compute-1\n"
    "login_timeout=1\npower_timeout=1\n"
)
# Every character a stdin line or an argument may not hold (tab is allowed).
FORBIDDEN = [
    *(chr(c) for c in range(0x20) if chr(c) not in "\t\n"),
    "\x7f", *(chr(c) for c in range(0x80, 0xA0)), "\u2028", "\u2029", "\udc85",
]
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]
SLOW = settings(max_examples=150, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --------------------------------------------------------------------------
# running the agent in-process, handlers replaced by recorders


@dataclass
class Outcome:
    rc: int
    stdout: str
    messages: list[logging.LogRecord]
    calls: list[Options] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stdout + "\n" + "\n".join(r.getMessage() for r in self.messages)

    @property
    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.messages if r.levelno >= logging.ERROR]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _collected() -> Iterator[list[logging.LogRecord]]:
    root = logging.getLogger()
    handler, level = _Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def _run(stdin: str | io.TextIOBase = "", argv: Sequence[str] = (), handlers=None) -> Outcome:
    """fence_nova in-process with recording handlers: no power, Nova or cluster call."""
    calls: list[Options] = []

    def record(options: Options) -> int:
        calls.append(options)
        return ExitCode.SUCCESS

    if handlers is None:
        handlers = {a.name: record for a in FENCE_NOVA.actions}
    out = io.StringIO()
    stream = _Stdin(stdin) if isinstance(stdin, str) else stdin
    with _collected() as records:
        rc = run(FENCE_NOVA, handlers, list(argv), stream, stdout=out,
                 sleep=lambda _: None, setup_logging=None)
    return Outcome(rc, out.getvalue(), records, calls)


def _no_script(name: str, command: str) -> tuple[Secret | None, str | None]:
    return None, f"{name} is not run in this test"


@pytest.fixture(autouse=True)
def _scripts_are_never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Generated input may name a password_script: nothing random is ever executed.
    monkeypatch.setattr(protocol.secrets, "_run_secret_script", _no_script)


def _fence_nova(stdin: bytes, *args: str, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``python -m fence_compute.fence_nova`` as Pacemaker runs it, from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "fence_compute.fence_nova", *args], input=stdin,
        capture_output=True, cwd=REPO, timeout=timeout, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


# --------------------------------------------------------------------------
# 1. stdin lines end at "\n" only; other control characters refuse the whole input


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real fencing handlers, with every step that acts replaced by a recorder."""
    taken: list[str] = []

    def refuse(name: str):
        def step(*args, **kwargs):
            taken.append(name)
            raise AssertionError(f"{name} must not run")
        return step

    monkeypatch.setattr(actions, "power_driver", refuse("power"))
    monkeypatch.setattr(actions, "_nova", refuse("nova"))
    monkeypatch.setattr(actions, "mass_failure", refuse("brake"))
    monkeypatch.setattr(actions, "_record", refuse("timeline"))
    return taken


@pytest.mark.parametrize("separator", SEPARATORS)
def test_a_control_character_cannot_switch_the_power_step_off(steps, separator):
    outcome = _run(CONFIG + f"action=off{separator}power_driver=none\n",
                   handlers=actions.HANDLERS)
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == [
        f"stdin line 10 holds control character U+{ord(separator):04X};"
        " refusing the whole input"
    ]
    assert steps == []  # no brake read, no power, no Nova, nothing recorded


def test_the_printf_reproducer_end_to_end_refuses_and_records_nothing(tmp_path):
    timeline = tmp_path / "timeline.jsonl"
    done = _fence_nova(CONFIG.encode() + b"action=off\x0bpower_driver=none\n",
                       env={"OPENSTACK_HA_TIMELINE": str(timeline)})
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "stdin line 10 holds control character U+000B" in lines[0]
    assert "Traceback" not in done.stderr.decode()
    assert not timeline.exists()  # no fence_start, no power_off_confirmed
    assert SECRET.encode() not in done.stdout + done.stderr


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_in_any_line_refuses_the_input(char):
    for text in (f"action=status\nplug=c{char}1\n", f"# note {char} end\naction=status\nplug=c1\n",
                 f"action=meta{char}data\n"):
        outcome = _run(text)
        assert outcome.rc == ExitCode.FAILURE
        assert outcome.calls == [] and outcome.stdout == ""
        assert len(outcome.errors) == 1 and "refusing the whole input" in outcome.errors[0]


def test_crlf_line_ends_and_tabs_are_still_accepted():
    outcome = _run("action=status\r\ncloud=c\r\npower_driver=none\r\nplug=\tc1\t\r\ncipher=17\r\n")
    assert outcome.rc == 0, outcome.text
    assert (outcome.calls[0].plug, outcome.calls[0].cipher) == ("c1", 17)


@pytest.mark.parametrize("char", [*FORBIDDEN[:5], "\x1b", "\x85", "\u2028", "\udcff"])
def test_a_control_character_in_an_argument_refuses_the_command_line(char):
    outcome = _run(argv=["-o", "status", "-n", f"c{char}1"])
    assert outcome.rc == ExitCode.FAILURE and outcome.calls == []
    assert len(outcome.errors) == 1
    assert outcome.errors[0].startswith("argument 4 holds ")
    assert outcome.errors[0].endswith("; refusing the command line")


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x85", "\u2028"])
def test_a_secret_file_line_ends_at_newline_only(tmp_path, separator):
    path = tmp_path / "pw"
    path.write_text(f"part1{separator}part2\nsecond line\n")
    path.chmod(0o600)
    outcome = _run(f"action=monitor\ncloud=c\npower_driver=none\npassword_file={path}\n")
    assert outcome.rc == 0, outcome.text
    assert outcome.calls[0].password.reveal() == f"part1{separator}part2"


# --------------------------------------------------------------------------
# 2. a FIFO or any non-regular file as a *_file secret: refused at once


def _in_a_thread(function, timeout: float = 10.0):
    result: list = []
    worker = threading.Thread(target=lambda: result.append(function()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the agent blocked"
    return result[0]


@pytest.mark.parametrize("key", ["password_file", "bmc_password_file"])
def test_a_fifo_as_secret_file_is_refused_without_blocking(tmp_path, key):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    outcome = _in_a_thread(lambda: _run(f"action=validate-all\ncloud=c\n{key}={fifo}\n"))
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == [f"{key} '{fifo}' is not a regular file"]


def test_a_fifo_as_password_file_end_to_end_exits_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    done = _fence_nova(f"action=validate-all\ncloud=c\npassword_file={fifo}\n".encode(),
                       timeout=20)
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "password_file" in lines[0] and "not a regular file" in lines[0]


@pytest.mark.parametrize("kind", ["symlink-to-fifo", "directory", "char-device"])
def test_other_non_regular_secret_files_are_refused(tmp_path, kind):
    if kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "fifo", 0o600)
        path = tmp_path / "link"
        path.symlink_to(tmp_path / "fifo")
    elif kind == "directory":
        path = tmp_path
    else:
        path = Path("/dev/null")
    outcome = _in_a_thread(lambda: _run(f"action=validate-all\ncloud=c\npassword_file={path}\n"))
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == [f"password_file '{path}' is not a regular file"]


# --------------------------------------------------------------------------
# 3. parse errors never echo the next option, nor a secret


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "validate-all", "--login-timeout", f"-p{SECRET}"],
         "option --login-timeout needs a value, but the next argument is an option;"
         " write --login-timeout=VALUE for a value that starts with '-'"),
        (["-o", "validate-all", "--login-timeout", f"--password={SECRET}"],
         "option --login-timeout needs a value, but the next argument is an option"),
        (["-o", "validate-all", "-n", f"-p{SECRET}"],
         "option -n needs a value, but the next argument is an option; write -nVALUE"),
        (["-o", "validate-all", f"--login-timeout=-p{SECRET}"],
         "option 'login_timeout' must be a non-negative number of seconds"
         " (its value starts with '-' and is not shown)"),
        (["-o", "validate-all", "--cloud=c", "--login-timeout", SECRET, "--password", SECRET],
         "option 'login_timeout' must be a non-negative number of seconds (got '***')"),
        (["-o", f"-p{SECRET}"], "option -o needs a value"),
        (["-o", "validate-all", "--cloud=c", f"--record-only=-p{SECRET}"],
         "option 'record_only' must be a boolean (1/yes/on/true, 0/no/off/false) or"
         " 2/disabled (its value starts with '-' and is not shown)"),
        (["-o", "validate-all", "--cloud=c", f"--endpoint-type=-p{SECRET}"],
         "(its value starts with '-' and is not shown)"),
        (["-o", "validate-all", "--cloud=c", f"--bmc-password={SECRET}", "--bmc-map", SECRET],
         "option 'bmc_map': entry 1 ('***') is not host=address[:port]"),
    ],
)
def test_argv_errors_never_show_a_swallowed_option_or_a_secret(argv, message):
    outcome = _run(argv=argv)
    assert outcome.rc == ExitCode.FAILURE
    assert any(message in error for error in outcome.errors), outcome.errors
    assert SECRET not in outcome.text


def test_a_secret_read_from_a_file_is_not_shown_in_another_options_error(tmp_path):
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    outcome = _run(f"action=validate-all\ncloud=c\npassword_file={path}\nrecord_only={SECRET}\n")
    assert outcome.rc == ExitCode.FAILURE
    assert "option 'record_only' must be a boolean" in outcome.text
    assert SECRET not in outcome.text


_SECRETS = st.from_regex(r"S3cr[A-Za-z0-9]{6,14}", fullmatch=True)
_SECRET_PLACES = [
    lambda s: ["-p", s], lambda s: [f"-p{s}"], lambda s: [f"--password={s}"],
    lambda s: ["--password", s], lambda s: [f"--bmc-password={s}"], lambda s: ["--passwd", s],
]
_VALUE_FLAGS = ["--login-timeout", "--power-timeout", "--delay", "--cipher", "--ipport",
                "--retry-on", "--record-only", "--endpoint-type", "-o", "-n", "--bmc-map",
                "--power-driver", "--verbose-level", "--unfence-power", "--auth-url"]


@SLOW
@given(
    secret=_SECRETS,
    place=st.sampled_from(_SECRET_PLACES),
    before=st.lists(st.sampled_from(_VALUE_FLAGS), max_size=3),
    bad=st.lists(st.tuples(st.sampled_from(_VALUE_FLAGS),
                           st.sampled_from(["{s}", "-p{s}", "--password={s}", "x{s}", "{s}:9"])),
                 max_size=3),
    trailing=st.sampled_from([[], ["-o"], ["--login-timeout"], ["-v"]]),
)
def test_no_secret_given_on_argv_ever_reaches_the_output(secret, place, before, bad, trailing):
    argv = [*before, *place(secret)]
    for flag, value in bad:
        argv += [flag, value.format(s=secret)]
    argv += trailing
    outcome = _run(argv=argv)
    assert outcome.rc in (ExitCode.SUCCESS, ExitCode.FAILURE)
    assert secret not in outcome.text
    assert "Traceback" not in outcome.text and "unexpected error" not in outcome.text


_STDIN_KEYS = ["login_timeout", "cipher", "ipport", "record_only", "endpoint_type", "action",
               "bmc_map", "power_driver", "verbose_level", "delay", "lanplus", "plug"]


@SLOW
@given(
    secret=_SECRETS,
    secret_key=st.sampled_from(["password", "passwd", "bmc_password"]),
    bad=st.lists(st.tuples(st.sampled_from(_STDIN_KEYS),
                           st.sampled_from(["{s}", "-p{s}", "x{s}", "{s}=1", '"{s}"'])),
                 max_size=4),
)
def test_no_secret_given_on_stdin_ever_reaches_the_output(secret, secret_key, bad):
    lines = [f"{secret_key}={secret}", *(f"{k}={v.format(s=secret)}" for k, v in bad)]
    outcome = _run("\n".join(lines) + "\n")
    assert outcome.rc in (ExitCode.SUCCESS, ExitCode.FAILURE)
    assert secret not in outcome.text
    assert "Traceback" not in outcome.text and "unexpected error" not in outcome.text


# --------------------------------------------------------------------------
# 4. credentials inside auth_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://keystone:5000/v3", "https://keystone:5000/v3"),
        ("https://admin:pw@keystone:5000/v3", "https://***@keystone:5000/v3"),
        ("https://admin@keystone/v3", "https://***@keystone/v3"),
        ("https://keystone/v3?token=abc&x=1", "https://keystone/v3?***"),
        ("https://u:p@keystone/v3?token=abc#frag", "https://***@keystone/v3?***#***"),
        ("https://u:p/w?d#x@keystone/v3", "https://***@keystone/v3"),  # unencoded / ? # in pw
        ("u:p@keystone:5000/v3", "***@keystone:5000/v3"),
        ("https://[fd00::1]:5000/v3", "https://[fd00::1]:5000/v3"),
        ("https://keystone/v3?", "https://keystone/v3?"),
        ("", ""),
    ],
)
def test_redact_url_hides_user_info_query_and_fragment(url, shown):
    assert redact_url(url) == shown


_URL_PART = st.text(st.characters(blacklist_characters="@", blacklist_categories=("Cs",)),
                    min_size=1, max_size=12)


@settings(max_examples=100, deadline=None, database=None)
@given(scheme=st.sampled_from(["https://", "http://", ""]),
       user=_URL_PART, password=_URL_PART,
       host=st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
       path=st.from_regex(r"(/[a-z0-9]{0,8}){0,3}", fullmatch=True),
       query=st.one_of(st.none(), _URL_PART))
def test_redact_url_never_shows_a_credential(scheme, user, password, host, path, query):
    url = f"{scheme}{user}:{password}@{host}{path}" + (f"?{query}" if query is not None else "")
    visible = f"cannot reach {scheme}{host}{path}: refused"
    assume(password not in visible and (not query or query not in visible))
    # a credential made of the marker's own characters ("*") is "found" in the marker
    assume(password not in "***@" and (not query or query not in "?***"))
    shown = redact_url(url)
    assert f"{user}:{password}" not in shown
    assert shown.startswith(f"{scheme}***@")
    assert redact_url(shown) == shown  # idempotent
    text = f"cannot reach {url}: refused"
    clean = redact_text(text, url_secrets(url))
    assert f"{user}:{password}" not in clean and password not in clean
    if query:
        assert query not in clean


@settings(max_examples=200, deadline=None, database=None)
@given(st.text())
def test_redact_url_is_total(text):
    assert isinstance(redact_url(text), str)
    assert isinstance(redact_text(text, url_secrets(text)), str)


def test_options_repr_shows_auth_url_redacted():
    options = Options.for_agent(FENCE_NOVA, {"auth_url": AUTH_URL, "plug": "c1"})
    assert KEYSTONE_PASSWORD not in repr(options) and TOKEN not in repr(options)
    assert "https://***@127.0.0.1:9/v3?***" in repr(options)
    assert set(url_secrets(AUTH_URL)) <= set(options.secret_values())


def test_auth_url_credentials_never_reach_the_log_or_the_timeline(monkeypatch, tmp_path):
    from nova_evacuate.nova import NovaError
    from openstack_ha import timeline

    path = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(path))
    monkeypatch.setattr(actions, "mass_failure", lambda options, target: None)

    def unreachable(options, target):
        # keystoneauth's text, as NovaError carries it
        message = f"Unable to establish connection to {options.text('auth_url')}/auth/tokens"
        logging.getLogger("keystoneauth.session").debug("REQ: curl -X POST %s", AUTH_URL)
        try:
            raise ConnectionError(message)
        except ConnectionError as exc:
            logging.getLogger("keystoneauth").warning("discovery failed", exc_info=exc)
        raise NovaError("unreachable", f"find compute service: cannot reach the cloud ({message})")

    monkeypatch.setattr(actions, "_nova", unreachable)
    stdin = (f"action=off\nport=compute-1\nauth_url={AUTH_URL}\nusername=admin\n"
             f"password=pw-{SECRET}\npower_driver=none\n")
    outcome = _run(stdin, handlers=actions.HANDLERS)
    assert outcome.rc == ExitCode.FAILURE
    assert "https://***@127.0.0.1:9/v3?***/auth/tokens" in outcome.text
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["fence_start", "power_off_confirmed", "fence_failed"]
    everything = outcome.text + path.read_text() + "".join(
        logging.Formatter().format(r) for r in outcome.messages)
    for secret in (KEYSTONE_PASSWORD, TOKEN, SECRET):
        assert secret not in everything


def test_auth_url_credentials_never_reach_stderr_through_oslo_log_and_keystoneauth():
    # The real path: oslo.log's formatter (which appends the exception being handled to
    # a warning) and keystoneauth's own messages, against a loopback port nobody serves.
    stdin = (f"auth_url={AUTH_URL}\nusername=admin\npassword=pw\npower_driver=none\n"
             "action=status\nport=compute-1\nverbose=1\nlogin_timeout=1\n")
    done = _fence_nova(stdin.encode())
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "cannot reach the cloud" in err and "https://***@127.0.0.1:9/v3?***" in err
    assert KEYSTONE_PASSWORD not in err and TOKEN not in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------
# 5. properties of the stdin and argv parsers


def _check_typed_and_bounded(options: Options) -> None:
    for option in FENCE_NOVA.parameters:
        value = options.get(option.name)
        if value is None:
            continue
        if option.type == "boolean":
            assert isinstance(value, bool)
        elif option.type == "integer":
            assert type(value) is int and 0 <= value <= MAX_INTEGER
        elif option.type == "second":
            assert type(value) is float and math.isfinite(value) and 0 <= value <= MAX_SECONDS
        elif option.secret:
            assert isinstance(value, Secret)
        else:
            assert isinstance(value, str)
            assert protocol.forbidden_character(value) is None
            if option.choices:
                assert value in option.choices


def _assert_clean(outcome: Outcome) -> None:
    assert outcome.rc in (ExitCode.SUCCESS, ExitCode.FAILURE)
    assert "Traceback" not in outcome.text and "unexpected error" not in outcome.text
    for record in outcome.messages:
        assert "\n" not in record.getMessage() or record.levelno == logging.DEBUG
    if outcome.rc == ExitCode.FAILURE:
        assert outcome.calls == []
        assert outcome.errors  # a refusal always says why
    for options in outcome.calls:
        _check_typed_and_bounded(options)


@settings(max_examples=200, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
@example("action=off\x0bpower_driver=none\nplug=c1\n")
@example("action=metadata\nverbose_level=\u00b2\n")
@example("action=status\nplug=c1\ndelay=1e999\n")
def test_arbitrary_stdin_text_gives_a_documented_exit_and_typed_values(text):
    outcome = _run(text)
    _assert_clean(outcome)
    if protocol.forbidden_character(text.replace("\r\n", "\n").replace("\n", "")):
        assert outcome.rc == ExitCode.FAILURE and outcome.stdout == ""


@settings(max_examples=150, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["strict", "surrogateescape"]))
def test_arbitrary_stdin_bytes_give_a_documented_exit(data, errors):
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors)
    stream.isatty = lambda: False  # type: ignore[method-assign]
    _assert_clean(_run(stream))


_NAMES = [o.name for o in FENCE_NOVA.parameters if not o.name.endswith(("_script", "_file"))]
_VALUES = st.one_of(
    st.text(max_size=30),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "-0", "1e400", "\u0661\u0662", "1_0", "+5", " 7 ",
                     "86400", "86400.5", str(MAX_INTEGER), str(MAX_INTEGER + 1), "yes", "off"]),
)


@settings(max_examples=200, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_NAMES), _VALUES), max_size=8),
       st.sampled_from(["monitor", "status", "validate-all", "list", "off"]))
def test_stdin_key_values_are_typed_and_bounded_or_refused(pairs, action):
    lines = [f"action={action}", "cloud=c", "power_driver=none", "port=c1"]
    lines += [f"{name}={value}" for name, value in pairs if name != "action"]
    outcome = _run("\n".join(lines) + "\n")
    _assert_clean(outcome)


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("delay", "nan", None), ("delay", "inf", None), ("delay", "-1", None),
        ("delay", "1e400", None), ("delay", "86401", None), ("delay", "\u0661", None),
        ("delay", "1_0", None), ("delay", "86400", 86400.0), ("delay", "2.5", 2.5),
        ("retry_on", str(MAX_INTEGER + 1), None), ("retry_on", "\u0663", None),
        ("retry_on", "1_0", None), ("retry_on", "+3", 3), ("cipher", "17", 17),
    ],
)
def test_numbers_are_ascii_finite_non_negative_and_bounded(name, value, accepted):
    outcome = _run(f"action=monitor\ncloud=c\npower_driver=none\n{name}={value}\n")
    if accepted is None:
        assert outcome.rc == ExitCode.FAILURE
        assert len(outcome.errors) == 1 and f"option '{name}' must be" in outcome.errors[0]
    else:
        assert outcome.rc == 0, outcome.text
        assert outcome.calls[0].get(name) == accepted


def test_a_unicode_digit_in_verbose_level_does_not_break_metadata():
    outcome = _run("action=metadata\nverbose_level=\u00b2\n")
    assert outcome.rc == 0 and outcome.stdout.startswith("<?xml")


_ARGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["-o", "-n", "-p", "-v", "-vvv", "-h", "--", "-", "--plug", "--delay",
                     "--delay=nan", "--cipher=-1", "--login-timeout", "--lanplus",
                     "--disable-timeout", "monitor", "status", "validate-all", "metadata"]),
)


@settings(max_examples=200, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ARGS, min_size=1, max_size=8))
def test_arbitrary_argv_gives_a_documented_exit_and_typed_values(argv):
    outcome = _run(argv=argv)
    _assert_clean(outcome)
    if any(protocol.forbidden_character(arg) for arg in argv):
        assert outcome.rc == ExitCode.FAILURE and len(outcome.errors) == 1


def test_stdin_that_is_not_utf8_is_refused_in_one_line_even_for_metadata():
    stream = io.TextIOWrapper(io.BytesIO(b"action=metadata\n\xff\n"), encoding="utf-8")
    stream.isatty = lambda: False  # type: ignore[method-assign]
    outcome = _run(stream)
    assert outcome.rc == ExitCode.FAILURE and outcome.stdout == ""
    assert outcome.errors == ["stdin is not valid UTF-8 text; refusing the whole input"]


def test_a_failure_reason_reaches_the_log_as_one_printable_line():
    def handler(options: Options) -> int:
        raise protocol.FenceError("Nova said \x1b]52;c;aGk=\x07 no\nsecond line")

    outcome = _run("action=monitor\ncloud=c\npower_driver=none\n", handlers={"monitor": handler})
    assert outcome.rc == ExitCode.FAILURE
    assert outcome.errors == ["Nova said ?]52;c;aGk=? no second line"]


def test_the_redacting_record_factory_is_removed_after_the_handler():
    before = logging.getLogRecordFactory()
    outcome = _run(f"action=monitor\ncloud=c\npower_driver=none\nauth_url={AUTH_URL}\n")
    assert outcome.rc == 0
    assert logging.getLogRecordFactory() is before
