"""``nova-evacuate``'s command line and display, without a cloud: bad input gets exit 2 and
one line, and the progress display redraws in place on a terminal, one line per change
otherwise."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from nova_evacuate.cli import Display

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
