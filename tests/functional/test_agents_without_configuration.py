"""Every OCF agent the suite ships, run as Pacemaker runs it on a node without configuration.

On a real deployment's compute node /etc/openstack-ha/openstack-ha.conf does not exist, yet
Pacemaker probes every resource on every node it may run on (and stops it there when in
doubt). Issue 10, defect 6: NovaEvacuate's probe, start and stop crashed there with a
traceback and exit 1, and a failed stop gets the node fenced. So each agent is run here
across a real process boundary, through the installed launcher in
/usr/lib/ocf/resource.d/openstack-ha, with only the environment Pacemaker gives it
(``OCF_*``, ``OCF_RESKEY_*``, ``HA_*``): a probe answers OCF_NOT_RUNNING (7), a stop of
nothing OCF_SUCCESS (0), and nothing prints a traceback. Start and validate-all say what is
missing, in one line, with OCF_ERR_INSTALLED (5) or OCF_ERR_CONFIGURED (6).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agents.catalog import OCF_DIR, SHIPPED
from agents.ocf import OCFExit
from nova_evacuate.conf import DEFAULT_CONFIG_FILE

OCF_AGENTS = [a.name for a in SHIPPED if a.kind == "ocf"]


def launcher(name: str) -> Path:
    path = Path("/") / OCF_DIR / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed (run openstack-ha-install)")
    return path


def run_agent(name: str, action: str, rsc_tmp: Path, *, interval_ms: int = 0,
              **params: str) -> subprocess.CompletedProcess[str]:
    """One action as pacemaker-execd runs it: a clean environment, parameters as
    OCF_RESKEY_*, operation meta attributes as OCF_RESKEY_CRM_meta_*."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RA_VERSION_MAJOR": "1",
        "OCF_RA_VERSION_MINOR": "1",
        "OCF_RESOURCE_TYPE": name,
        "OCF_RESOURCE_PROVIDER": "openstack-ha",
        "OCF_RESOURCE_INSTANCE": f"test-{name.lower()}",
        "OCF_RESKEY_crm_feature_set": "3.16.2",
        "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
        "OCF_RESKEY_CRM_meta_timeout": "20000",
        "HA_RSCTMP": str(rsc_tmp),
        "HA_LOGFACILITY": "none",
        **{f"OCF_RESKEY_{k}": v for k, v in params.items()},
    }
    return subprocess.run([str(launcher(name)), action], env=env, capture_output=True,
                          text=True, timeout=60, cwd="/", check=False)


def assert_clean(done: subprocess.CompletedProcess[str], expected: int) -> None:
    output = f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == expected, output
    assert "Traceback" not in done.stderr + done.stdout, output


# The ways a node can lack the engine's configuration: NovaEvacuate's default path when it
# is absent here (as on every compute node), or a path given in the CIB that this node lacks.
def _no_config_cases() -> list:
    cases = [pytest.param({"config_file": "/nonexistent/openstack-ha/openstack-ha.conf"},
                          id="config_file-missing")]
    default_absent = not os.path.exists(DEFAULT_CONFIG_FILE)
    cases.append(pytest.param({}, id="default-config-absent", marks=pytest.mark.skipif(
        not default_absent, reason=f"{DEFAULT_CONFIG_FILE} exists on this machine")))
    return cases


@pytest.mark.parametrize("agent", OCF_AGENTS)
def test_probe_and_stop_without_any_parameter(agent, tmp_path):
    if agent == "NovaEvacuate" and os.path.exists(DEFAULT_CONFIG_FILE):
        pytest.skip(f"{DEFAULT_CONFIG_FILE} exists on this machine")
    assert_clean(run_agent(agent, "monitor", tmp_path), OCFExit.NOT_RUNNING)
    assert_clean(run_agent(agent, "stop", tmp_path), OCFExit.SUCCESS)
    # the probe again, after the stop: still nothing runs
    assert_clean(run_agent(agent, "monitor", tmp_path), OCFExit.NOT_RUNNING)


@pytest.mark.parametrize("params", _no_config_cases())
def test_nova_evacuate_without_its_configuration(params, tmp_path):
    assert_clean(run_agent("NovaEvacuate", "monitor", tmp_path, **params), OCFExit.NOT_RUNNING)
    assert_clean(run_agent("NovaEvacuate", "stop", tmp_path, **params), OCFExit.SUCCESS)
    # a recurring monitor of an instance that does not run: not running, not an error
    assert_clean(run_agent("NovaEvacuate", "monitor", tmp_path, interval_ms=10000, **params),
                 OCFExit.NOT_RUNNING)
    for action in ("start", "validate-all"):
        done = run_agent("NovaEvacuate", action, tmp_path, **params)
        assert_clean(done, OCFExit.ERR_INSTALLED)
        reasons = [line for line in done.stderr.splitlines()
                   if line.startswith("ocf-exit-reason:")]
        assert len(reasons) == 1, done.stderr
        assert "does not exist on this node" in reasons[0]
    # start spawned nothing
    assert not list(tmp_path.iterdir())


def test_nova_evacuate_with_a_configuration_it_cannot_use(tmp_path):
    rsc_tmp = tmp_path / "rsctmp"
    rsc_tmp.mkdir()
    bad = tmp_path / "openstack-ha.conf"
    bad.write_text("this is not an ini file\n")
    for action in ("start", "validate-all"):
        done = run_agent("NovaEvacuate", action, rsc_tmp, config_file=str(bad))
        assert_clean(done, OCFExit.ERR_CONFIGURED)
        assert f"ocf-exit-reason:configuration file {bad}" in done.stderr
        done = run_agent("NovaEvacuate", action, rsc_tmp, config_file=str(tmp_path))
        assert_clean(done, OCFExit.ERR_INSTALLED)
        assert "is not a regular file" in done.stderr
    assert_clean(run_agent("NovaEvacuate", "monitor", rsc_tmp, config_file=str(bad)),
                 OCFExit.NOT_RUNNING)
    assert_clean(run_agent("NovaEvacuate", "stop", rsc_tmp, config_file=str(bad)),
                 OCFExit.SUCCESS)
