"""The Pacemaker lab itself: a remote compute node that behaves like one, and its power switch.

Every other cluster test stands on these properties, so they are checked against the real
cluster, not assumed: the node joins, commands run inside it, node attributes travel through
remoted, and the lab's fence device cuts and restores its power when Pacemaker asks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import sh

from lab.pacemaker import FENCE_AGENT_PATH, LabError, PacemakerLab

pytestmark = pytest.mark.cluster

NODE = "compute1"




@pytest.fixture
def lab(pacemaker_lab: PacemakerLab) -> Iterator[PacemakerLab]:
    """The session's lab, checked sane before each test and put back online after it."""
    assert pacemaker_lab.remote_ready(NODE), "a previous test left compute1 offline"
    yield pacemaker_lab
    if not pacemaker_lab.remote_ready(NODE):
        pacemaker_lab.reconnect(NODE)


@pytest.fixture(scope="module")
def fence_agent(pacemaker_lab: PacemakerLab) -> Iterator[Path]:
    pacemaker_lab.install_fence_labpower()
    yield FENCE_AGENT_PATH
    pacemaker_lab.remove_fence_labpower()


def test_remote_node_is_online_with_its_connection_started(lab: PacemakerLab) -> None:
    mon = lab.crm_mon_xml()
    node = mon.find(f"./nodes/node[@name='{NODE}']")
    assert node is not None and node.get("type") == "remote"
    assert lab.node_online(NODE)
    connection = mon.find(f".//resources/resource[@id='{NODE}']")
    assert connection is not None
    assert connection.get("resource_agent") == "ocf:pacemaker:remote"
    assert connection.get("role") == "Started"


def test_commands_run_inside_the_node(lab: PacemakerLab) -> None:
    assert lab.run_in_node(NODE, ["uname", "-n"], check=True).stdout.strip() == NODE
    assert lab.run_in_node(NODE, ["crm_node", "-n"], check=True).stdout.strip() == NODE
    # The node's own network and its own /var/lib/pacemaker, not the host's.
    addresses = lab.run_in_node(NODE, ["ip", "-o", "-4", "addr", "show"], check=True).stdout
    assert "10.251.1.2/24" in addresses
    mounts = lab.run_in_node(NODE, ["findmnt", "-n", "-o", "SOURCE", "/var/lib/pacemaker"]).stdout
    assert f"nodes/{NODE}/var-lib-pacemaker" in mounts
    pid = lab.remoted_pid(NODE)
    assert pid is not None and pid in lab.node_pids(NODE)
    env = lab.run_in_node(NODE, ["printenv", "LAB_PROBE"], env={"LAB_PROBE": "seen"}).stdout
    assert env.strip() == "seen"


def test_node_attribute_set_inside_is_seen_by_the_controller(lab: PacemakerLab) -> None:
    done = lab.run_in_node(NODE, ["attrd_updater", "-n", "x", "-U", "1"])
    assert done.returncode == 0, done.stderr
    try:
        # attrd applies updates asynchronously: poll instead of reading once.
        lab.wait_until(
            lambda: 'value="1"' in sh("attrd_updater", "-Q", "-n", "x", "-N", NODE,
                                      check=False).stdout,
            10, "attribute x=1 on compute1",
        )
    finally:
        sh("attrd_updater", "-D", "-n", "x", "-N", NODE, check=False)


def test_power_off_is_a_hard_cut_and_power_on_boots_once(lab: PacemakerLab) -> None:
    marker = lab.node_ra_dir(NODE) / "survives-nothing"
    marker.write_text("x")
    # A process of the node besides remoted, as nova-compute would be: it dies with the power.
    # (Its output goes elsewhere: run_in_node captures output and waits for the pipes to close.)
    lab.run_in_node(NODE, ["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"],
                    check=True)
    assert len(lab.node_pids(NODE)) >= 2
    lab.power_off(NODE)
    assert lab.node_pids(NODE) == []
    assert not lab.is_powered(NODE)
    assert not marker.exists()  # /run of the node is lost with the power
    lab.power_off(NODE)  # already off: nothing to do, no error
    with pytest.raises(LabError, match="powered off"):
        lab.run_in_node(NODE, ["true"])
    lab.wait_until(lambda: not lab.node_online(NODE), 15, "compute1 offline in crm_mon")
    lab.settle()  # boot only once Pacemaker has dealt with the loss (see PacemakerLab.reconnect)

    # Two "on" at once, as a fencing level with two devices sends them (pitfall P5).
    errors: list[BaseException] = []

    def boot() -> None:
        try:
            lab.power_on(NODE)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    remoted = [p for p in lab.node_pids(NODE) if Path(f"/proc/{p}/comm").read_text().strip()
               == "pacemaker-remot"]
    assert remoted == [lab.remoted_pid(NODE)]
    lab.reconnect(NODE)


