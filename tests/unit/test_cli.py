"""``nova-evacuate``'s command line and display, without a cloud: bad input gets exit 2 and
one line, the dry run's capacity verdict and exit code, and the progress display redraws
in place on a terminal, one line per change otherwise."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nova_evacuate.cli import Display, _dry_run
from nova_evacuate.plan import Inventory, Plan, Policy, Resources, Server, make_plan

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nova_evacuate.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_no_host_is_a_usage_error():
    done = cli()
    assert done.returncode == 2
    assert "the following arguments are required: host" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_or_bad_configuration_file_is_exit_2_and_one_line(tmp_path):
    done = cli("compute1", "--config-file", str(tmp_path / "nope.conf"))
    assert done.returncode == 2 and "configuration:" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.conf"
    bad.write_text("[evacuation]\nmax_concurrency = 0\n")
    done = cli("compute1", "--config-file", str(bad))
    assert done.returncode == 2 and "max_concurrency" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [
    ["compute1", "--cloud", "a"], ["compute1", "--os-cloud", "a"], ["--cloud=a", "compute1"],
    ["--os-cloud", "a", "compute1", "--config-file", "x.conf", "--config-file", "y.conf"]])
def test_os_cloud_and_its_old_name_cloud_are_one_option(argv):
    """``--cloud`` keeps working as before; ``--os-cloud`` is the openstack client's name."""
    from nova_evacuate.cli import parser

    args = parser().parse_args(argv)
    assert (args.host, args.cloud) == ("compute1", "a")
    assert args.config_files in (None, ["x.conf", "y.conf"])
    assert parser().parse_args(["compute1"]).cloud is None


@pytest.mark.parametrize("argv", [["compute1", "--os-cloud=--"], ["--cloud=--", "compute1"],
                                  ["compute1", "--config-file=--"]])
def test_a_value_of_double_dash_is_refused_not_taken_for_nothing(argv, capsys):
    """argparse drops a value of "--" and would hand the option an empty list."""
    from nova_evacuate.cli import parser

    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "'--' cannot be a value here" in capsys.readouterr().err


def track(name: str, state: str, dest: str | None = None, reason: str = ""):
    server = SimpleNamespace(id=f"id-{name}", name=name)
    return SimpleNamespace(server=server, state=state, dest=dest, reason=reason)


def test_plain_output_is_one_line_per_change():
    out = io.StringIO()
    display = Display(out, interactive=False)
    display.update(track("vm-1", "evacuating"))
    display.update(track("vm-1", "done", "compute2"))
    display.update(track("vm-2", "failed", reason="evacuation migration error"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue()
    assert lines[1].endswith("vm-1 (id-vm-1) done on compute2")
    assert lines[2].endswith("failed: evacuation migration error")


def test_terminal_output_redraws_one_row_per_instance_in_place():
    out = io.StringIO()
    display = Display(out, interactive=True)
    display.update(track("vm-1", "evacuating"))
    display.update(track("vm-2", "evacuating"))
    display.update(track("vm-1", "done", "compute2"))
    text = out.getvalue()
    # The last frame: the cursor goes back up over the 2 rows and the summary, and redraws.
    frame = text.rsplit("\x1b[3F", 1)[1]
    rows = [row.replace("\x1b[2K", "").split() for row in frame.splitlines()]
    assert rows[0][:3] == ["vm-1", "done", "compute2"]
    assert rows[1][:2] == ["vm-2", "evacuating"]
    assert rows[2][:2] == ["1/2", "done,"]


# ---------------------------------------------------------------------------- the dry run


def dry_run_plan(*, capacity_known: bool, free: dict[str, Resources]) -> Plan:
    servers = [Server(id=f"id-vm{i}", name=f"vm{i}", status="ACTIVE", host="compute1",
                      vcpus=1, ram_mb=512, disk_gb=1) for i in range(2)]
    return make_plan(Inventory("compute1", servers, free=free, capacity_known=capacity_known),
                     Policy())


def dry_run(plan: Plan, capsys: pytest.CaptureFixture[str], *, as_json: bool) -> tuple[int, str]:
    """``nova-evacuate compute1 --dry-run`` over an engine whose plan is ``plan``."""
    services = [SimpleNamespace(host="compute1")]
    engine = SimpleNamespace(nova=SimpleNamespace(compute_services=lambda: services),
                             check_gates=lambda host, force, services: None,
                             service=lambda host, services: SimpleNamespace(host=host),
                             plan=lambda host, services: (plan, []))
    code = _dry_run(engine, argparse.Namespace(host="compute1", force=False, json=as_json))
    return code, capsys.readouterr().out


def test_a_dry_run_with_capacity_check_off_says_the_capacity_was_not_checked(capsys):
    plan = dry_run_plan(capacity_known=False, free={})

    code, text = dry_run(plan, capsys, as_json=False)
    assert code == 0  # not a shortfall: nothing is known either way
    assert text.splitlines()[-1] == "capacity: not checked ([evacuation] capacity_check=off)"
    assert "no room found" not in text and text.count("(scheduler)") == 2

    code, text = dry_run(plan, capsys, as_json=True)
    document = json.loads(text)
    assert code == 0 and document["capacity_checked"] is False
    assert document["capacity_ok"] is None and document["shortfall"] == []
    assert [m["target"] for m in document["moves"]] == [None, None]


@pytest.mark.parametrize(("free", "code", "verdict"), [
    ({"compute2": Resources(8, 4096, 100)}, 0, "capacity: OK, the surviving hosts can take all 2"),
    ({"compute2": Resources(8, 600, 100)}, 1,
     "capacity: SHORTFALL: no surviving host has room for 1 of 2 instances")])
def test_a_dry_run_with_the_capacity_read_gives_its_verdict(capsys, free, code, verdict):
    plan = dry_run_plan(capacity_known=True, free=free)

    exit_code, text = dry_run(plan, capsys, as_json=False)
    assert exit_code == code and text.splitlines()[-1] == verdict
    exit_code, text = dry_run(plan, capsys, as_json=True)
    document = json.loads(text)
    assert exit_code == code and document["capacity_checked"] is True
    assert document["capacity_ok"] is (code == 0)
