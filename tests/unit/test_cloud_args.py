"""Which cloud a command talks to (nova_evacuate/cloud_args.py, nova.connect_to_cloud): the
one precedence of every command, against the real oslo.config (a configuration file in a
temporary directory) and the real openstacksdk configuration loader (clouds.yaml files in a
temporary directory). Nothing is sent: a connection is only built, its cloud read back.

The precedence, for the cloud's name: --os-cloud, then [cloud] cloud when a configuration
file sets it, then OS_CLOUD, then the OS_* variables (openstacksdk's ``envvars`` cloud) when
OS_AUTH_URL is set, then the default ``openstack``; for the clouds.yaml: [cloud] clouds_yaml
when a file sets it, then OS_CLIENT_CONFIG_FILE, then openstacksdk's search path. The
commands themselves (nova-evacuate, openstack-ha-watchdog) are run as processes at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openstack.config import loader

from nova_evacuate import conf as confmod
from nova_evacuate.cloud_args import (
    CloudChoice,
    add_cloud_arguments,
    choose_cloud,
    missing_cloud,
    select_cloud,
)
from nova_evacuate.nova import NovaError, connect, connect_from_conf

# openstacksdk's CloudRegion warns of its InfluxDB support, whatever the configuration
pytestmark = pytest.mark.filterwarnings("ignore:Support for InfluxDB")

REPO = Path(__file__).resolve().parents[2]
CLOUDS = ("cli-cloud", "file-cloud", "env-cloud", "openstack", "other")
ENV_AUTH = {"OS_AUTH_URL": "http://127.0.0.1:9/envvars/v3", "OS_USERNAME": "env-user",
            "OS_PASSWORD": "env-password", "OS_PROJECT_NAME": "env-project",
            "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"}


def clouds_yaml(path: Path, names: tuple[str, ...] = CLOUDS, tag: str = "") -> Path:
    """A clouds.yaml whose every cloud's auth_url names the cloud (and ``tag``, the file)."""
    lines = ["clouds:"]
    for name in names:
        lines += [f"  {name}:", "    auth:",
                  f"      auth_url: http://127.0.0.1:9/{name}{tag}/v3",
                  "      username: yaml-user", "      password: yaml-password",
                  "      project_name: p", "      user_domain_name: Default",
                  "      project_domain_name: Default"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_conf(path: Path, text: str) -> Any:
    path.write_text(text, encoding="utf-8")
    return confmod.load([str(path)])


def region(nova: Any) -> Any:
    """The openstacksdk CloudRegion the connection was built from."""
    return nova._conn.config


def auth_url(nova: Any) -> str:
    return region(nova).get_auth_args()["auth_url"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No OS_* variable, and openstacksdk's search path moved to an empty directory."""
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    search = tmp_path / "search"
    search.mkdir()
    for name in ("CONFIG_FILES", "SECURE_FILES", "VENDOR_FILES"):
        stem = {"CONFIG_FILES": "clouds", "SECURE_FILES": "secure",
                "VENDOR_FILES": "clouds-public"}[name]
        monkeypatch.setattr(loader, name, [str(search / f"{stem}.yaml")])
    return monkeypatch


# ---------------------------------------------------------------------------- the cloud's name


TABLE = [
    pytest.param(cli, in_file, os_cloud, os_auth,
                 id=f"cli={bool(cli)}-file={bool(in_file)}-OS_CLOUD={bool(os_cloud)}"
                    f"-OS_AUTH={os_auth}")
    for cli, in_file, os_cloud, os_auth in itertools.product(
        (None, "cli-cloud"), (None, "file-cloud"), (None, "env-cloud"), (False, True))
]


@pytest.mark.parametrize(("cli", "in_file", "os_cloud", "os_auth"), TABLE)
def test_the_cloud_is_the_first_of_cli_file_os_cloud_os_variables_default(
        clean_env, tmp_path, cli, in_file, os_cloud, os_auth):
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path / "clouds.yaml")))
    if os_cloud:
        clean_env.setenv("OS_CLOUD", os_cloud)
    if os_auth:
        for key, value in ENV_AUTH.items():
            clean_env.setenv(key, value)
    conf = load_conf(tmp_path / "openstack-ha.conf",
                     f"[cloud]\ncloud = {in_file}\n" if in_file else "[evacuation]\n")

    nova = connect_from_conf(conf, cli)  # the process environment, as every command

    expected = cli or in_file or os_cloud or ("envvars" if os_auth else "openstack")
    source = ("--os-cloud" if cli else f"[cloud] cloud in {tmp_path}/openstack-ha.conf"
              if in_file else "OS_CLOUD" if os_cloud else
              "the OS_* variables (OS_AUTH_URL is set)" if os_auth
              else "the default of [cloud] cloud")
    choice = select_cloud(cli, conf, os.environ)
    assert (choice.name, choice.source) == (expected, source)
    assert region(nova).name == expected
    assert auth_url(nova) == f"http://127.0.0.1:9/{expected}/v3"
    # the OS_* variables make a cloud of their own, never merged into one named otherwise
    assert region(nova).get_auth_args()["username"] == (
        "env-user" if expected == "envvars" else "yaml-user")