def test_fence_agent_metadata_is_what_pacemaker_reads(fence_agent: Path) -> None:
    metadata = sh("stonith_admin", "--metadata", "-a", "fence_labpower").stdout
    meta = ET.fromstring(metadata)
    assert meta.get("name") == "fence_labpower"
    params = {p.get("name") for p in meta.iter("parameter")}
    assert {"port", "plug", "nodename", "state_dir", "action"} <= params
    actions = {a.get("name") for a in meta.iter("action")}
    assert {"on", "off", "reboot", "status", "monitor", "list", "metadata"} <= actions
    # Pacemaker's controller asks as hacluster: an agent it cannot run has no metadata.
    as_hacluster = sh("setpriv", "--reuid=hacluster", "--regid=haclient", "--clear-groups",
                      str(fence_agent), "-o", "metadata")
    assert "fence_labpower" in as_hacluster.stdout


def test_fence_agent_status_and_list(lab: PacemakerLab, fence_agent: Path) -> None:
    def agent(*stdin_lines: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(fence_agent)], input="\n".join([*stdin_lines, f"state_dir={lab.state_dir}"]),
            capture_output=True, text=True, timeout=30, check=False,
        )

    assert agent("action=status", f"port={NODE}").returncode == 0
    assert agent("action=list").stdout.split() == [f"{NODE},"]
    assert agent("action=off", "port=compute9").returncode == 1  # not a lab node
    log = (lab.state_dir / "fence_labpower.log").read_text()
    assert f"action=status plug={NODE} rc=0" in log
    assert "action=off plug=compute9 rc=1" in log


def test_stonith_admin_fence_cuts_the_power_and_power_on_brings_it_back(
    lab: PacemakerLab, fence_agent: Path
) -> None:
    log = lab.state_dir / "fence_labpower.log"
    lab.pcs("stonith", "create", "labpower", "fence_labpower", f"state_dir={lab.state_dir}",
            f"pcmk_host_list={NODE}")
    try:
        # Once the connection drops after our fence, Pacemaker may fence the node again on its
        # own; with the default action (reboot) that would boot it before we can look.
        lab.pcs("property", "set", "stonith-enabled=true", "stonith-action=off")
        lab.wait_until(
            lambda: "labpower" in sh("stonith_admin", "--list-registered").stdout,
            15, "labpower registered with the fencer",
        )
        before = log.read_text() if log.exists() else ""
        sh("stonith_admin", "--fence", NODE, "--timeout", "30")
        assert not lab.is_powered(NODE)
        assert lab.node_pids(NODE) == []
        new_lines = log.read_text()[len(before):]
        assert f"action=off plug={NODE} rc=0" in new_lines
        lab.wait_until(lambda: not lab.node_online(NODE), 15, "compute1 offline in crm_mon")
        history = sh("stonith_admin", "--history", NODE).stdout
        assert "successful" in history

        lab.reconnect(NODE)
        assert lab.remote_ready(NODE)
    finally:
        lab.pcs("property", "set", "stonith-enabled=false", check=False)
        lab.pcs("property", "unset", "stonith-action", check=False)
        lab.pcs("stonith", "delete", "labpower", check=False)
    assert "labpower" not in sh("stonith_admin", "--list-registered").stdout


def test_a_second_lab_is_refused_while_this_one_runs(lab: PacemakerLab, tmp_path: Path) -> None:
    other = PacemakerLab(tmp_path / "other")
    with pytest.raises(LabError, match="another Pacemaker lab is up"):
        other.up(("compute7",))
    other.down()  # nothing of its own: must leave the running lab alone
    assert lab.remote_ready(NODE)
    assert any(Path("/var/lib/pacemaker/cib").iterdir())


def test_cli_status_reads_the_state_of_a_lab_started_elsewhere(lab: PacemakerLab) -> None:
    done = sh(sys.executable, "-m", "lab.pacemaker", "status", "--state-dir", str(lab.state_dir))
    status = json.loads(done.stdout)
    assert status["up"] is True
    assert status["nodes"][NODE]["powered"] is True
    assert status["nodes"][NODE]["online"] is True


