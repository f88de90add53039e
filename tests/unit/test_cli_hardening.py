"""``nova-evacuate`` and its configuration against bad input (issue 11): every usage or
configuration error is one line and exit 2, before anything is done; no number that
oslo.config lets through (NaN, an infinity, an empty value) reaches the engine, and the
mass-failure brake fails closed even if one did; text from the configuration or Nova is
printed without control characters, while ``--json`` stays exact."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from oslo_config import cfg, types
from test_ocf_input_hardening import bad_storage_config

from nova_evacuate import conf as confmod
from nova_evacuate.cli import Display, _one_line, plan_dict, render_plan
from nova_evacuate.conf import opts

REPO = Path(__file__).resolve().parents[2]
CONTROLS = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nova_evacuate.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


NUMBER_OPTIONS = [(group.name, opt) for group, options in opts.list_opts() for opt in options
                  if isinstance(opt.type, types.Integer | types.Float)]


def write_conf(path: Path, group: str, name: str, value: str) -> Path:
    path.write_text(f"[{group}]\n{name} = {value}\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- usage


@pytest.mark.parametrize("args", [
    [], ["--bogus", "compute1"], ["compute1", "extra"], ["compute1", "--cloud"],
    ["compute1\x1b[2J"], [""], ["two words"], ["h" * 256], ["compute1", "--cloud", "a\nb"],
])
def test_a_usage_error_is_one_line_and_exit_2(args):
    done = cli(*args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("nova-evacuate: error: ") and "Traceback" not in done.stderr
    assert "\x1b" not in done.stderr and done.stdout == ""


def test_an_unknown_cloud_is_a_configuration_error_exit_2_in_one_clean_line(tmp_path):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  other:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n")
    conf = tmp_path / "openstack-ha.conf"
    conf.write_text(f"[cloud]\ncloud = nope\x1b[2J\x1b]52;c;AAAA\x07\nclouds_yaml = {clouds}\n")
    done = cli("compute1", "--config-file", str(conf))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "configuration: cannot use cloud" in done.stderr and "nope" in done.stderr
    assert not CONTROLS & (set(done.stderr) - {"\n"})
    # the same through --cloud
    done = cli("compute1", "--config-file", str(conf), "--cloud", "missing")
    assert done.returncode == 2 and "missing" in done.stderr


# ---------------------------------------------------------------------------- numbers


def test_max_down_fraction_nan_is_refused_through_the_command(tmp_path):
    done = cli("compute1", "--config-file",
               str(write_conf(tmp_path / "c.conf", "safety", "max_down_fraction", "nan")))
    assert done.returncode == 2
    assert done.stderr.strip() == ("nova-evacuate: configuration: [safety] max_down_fraction"
                                   " = nan: not a finite number")


@pytest.mark.parametrize(("group", "opt"), NUMBER_OPTIONS, ids=[o.name for _, o in NUMBER_OPTIONS])
def test_every_number_option_refuses_nan_infinities_empty_and_out_of_range(tmp_path, group, opt):
    low, high = opt.type.min, opt.type.max
    assert low is not None and high is not None, f"[{group}] {opt.name} has no range"
    bad = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "", "abc", str(low - 1), str(high + 1)]
    for value in bad:
        path = write_conf(tmp_path / "c.conf", group, opt.name, value)
        with pytest.raises((cfg.Error, ValueError)) as refused:
            confmod.load([str(path)])
        message = str(refused.value)
        assert f"[{group}] {opt.name}" in message and "\n" not in message, (value, message)
    for value in (low, high, opt.default):
        confmod.load([str(write_conf(tmp_path / "c.conf", group, opt.name, str(value)))])


def test_a_bad_exclusion_is_refused_when_the_configuration_is_read(tmp_path):
    for name, value, why in (("exclude_names", "vm-(", "not a regular expression"),
                             ("exclude_metadata", "ha:skip", "not key=value")):
        path = write_conf(tmp_path / "c.conf", "evacuation", name, value)
        with pytest.raises(confmod.ConfigValueError, match=why):
            confmod.load([str(path)])


number_text = st.one_of(
    st.text(max_size=12),
    st.floats().map(repr),
    st.integers(min_value=-10**6, max_value=10**6).map(str),
    st.sampled_from(["nan", "-nan", "inf", "+inf", "1e400", "-0", "0x10", "1_0", " 5 ", "１", ""]),
)


@given(option=st.sampled_from(NUMBER_OPTIONS), value=number_text)
@example(option=NUMBER_OPTIONS[0], value="nan")
@settings(max_examples=200, deadline=None)
def test_any_number_text_loads_finite_and_in_range_or_is_refused_in_one_line(option, value):
    group, opt = option
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".conf", encoding="utf-8") as f:
        f.write(f"[{group}]\n{opt.name} = {value}\n")
        f.flush()
        try:
            conf = confmod.load([f.name])
        except (cfg.Error, ValueError) as exc:
            assert "\n" not in str(exc)
            return
    loaded = conf[group][opt.dest]
    assert isinstance(loaded, int | float) and math.isfinite(loaded)
    assert opt.type.min <= loaded <= opt.type.max


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=200, deadline=None)
def test_check_value_refuses_exactly_what_is_no_finite_fraction(value: float):
    (opt,) = [o for _, o in NUMBER_OPTIONS if o.name == "max_down_fraction"]
    valid = math.isfinite(value) and 0.0 <= value <= 1.0
    try:
        confmod.check_value("[safety] max_down_fraction", opt, value)
    except confmod.ConfigValueError:
        assert not valid
    else:
        assert valid


# ---------------------------------------------------------------------------- printing

EVIL = "vm\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\nforged line\u2028\x9b1m"


def server(name: str, sid: str = "id-1") -> SimpleNamespace:
    return SimpleNamespace(id=sid, name=name, status="ACTIVE\x1b[5m", flavor_name="m1\x07",
                           vcpus=1, ram_mb=64)


def evil_plan() -> SimpleNamespace:
    move = SimpleNamespace(server=server(EVIL), phase=0, target="compute2\x1b[8m", reset_first=False)
    skipped = SimpleNamespace(server=server(EVIL, "id-2"), reason="excluded\nforged")
    return SimpleNamespace(host="compute1\x1b[2J", moves=(move,), skipped=(skipped,), shortfall=(),
                           tagging="all\x1b[H", capacity_ok=True, capacity_known=True)


def test_the_plan_shows_no_control_character_from_nova_or_the_configuration():
    text = render_plan(evil_plan(), "REFUSED: \x1b[31mbrake")
    assert not CONTROLS & (set(text) - {"\n"})
    lines = text.splitlines()
    assert lines[0] == "Evacuation plan for compute1 (dry run: nothing changed)"
    assert len(lines) == 9  # header 4, table 2, left 1, blank, capacity: nothing forged


def test_the_json_plan_keeps_every_name_exactly():
    document = json.loads(json.dumps(plan_dict(evil_plan(), "pass")))
    assert document["moves"][0]["name"] == EVIL and document["host"] == "compute1\x1b[2J"


def track(name: str, state: str, dest: str | None = None, reason: str = "") -> SimpleNamespace:
    return SimpleNamespace(server=SimpleNamespace(id="id-1", name=name), state=state, dest=dest,
                           reason=reason)


def test_progress_lines_show_no_control_character():
    out = io.StringIO()
    display = Display(out, interactive=False)
    display.update(track(EVIL, "failed", "c2\x1b[1A", reason="x\ny"))
    assert not CONTROLS & (set(out.getvalue()) - {"\n"}) and len(out.getvalue().splitlines()) == 1


def test_the_live_table_writes_only_its_own_escape_sequences():
    out = io.StringIO()
    display = Display(out, interactive=True)
    display.update(track(EVIL, "evacuating", reason="\x1b]0;title\x07"))
    display.update(track(EVIL, "done", "compute2"))
    ours = out.getvalue().replace("\x1b[2K", "").replace("\x1b[2F", "")
    assert not CONTROLS & (set(ours) - {"\n"})


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_one_line_is_one_line_without_controls(text: str):
    shown = _one_line(text)
    assert "\n" not in shown and not CONTROLS & set(shown)


def test_a_configuration_file_that_is_not_utf8_is_named_in_one_line(tmp_path):
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"[cloud]\ncloud = caf\xe9\n")
    done = cli("compute1", "--config-file", str(path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"nova-evacuate: configuration: {path}: not UTF-8 text (invalid continuation byte at"
        f" byte 19)"]


@pytest.mark.parametrize("case", ["storage_map", "ceph_keyring_file"])
def test_a_bad_storage_section_is_exit_2_in_one_line_naming_the_option(tmp_path, case):
    path = bad_storage_config(tmp_path, case)
    done = cli("compute1", "--config-file", str(path))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"nova-evacuate: configuration: [storage] {case}: ")
    assert "Traceback" not in done.stderr
    if case == "ceph_keyring_file":
        assert done.stderr.strip().endswith(f"{tmp_path / 'missing.keyring'} does not exist")
