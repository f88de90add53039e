"""An outside target: any cloud the functional suites can run against instead of the lab
they start themselves (``OPENSTACK_HA_TARGET=path/to/hosts.json``).

A target is a clouds.yaml entry (found the way the ``openstack`` client finds it:
``OS_CLIENT_CONFIG_FILE`` or the usual places, the cloud named by ``OS_CLOUD``) plus a hosts
file: a JSON object with one entry per compute host the suites may use, each saying how to
make that host fail and how to bring it back::

    {"compute1": {"crash": ["ssh", "root@compute1", "echo c > /proc/sysrq-trigger"],
                  "restore": ["ipmitool", "-I", "lanplus", "-H", "10.0.0.11", "-U", "admin",
                              "-E", "chassis", "power", "on"]},
     "compute2": {...}}

``crash`` makes the host stop serving at once (its nova-compute with it); ``restore`` makes it
serve again. Both are argv lists run on the machine that runs the tests, with no shell;
secrets belong in the environment (``-E``), not in the file. Other keys (the lab's BMC
addresses) are allowed and ignored here. The lab writes such a file itself (``python -m lab up``
writes ``hosts.json``), so it is one target among others.

The suites create servers, flavors and images in the target and delete every server on the
target's compute hosts between tests: point them at a test cloud (a devstack), never at one
that carries anything of value.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import workload
from lab.failover import ClusterView
from openstack_ha import pacemaker

TARGET_VARIABLE = "OPENSTACK_HA_TARGET"
# How long a host has to go down after its crash command, and to serve after its restore.
COMMAND_TIMEOUT = 120.0
SERVICE_TIMEOUT = 180.0


class TargetError(Exception):
    """The target's description is unusable: one line that says which entry and why."""


@dataclass(frozen=True)
class TargetHost:
    name: str
    crash: tuple[str, ...]
    restore: tuple[str, ...]


def _argv(host: str, entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = entry.get(key)
    if (not isinstance(value, list) or not value
            or not all(isinstance(part, str) and part for part in value)):
        raise TargetError(f"hosts file: {host}.{key} must be a non-empty list of strings "
                          "(an argv, run without a shell)")
    return tuple(value)


def parse_hosts(text: str) -> dict[str, TargetHost]:
    """The hosts file's text, as ``{host: TargetHost}``; TargetError when it is unusable."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise TargetError(f"hosts file: not JSON ({exc})") from None
    if not isinstance(document, dict) or not document:
        raise TargetError("hosts file: must be a JSON object with one entry per compute host")
    hosts = {}
    for name, entry in document.items():
        if not isinstance(entry, dict):
            raise TargetError(f"hosts file: {name} must be an object")
        hosts[name] = TargetHost(name, _argv(name, entry, "crash"), _argv(name, entry, "restore"))
    return hosts


class Target:
    """A cloud the suites run against, with the little the functional suites ask of the lab
    (``connection``, ``cloud``, ``clouds_yaml``, ``crash``, ``restore``, ``reset``) and
    nothing of its internals: the tests that need those (fault injection, the lab's
    databases) are marked ``lab_only`` and skip here."""

    def __init__(self, hosts_file: Path, *, cloud: str, clouds_yaml: Path) -> None:
        self.hosts_file = hosts_file
        self.cloud = cloud
        self.clouds_yaml = clouds_yaml
        self.target_hosts = parse_hosts(hosts_file.read_text())

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Target | None:
        """The target named by ``OPENSTACK_HA_TARGET``, or None (the lab, then)."""
        path = env.get(TARGET_VARIABLE)
        if not path:
            return None
        cloud = env.get("OS_CLOUD")
        if not cloud:
            raise TargetError(f"{TARGET_VARIABLE} is set but OS_CLOUD is not: name the "
                              "target's cloud in clouds.yaml")
        clouds_yaml = _clouds_yaml(env)
        return cls(Path(path), cloud=cloud, clouds_yaml=clouds_yaml)

    def hosts(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.hosts_file.read_text())

    def connection(self, **kw: Any) -> Any:
        """An openstacksdk connection to the target's cloud; KW as for openstack.connect."""
        import openstack.config
        import openstack.connection

        config = openstack.config.OpenStackConfig(config_files=[str(self.clouds_yaml)],
                                                  vendor_files=[], secure_files=[])
        return openstack.connection.Connection(config=config.get_one(cloud=self.cloud, **kw))

    def _run(self, host: str, key: str) -> None:
        argv = getattr(self.target_hosts[host], key)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              check=False)
        if done.returncode != 0:
            # argv[0] only: the rest may carry an address or a user, never needed to debug
            raise TargetError(f"{host}: {key} command {argv[0]} exited {done.returncode}: "
                              f"{done.stderr.strip()[-500:]}")

    def crash(self, host: str) -> None:
        """HOST stops serving at once (the hosts file's ``crash`` command)."""
        self._run(host, "crash")

    def restore(self, host: str) -> None:
        """HOST serves again (the hosts file's ``restore`` command)."""
        self._run(host, "restore")

    def reset(self) -> None:
        """Per-test clean state: no servers on the target's hosts, each host serving, its
        nova-compute service enabled and not forced down."""
        conn = self.connection(compute_api_version="2.53")
        names = set(self.target_hosts)
        deadline = time.monotonic() + SERVICE_TIMEOUT
        while servers := [s for s in conn.compute.servers(all_projects=True, details=True)
                          if s.compute_host in names]:
            if time.monotonic() > deadline:
                raise TargetError(f"{len(servers)} servers not deleted after {SERVICE_TIMEOUT}s")
            for server in servers:
                conn.compute.delete_server(server, ignore_missing=True)
            time.sleep(2)
        for service in conn.compute.services(binary="nova-compute"):
            if service.host not in names:
                continue
            if service.state != "up" or service.is_forced_down:
                self.restore(service.host)  # the command is idempotent: a host up stays up
            if service.is_forced_down:
                conn.compute.update_service_forced_down(service, service.host, "nova-compute",
                                                         False)
            if service.status != "enabled":
                conn.compute.enable_service(service, service.host, "nova-compute")
        while down := sorted(s.host for s in conn.compute.services(binary="nova-compute")
                             if s.host in names and s.state != "up"):
            if time.monotonic() > deadline:
                raise TargetError(f"{down} not up after {SERVICE_TIMEOUT}s")
            time.sleep(2)