REPO = Path(__file__).resolve().parents[2]
NOVA_EVACUATE = Path("/usr/lib/ocf/resource.d/openstack-ha/NovaEvacuate")
ENGINE_CONF = Path("/etc/openstack-ha/openstack-ha.conf")
CLOUDS_YAML = Path("/etc/openstack/clouds.yaml")


def in_node(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """ARGV inside the node, the way the lab starts nova-compute there (its CLI)."""
    prefix = ["env", "-i", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
    return subprocess.run(
        [sys.executable, "-m", "lab.pacemaker", "exec", NODE, "--", *prefix, *argv],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def controller_configuration() -> Iterator[None]:
    """The controller's engine configuration and clouds.yaml, as on a real controller
    (written only where none exists, and removed again)."""
    written = []
    for path, text in ((ENGINE_CONF, "[cloud]\ncloud = lab\n"),
                       (CLOUDS_YAML, "clouds: {lab: {auth: {password: controller-secret}}}\n")):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o600)
            written.append(path)
    try:
        yield
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def test_a_node_sees_its_own_etc_not_the_controllers_configuration_or_secrets(
    lab: PacemakerLab, controller_configuration: None
) -> None:
    # The controller has them ...
    secrets = [lab.etc_dir / "corosync-authkey", lab.state_file]
    for path in (ENGINE_CONF, CLOUDS_YAML, *secrets):
        assert path.is_file(), path
    # ... the node does not: not the files, not even the lab's state dir beyond its log.
    for path in (ENGINE_CONF, CLOUDS_YAML, *secrets):
        done = in_node("test", "-e", str(path))
        assert done.returncode == 1, f"{path} is visible inside {NODE}: {done.stderr}"
    listed = in_node("ls", "-A", "/etc/openstack-ha", "/etc/openstack", str(lab.state_dir))
    assert listed.returncode == 0, listed.stderr
    assert "openstack-ha.conf" not in listed.stdout and "clouds.yaml" not in listed.stdout
    assert "etc" not in listed.stdout.split() and "state.json" not in listed.stdout
    # What a compute host has stays: the agents, their launchers and venv, remoted's log.
    for path in (NOVA_EVACUATE, Path("/opt/openstack-ha/venv/bin/python3"),
                 lab.remoted_log(NODE)):
        if path.exists():
            assert in_node("test", "-e", str(path)).returncode == 0, path
    assert in_node("crm_node", "-n").stdout.strip() == NODE
    # A file the controller gets later does not appear in the node either.
    late = Path("/etc/openstack-ha/ohalab-late.conf")
    try:
        late.write_text("[cloud]\n")
        assert in_node("test", "-e", str(late)).returncode == 1
    finally:
        late.unlink(missing_ok=True)


def test_nova_evacuate_inside_a_node_without_its_configuration(
    lab: PacemakerLab, controller_configuration: None, tmp_path: Path
) -> None:
    """Issue 10, defect 6, on a node: the engine's configuration is on the controller only;
    NovaEvacuate's probe there says "not running", its stop succeeds, and nothing crashes."""
    if not NOVA_EVACUATE.exists():
        pytest.skip(f"{NOVA_EVACUATE} is not installed (run openstack-ha-install)")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OCF_ROOT": "/usr/lib/ocf",
           "OCF_RESOURCE_INSTANCE": "nova-evacuate", "OCF_RESKEY_CRM_meta_interval": "0",
           "OCF_RESKEY_CRM_meta_on_node": NODE, "OCF_RESKEY_CRM_meta_timeout": "20000",
           "HA_LOGFACILITY": "none"}
    for action, expected in (("monitor", 7), ("stop", 0), ("start", 5), ("validate-all", 5)):
        done = in_node(str(NOVA_EVACUATE), action, env=env)
        assert done.returncode == expected, f"{action}: {done.stdout} {done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
    assert f"configuration file {ENGINE_CONF} does not exist on this node" in done.stderr
    # On the controller, with the same parameters, the configuration is found.
    done = subprocess.run([str(NOVA_EVACUATE), "validate-all"], capture_output=True, text=True,
                          env={**env, "OCF_RESKEY_CRM_meta_on_node": "ctl1"}, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