def test_a_file_that_sets_the_default_value_still_beats_os_cloud(clean_env, tmp_path):
    """Whether a file sets the option is asked of oslo.config, not read from the value."""
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path / "clouds.yaml")))
    clean_env.setenv("OS_CLOUD", "env-cloud")
    conf = load_conf(tmp_path / "a.conf", "[cloud]\ncloud = openstack\n")
    assert region(connect_from_conf(conf)).name == "openstack"
    conf = load_conf(tmp_path / "b.conf", "[cloud]\n#cloud = openstack\n")
    assert region(connect_from_conf(conf)).name == "env-cloud"


def test_without_configuration_file_the_default_cloud_is_openstack(clean_env, tmp_path):
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path / "clouds.yaml")))
    conf = confmod.load([])
    assert select_cloud(None, conf, {}) == CloudChoice(
        "openstack", "the default of [cloud] cloud")
    assert region(connect_from_conf(conf)).name == "openstack"


@pytest.mark.parametrize("os_cloud", ["", "   "])
def test_a_blank_os_cloud_is_not_set(clean_env, tmp_path, os_cloud):
    clean_env.setenv("OS_CLOUD", os_cloud)
    assert select_cloud(None, confmod.load([]), os.environ).name == "openstack"


# ---------------------------------------------------------------------------- the clouds.yaml


@pytest.mark.parametrize(("in_file", "in_env"),
                         list(itertools.product((False, True), repeat=2)))
def test_the_clouds_yaml_is_the_files_then_os_client_config_file_then_the_search_path(
        clean_env, tmp_path, in_file, in_env):
    clouds_yaml(tmp_path / "search" / "clouds.yaml", tag="-search")
    conf_yaml = clouds_yaml(tmp_path / "conf-clouds.yaml", tag="-conf")
    env_yaml = clouds_yaml(tmp_path / "env-clouds.yaml", tag="-env")
    if in_env:
        clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(env_yaml))
    conf = load_conf(tmp_path / "openstack-ha.conf", "[cloud]\ncloud = other\n" + (
        f"clouds_yaml = {conf_yaml}\n" if in_file else ""))

    nova = connect_from_conf(conf)

    tag = "-conf" if in_file else "-env" if in_env else "-search"
    assert auth_url(nova) == f"http://127.0.0.1:9/other{tag}/v3"
    choice = select_cloud(None, conf, os.environ)
    assert choice.clouds_yaml_source == (
        f"[cloud] clouds_yaml in {tmp_path}/openstack-ha.conf" if in_file
        else "OS_CLIENT_CONFIG_FILE" if in_env else "openstacksdk's search path")
    assert choice.clouds_yaml_alone == in_file


