"""devstack/plugin.sh and the Zuul job, without a devstack.

shellcheck and ``bash -n`` over the plugin; the Zuul job's structure; and each phase of the
plugin run in a throwaway bash the way stack.sh sources it, with devstack's functions
(``is_service_enabled``, ``iniset``, ``install_package`` ...) stubbed, ``sudo`` recording and
running its command as this user, and every command that would act as root (pcs, crm_mon,
systemctl, chpasswd, pip, the venv's python) a stub on PATH that records its arguments. The
paths the plugin writes are redirected under tmp_path. ``join-computes`` runs the real
scripts/configure-cluster.sh against a stub pcs. Nothing here proves the plugin works on a
real devstack: see devstack/README.rst.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "devstack" / "plugin.sh"
SETTINGS = REPO / "devstack" / "settings"
ZUUL = REPO / ".zuul.yaml"
JOB = "openstack-instance-ha-devstack-multinode"

ADMIN_PASSWORD = "admin-secret-4c1d9"
HACLUSTER_PASSWORD = "hacluster-secret-77e0b"  # what the stub openssl prints
HOST_IP = "192.0.2.10"
CONTROLLER = "ctl"  # what the stub hostname prints

# devstack's functions as the plugin uses them, and stack.sh's errexit
DEVSTACK_STUBS = r"""
set -o errexit
ENABLED_SERVICES=""
function enable_service { ENABLED_SERVICES+=" $*"; }
function is_service_enabled { [[ " $ENABLED_SERVICES " == *" $1 "* ]]; }
function is_ubuntu { return 0; }
function install_package { echo "install_package $*" >> "$CALLS"; }
function iniset { echo "iniset $*" >> "$CALLS"; }
function echo_summary { :; }
# devstack's warn and die print their second argument only: the message is one string
function warn { [[ $# == 2 ]] || exit 4; echo "warn $2" >> "$CALLS"; }
function die { [[ $# == 2 ]] || exit 4; echo "die $2" >> "$CALLS"; exit 3; }
# Root's commands run as this user (who may be root: unit tests run as root beside a live
# lab): only the stubs under the test's directory and the file tools the plugin uses on its
# redirected paths; anything else is refused, never run.
function sudo {
    echo "sudo $*" >> "$CALLS"
    local path
    path=$(type -P "$1") || path=$1
    case "$path" in
        "$STUB_ROOT"/*|/usr/bin/install|/usr/bin/tee|/usr/bin/rm|/usr/bin/test|/usr/bin/bash)
            "$@" ;;
        *) echo "sudo $1: no stub for it, refused" >&2; return 99 ;;
    esac
}
"""

# A command that records its arguments, and its standard input apart (where secrets go)
RECORDER = """#!/bin/bash
echo "{name}${{*:+ $*}}" >> "$CALLS"
{body}
"""

STUBS = {
    "pcs": r"""
if [[ ! -t 0 ]]; then cat >> "$STDIN_LOG"; fi
# `pcs resource config ID`: only what the test says exists
if [[ "$1 $2" == "resource config" ]]; then [[ " $STUB_PCS_EXISTING " == *" $3 "* ]]; fi
""",
    "chpasswd": r"""cat >> "$STDIN_LOG" """,
    "systemctl": "",
    "openssl": f'echo "{HACLUSTER_PASSWORD}"',
    "hostname": f'echo "{CONTROLLER}"',
    "crm_mon": r"""
echo '<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">'
echo '  <nodes>'
for node in $STUB_ONLINE; do
    echo "    <node name=\"$node\" id=\"$node\" online=\"true\" standby=\"false\" type=\"member\"/>"
done
echo '  </nodes>'
echo '  <resources>'
attributes='resource_agent="x" role="Started" active="true" failed="false"'
for id in $STUB_STARTED; do
    echo "    <resource id=\"$id\" $attributes nodes_running_on=\"1\">"
    echo "    </resource>"
done
echo '  </resources>'
echo '</pacemaker-result>'
""",
    # `python3 -m venv DIR`: a venv whose pip and openstack-ha-install record
    "python3": r"""
venv=$3
mkdir -p "$venv/bin"
for tool in python pip openstack-ha-install; do
    printf '#!/bin/bash\necho "%s${*:+ $*}" >> "$CALLS"\n' "$venv/bin/$tool" > "$venv/bin/$tool"
    chmod +x "$venv/bin/$tool"
done
""",
}


@dataclass
class Run:
    returncode: int
    calls: list[str]
    stderr: str
    stdin: str


class Devstack:
    """One node's devstack, as far as the plugin sees it, under ``root``."""

    def __init__(self, root: Path, role: str) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for name, body in STUBS.items():
            stub = self.bin / name
            stub.write_text(RECORDER.format(name=name, body=body))
            stub.chmod(0o755)
        requirements = root / "requirements"
        requirements.mkdir()
        (requirements / "upper-constraints.txt").write_text("sushy===5.0.0\n")
        self.venv = root / "venv"
        self.conf_dir = root / "etc" / "openstack-ha"
        self.authkey = root / "authkey"
        self.calls = root / "calls.log"
        self.stdin = root / "stdin.log"
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(root),
            "STUB_ROOT": str(root),
            "CALLS": str(self.calls),
            "STDIN_LOG": str(self.stdin),
            # devstack's
            "DEST": str(root / "stack"),
            "HOST_IP": HOST_IP,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            "KEYSTONE_SERVICE_URI": f"http://{HOST_IP}/identity",
            "REQUIREMENTS_DIR": str(requirements),
            # the plugin's, redirected here
            "OPENSTACK_HA_ROLE": role,
            "OPENSTACK_HA_DIR": str(REPO),
            "OPENSTACK_HA_VENV": str(self.venv),
            "OPENSTACK_HA_PYTHON": str(self.bin / "python3"),
            "OPENSTACK_HA_CONF_DIR": str(self.conf_dir),
            "OPENSTACK_HA_AUTHKEY": str(self.authkey),
            "OPENSTACK_HA_WAIT": "5",
            "STUB_ONLINE": CONTROLLER,
            "STUB_STARTED": "",
            "STUB_PCS_EXISTING": "",
        }

    def run(self, mode: str, phase: str = "", *, enabled: bool = True, **env: str) -> Run:
        # the plugin removes and writes these: never the machine's own
        for name in ("OPENSTACK_HA_VENV", "OPENSTACK_HA_CONF_DIR", "OPENSTACK_HA_AUTHKEY"):
            assert Path(self.env[name]).is_relative_to(self.root), name
        for log in (self.calls, self.stdin):
            log.write_text("")
        script = (
            f"{DEVSTACK_STUBS}\n"
            f'source "{SETTINGS}"\n'
            + ("" if enabled else 'ENABLED_SERVICES=""\n')
            + f'source "{PLUGIN}" "$1" "$2"\n'
        )
        done = subprocess.run(
            ["bash", "-c", script, "stack.sh", mode, phase],
            env={**self.env, **env}, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=60,
        )
        return Run(done.returncode, self.calls.read_text().splitlines(), done.stderr,
                   self.stdin.read_text())

    def file(self, name: str) -> Path:
        return self.conf_dir / name


@pytest.fixture
def controller(tmp_path: Path) -> Devstack:
    return Devstack(tmp_path / "controller", "controller")


@pytest.fixture
def compute(tmp_path: Path) -> Devstack:
    return Devstack(tmp_path / "compute", "compute")


def commands(run: Run, name: str) -> list[str]:
    """The calls of one stub (``pcs``), without the sudo that ran them."""
    return [line for line in run.calls if line.startswith(f"{name} ")]


def index(lines: list[str], start: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(start))


def assert_no_secret_leaked(run: Run) -> None:
    # xtrace (stderr) and every command's arguments (the calls) hold no password
    for secret in (ADMIN_PASSWORD, HACLUSTER_PASSWORD):
        assert secret not in run.stderr
        assert not [line for line in run.calls if secret in line]


# --- static checks -------------------------------------------------------------------------


def test_plugin_and_settings_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        # scripts/lib.sh installs it; in CI a missing shellcheck is a failure, not a skip
        if os.environ.get("OPENSTACK_HA_REQUIRE_LAB") == "1":
            pytest.fail("OPENSTACK_HA_REQUIRE_LAB=1 but shellcheck is not installed")
        pytest.skip("shellcheck is not installed")
    done = subprocess.run([shellcheck, "-x", "devstack/plugin.sh", "devstack/settings"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_plugin_and_settings_parse() -> None:
    for path in (PLUGIN, SETTINGS):
        done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_zuul_job_is_a_multinode_devstack_job_with_this_plugin() -> None:
    config = yaml.safe_load(ZUUL.read_text())
    jobs = {item["job"]["name"]: item["job"] for item in config if "job" in item}
    nodesets = {item["nodeset"]["name"]: item["nodeset"] for item in config if "nodeset" in item}
    job = jobs[JOB]
    assert job["parent"] == "devstack"
    nodeset = nodesets[job["nodeset"]]
    assert [node["name"] for node in nodeset["nodes"]] == ["controller", "compute1"]
    groups = {group["name"]: group["nodes"] for group in nodeset["groups"]}
    assert groups["subnode"] == ["compute1"]
    assert {"openstack/nova", "openstack/placement", "openstack/keystone"} <= set(
        job["required-projects"])
    assert "openstack-instance-ha" in job["vars"]["devstack_plugins"]
    assert job["vars"]["devstack_localrc"]["OPENSTACK_HA_ROLE"] == "controller"
    assert job["group-vars"]["subnode"]["devstack_localrc"]["OPENSTACK_HA_ROLE"] == "compute"
    services = job["vars"]["devstack_services"]
    assert services["horizon"] is False and services["s-proxy"] is False
    assert not {"n-api", "n-cpu", "key", "g-api", "placement-api", "q-svc"} & set(services)
    for playbook in (job["run"], job["post-run"]):
        assert (REPO / playbook).is_file(), playbook
        assert isinstance(yaml.safe_load((REPO / playbook).read_text()), list)
    [project] = [item["project"] for item in config if "project" in item]
    [entry] = project["check"]["jobs"]
    assert entry == {JOB: {"voting": False}}


def test_zuul_run_playbook_joins_the_computes_and_names_the_target() -> None:
    text = (REPO / "playbooks/devstack/run.yaml").read_text()
    assert "orchestrate-devstack" in text
    assert "plugin.sh openstack-ha join-computes" in text
    assert "OPENSTACK_HA_TARGET" in text


def test_zuul_run_playbook_writes_a_hosts_file_the_suites_read() -> None:
    """The playbook's hosts file, rendered as Ansible renders it (Jinja2) for two compute
    nodes, is one tests/target.py reads: each node's crash and restore over ssh."""
    import jinja2

    from tests.target import parse_hosts

    [play] = [p for p in yaml.safe_load((REPO / "playbooks/devstack/run.yaml").read_text())
              if p.get("hosts") == "controller" and "vars" in p]
    [task] = [t for t in play["tasks"] if t.get("name") == "Describe the deployed cloud for"
              " the suites"]
    template = task["ansible.builtin.copy"]["content"]
    nodes = {"sub1": ("compute1", "10.0.0.11"), "sub2": ("compute2", "10.0.0.12")}
    hostvars = {n: {"ansible_nodename": name, "nodepool": {"private_ipv4": ip}}
                for n, (name, ip) in nodes.items()}
    text = jinja2.Template(template).render(groups={"subnode": list(nodes)}, hostvars=hostvars)
    hosts = parse_hosts(text)
    assert list(hosts) == ["compute1", "compute2"]
    assert hosts["compute2"].crash[0] == "ssh" and "10.0.0.12" in hosts["compute2"].crash
    assert "systemctl start" in hosts["compute1"].restore[-1]


# --- the phases ----------------------------------------------------------------------------


def test_nothing_happens_when_the_service_is_disabled(controller: Devstack) -> None:
    for mode, phase in (("stack", "install"), ("stack", "post-config"), ("stack", "extra"),
                        ("unstack", ""), ("clean", "")):
        run = controller.run(mode, phase, enabled=False)
        assert run.returncode == 0, run.stderr
        assert run.calls == []


def test_an_unknown_role_stops_the_stack(controller: Devstack) -> None:
    run = controller.run("stack", "install", OPENSTACK_HA_ROLE="storage")
    assert run.returncode == 3
    assert "OPENSTACK_HA_ROLE must be controller or compute" in run.calls[-1]


def test_install_on_the_controller(controller: Devstack) -> None:
    run = controller.run("stack", "install")
    assert run.returncode == 0, run.stderr
    [packages] = [line for line in run.calls if line.startswith("install_package ")]
    assert packages.split()[1:] == ["pacemaker", "corosync", "pcs", "fence-agents",
                                    "python3-venv"]
    venv = controller.venv
    assert f"python3 -m venv {venv}" in run.calls
    upper = Path(controller.env["REQUIREMENTS_DIR"]) / "upper-constraints.txt"
    assert (f"{venv}/bin/pip install -q --disable-pip-version-check -c {upper} {REPO}"
            in run.calls)
    assert run.calls[-1] == f"{venv}/bin/openstack-ha-install"


def test_install_on_a_compute_node(compute: Devstack) -> None:
    run = compute.run("stack", "install")
    assert run.returncode == 0, run.stderr
    [packages] = [line for line in run.calls if line.startswith("install_package ")]
    assert packages.split()[1:] == ["pacemaker-remote", "resource-agents", "python3-venv"]
    assert run.calls[-1] == f"{compute.venv}/bin/openstack-ha-install"


def test_post_config_on_the_controller_writes_the_engine_conf_and_fence_settings(
        controller: Devstack) -> None:
    run = controller.run("stack", "post-config")
    assert run.returncode == 0, run.stderr
    conf = controller.file("openstack-ha.conf")
    assert [line for line in run.calls if line.startswith("iniset ")] == [
        f"iniset -sudo {conf} cloud cloud devstack-admin",
        f"iniset -sudo {conf} cloud clouds_yaml /etc/openstack/clouds.yaml",
        f"iniset -sudo {conf} cloud interface public",
    ]
    secret = controller.file("keystone.secret")
    assert secret.read_text() == f"{ADMIN_PASSWORD}\n"
    assert secret.stat().st_mode & 0o777 == 0o600
    settings = controller.file("devstack-cloud.settings")
    assert settings.stat().st_mode & 0o777 == 0o600
    assert settings.read_text().splitlines()[1:] == [
        f"AUTH_URL=http://{HOST_IP}/identity",
        "OS_USERNAME=admin",
        "OS_PROJECT=admin",
        f"OS_PASSWORD_FILE={secret}",
        "ENDPOINT_TYPE=public",
        f"ENGINE_CONFIG={conf}",
        "MAX_DOWN_PERCENT=50",
        "LIVENESS_CHECKS=process:nova-compute",
    ]
    assert_no_secret_leaked(run)


def test_post_config_traces_but_not_the_password(controller: Devstack) -> None:
    run = controller.run("stack", "post-config")
    assert f"iniset -sudo {controller.file('openstack-ha.conf')}" in run.stderr  # xtrace is on
    assert_no_secret_leaked(run)


def test_post_config_on_a_compute_node_enables_pacemaker_remote(compute: Devstack) -> None:
    run = compute.run("stack", "post-config")
    assert run.returncode == 0, run.stderr
    assert commands(run, "systemctl") == ["systemctl enable pacemaker_remote"]
    assert "no " + str(compute.authkey) + " yet" in " ".join(
        line for line in run.calls if line.startswith("warn "))
    assert not [line for line in run.calls if line.startswith("iniset ")]

    compute.authkey.write_text("key")
    run = compute.run("stack", "post-config")
    assert commands(run, "systemctl") == ["systemctl enable pacemaker_remote",
                                          "systemctl restart pacemaker_remote"]


def test_extra_on_the_controller_makes_a_one_node_cluster(controller: Devstack) -> None:
    run = controller.run("stack", "extra")
    assert run.returncode == 0, run.stderr
    pcs = commands(run, "pcs")
    assert pcs == [
        "pcs cluster destroy --force",
        f"pcs host auth {CONTROLLER} addr={HOST_IP} -u hacluster",
        f"pcs cluster setup openstack-ha {CONTROLLER} addr={HOST_IP} --start --wait=5",
        "pcs property set stonith-enabled=false",
    ]
    # the hacluster password went through stdin only: to chpasswd, then to pcs host auth
    assert run.stdin == f"hacluster:{HACLUSTER_PASSWORD}\n{HACLUSTER_PASSWORD}\n"
    assert_no_secret_leaked(run)


def test_extra_does_nothing_on_a_compute_node(compute: Devstack) -> None:
    run = compute.run("stack", "extra")
    assert run.returncode == 0, run.stderr
    assert run.calls == []


def test_extra_gives_up_when_the_controller_never_comes_online(controller: Devstack) -> None:
    run = controller.run("stack", "extra", STUB_ONLINE="", OPENSTACK_HA_WAIT="0")
    assert run.returncode == 3
    assert f"{CONTROLLER} online in the cluster, still not after 0s" in run.calls[-1]


JOIN = {
    "OPENSTACK_HA_COMPUTES": "compute1=192.0.2.21 compute-2=192.0.2.22",
    "STUB_ONLINE": f"{CONTROLLER} compute1 compute-2",
    "STUB_STARTED": "compute1 compute-2 nova-evacuate",
}


def fence_devices(run: Run) -> dict[str, str]:
    return {line.split()[3]: line for line in commands(run, "pcs")
            if line.startswith("pcs stonith create ")}


def test_join_adds_remote_nodes_then_runs_configure_cluster_without_bmc(
        controller: Devstack) -> None:
    assert controller.run("stack", "post-config").returncode == 0
    run = controller.run("openstack-ha", "join-computes", **JOIN)
    assert run.returncode == 0, run.stderr + "\n".join(run.calls)
    pcs = commands(run, "pcs")
    assert ("pcs resource create compute1 ocf:pacemaker:remote server=192.0.2.21"
            " reconnect_interval=10s op monitor interval=5s timeout=5s --force") in pcs
    assert ("pcs resource create compute-2 ocf:pacemaker:remote server=192.0.2.22"
            " reconnect_interval=10s op monitor interval=5s timeout=5s --force") in pcs
    # the controller's own device (Pacemaker unfences the controller through it), then
    # configure-cluster.sh, after both connections existed
    dummy = index(pcs, f"pcs stonith create fence-{CONTROLLER} fence_dummy type=file")
    assert pcs[dummy].endswith(f" pcmk_host_list={CONTROLLER}")
    assert dummy > index(pcs, "pcs resource create compute-2 ocf:pacemaker:remote")
    assert index(pcs, "pcs property set stonith-enabled=true") > dummy
    devices = fence_devices(run)
    assert set(devices) == {f"fence-{CONTROLLER}", "fence-nova-compute1", "fence-nova-compute-2"}
    for name, device in devices.items():
        if name == f"fence-{CONTROLLER}":
            continue
        assert " power_driver=none " in device
        assert " endpoint_type=public " in device
        assert f"auth_url=http://{HOST_IP}/identity " in device
        assert f"password_file={controller.file('keystone.secret')} " in device
        assert " ip=" not in device and "bmc_" not in device
    assert (f"pcs resource create nova-evacuate ocf:openstack-ha:NovaEvacuate"
            f" config_file={controller.file('openstack-ha.conf')}") in " ".join(pcs)
    assert any("power_driver=none" in line for line in run.calls if line.startswith("warn "))
    settings = controller.file("devstack-cluster.settings")
    assert settings.stat().st_mode & 0o777 == 0o600
    assert "COMPUTES=compute1\\ compute-2" in settings.read_text()
    assert "BMC_DRIVER_compute_2=none" in settings.read_text()
    assert_no_secret_leaked(run)


def test_join_with_bmc_settings_fences_through_the_bmc(controller: Devstack,
                                                       tmp_path: Path) -> None:
    bmc = tmp_path / "bmc.settings"
    bmc.write_text("BMC_ADDRESS_compute1=10.0.0.11\nBMC_USERNAME_compute1=admin\n"
                   "BMC_PASSWORD_FILE_compute1=/etc/openstack-ha/bmc-compute1.secret\n")
    assert controller.run("stack", "post-config").returncode == 0
    run = controller.run("openstack-ha", "join-computes", OPENSTACK_HA_BMC_SETTINGS=str(bmc),
                         OPENSTACK_HA_COMPUTES="compute1=192.0.2.21",
                         STUB_ONLINE=f"{CONTROLLER} compute1",
                         STUB_STARTED="compute1 nova-evacuate")
    assert run.returncode == 0, run.stderr + "\n".join(run.calls)
    device = fence_devices(run)["fence-nova-compute1"]
    assert " power_driver=ipmi " in device and " ip=10.0.0.11 " in device
    assert not [line for line in run.calls if line.startswith("warn ")]


def test_join_waits_for_the_connection_not_only_the_node(controller: Devstack) -> None:
    # crm_mon calls a remote node online while its connection is still starting
    assert controller.run("stack", "post-config").returncode == 0
    run = controller.run("openstack-ha", "join-computes", OPENSTACK_HA_WAIT="0",
                         **{**JOIN, "STUB_STARTED": "compute1"})
    assert run.returncode == 3
    assert "compute node compute-2 online" in run.calls[-1]
    assert not fence_devices(run)


def test_join_is_not_run_twice(controller: Devstack) -> None:
    assert controller.run("stack", "post-config").returncode == 0
    run = controller.run("openstack-ha", "join-computes",
                         **{**JOIN, "STUB_PCS_EXISTING": "compute1 compute-2 nova-evacuate"})
    assert run.returncode == 0, run.stderr
    assert not [line for line in commands(run, "pcs") if " create " in line]


def test_join_refuses_names_configure_cluster_cannot_take(controller: Devstack) -> None:
    run = controller.run("openstack-ha", "join-computes",
                         OPENSTACK_HA_COMPUTES="compute1.example.org=192.0.2.21")
    assert run.returncode == 3
    assert "cannot be a node of configure-cluster.sh" in run.calls[-1]


def test_join_runs_on_the_controller_only(compute: Devstack) -> None:
    run = compute.run("openstack-ha", "join-computes", **JOIN)
    assert run.returncode == 3
    assert "join-computes runs on the controller" in run.calls[-1]


def test_unstack_stops_the_cluster_or_pacemaker_remote(controller: Devstack,
                                                       compute: Devstack) -> None:
    run = controller.run("unstack")
    assert run.returncode == 0, run.stderr
    assert commands(run, "pcs") == ["pcs cluster stop --force"]
    run = compute.run("unstack")
    assert run.returncode == 0, run.stderr
    assert commands(run, "systemctl") == ["systemctl stop pacemaker_remote"]


def test_clean_uninstalls_the_agents_then_removes_the_venv_and_conf(
        controller: Devstack) -> None:
    assert controller.run("stack", "install").returncode == 0
    assert controller.run("stack", "post-config").returncode == 0
    run = controller.run("clean")
    assert run.returncode == 0, run.stderr
    uninstall = index(run.calls, f"{controller.venv}/bin/openstack-ha-install --uninstall")
    assert uninstall < index(run.calls, f"sudo rm -rf {controller.venv}")
    assert "pcs cluster destroy --force" in run.calls
    assert not controller.venv.exists()
    assert not controller.conf_dir.exists()
