"""openstack-ha-install: idempotent, confined to --root, never clobbers others' files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents import install

OCF = "usr/lib/ocf/resource.d/openstack-ha/ComputeLiveness"
FENCE = "usr/sbin/fence_nova"


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.install", *args], capture_output=True, text=True, timeout=60
    )


def test_install_writes_executables_bound_to_this_interpreter(tmp_path):
    done = run_install("--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for rel in (OCF, FENCE):
        path = tmp_path / rel
        assert os.access(path, os.X_OK)
        assert path.read_text().startswith(f"#!{sys.executable} -I\n")
    assert f"installed {tmp_path / OCF}" in done.stdout


def test_installed_ocf_agent_runs_and_prints_its_meta_data(tmp_path):
    run_install("--root", str(tmp_path))
    done = subprocess.run([str(tmp_path / OCF), "meta-data"], capture_output=True, text=True)
    assert done.returncode == 0
    assert '<resource-agent name="ComputeLiveness"' in done.stdout


def test_second_install_changes_nothing(tmp_path):
    run_install("--root", str(tmp_path))
    before = (tmp_path / OCF).stat().st_mtime_ns
    done = run_install("--root", str(tmp_path))
    assert done.returncode == 0
    assert f"unchanged {tmp_path / OCF}" in done.stdout
    assert (tmp_path / OCF).stat().st_mtime_ns == before


def test_a_file_we_did_not_write_is_never_replaced(tmp_path):
    foreign = tmp_path / FENCE
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho someone else's fence_nova\n")
    done = run_install("--root", str(tmp_path))
    assert done.returncode == 1
    assert "was not installed by openstack-ha-install" in done.stderr
    assert "Traceback" not in done.stderr
    assert "someone else's" in foreign.read_text()


def test_fence_agents_fence_compute_is_left_alone(tmp_path):
    stock = tmp_path / "usr/sbin/fence_compute"
    stock.parent.mkdir(parents=True)
    stock.write_text("#!/usr/bin/python3\n# fence-agents\n")
    assert run_install("--root", str(tmp_path)).returncode == 0
    assert run_install("--root", str(tmp_path), "--uninstall").returncode == 0
    assert stock.read_text() == "#!/usr/bin/python3\n# fence-agents\n"


def test_uninstall_removes_only_our_files_and_is_idempotent(tmp_path):
    run_install("--root", str(tmp_path))
    done = run_install("--root", str(tmp_path), "--uninstall")
    assert done.returncode == 0
    assert not (tmp_path / OCF).exists()
    assert not (tmp_path / FENCE).exists()
    assert not (tmp_path / OCF).parent.exists()
    assert run_install("--root", str(tmp_path), "--uninstall").returncode == 0


def test_the_catalog_cannot_name_a_fence_agents_file():
    assert not {a.name for a in install.SHIPPED} & install.FOREIGN


@pytest.mark.parametrize("rel", [OCF, FENCE])
def test_launchers_carry_the_marker(rel, tmp_path):
    run_install("--root", str(tmp_path))
    assert install.MARKER in Path(tmp_path / rel).read_text()