def test_os_client_config_file_naming_no_file_falls_back_to_the_search_path(clean_env,
                                                                            tmp_path):
    """As openstacksdk reads it: the file named first, then the search path."""
    clouds_yaml(tmp_path / "search" / "clouds.yaml", tag="-search")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "nowhere.yaml"))
    clean_env.setenv("OS_CLOUD", "other")
    assert auth_url(connect_from_conf(confmod.load([]))) == "http://127.0.0.1:9/other-search/v3"


def test_the_pacemaker_worker_reads_its_configuration_file_whatever_the_environment(
        clean_env, tmp_path):
    """NovaEvacuate's worker runs connect_from_conf with the file's [cloud] cloud and
    clouds_yaml: an operator's OS_CLOUD, OS_CLIENT_CONFIG_FILE and openrc change nothing,
    and without them (Pacemaker's environment) it is the same cloud."""
    deployed = clouds_yaml(tmp_path / "deployed.yaml", ("lab",))
    conf = load_conf(tmp_path / "openstack-ha.conf",
                     f"[cloud]\ncloud = lab\nclouds_yaml = {deployed}\n")
    assert auth_url(connect_from_conf(conf, None, {})) == "http://127.0.0.1:9/lab/v3"
    clean_env.setenv("OS_CLOUD", "env-cloud")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path / "clouds.yaml")))
    for key, value in ENV_AUTH.items():
        clean_env.setenv(key, value)
    assert auth_url(connect_from_conf(conf)) == "http://127.0.0.1:9/lab/v3"


def test_a_clouds_yaml_named_to_connect_is_read_alone_whatever_the_environment(
        clean_env, tmp_path):
    """nova.connect(cloud=, clouds_yaml=): the file it is given, even when
    OS_CLIENT_CONFIG_FILE names another (openstacksdk would read that one first)."""
    given_file = clouds_yaml(tmp_path / "given.yaml", ("lab",))
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path / "env.yaml", ("other",))))
    clean_env.setenv("OS_CLOUD", "other")
    assert auth_url(connect(cloud="lab", clouds_yaml=given_file)) == "http://127.0.0.1:9/lab/v3"


# ---------------------------------------------------------------------------- OS_* variables


def test_the_os_variables_alone_make_the_cloud_as_for_the_openstack_client(clean_env,
                                                                           tmp_path):
    """No configuration file, no clouds.yaml, no OS_CLOUD: an openrc's variables."""
    for key, value in ENV_AUTH.items():
        clean_env.setenv(key, value)
    clean_env.setenv("OS_REGION_NAME", "RegionTwo")
    nova = connect_from_conf(confmod.load([]))
    assert region(nova).name == "envvars"
    assert region(nova).get_auth_args() == {
        "auth_url": ENV_AUTH["OS_AUTH_URL"], "username": "env-user",
        "password": "env-password", "project_name": "env-project",
        "user_domain_name": "Default", "project_domain_name": "Default"}
    assert region(nova).region_name == "RegionTwo"
    assert region(nova).get_interface() == "internal"  # [cloud] interface's default


def test_os_cloud_name_renames_the_os_cloud_and_os_cloud_may_name_it(clean_env):
    for key, value in ENV_AUTH.items():
        clean_env.setenv(key, value)
    clean_env.setenv("OS_CLOUD_NAME", "devstack")
    assert region(connect_from_conf(confmod.load([]))).name == "devstack"
    clean_env.setenv("OS_CLOUD", "devstack")
    assert region(connect_from_conf(confmod.load([]))).get_auth_args()["username"] == "env-user"


@pytest.mark.parametrize(("os_interface", "in_file", "expected"), [
    (None, None, "internal"), ("public", None, "public"), ("public", "admin", "admin"),
    (None, "public", "public")])
