"""A real OpenStack compute control plane on loopback: the lab's Nova.

Real services, each its own process, from the lab venv (:mod:`lab.openstack_setup`):

* PostgreSQL and RabbitMQ (Debian's, but private instances the lab starts itself on its own
  ports: Debian's own services are never started; SQLite does not survive several Nova
  processes writing, research/nova-lab.md pitfall 3);
* Keystone (Fernet tokens, bootstrap, uWSGI), the token lifetime chosen at ``up()``;
* Placement (uWSGI; ``noauth2``, nova talks to it with ``admin_token``);
* Glance (uWSGI, file store, keystonemiddleware): real, since it installs in seconds and starts
  in a few; images keep arbitrary properties (the suite filters on ``evacuable``);
* nova-api (uWSGI, nova's shipped api-paste.ini: keystonemiddleware ``authtoken`` in front),
  nova-conductor and nova-scheduler (1 worker each), and one nova-compute per host with
  ``fake.FakeDriverWithoutFakeNodes``, each its own ``host`` and ``state_path`` (that driver keeps
  its node uuid there, so a killed compute can be started again).

One stand-in: Neutron (:mod:`lab.fake_network`, whose docstring says why).

Everything listens on ``bind_host`` (127.0.0.1) at ports ``port_base`` .. ``port_base + 99``
(:mod:`lab.openstack_config`). State, configuration and logs live in the state dir. The lab's
processes are recorded in ``openstack.json`` (pid and kernel start time, so a reused pid is never
signalled), so any process can stop a lab that another started. Test clients authenticate
through Keystone with ``clouds.yaml`` (cloud ``lab``, interface ``internal``). A token lifetime
under keystoneauth's ``MIN_TOKEN_LIFE_SECONDS`` (120 s) makes clients fetch a new token before
every request.

Command line::

    python -m lab.openstack up [--computes N] [--state-dir DIR] [--token-expiration S]
    python -m lab.openstack down|status [--state-dir DIR]
    python -m lab.openstack kill-compute|start-compute HOST [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab import openstack_setup as setup
from lab.files import make_dir, user_ids
from lab.openstack_config import DATABASES, REGION, Layout, rabbitmq_env, render
from lab.openstack_procs import Procs
from lab.openstack_rest import Rest, RestError, http_status, parse_time, wait

LOG = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
# uWSGI apps: (module, config dir env var, threads)
_UWSGI = {
    "keystone": ("keystone.wsgi.api:application", "OS_KEYSTONE_CONFIG_DIR", 4),
    "placement": ("placement.wsgi.api:application", "OS_PLACEMENT_CONFIG_DIR", 4),
    "glance": ("glance.wsgi.api:application", "OS_GLANCE_CONFIG_DIR", 2),
    "nova-api": ("nova.wsgi.osapi_compute:application", "OS_NOVA_CONFIG_DIR", 8),
}
SERVICES = ("postgres", "epmd", "rabbitmq", "keystone", "placement", "glance", "neutron",
            "nova-api", "conductor", "scheduler")
COMPUTE_PREFIX = "nova-compute@"


class LabError(RuntimeError):
    """The lab could not do what was asked; the message names the log to read."""


def default_state_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB", "/tmp/openstack-ha-lab")) / "openstack"


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise LabError("no PostgreSQL server in /usr/lib/postgresql (ensure_packages failed?)")
    return found[-1].parent


class OpenStackLab:
    """One lab, all its state under ``state_dir``. Several instances may point at the same
    state dir (a test, a CLI in a shell): what they share is on disk and in the kernel."""

    def __init__(self, state_dir: Path, *, port_base: int = 15000,
                 bind_host: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir).absolute()
        self.procs = Procs(self.state_dir / "openstack.json")
        self._requested = Layout(self.state_dir, bind_host, port_base)
        saved = self.procs.load()
        # A running lab keeps the ports it was started with (a CLI need not repeat them);
        # up() restarts it on the requested ones.
        if self.procs.running() and "port_base" in saved:
            self.layout = Layout(self.state_dir, saved["bind_host"], saved["port_base"])
        else:
            self.layout = self._requested
        self.venv = setup.venv_dir()
        self.clouds_yaml = self.state_dir / "clouds.yaml"

    @property
    def computes(self) -> list[str]:
        return list(self.procs.load().get("computes", []))

    # ------------------------------------------------------------------ commands

    def _conf(self, name: str) -> list[str]:
        return ["--config-file", str(self.layout.etc / "nova" / name)]

    def compute_command(self, host: str) -> list[str]:
        """The argv that runs HOST's nova-compute (with the lab venv's environment): inside
        the Pacemaker lab's node HOST when the lab was brought up with ``computes_in_nodes``."""
        argv = [str(self.venv / "bin/nova-compute"), *self._conf("nova.conf"),
                "--config-file", str(self.layout.compute_conf(host))]
        if self.procs.load().get("computes_in_nodes"):
            argv = ["/usr/bin/python3", "-m", "lab.pacemaker", "exec", host, "--", *argv]
        return argv

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        lay, venv = self.layout, self.venv
        if name.startswith(COMPUTE_PREFIX):
            in_node = bool(self.procs.load().get("computes_in_nodes"))  # lab.pacemaker exec
            return (self.compute_command(name[len(COMPUTE_PREFIX):]),
                    {"PYTHONPATH": str(REPO_ROOT)} if in_node else {})
        if name in _UWSGI:
            module, env_var, threads = _UWSGI[name]
            argv = [str(venv / "bin/uwsgi"), "--http-socket", f"{lay.bind_host}:{lay.port(name)}",
                    "--module", module, "--master", "--processes", "1", "--threads", str(threads),
                    "--enable-threads", "--lazy-apps", "--die-on-term", "--need-app",
                    "--buffer-size", "65535", "--add-header", "Connection: close",
                    "--env", f"{env_var}={lay.etc / name.split('-')[0]}"]
            if name == "glance":  # image upload/download bodies
                argv += ["--http-auto-chunked", "--http-chunked-input", "--http-raw-body"]
            return argv, {}
        if name in ("conductor", "scheduler"):
            return [str(venv / f"bin/nova-{name}"), *self._conf("nova.conf")], {}
        if name == "neutron":
            return [str(venv / "bin/python"), "-m", "lab.fake_network", "--host", lay.bind_host,
                    "--port", str(lay.port("neutron"))], {"PYTHONPATH": str(REPO_ROOT)}
        if name == "postgres":
            return [str(_pg_bin() / "postgres"), "-D", str(self._pg_dir()),
                    "-c", f"listen_addresses={lay.bind_host}", "-c", f"port={lay.port('postgres')}",
                    "-c", f"unix_socket_directories={self._pg_dir()}", "-c", "fsync=off",
                    "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=300", "-c", "shared_buffers=64MB"], {}
        if name == "epmd":
            return [shutil.which("epmd") or "/usr/bin/epmd", "-address", lay.bind_host,
                    "-port", str(lay.port("epmd"))], {}
        if name == "rabbitmq":  # as root: not the /usr/sbin wrapper, which su's (pitfall 12)
            return ["/usr/lib/rabbitmq/bin/rabbitmq-server"], rabbitmq_env(lay)
        raise LabError(f"unknown service {name!r} (one of {', '.join(SERVICES)})")

    def _start(self, name: str) -> None:
        argv, env = self._command(name)
        user = "postgres" if name == "postgres" else None
        self.procs.start(name, argv, log=self.layout.log_dir / f"{name}.log",
                         env={"HOME": str(self.state_dir / "home"), **env}, user=user,
                         path_prefix=str(self.venv / "bin"))

    # ------------------------------------------------------------------ postgres

    def _pg_dir(self) -> Path:
        """PostgreSQL refuses root, and user postgres must reach its data dir: a state dir under
        a private directory (pytest's /tmp/pytest-of-root is 0700) gets its data dir elsewhere,
        with a symlink in the state dir."""
        link = self.state_dir / "pg"
        if link.is_symlink():
            return link.resolve()
        if all(p.stat().st_mode & 0o001 for p in (self.state_dir, *self.state_dir.parents)):
            return link
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        target = Path("/var/tmp/openstack-ha-lab") / f"pg-{digest}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o711)
        link.symlink_to(target)
        return target

    def _psql(self, *commands: str, database: str = "postgres") -> None:
        argv = [str(_pg_bin() / "psql"), "-h", self.layout.bind_host, "-p",
                str(self.layout.port("postgres")), "-U", "postgres", "-d", database, "-q",
                "-v", "ON_ERROR_STOP=1"]
        for c in commands:
            argv += ["-c", c]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise LabError(f"psql {commands[0]!r}: {proc.stderr.strip()[-300:]}")

    def _initdb(self) -> None:
        pg = self._pg_dir()
        if not (pg / "PG_VERSION").exists():
            self._run_initdb(pg)
        # initdb trusts 127.0.0.1 only; with the cluster, the lab listens on 10.251.0.1
        hba = pg / "pg_hba.conf"
        line = f"host all all {self.layout.bind_host}/32 trust\n"
        if line not in hba.read_text():
            with hba.open("a") as f:
                f.write(line)

    def _run_initdb(self, pg: Path) -> None:
        make_dir(pg, 0o700, user_ids("postgres", "postgres"))
        proc = subprocess.run(
            [str(_pg_bin() / "initdb"), "-D", str(pg), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync"], user="postgres", group="postgres", extra_groups=[],
            cwd="/", capture_output=True, text=True,
            timeout=120, check=False)
        if proc.returncode != 0:
            raise LabError(f"initdb {pg}: {proc.stderr.strip()[-300:]}")

    # ------------------------------------------------------------------ init

    def _manage(self, *argv: str) -> None:
        log = self.layout.log_dir / "init.log"
        with open(log, "a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            proc = subprocess.run([str(self.venv / "bin" / argv[0]), *argv[1:]], stdout=out,
                                  stderr=subprocess.STDOUT, timeout=300, check=False,
                                  cwd=self.state_dir)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(argv[:4])} failed (see {log})")

    def _init_key(self) -> dict[str, Any]:
        # "catalog" counts changes to what _initialize creates (2: the placement service user).
        return {"port_base": self.layout.port_base, "bind_host": self.layout.bind_host,
                "catalog": 2}

    def _initialized(self) -> bool:
        """Init finished for these ports (cells and the catalog hold URLs), data still there."""
        return (self.procs.load().get("init") == self._init_key()
                and (self._pg_dir() / "PG_VERSION").exists())

    def _initialize(self) -> None:
        """Databases, schemas, cells, Keystone bootstrap and catalog: once per state dir."""
        lay, etc = self.layout, self.layout.etc
        self._psql(*(f"CREATE DATABASE {db}" for db in DATABASES))
        ks = ("keystone-manage", "--config-file", str(etc / "keystone/keystone.conf"))
        nova = ("nova-manage", "--config-file", str(etc / "nova/nova.conf"))
        cell0 = etc / "nova/cell0.conf"
        cell0.write_text(f"[database]\nconnection = {lay.db_url('nova_cell0')}\n")
        url = lay.url("keystone", "/v3/")

        def keystone() -> None:
            self._manage(*ks, "db_sync")
            self._manage(*ks, "bootstrap", "--bootstrap-password", "admin",
                         "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                         "--bootstrap-role-name", "admin", "--bootstrap-region-id", REGION,
                         "--bootstrap-admin-url", url, "--bootstrap-internal-url", url,
                         "--bootstrap-public-url", url)
            self._start("keystone")
            self._wait_http("keystone", "/v3")
            Rest(lay).create_catalog()

        chains: list[Callable[[], None]] = [
            keystone,
            lambda: (self._manage(*nova, "api_db", "sync"),
                     self._manage(*nova, "cell_v2", "map_cell0", "--database_connection",
                                  lay.db_url("nova_cell0")),
                     self._manage(*nova, "cell_v2", "create_cell", "--name", "cell1")),
            lambda: self._manage(*nova, "db", "sync", "--local_cell"),
            lambda: self._manage(*nova, "--config-file", str(cell0), "db", "sync", "--local_cell"),
            lambda: (self._manage("placement-manage", "--config-file",
                                  str(etc / "placement/placement.conf"), "db", "sync"),
                     self._manage("glance-manage", "--config-file",
                                  str(etc / "glance/glance-api.conf"), "db_sync")),
        ]
        _parallel(chains)
        self.procs.update(init=self._init_key())

    def _wipe_data(self) -> None:
        if not self.state_dir.is_dir():
            return
        pg = self._pg_dir()
        if pg.exists():
            shutil.rmtree(pg)
        for sub in ("computes", "glance", "nova", "keystone", "rabbitmq"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)

    # ------------------------------------------------------------------ up / down

    def up(self, computes: Sequence[str] = ("compute1", "compute2", "compute3"), *,
           token_expiration: int = 3600, computes_in_nodes: bool = False) -> None:
        """From nothing, or from an earlier run's state, to every compute up and mapped. On
        failure everything is stopped again (the logs stay) and the error raised."""
        t0 = time.monotonic()
        setup.ensure_packages()
        self.venv = setup.ensure_venv(self.venv)
        setup.install_guest_driver(self.venv)
        if self.procs.running():
            self.down()
        self.layout = self._requested
        try:
            self._up(list(computes), token_expiration, computes_in_nodes)
        except BaseException:
            with contextlib.suppress(Exception):
                self.down()
            raise
        LOG.info("OpenStack lab up in %.1fs (%s)", time.monotonic() - t0, self.state_dir)

    def _up(self, computes: list[str], token_expiration: int, computes_in_nodes: bool) -> None:
        busy = self.procs.listening(set(self.layout.ports.values()))
        if busy:
            raise LabError(f"ports already in use by something else: {sorted(busy)}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.layout.log_dir.mkdir(parents=True, exist_ok=True)
        if not self._initialized():
            self.procs.update(init=None)
            self._wipe_data()
        self.procs.update(computes=computes, port_base=self.layout.port_base,
                          bind_host=self.layout.bind_host, token_expiration=token_expiration,
                          ports=self.layout.ports, venv=str(self.venv),
                          computes_in_nodes=computes_in_nodes)
        render(self.layout, self.venv, computes, token_expiration)
        self._initdb()
        self._start("postgres")
        self._start("epmd")
        self._wait_port("epmd")
        self._start("rabbitmq")
        wait(lambda: self._pg_ready(), 60, "postgres", 0.2)
        if not self.procs.load().get("init"):
            self._initialize()
        self._wait_port("rabbitmq", 60)
        for name in ("keystone", "placement", "glance", "neutron", "nova-api", "conductor",
                     "scheduler", *(COMPUTE_PREFIX + h for h in computes)):
            if not self.procs.alive(name):
                self._start(name)
        for name in ("keystone", "nova-api", "glance", "placement", "neutron"):
            self._wait_http(name)
        self._await_computes(computes, timeout=180)

    def down(self) -> None:
        """Stop every process of the lab (SIGTERM, SIGKILL after a grace period); safe twice."""
        names = list(self.procs.load().get("pids", {}))
        tiers = [[n for n in names if n not in ("postgres", "epmd", "rabbitmq")],
                 ["rabbitmq", "postgres"], ["epmd"]]
        # A nova service's graceful stop takes 5-10 s and buys the lab nothing: computes are
        # killed (as in a crash, which they survive), the rest gets 3 s.
        sigs = {n: signal.SIGKILL for n in names if n.startswith(COMPUTE_PREFIX)}
        sigs["postgres"] = signal.SIGINT  # "fast" shutdown; SIGTERM waits for clients
        for tier in tiers:
            self.procs.stop([n for n in tier if n in names], sigs=sigs, timeout=3)
        ports = self.procs.load().get("ports") or self.layout.ports
        busy = self.procs.listening(set(ports.values()))
        if busy:
            raise LabError(f"after down, ports still listening: {sorted(busy)}")

    def wipe(self) -> None:
        """down(), then remove every file of the lab (the data dir of PostgreSQL included)."""
        self.down()
        self._wipe_data()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------------------ single services

    def stop_service(self, name: str) -> None:
        self._command(name)  # validates the name
        self.procs.stop([name], sigs={"postgres": signal.SIGINT})

    def start_service(self, name: str) -> None:
        """Start NAME again if it is not running, and wait until it answers (HTTP services)."""
        if not self.procs.alive(name):
            self._start(name)
        if name in _UWSGI or name == "neutron":
            self._wait_http(name)

    def set_token_expiration(self, seconds: int) -> None:
        """Restart only Keystone with another token lifetime (a few seconds)."""
        render(self.layout, self.venv, self.computes, seconds)
        self.procs.update(token_expiration=seconds)
        self.stop_service("keystone")
        self.start_service("keystone")

    def kill_compute(self, host: str) -> None:
        self._check_host(host)
        self.procs.kill(COMPUTE_PREFIX + host)

    def start_compute(self, host: str) -> None:
        self._check_host(host)
        if not self.procs.alive(COMPUTE_PREFIX + host):
            self._start(COMPUTE_PREFIX + host)

    def compute_running(self, host: str) -> bool:
        self._check_host(host)
        return self.procs.alive(COMPUTE_PREFIX + host)

    def _check_host(self, host: str) -> None:
        if host not in self.computes:
            raise LabError(f"{host} is not a compute of the lab in {self.state_dir}")

    # ------------------------------------------------------------------ clients, readiness

    def connection(self, **kw: Any) -> Any:
        """An openstacksdk connection to cloud ``lab`` of this lab's clouds.yaml (and no other
        clouds.yaml); KW as for openstack.connect (e.g. ``compute_api_version="2.94"``)."""
        import openstack.config  # the suite's venv has it; the lab's own code does not need it
        import openstack.connection

        config = openstack.config.OpenStackConfig(config_files=[str(self.clouds_yaml)],
                                                  vendor_files=[], secure_files=[])
        return openstack.connection.Connection(config=config.get_one(cloud="lab", **kw))

    def _wait_port(self, name: str, timeout: float = 30) -> None:
        port = self.layout.port(name)
        wait(lambda: self._died(name) or port in self.procs.listening({port}), timeout, name, 0.1)

    def _died(self, name: str) -> bool:
        if not self.procs.alive(name):
            raise LabError(f"{name} exited at start-up (see {self.layout.log_dir / name}.log)")
        return False

    def _wait_http(self, name: str, path: str = "/", timeout: float = 90) -> None:
        wait(lambda: self._died(name) or http_status(self.layout.url(name, path)) is not None,
             timeout, f"{name} answering HTTP", 0.2)

    def _pg_ready(self) -> bool:
        self._died("postgres")
        try:
            self._psql("SELECT 1")
        except LabError:
            return False
        return True

    def _await_computes(self, hosts: Sequence[str], timeout: float) -> None:
        """Wait until every host's nova-compute is up, enabled, not forced down, and mapped.

        forced_down is cleared only once the host's nova-compute has reported after its
        start (nova-lab pitfall 10: a clear sent earlier is lost), and Nova refuses it while the
        host's evacuation migrations are still 'done' (they turn 'completed' once the returning
        compute has cleaned up): so it is retried.
        """
        rest = Rest(self.layout)
        started = {h: self.procs.started_at(COMPUTE_PREFIX + h) for h in hosts}
        resynced: dict[str, float] = {}  # host → when its trait was last resynced

        def ready() -> bool:
            for h in hosts:
                self._died(COMPUTE_PREFIX + h)
            by_host = {s["host"]: s for s in rest.compute_services()}
            ok = True
            for h in hosts:
                svc = by_host.get(h)
                if svc is None:
                    ok = False
                    continue
                if svc["forced_down"]:
                    ok = False
                    if parse_time(svc.get("updated_at")) > started[h] + 1:
                        with contextlib.suppress(RestError):
                            rest.update_service(svc["id"], forced_down=False)
                elif svc["state"] != "up":
                    ok = False
                elif svc["status"] != "enabled":
                    # Only once it is up: Nova then tells the compute at once to drop the
                    # COMPUTE_STATUS_DISABLED trait from its resource provider; enabled while
                    # down, the trait stays until the compute's next periodic sync (60 s), and
                    # every boot on it fails with "No valid host".
                    rest.update_service(svc["id"], status="enabled")
                    ok = False
            if ok:
                # Enabled while Nova still showed it up after its last nova-compute died (the
                # new one not listening yet), the RPC that drops the trait was lost as well:
                # disabled and enabled again once up, which Nova tells the compute at once.
                for h in rest.providers_disabled() & set(hosts):
                    ok = False
                    if time.monotonic() - resynced.get(h, -1e9) > 5:
                        resynced[h] = time.monotonic()
                        rest.update_service(by_host[h]["id"], status="disabled",
                                            disabled_reason="lab: trait resync")
                        rest.update_service(by_host[h]["id"], status="enabled")
            return ok and set(hosts) <= rest.hypervisor_hosts()

        wait(ready, timeout, f"computes {', '.join(hosts)} up and mapped", 1.0)

    def reset(self) -> None:
        """Per-test clean slate: no servers, every compute running, up, enabled, not forced down."""
        for host in self.computes:
            self.start_compute(host)
        rest = Rest(self.layout)
        deadline = time.monotonic() + 120
        while servers := rest.servers():
            if time.monotonic() > deadline:
                raise LabError(f"{len(servers)} servers not deleted after 120s")
            for server in servers:  # again every 10 s: a server busy evacuating may refuse
                with contextlib.suppress(RestError):
                    rest.call("DELETE", "nova-api", f"/servers/{server['id']}")
            wait(lambda: not rest.servers(), 10, "servers deleted", 1.0, quiet=True)
        # A clean slate for the next test: evacuation records a returning nova-compute did not
        # complete (Nova completes one per server; a server evacuated twice from one host
        # leaves the other) would keep its host forced down. Lab only: the servers are gone.
        self._psql("UPDATE migrations SET status = 'completed' WHERE migration_type ="
                   " 'evacuation' AND status IN ('accepted', 'pre-migrating', 'done')",
                   database="nova_cell1")
        self._await_computes(self.computes, timeout=120)

    def status(self) -> dict[str, Any]:
        state = self.procs.load()
        return {
            "state_dir": str(self.state_dir), "clouds_yaml": str(self.clouds_yaml),
            "ports": self.layout.ports, "computes": state.get("computes", []),
            "token_expiration": state.get("token_expiration"),
            "services": {n: {"pid": self.procs.pid(n), "running": self.procs.alive(n),
                             "pss_mib": round(self.procs.pss(n) / 2**20, 1)}
                         for n in state.get("pids", {})},
        }


def _parallel(jobs: Sequence[Callable[[], Any]]) -> None:
    errors: list[BaseException] = []

    def run(job: Callable[[], Any]) -> None:
        try:
            job()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.openstack",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "kill-compute", "start-compute"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--state-dir", type=Path, default=None,
                         help=f"default: {default_state_dir()} ($OPENSTACK_HA_LAB/openstack)")
        if name == "up":
            cmd.add_argument("--computes", type=int, default=3)
            cmd.add_argument("--token-expiration", type=int, default=3600)
            cmd.add_argument("--port-base", type=int, default=15000)
        if name.endswith("-compute"):
            cmd.add_argument("host")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    lab = OpenStackLab(args.state_dir or default_state_dir(),
                       port_base=getattr(args, "port_base", 15000))
    t0 = time.monotonic()
    try:
        if args.command == "up":
            lab.up([f"compute{i}" for i in range(1, args.computes + 1)],
                   token_expiration=args.token_expiration)
            print(f"up in {time.monotonic() - t0:.1f}s; clouds.yaml: {lab.clouds_yaml}")
        elif args.command == "down":
            lab.down()
            print(f"down in {time.monotonic() - t0:.1f}s")
        elif args.command == "kill-compute":
            lab.kill_compute(args.host)
        elif args.command == "start-compute":
            lab.start_compute(args.host)
        else:
            info = lab.status()
            print(json.dumps(info, indent=2))
            return 0 if any(s["running"] for s in info["services"].values()) else 3
    except (LabError, setup.SetupError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
