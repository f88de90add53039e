"""The fence-agents protocol layer: parsing, validation, secrets, metadata, dispatch.

Every test runs ``protocol.run`` in-process against a small agent declared
here, and asserts what an operator or Pacemaker sees: the exit code, the
parsed value handed to the handler, the log line, the XML.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fence_compute import protocol
from fence_compute.protocol import (
    STANDARD_OPTIONS,
    ExitCode,
    FenceAction,
    FenceAgent,
    FenceError,
    Option,
    Options,
    Secret,
    metadata_xml,
    run,
)

SECRET = "hunter2-Sup3rSecret"
METADATA_RNG = Path("/usr/share/cluster/relaxng/metadata.rng")

STD = STANDARD_OPTIONS


def _no_empty_token(options: Options) -> list[str]:
    if options.text("note") == "refuse-me":
        return ["option 'note' may not be refuse-me"]
    return []


AGENT = FenceAgent(
    name="fence_test",
    shortdesc='Test agent <with> "markup" & more',
    longdesc="Long <description> & 'quotes'",
    options=(
        STD["plug"],
        STD["username"],
        STD["password"],
        STD["ip"],
        Option("power_driver", "Driver", default="ipmi", choices=("ipmi", "none")),
        Option("lanplus", "Use lanplus", "boolean", default=True),
        Option("cipher", "Cipher suite", "integer", default=3),
        Option("user_domain", "User domain", default="Default", deprecated_names=("user-domain",)),
        Option("note", 'Desc with <angle> & "quotes"', default='a<b&"c"'),
        Option("token", "API token", secret=True, default="token-default-value"),
        STD["delay"],
        STD["power_timeout"],
        STD["disable_timeout"],
        STD["quiet"],
        STD["verbose"],
        STD["verbose_level"],
        STD["debug_file"],
    ),
    actions=(
        FenceAction("on", automatic=True),
        FenceAction("off"),
        FenceAction("reboot"),
        FenceAction("status"),
        FenceAction("monitor"),
        FenceAction("list"),
        FenceAction("metadata"),
        FenceAction("validate-all"),
    ),
    default_action="off",
    check=_no_empty_token,
)


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    log: str
    calls: list[Options] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    logging_setup: list[tuple[tuple, dict]] = field(default_factory=list)

    @property
    def options(self) -> Options:
        assert len(self.calls) == 1, self.log
        return self.calls[0]

    def everything(self) -> str:
        return "\n".join((self.stdout, self.stderr, self.log))


class FakeStdin(io.StringIO):
    def __init__(self, text: str = "", *, tty: bool = False, explode: bool = False):
        super().__init__(text)
        self._tty = tty
        self._explode = explode

    def isatty(self) -> bool:
        return self._tty

    def read(self, *args):
        if self._explode:
            raise AssertionError("stdin must not be read")
        return super().read(*args)


@pytest.fixture
def invoke(capsys, caplog):
    caplog.set_level(logging.DEBUG)

    def _invoke(stdin="", argv=(), *, agent=AGENT, handlers=None, stdin_obj=None) -> Outcome:
        outcome = Outcome(rc=-1, stdout="", stderr="", log="")

        def record(options: Options) -> int:
            outcome.calls.append(options)
            return ExitCode.SUCCESS

        if handlers is None:
            handlers = {a.name: record for a in agent.actions}
        caplog.clear()
        outcome.rc = run(
            agent,
            handlers,
            list(argv),
            stdin_obj if stdin_obj is not None else FakeStdin(stdin),
            sleep=outcome.sleeps.append,
            setup_logging=lambda *a, **k: outcome.logging_setup.append((a, k)),
        )
        captured = capsys.readouterr()
        outcome.stdout, outcome.stderr = captured.out, captured.err
        outcome.log = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
        return outcome

    return _invoke


# --------------------------------------------------------------------------
# stdin


@pytest.mark.parametrize(
    ("stdin", "name", "expected"),
    [
        ("plug=c1", "plug", "c1"),
        ("port=c1", "plug", "c1"),
        ("login=admin", "username", "admin"),
        ("ipaddr=10.0.0.1", "ip", "10.0.0.1"),
        ("user-domain=Corp", "user_domain", "Corp"),
        ("user_domain=Corp", "user_domain", "Corp"),
        ("power-timeout=7", "power_timeout", 7.0),
        ("power_timeout=7.5", "power_timeout", 7.5),
        ("  plug =  c1  ", "plug", "c1"),
        ('plug="c1"', "plug", "c1"),
        ("lanplus=off", "lanplus", False),
        ("lanplus=YES", "lanplus", True),
        ("lanplus=0", "lanplus", False),
        ("lanplus=True", "lanplus", True),
        ("cipher=17", "cipher", 17),
        ("power_driver=NONE", "power_driver", "none"),
        ("debug=/tmp/x.log", "debug_file", "/tmp/x.log"),
    ],
)
def test_stdin_key_value_is_parsed_through_aliases_and_spellings(invoke, stdin, name, expected):
    outcome = invoke(f"action=monitor\n{stdin}\n")
    assert outcome.rc == 0, outcome.log
    assert outcome.options.get(name) == expected


def test_defaults_fill_options_that_were_not_given(invoke):
    options = invoke("action=monitor\n").options
    assert (options.lanplus, options.cipher, options.power_timeout) == (True, 3, 20.0)
    assert options.plug is None
    assert options.is_set("lanplus") is False


def test_comments_and_blank_lines_are_skipped(invoke):
    outcome = invoke("# a comment\n\n   \naction=status\n  # port=other\nplug=c1\n")
    assert outcome.rc == 0
    assert outcome.options.plug == "c1"


def test_nodename_is_the_target_when_no_plug_or_port_is_given(invoke):
    outcome = invoke("action=off\nnodename=compute-3\n")
    assert outcome.rc == 0
    assert outcome.options.plug == "compute-3"


def test_port_wins_over_nodename_when_pacemaker_sends_both(invoke):
    outcome = invoke("nodename=compute-3\naction=off\nport=bmc-3\n")
    assert outcome.options.plug == "bmc-3"
    assert outcome.options.nodename == "compute-3"


def test_malformed_line_fails_without_echoing_it(invoke):
    outcome = invoke(f"action=off\nplug=c1\n{SECRET}\n")
    assert outcome.rc == 1
    assert "stdin line 3: expected key=value" in outcome.log
    assert SECRET not in outcome.everything()
    assert outcome.calls == []


def test_unknown_option_is_warned_about_by_name_and_ignored(invoke, caplog):
    outcome = invoke(f"action=status\nplug=c1\nfoo_bar={SECRET}\n")
    assert outcome.rc == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Ignoring unknown option 'foo_bar'"]
    assert SECRET not in outcome.everything()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lanplus=maybe", "option 'lanplus' must be a boolean"),
        ("lanplus=", "option 'lanplus' must be a boolean"),
        ("cipher=three", "option 'cipher' must be a non-negative integer (got 'three')"),
        ("cipher=-1", "option 'cipher' must be a non-negative integer"),
        ("power_timeout=20s", "option 'power_timeout' must be a non-negative number of seconds"),
        ("delay=nan", "option 'delay' must be a non-negative number of seconds"),
        ("power_driver=redfish", "option 'power_driver' must be one of: ipmi, none"),
    ],
)
def test_a_bad_value_stops_the_agent_naming_the_option(invoke, line, message):
    outcome = invoke(f"action=off\nplug=c1\n{line}\n")
    assert outcome.rc == 1
    assert message in outcome.log
    assert outcome.calls == []


def test_two_spellings_of_one_option_with_different_values_are_refused(invoke):
    outcome = invoke("action=off\nport=c1\nplug=c2\n")
    assert outcome.rc == 1
    assert "option 'plug' is given more than once with different values" in outcome.log


def test_two_spellings_with_the_same_value_are_accepted(invoke):
    outcome = invoke("action=off\nport=c1\nplug=c1\n")
    assert outcome.rc == 0
    assert outcome.options.plug == "c1"


@pytest.mark.parametrize("action", ["off", "on", "status", "reboot"])
def test_plug_is_required_for_actions_on_a_target(invoke, action):
    outcome = invoke(f"action={action}\n")
    assert outcome.rc == 1
    assert f"option 'plug' is required for action '{action}'" in outcome.log


@pytest.mark.parametrize("action", ["monitor", "list", "validate-all", "metadata"])
def test_plug_is_not_required_for_device_level_actions(invoke, action):
    assert invoke(f"action={action}\n").rc == 0


def test_unknown_action_fails_with_one_clear_line(invoke):
    outcome = invoke("action=dance\nplug=c1\n")
    assert outcome.rc == 1
    assert "Unrecognised action 'dance'; fence_test accepts: on, off," in outcome.log
    assert outcome.calls == []


def test_action_is_case_insensitive_and_defaults_to_the_declared_one(invoke):
    assert invoke("action=STATUS\nplug=c1\n").options.action == "status"
    assert invoke("plug=c1\n").options.action == "off"


def test_tty_stdin_is_not_read_and_counts_as_empty(invoke):
    outcome = invoke(stdin_obj=FakeStdin(tty=True, explode=True))
    assert outcome.rc == 1  # default action off, and no plug
    assert "option 'plug' is required for action 'off'" in outcome.log


def test_oversized_stdin_is_refused(invoke):
    outcome = invoke("plug=c1\n" + "#" * (protocol.MAX_STDIN_BYTES + 1))
    assert outcome.rc == 1
    assert "stdin is larger than" in outcome.log


# --------------------------------------------------------------------------
# argv


@pytest.mark.parametrize(
    ("argv", "name", "expected"),
    [
        (["-o", "status", "-n", "c1"], "plug", "c1"),
        (["--action=status", "--plug=c1"], "plug", "c1"),
        (["--action", "status", "--plug", "c1"], "plug", "c1"),
        (["-ostatus", "-nc1"], "plug", "c1"),
        (["-o", "status", "--port", "c1"], "plug", "c1"),
        (["-o", "status", "-n", "c1", "--power-timeout", "9"], "power_timeout", 9.0),
        (["-o", "status", "-n", "c1", "--power_timeout=9"], "power_timeout", 9.0),
        (["-o", "status", "-n", "c1", "--lanplus=false"], "lanplus", False),
        (["-o", "status", "-n", "c1", "--lanplus"], "lanplus", True),
        (["-o", "status", "-n", "c1", "-vvv"], "verbose_level", 3),
        (["-o", "status", "-n", "c1", "-v"], "verbose", True),
        (["-o", "status", "-n", "c1", "-a", "10.0.0.9"], "ip", "10.0.0.9"),
        (["-o", "status", "-n", "c1", "--user-domain", "Corp"], "user_domain", "Corp"),
        (["-o", "status", "-n", "c1", "--disable-timeout", "false"], "disable_timeout", False),
        (["-o", "status", "-n", "c1", "--disable-timeout=yes"], "disable_timeout", True),
    ],
)
def test_argv_flags_are_parsed_from_the_same_table(invoke, argv, name, expected):
    outcome = invoke(argv=argv)
    assert outcome.rc == 0, outcome.log
    assert outcome.options.get(name) == expected


def test_stdin_is_not_read_when_argv_has_options(invoke):
    outcome = invoke(argv=["-o", "status", "-n", "c1"], stdin_obj=FakeStdin(explode=True))
    assert outcome.rc == 0
    assert outcome.options.plug == "c1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["-Z"], "unknown option '-Z'"),
        (["-o", "status", "-n"], "option -n needs a value"),
        (["-o", "status", "-n", "c1", "--disable-timeout"], "option --disable-timeout needs"),
        (["-o", "status", "-n", "c1", SECRET], "unexpected argument at position 5"),
        (["-o", "status", "-n", "c1", "--cipher=x"], "option 'cipher' must be a non-negative"),
    ],
)
def test_bad_argv_fails_naming_the_problem(invoke, argv, message):
    outcome = invoke(argv=argv)
    assert outcome.rc == 1
    assert message in outcome.log
    assert SECRET not in outcome.everything()


def test_metadata_via_argv_prints_xml(invoke):
    outcome = invoke(argv=["-o", "metadata"])
    assert outcome.rc == 0
    assert _xml(outcome.stdout).get("name") == "fence_test"


def test_help_prints_usage_with_every_option(invoke):
    outcome = invoke(argv=["-h"])
    assert outcome.rc == 0
    assert outcome.stdout.startswith("fence_test: ")
    for option in AGENT.parameters:
        assert option.getopt_mixed in outcome.stdout
    assert "token-default-value" not in outcome.stdout


def test_version_prints_a_version_line(invoke):
    outcome = invoke(argv=["-V"])
    assert outcome.rc == 0
    assert outcome.stdout.startswith("fence_test ")


# --------------------------------------------------------------------------
# metadata


def test_metadata_is_printed_without_validating_anything_else(invoke):
    outcome = invoke("action=metadata\nnot a key value line\ncipher=x\nfoo=1\n")
    assert outcome.rc == 0
    assert outcome.log == ""
    assert _xml(outcome.stdout).tag == "resource-agent"


def test_ocf_spelling_meta_data_is_accepted(invoke):
    outcome = invoke("action=meta-data\n")
    assert outcome.rc == 0
    assert outcome.stdout.startswith('<?xml version="1.0" ?>\n<resource-agent name="fence_test"')


def _xml(text: str) -> ET.Element:
    return ET.fromstring(text)


def _parameters(xml: str) -> dict[str, ET.Element]:
    root = _xml(xml)
    return {p.get("name"): p for p in root.find("parameters")}


def test_metadata_is_well_formed_even_with_markup_in_descriptions():
    root = _xml(metadata_xml(AGENT))
    assert root.get("shortdesc") == 'Test agent <with> "markup" & more'
    assert root.find("longdesc").text == "Long <description> & 'quotes'"
    note = _parameters(metadata_xml(AGENT))["note"]
    assert note.find("shortdesc").text == 'Desc with <angle> & "quotes"'
    assert note.find("content").get("default") == 'a<b&"c"'


def test_metadata_has_fence_agents_layout():
    xml = metadata_xml(AGENT)
    assert xml.startswith('<?xml version="1.0" ?>\n<resource-agent name="fence_test" shortdesc=')
    assert (
        '\t<parameter name="cipher" unique="0" required="0">\n'
        '\t\t<getopt mixed="--cipher=[number]" />\n'
        '\t\t<content type="integer" default="3"  />\n'
        '\t\t<shortdesc lang="en">Cipher suite</shortdesc>\n'
        "\t</parameter>\n"
    ) in xml
    assert (
        '\t\t<content type="select" default="ipmi"  >\n'
        '\t\t\t<option value="ipmi" />\n'
        '\t\t\t<option value="none" />\n'
        "\t\t</content>\n"
    ) in xml
    assert '<vendor-url></vendor-url>\n<parameters>\n\t<parameter name="action"' in xml


@pytest.mark.parametrize(
    ("new", "old"),
    [
        ("plug", "port"),
        ("username", "login"),
        ("password", "passwd"),
        ("password_script", "passwd_script"),
        ("ip", "ipaddr"),
        ("user_domain", "user-domain"),
        ("debug_file", "debug"),
    ],
)
def test_metadata_lists_deprecated_and_obsoletes_pairs(new, old):
    params = _parameters(metadata_xml(AGENT))
    assert params[new].get("obsoletes") == old
    assert params[new].get("deprecated") is None
    assert params[old].get("deprecated") == "1"
    assert params[old].get("required") == params[new].get("required")
    assert params[old].find("getopt").get("mixed") == params[new].find("getopt").get("mixed")


def test_metadata_never_prints_a_secret_default():
    xml = metadata_xml(AGENT)
    assert "token-default-value" not in xml
    assert _parameters(xml)["token"].find("content").get("default") is None


def test_metadata_declares_secret_companions():
    params = _parameters(metadata_xml(AGENT))
    assert params["password_script"].find("getopt").get("mixed") == (
        "-S, --password-script=[script]"
    )
    assert {"password_file", "token_script", "token_file"} <= params.keys()


def test_an_option_kept_for_compatibility_only_says_so_in_metadata_and_help():
    kept = Option("shell_timeout", "Wait for a prompt", "second", default=3,
                  compat_only="this agent opens no shell")
    agent = replace(AGENT, options=(*AGENT.options, kept))
    shortdesc = _parameters(metadata_xml(agent))["shell_timeout"].find("shortdesc").text
    assert shortdesc == "Wait for a prompt" + protocol.COMPAT_ONLY_MARK
    assert _parameters(metadata_xml(agent))["cipher"].find("shortdesc").text == "Cipher suite"
    help_text = " ".join(protocol.usage_text(agent).split())
    assert ("Wait for a prompt (compatibility only: no effect) Accepted for compatibility only;"
            " it has no effect: this agent opens no shell. Default: 3.") in help_text


def test_an_option_without_effect_cannot_be_required():
    with pytest.raises(ValueError, match="without effect cannot be required"):
        Option("plug_separator", "Separator", required=True, compat_only="one host per action")


def test_metadata_actions_mark_on_automatic():
    root = _xml(metadata_xml(AGENT))
    actions = {a.get("name"): a.get("automatic") for a in root.find("actions")}
    assert actions["on"] == "1"
    assert actions["off"] is None
    assert list(actions) == [a.name for a in AGENT.actions]
    assert _parameters(metadata_xml(AGENT))["action"].find("content").get("default") == "off"


@pytest.mark.skipif(
    not (METADATA_RNG.exists() and shutil.which("xmllint")),
    reason="fence-agents' metadata.rng or xmllint is not installed",
)
def test_metadata_validates_against_fence_agents_schema(tmp_path):
    doc = tmp_path / "fence_test.xml"
    doc.write_text(metadata_xml(AGENT))
    done = subprocess.run(
        ["xmllint", "--noout", "--relaxng", str(METADATA_RNG), str(doc)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------
# secrets


def _secret_file(tmp_path: Path, mode: int, text: str = SECRET + "\nsecond line\n") -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_password_given_directly_is_held_as_a_secret(invoke):
    options = invoke(f"action=monitor\npassword={SECRET}\n").options
    assert isinstance(options.password, Secret)
    assert options.password.reveal() == SECRET
    assert SECRET not in f"{options.password} {options.password!r} {options!r}"


@pytest.mark.parametrize("key", ["password_script", "passwd_script", "password-script"])
def test_password_script_gives_the_first_line_of_its_output(invoke, key):
    options = invoke(f"action=monitor\n{key}=/bin/echo {SECRET}\n").options
    assert options.secret("password").reveal() == SECRET


def test_password_script_is_split_like_a_shell_line_but_not_run_by_a_shell(invoke):
    options = invoke("action=monitor\npassword_script=/bin/echo 'a b' $HOME\n").options
    assert options.password.reveal() == "a b $HOME"


def test_password_file_gives_its_first_line(invoke, tmp_path):
    path = _secret_file(tmp_path, 0o600)
    options = invoke(f"action=monitor\npassword_file={path}\n").options
    assert options.password.reveal() == SECRET


def test_secret_option_declared_by_the_agent_gets_companions(invoke, tmp_path):
    path = _secret_file(tmp_path, 0o640)
    options = invoke(f"action=monitor\ntoken_file={path}\n").options
    assert options.token.reveal() == SECRET


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("password_file={world}", "is readable by every user (mode 0644); refusing it"),
        ("password_file={missing}", "cannot be opened: No such file or directory"),
        ("password_file={empty}", "password_file is empty"),
        (f"password_script=/bin/sh -c 'echo {SECRET}; echo {SECRET} >&2; exit 3'", "exit status 3"),
        ("password_script=/nonexistent/get-pass", "password_script could not be started"),
        ("password_script=/bin/true", "password_script printed nothing"),
        ("password_script=/bin/echo 'unbalanced", "cannot be split into words"),
        (
            f"password={SECRET}\npassword_file={{secure}}",
            "give only one of password, password_file",
        ),
    ],
)
def test_secret_source_problems_fail_without_revealing_the_secret(invoke, tmp_path, line, message):
    paths = {
        "world": _secret_file(tmp_path, 0o644),
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "secure": tmp_path / "secure",
    }
    paths["empty"].write_text("\n")
    paths["empty"].chmod(0o600)
    paths["secure"].write_text(SECRET)
    paths["secure"].chmod(0o600)
    outcome = invoke(f"action=validate-all\n{line.format(**paths)}\n")
    assert outcome.rc == 1
    assert message in outcome.log
    assert SECRET not in outcome.everything()
    assert "/bin/sh" not in outcome.log  # the command line may embed the secret: never shown


def test_password_script_that_hangs_is_killed_after_the_timeout(invoke, monkeypatch):
    monkeypatch.setattr(protocol.secrets, "SECRET_SCRIPT_TIMEOUT", 0.3)
    outcome = invoke("action=monitor\npassword_script=/bin/sleep 30\n")
    assert outcome.rc == 1
    assert "password_script did not finish within 0.3 s and was killed" in outcome.log


def test_secret_on_the_command_line_is_warned_about(invoke):
    outcome = invoke(argv=["-o", "monitor", "--password", SECRET])
    assert outcome.rc == 0
    assert "--password on the command line is visible to every user" in outcome.log
    assert SECRET not in outcome.everything()


def test_secret_option_cannot_be_declared_required():
    with pytest.raises(ValueError, match="secret option cannot be required"):
        Option("token", "Token", secret=True, required=True)


# --------------------------------------------------------------------------
# dispatch


def test_handler_receives_the_parsed_options_and_its_code_is_the_exit_code(invoke):
    outcome = invoke("action=status\nplug=c1\n", handlers={"status": lambda o: ExitCode.STATUS_OFF})
    assert outcome.rc == 2


def test_fence_error_is_one_log_line_and_exit_1(invoke, caplog):
    def handler(options):
        raise FenceError("BMC 10.0.0.1 did not answer")

    outcome = invoke("action=off\nplug=c1\n", handlers={"off": handler})
    assert outcome.rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["BMC 10.0.0.1 did not answer"]


def test_unexpected_exception_is_one_line_without_traceback(invoke, caplog):
    caplog.set_level(logging.INFO)

    def handler(options):
        raise ValueError("boom\nsecond line")

    outcome = invoke("action=off\nplug=c1\n", handlers={"off": handler})
    assert outcome.rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["unexpected error: ValueError: boom second line"]
    assert "Traceback" not in outcome.everything()


def test_traceback_is_logged_at_debug_level_with_secrets_redacted(invoke, caplog):
    def handler(options):
        raise RuntimeError(f"login refused for password {SECRET}")

    outcome = invoke(f"action=off\nplug=c1\npassword={SECRET}\n", handlers={"off": handler})
    assert outcome.rc == 1
    assert "unexpected error: RuntimeError: login refused for password ***" in outcome.log
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("Traceback" in m for m in debug)
    assert SECRET not in outcome.everything()


def test_fence_error_text_is_redacted_too(invoke):
    def handler(options):
        raise FenceError(f"keystone said no to {options.password.reveal()}")

    outcome = invoke(f"action=off\nplug=c1\npassword={SECRET}\n", handlers={"off": handler})
    assert outcome.rc == 1
    assert "keystone said no to ***" in outcome.log
    assert SECRET not in outcome.everything()


@pytest.mark.parametrize("result", [None, True, "0"])
def test_a_handler_that_returns_no_exit_code_fails(invoke, result):
    outcome = invoke("action=off\nplug=c1\n", handlers={"off": lambda o: result})
    assert outcome.rc == 1
    assert "not an exit code" in outcome.log


def test_declared_action_without_handler_fails(invoke):
    outcome = invoke("action=status\nplug=c1\n", handlers={})
    assert outcome.rc == 1
    assert "action 'status' has no implementation" in outcome.log


@pytest.mark.parametrize(
    ("action", "sleeps"),
    [("off", [4.0]), ("reboot", [4.0]), ("on", []), ("status", []), ("monitor", [])],
)
def test_delay_is_waited_before_off_and_reboot_only(invoke, action, sleeps):
    outcome = invoke(f"action={action}\nplug=c1\ndelay=4\n")
    assert outcome.rc == 0
    assert outcome.sleeps == sleeps


def test_validate_all_succeeds_on_a_valid_config_without_calling_a_handler(invoke):
    outcome = invoke("action=validate-all\n", handlers={})
    assert outcome.rc == 0


def test_validate_all_reports_the_agents_own_check(invoke):
    outcome = invoke("action=validate-all\nnote=refuse-me\n")
    assert outcome.rc == 1
    assert "option 'note' may not be refuse-me" in outcome.log


def test_the_agents_check_also_guards_every_other_action(invoke):
    outcome = invoke("action=off\nplug=c1\nnote=refuse-me\n")
    assert outcome.rc == 1
    assert outcome.calls == []


@pytest.mark.parametrize(
    ("stdin", "debug", "use_stderr"),
    [
        ("action=monitor\n", False, True),
        ("action=monitor\nverbose=1\n", True, True),
        ("action=monitor\nverbose_level=2\n", True, True),
        ("action=monitor\nquiet=yes\n", False, False),
    ],
)
def test_logging_is_set_up_for_the_agent_with_syslog(invoke, stdin, debug, use_stderr):
    outcome = invoke(stdin)
    assert outcome.logging_setup == [
        (("fence_test",), {"debug": debug, "use_stderr": use_stderr, "use_syslog": True})
    ]


def test_verbose_on_stdin_means_verbose_level_1(invoke):
    assert invoke("action=monitor\nverbose=1\n").options.verbose_level == 1


def test_disable_timeout_defaults_to_true_under_pacemaker_fenced(invoke, monkeypatch):
    assert invoke("action=monitor\n").options.disable_timeout is False
    monkeypatch.setenv("PCMK_service", "pacemaker-fenced")
    assert invoke("action=monitor\n").options.disable_timeout is True
    assert invoke("action=monitor\ndisable_timeout=false\n").options.disable_timeout is False


# --------------------------------------------------------------------------
# declarations and the Options object


def test_options_are_read_only_and_refuse_undeclared_names(invoke):
    options = invoke("action=monitor\n").options
    with pytest.raises(AttributeError):
        options.plug = "c2"
    with pytest.raises(AttributeError, match="no option named 'plgu'"):
        _ = options.plgu
    with pytest.raises(KeyError):
        options.get("plgu")
    with pytest.raises(TypeError):
        options.number("plug")


def test_options_for_agent_builds_typed_options_for_handler_tests():
    options = Options.for_agent(AGENT, {"plug": "c1", "password": SECRET})
    assert options.plug == "c1"
    assert options.power_timeout == 20.0
    assert isinstance(options.password, Secret)
    assert SECRET not in repr(options)


def test_exit_codes_are_fence_agents_ones():
    assert (ExitCode.SUCCESS, ExitCode.FAILURE, ExitCode.STATUS_OFF) == (0, 1, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"options": (STD["plug"], Option("pin", "Pin", getopt="-n, --pin=[x]"))}, "short flag -n"),
        ({"options": (STD["plug"], Option("port", "Port"))}, "'port' names both"),
        ({"default_action": "dance"}, "default action 'dance' not declared"),
        ({"options": (Option("action", "Action"),)}, "provided by protocol"),
        ({"options": (Option("get", "Get"),)}, "is an Options method"),
        ({"actions": (FenceAction("off"), FenceAction("off"))}, "declared twice"),
    ],
)
def test_an_inconsistent_declaration_is_refused_at_import_time(change, message):
    with pytest.raises(ValueError, match=message):
        replace(AGENT, **change)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "integer", "default": "x"}, "must be a non-negative integer"),
        ({"default": "c", "choices": ("a", "b")}, "must be one of"),
        ({"getopt": "-x, --other=[y]"}, "must look like"),
        ({"type": "float"}, "unknown type"),
    ],
)
def test_an_inconsistent_option_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Option("thing", "Thing", **kwargs)


# An agent with debug_file only, run as a child process: logging set up for real, and the
# test's own handlers left intact.
_DEBUG_FILE_AGENT = (
    "import sys\n"
    "from fence_compute.protocol import *\n"
    "agent = FenceAgent('fence_t', 'Test', 'Test.', (STANDARD_OPTIONS['debug_file'],),\n"
    "                   (FenceAction('monitor'), FenceAction('metadata')), 'monitor')\n"
    "sys.exit(run(agent, {'monitor': lambda o: 0}, [], sys.stdin))\n"
)


def run_debug_file_agent(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _DEBUG_FILE_AGENT], input=stdin,
                          capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], check=False)


def test_debug_file_receives_debug_records(tmp_path):
    log = tmp_path / "debug.log"
    done = run_debug_file_agent(f"action=monitor\ndebug_file={log}\nfoo=1\n")
    assert done.returncode == 0, done.stderr
    assert "Ignoring unknown option 'foo'" in log.read_text()


def test_a_debug_file_planted_as_a_link_is_not_followed(tmp_path, planted_link):
    """Root appends to debug_file: a symbolic link there must not lead it to another file."""
    victim = planted_link("debug.log", "untouched\n")
    done = run_debug_file_agent(f"action=monitor\ndebug_file={tmp_path / 'debug.log'}\n")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "untouched\n" and victim.stat().st_mode & 0o777 == 0o600
    assert "cannot open debug_file" in done.stderr


def test_a_secret_default_is_used_as_a_secret_when_no_source_is_given(invoke):
    options = invoke("action=monitor\n").options
    assert isinstance(options.token, Secret)
    assert options.token.reveal() == "token-default-value"
    assert options.is_set("token") is False


def test_options_for_agent_types_raw_values_like_stdin_does():
    options = Options.for_agent(AGENT, {"power_timeout": "7", "lanplus": "off", "cipher": 17})
    assert (options.power_timeout, options.lanplus, options.cipher) == (7.0, False, 17)
    with pytest.raises(ValueError, match="option 'cipher' must be a non-negative integer"):
        Options.for_agent(AGENT, {"cipher": "x"})


def test_a_crashing_agent_check_is_one_line_and_exit_1(invoke, caplog):
    caplog.set_level(logging.INFO)

    def broken(options):
        raise KeyError("surprise")

    outcome = invoke("action=validate-all\n", agent=replace(AGENT, check=broken))
    assert outcome.rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["unexpected error: KeyError: 'surprise'"]
    assert "Traceback" not in outcome.everything()