def test_os_interface_beats_the_default_interface_not_the_files(clean_env, tmp_path,
                                                                os_interface, in_file,
                                                                expected):
    for key, value in ENV_AUTH.items():
        clean_env.setenv(key, value)
    if os_interface:
        clean_env.setenv("OS_INTERFACE", os_interface)
    conf = load_conf(tmp_path / "a.conf",
                     f"[cloud]\ninterface = {in_file}\n" if in_file else "")
    assert region(connect_from_conf(conf)).get_interface() == expected


def test_other_os_variables_alone_do_not_replace_the_default_cloud(clean_env, tmp_path):
    """openstacksdk would make a cloud of an exported OS_CACERT alone, without auth_url."""
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path / "clouds.yaml")))
    clean_env.setenv("OS_CACERT", "/etc/pki/tls/certs/ca-bundle.crt")
    clean_env.setenv("OS_USERNAME", "someone")
    assert region(connect_from_conf(confmod.load([]))).name == "openstack"


# ---------------------------------------------------------------------------- refusals


def refusal(conf: Any, cloud: str | None = None) -> str:
    with pytest.raises(NovaError) as error:
        connect_from_conf(conf, cloud)
    text = str(error.value)
    assert error.value.kind == "auth" and "\n" not in text
    return text


def test_a_cloud_not_in_the_clouds_yaml_is_named_with_its_source_and_the_file(clean_env,
                                                                              tmp_path):
    path = clouds_yaml(tmp_path / "clouds.yaml", ("a", "b"))
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    clean_env.setenv("OS_CLOUD", "mycloud")
    assert refusal(confmod.load([])) == (
        f"cannot use cloud 'mycloud' from OS_CLOUD: not in {path} (its clouds: 'a', 'b')")
    assert refusal(confmod.load([]), "x") == (
        f"cannot use cloud 'x' from --os-cloud: not in {path} (its clouds: 'a', 'b')")
    conf = load_conf(tmp_path / "c.conf", "[cloud]\ncloud = y\n")
    assert refusal(conf) == (f"cannot use cloud 'y' from [cloud] cloud in {tmp_path}/c.conf:"
                             f" not in {path} (its clouds: 'a', 'b')")


def test_a_missing_or_unreadable_clouds_yaml_is_named_with_its_source(clean_env, tmp_path):
    conf = load_conf(tmp_path / "c.conf", f"[cloud]\nclouds_yaml = {tmp_path}/none.yaml\n")
    assert refusal(conf) == (
        f"cannot use cloud 'openstack' from the default of [cloud] cloud: {tmp_path}/none.yaml"
        f" ([cloud] clouds_yaml in {tmp_path}/c.conf) does not exist")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "none.yaml"))
    assert refusal(confmod.load([]), "x") == (
        f"cannot use cloud 'x' from --os-cloud: {tmp_path}/none.yaml (OS_CLIENT_CONFIG_FILE)"
        f" does not exist, and none was found in the current directory, ~/.config/openstack"
        f" and /etc/openstack")
    clean_env.delenv("OS_CLIENT_CONFIG_FILE")
    assert refusal(confmod.load([])) == (
        "cannot use cloud 'openstack' from the default of [cloud] cloud: no clouds.yaml found"
        " in the current directory, ~/.config/openstack and /etc/openstack")


def test_a_clouds_yaml_without_clouds_says_so(clean_env, tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds: {}\n", encoding="utf-8")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    assert refusal(confmod.load([]), "x") == (
        f"cannot use cloud 'x' from --os-cloud: not in {path} (it has no cloud)")


def test_an_entry_without_auth_url_is_a_refusal_not_a_traceback(clean_env, tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds:\n  x:\n    region_name: R\n", encoding="utf-8")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    assert refusal(confmod.load([]), "x") == (
        f"cannot use cloud 'x' from --os-cloud, in {path}: Auth plugin requires parameters"
        f" which were not given: auth_url")


def test_the_os_cloud_named_without_os_variables_says_so(clean_env):
    clean_env.setenv("OS_CLOUD", "envvars")
    assert refusal(confmod.load([])) == (
        "cannot use cloud 'envvars' from OS_CLOUD: openstacksdk's cloud of the OS_* variables,"
        " and none of them is set (set OS_AUTH_URL and the others, as an openrc file does)")