def target_host_names(env: Mapping[str, str] = os.environ) -> list[str]:
    """The outside target's compute hosts, in its hosts file's order; [] for the lab. Read
    when a test module is imported, for its module-level host names."""
    path = env.get(TARGET_VARIABLE)
    return list(parse_hosts(Path(path).read_text())) if path else []


def _clouds_yaml(env: Mapping[str, str]) -> Path:
    """The clouds.yaml openstacksdk would read first: ``OS_CLIENT_CONFIG_FILE``, then the
    current directory, the user's and the system's."""
    candidates = [env.get("OS_CLIENT_CONFIG_FILE", ""), "clouds.yaml",
                  str(Path.home() / ".config/openstack/clouds.yaml"),
                  "/etc/openstack/clouds.yaml"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise TargetError("no clouds.yaml: set OS_CLIENT_CONFIG_FILE or put one where the "
                      "openstack client looks")


class TargetDeployment(ClusterView):
    """An outside deployment of the reference configuration (scripts/configure-cluster.sh's
    resource names), seen from this machine, one of its controllers: what the end-to-end
    scenarios marked ``target`` ask of a deployment, the lab's internals left out."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.hosts = list(target.target_hosts)
        self.controllers = sorted(node.get("name", "") for node in self.crm_mon().iter("node")
                                  if node.get("type") == "member")

    def connection(self, **kw: Any) -> Any:
        return self.target.connection(**kw)

    def crash(self, host: str) -> None:
        self.target.crash(host)

    def heal(self, timeout: float = SERVICE_TIMEOUT) -> None:
        """Every host restored and serving in the cluster, no servers, Nova clean. Unlike
        the lab's, it never confirms a fence by hand: a host the cluster still wants fenced
        is an error to look at, not something a test may paper over."""
        for host in self.hosts:
            pacemaker.release_connection(host)  # a test that ended with the host off
            self.target.restore(host)
        deadline = time.monotonic() + timeout
        while True:
            subprocess.run(["crm_resource", "--cleanup"], capture_output=True, timeout=60,
                           check=False)
            try:
                workload.wait_for(self.serving, 30, "the cluster serving", 1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        self.target.reset()
        for host in self.hosts:
            subprocess.run(["attrd_updater", "-n", "evacuate", "-D", "-N", host],
                           capture_output=True, timeout=30, check=False)