def test_a_cloud_set_to_nothing_in_the_file_is_refused_not_passed_over(clean_env, tmp_path):
    clean_env.setenv("OS_CLOUD", "env-cloud")
    conf = load_conf(tmp_path / "c.conf", "[cloud]\ncloud =\n")
    assert refusal(conf) == (f"[cloud] cloud in {tmp_path}/c.conf is empty: name a clouds.yaml"
                             f" entry, or leave the option out")


def test_a_refusal_never_carries_a_password(clean_env, tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds:\n  x:\n    auth:\n      password: s3cr3t-pw\n", encoding="utf-8")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    clean_env.setenv("OS_PASSWORD", "env-s3cr3t")
    for cloud in ("x", "y"):
        text = refusal(confmod.load([]), cloud)
        assert "s3cr3t" not in text


# ---------------------------------------------------------------------------- properties


NAMES = st.text(st.sampled_from("abcxyz019._-"), min_size=1, max_size=12)
BLANKS = st.sampled_from(["", " ", "\t"])


@given(given_=st.one_of(st.none(), NAMES), in_file=st.one_of(st.none(), NAMES),
       os_cloud=st.one_of(st.none(), BLANKS, NAMES),
       auth_url_=st.one_of(st.none(), BLANKS, st.just("http://127.0.0.1:9/v3")),
       cloud_name=st.one_of(st.none(), NAMES),
       yaml_in_file=st.one_of(st.none(), NAMES), yaml_in_env=st.one_of(st.none(), NAMES))
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_choice_is_the_first_source_set_in_order(tmp_path, given_, in_file, os_cloud,
                                                     auth_url_, cloud_name, yaml_in_file,
                                                     yaml_in_env):
    text = "[cloud]\n" + (f"cloud = {in_file}\n" if in_file else "") + (
        f"clouds_yaml = /{yaml_in_file}\n" if yaml_in_file else "")
    conf = load_conf(tmp_path / "p.conf", text)
    environ = {k: v for k, v in (("OS_CLOUD", os_cloud), ("OS_AUTH_URL", auth_url_),
                                 ("OS_CLOUD_NAME", cloud_name),
                                 ("OS_CLIENT_CONFIG_FILE", yaml_in_env and f"/{yaml_in_env}"))
               if v is not None}
    choice = select_cloud(given_, conf, environ)
    env_key = cloud_name or "envvars"
    order = [(given_, "--os-cloud"), (in_file, "[cloud] cloud in"),
             ((os_cloud or "").strip(), "OS_CLOUD"),
             (env_key if (auth_url_ or "").strip() else None, "the OS_* variables"),
             ("openstack", "the default of [cloud] cloud")]
    name, source = next((n, s) for n, s in order if n)
    assert choice.name == name and choice.source.startswith(source)
    assert choice.env_cloud == (name == env_key)
    assert choice.clouds_yaml == (f"/{yaml_in_file}" if yaml_in_file else
                                  f"/{yaml_in_env}" if yaml_in_env else None)
    assert choice.clouds_yaml_alone == bool(yaml_in_file)


@given(name=st.text(max_size=40), source=st.text(max_size=40),
       read=st.one_of(st.none(), st.text(max_size=40)),
       names=st.lists(st.text(max_size=10), max_size=15),
       named=st.one_of(st.none(), st.text(max_size=40)), alone=st.booleans(),
       env=st.booleans(), exists=st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_missing_cloud_message_always_names_the_cloud_and_its_source(name, source, read,
                                                                       names, named, alone,
                                                                       env, exists):
    choice = CloudChoice(name, source, named, "S", alone, env)
    text = missing_cloud(choice, read, names, lambda _: exists)
    assert text.startswith(f"cloud {name!r} from {source}")
    if not env:
        assert (read or named or "no clouds.yaml found") in text
        assert text.count("', '") <= 9  # at most ten of the file's clouds listed


def test_choose_cloud_reads_the_parsed_command_line(tmp_path):
    p = argparse.ArgumentParser()
    add_cloud_arguments(p)
    conf = confmod.load([])
    assert choose_cloud(p.parse_args(["--cloud", "a"]), conf, {"OS_CLOUD": "b"}).name == "a"
    assert choose_cloud(p.parse_args(["--os-cloud", "a"]), conf, {}).source == "--os-cloud"
    assert choose_cloud(p.parse_args([]), conf, {"OS_CLOUD": "b"}).name == "b"


# ---------------------------------------------------------------------------- the commands

# The commands as processes, without the machine's configuration file (a lab host may have
# one): openstacksdk reaches for 127.0.0.1:9, where nothing listens, so the error line
# names the auth URL, and so the cloud that was chosen.
RUN = ("import sys\nfrom nova_evacuate import conf\n"
       "conf.DEFAULT_CONFIG_FILE = '/nonexistent/openstack-ha.conf'\n"
       "from nova_evacuate import {module} as command\nsys.exit(command.main(sys.argv[1:]))\n")
COMMANDS = {"nova-evacuate": ("cli", ["--dry-run", "compute1"]),
            "openstack-ha-watchdog": ("watchdog_cli", ["audit"])}


def run_command(command: str, tmp_path: Path, env: dict[str, str],
                *args: str) -> subprocess.CompletedProcess[str]:
    module, argv = COMMANDS[command]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    clean.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", RUN.format(module=module), *argv, *args],
                          cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("env", "args", "in_file", "expected"), [
    pytest.param({"OS_CLOUD": "mycloud"}, [], None, "mycloud", id="OS_CLOUD"),
    pytest.param({"OS_CLOUD": "mycloud"}, ["--os-cloud", "other"], None, "other",
                 id="--os-cloud"),
    pytest.param({"OS_CLOUD": "mycloud"}, ["--cloud", "other"], "file-cloud", "other",
                 id="--cloud-over-the-file"),
    pytest.param({"OS_CLOUD": "mycloud"}, [], "file-cloud", "file-cloud",
                 id="the-file-over-OS_CLOUD"),
    pytest.param({"OS_CLOUD": "mycloud", **ENV_AUTH}, [], None, "mycloud",
                 id="OS_CLOUD-over-OS_*"),
    pytest.param(ENV_AUTH, [], None, "envvars", id="OS_*-only"),
])
def test_the_commands_talk_to_the_cloud_the_precedence_chooses(tmp_path, command, env, args,
                                                               in_file, expected):
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds_yaml(tmp_path / "clouds.yaml",
                                                     ("mycloud", "other", "file-cloud"))),
           **env}
    if in_file:
        (tmp_path / "a.conf").write_text(f"[cloud]\ncloud = {in_file}\n", encoding="utf-8")
        args = [*args, "--config-file", str(tmp_path / "a.conf")]
    done = run_command(command, tmp_path, env, *args)
    assert done.returncode == 1, done.stderr  # the cloud cannot be read: unreachable
    last = done.stderr.strip().splitlines()[-1]
    assert "was not found" not in done.stderr and "Traceback" not in done.stderr
    assert "cannot reach the cloud" in last and f"127.0.0.1:9/{expected}/v3" in last, last
    assert "env-password" not in done.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_cloud_the_clouds_yaml_lacks_is_exit_2_in_one_line_naming_the_source(tmp_path,
                                                                             command):
    path = clouds_yaml(tmp_path / "clouds.yaml", ("lab",))
    done = run_command(command, tmp_path, {"OS_CLIENT_CONFIG_FILE": str(path),
                                           "OS_CLOUD": "mycloud"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{command}: configuration: cannot use cloud 'mycloud' from OS_CLOUD: not in {path}"
        f" (its clouds: 'lab')"]
