"""Simulated BMCs: one IPMI 2.0 (lanplus) endpoint per compute host, served by OpenIPMI's ipmi_sim.

ipmi_sim is an independent C implementation, so the project's pyghmi client is never tested
against pyghmi's own server (research/ipmi-lab.md, Addendum; research/pacemaker-lab.md 4.4)::

    host                                   netns ohalab-bmc
    ohalab-hb 10.251.100.1/24 ---veth----- ohalab-bb 10.251.100.2/24 + 10.251.100.(10+i)/24
                                             relay (one process)  10.251.100.(10+i):623
                                               -> ipmi_sim of host i  127.0.0.1:(9000+i)
                                                    -> chassis_control: lab/bmc_chassis.py

Host i (1-based, in the order given to up()) is reached at 10.251.100.(10+i):623 from the host.
Power state and fault mode are files in the state dir, so the chassis script, the relay and any
other process (a test, the CLI) share one truth. Faults (:meth:`BmcLab.set_fault`):

    none              healthy; "off" runs the host's off hook before it is acknowledged
    noreply           the relay drops every packet, both ways
    hang-after-login  the relay passes session setup (RMCP+ payloads 0x10-0x15), drops the rest
    stuck-on          "off" (and "reset") is acknowledged, nothing happens
    reject            "off" (and "reset") fails with completion code 0xff; status still works
    slow SECONDS      the chassis script sleeps first, for get and set. ipmi_sim blocks meanwhile
                      and then also serves the client's retransmissions, each sleeping again:
                      ipmitool (1 s retry) sees 0.5 -> 0.55 s, 1.5 -> 3 s, 3 -> 9 s
    badcreds          the user's password on the BMC is changed (restored by any other mode)

With ``up(hosts, redfish=True)`` each BMC also speaks Redfish, over HTTPS on port 443 of the same
address (lab/redfish_bmc.py: sushy-tools' emulator, one process per host), on the same power
state, hooks and fault file. ``up`` makes a lab CA (``STATE_DIR/redfish/ca.pem``, what clients
verify with) and a certificate per BMC for its IP address. That face has four faults of its own,
which the IPMI face treats as ``none``: conflict-when-off, badrequest-when-off, busy SECONDS,
late-off SECONDS (see lab/redfish_bmc.py).

One ipmi_sim per host, not one with several channels: a chassis script blocks its whole ipmi_sim,
so a slow BMC would stall the others. Only one BMC lab per machine (the namespace and the
addresses are fixed); a second up() from another state dir is refused while the first runs.

Command line::

    python -m lab.bmc up --hosts compute1,compute2 [--redfish] [--state-dir DIR]
    python -m lab.bmc status|down [--state-dir DIR]
    python -m lab.bmc fault HOST MODE [SECONDS] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import bmc_chassis as chassis
from lab.bmc_chassis import flocked, host_dir, read_fault
from lab.commands import DAEMON_PATH
from lab.files import write_atomic
from lab.namespaces import setns_preexec
from lab.procs import cmdline, kill_until_gone, netns_pids, pid_alive, udp_bound

NETNS = "ohalab-bmc"
HOST_IF, BMC_IF = "ohalab-hb", "ohalab-bb"
SUBNET = "10.251.100"
IPMI_PORT = 623
SIM_PORT_BASE = 9000
USERNAME = "admin"
CHASSIS_PY = Path(__file__).resolve().with_name("bmc_chassis.py")
REDFISH_PY = Path(__file__).resolve().with_name("redfish_bmc.py")
REDFISH_PORT = 443
OPENSSL = "/usr/bin/openssl"
# Names the Redfish systems: the same UUID for a host in every run of the lab.
_SYSTEM_NAMESPACE = uuid.UUID("5d2a4c1e-8a53-4f0e-9d0b-6f1d3b0c7a11")
# Which state dir owns the (single) namespace, so that a second lab is refused, not clobbered.
REGISTRY = Path("/run/openstack-ha-lab/bmc-owner")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class LabError(RuntimeError):
    """The lab could not do what was asked; the message is one line and names the log to read."""


@dataclass(frozen=True)
class BmcEndpoint:
    host: str
    address: str
    port: int
    username: str
    password: str


@dataclass(frozen=True)
class RedfishEndpoint:
    """A BMC's Redfish face. ``url``: the service's base (``https://ADDRESS:443``); ``system``:
    the path of the host's ComputerSystem; ``ca_file``: the lab CA to verify the TLS certificate
    with. Same user and password as the IPMI face."""

    host: str
    url: str
    system: str
    username: str
    password: str
    ca_file: str


@dataclass(frozen=True)
class PowerHooks:
    """argv run (on the host, in its network namespace) when the BMC powers the host on/off.
    Empty: a BMC with no real host behind it."""

    on: Sequence[str] = ()
    off: Sequence[str] = ()


def default_state_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB", "/tmp/openstack-ha-lab")) / "bmc"


def _is_bmc_process(pid: int) -> bool:
    """An ipmi_sim, relay or Redfish face of this lab, not a process that reused the pid of a
    stale state file."""
    argv = cmdline(pid)
    return pid_alive(pid) and bool(argv) and (
        argv[0] == b"ipmi_sim" or bytes(CHASSIS_PY) in argv or bytes(REDFISH_PY) in argv)


def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, timeout=30,
                          check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _ipmitool(address: str, port: int, password: str, *command: str,
              preexec: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """ipmitool -C 3 (without it ipmi_sim costs 10 s of cipher-suite probing, pacemaker-lab P3);
    the password goes through the environment (-E), never argv."""
    return subprocess.Popen(
        ["ipmitool", "-I", "lanplus", "-C", "3", "-H", address, "-p", str(port), "-U", USERNAME,
         "-E", "-N", "1", "-R", "3", *command],
        env={"PATH": DAEMON_PATH, "IPMI_PASSWORD": password}, preexec_fn=preexec, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


@contextlib.contextmanager
def _bmc_netns() -> Iterator[Callable[[], None]]:
    """A preexec_fn entering the BMC namespace, valid inside the with block."""
    fd = os.open(f"/run/netns/{NETNS}", os.O_RDONLY)
    try:
        yield setns_preexec(fd)
    finally:
        os.close(fd)


def _redfish_status(url: str, username: str, password: str, ca_file: Path, timeout: float) -> int:
    """HTTP status of an authenticated GET of URL, TLS verified with CA_FILE; no proxy from the
    environment (the lab's addresses are local)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {basic}"})  # noqa: S310 (https, ours)
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _openssl(*args: str) -> None:
    # umask 077: the private keys are never readable by others, not even for a moment.
    proc = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30,
                          check=False, umask=0o077, env={"PATH": DAEMON_PATH})
    if proc.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _new_password() -> str:
    # 16 characters (IPMI 1.5 user passwords are 16 bytes at most), and none that starts with
    # "-": getopt in ipmitool and fence_ipmilan would read it as an option.
    while (pw := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return pw


class BmcLab:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "state.json"
        self._children: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ state on disk

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _host(self, host: str) -> dict[str, Any]:
        try:
            return self._state()["hosts"][host]
        except KeyError:
            raise LabError(f"no BMC for {host!r} in {self.state_dir}") from None

    def endpoints(self) -> dict[str, BmcEndpoint]:
        """Every BMC of the running lab (empty when it is down). Readable by any process."""
        return {name: BmcEndpoint(name, h["address"], h["port"], h["username"], h["password"])
                for name, h in self._state().get("hosts", {}).items()}

    @property
    def ca_file(self) -> Path:
        """The lab CA that signed every Redfish face's certificate (``up(redfish=True)``)."""
        return self.state_dir / "redfish" / "ca.pem"

    def redfish_endpoints(self) -> dict[str, RedfishEndpoint]:
        """The Redfish face of every BMC of the running lab; empty when it is down or was
        started without ``redfish=True``."""
        return {name: RedfishEndpoint(name, f"https://{h['address']}:{h['redfish_port']}",
                                      f"/redfish/v1/Systems/{h['system']}", h["username"],
                                      h["password"], str(self.ca_file))
                for name, h in self._state().get("hosts", {}).items() if h.get("redfish_pid")}

    def power_state(self, host: str) -> bool:
        """The BMC's notion of the host's power, True = on."""
        self._host(host)
        return (host_dir(self.state_dir, host) / "power").read_text().strip() == "1"

    def _pids(self) -> list[int]:
        state = self._state()
        hosts = state.get("hosts", {}).values()
        return [state.get("relay_pid", 0), *(h["pid"] for h in hosts),
                *(h["redfish_pid"] for h in hosts if "redfish_pid" in h)]

    def running(self) -> bool:
        pids = self._pids()
        return len(pids) > 1 and all(pid_alive(pid) for pid in pids)

    # ------------------------------------------------------------------ faults

    def set_fault(self, host: str, mode: str, seconds: float = 0.0) -> None:
        if mode not in chassis.MODES:
            raise ValueError(f"unknown fault {mode!r}; one of {', '.join(chassis.MODES)}")
        if (mode in chassis.TIMED_MODES) != (seconds > 0):
            raise ValueError(f"SECONDS > 0 goes with {', '.join(chassis.TIMED_MODES)}, and only with them")
        info, hdir = self._host(host), host_dir(self.state_dir, host)
        # Not power.lock: the chassis script holds that while a hook runs, and ipmi_sim (which
        # the password change below talks to) is blocked for as long.
        with flocked(hdir / "fault.lock"):
            if (mode == "badcreds") != (read_fault(hdir)[0] == "badcreds"):
                good, bad = info["password"], info["bad_password"]
                current, new = (good, bad) if mode == "badcreds" else (bad, good)
                # Set User Password, straight to ipmi_sim's loopback port. The new password is
                # read from an ipmitool "exec" file (0600), not put in argv.
                with tempfile.NamedTemporaryFile("w", dir=hdir, prefix=".pw.") as script, \
                        _bmc_netns() as enter:
                    script.write(f"user set password 2 {new}\n")
                    script.flush()
                    out = _ipmitool("127.0.0.1", info["sim_port"], current, "exec", script.name,
                                    preexec=enter).communicate(timeout=30)[0]
                if "Set User Password command successful" not in out:
                    raise LabError(f"cannot change the password on {host}'s BMC: {out.strip()}")
            write_atomic(hdir / "fault", f"{mode} {seconds}\n")

    # ------------------------------------------------------------------ up

    def up(self, hosts: Mapping[str, PowerHooks], redfish: bool = False) -> dict[str, BmcEndpoint]:
        """Start one BMC per host (initial power: on, hooks not run) and wait until each answers
        ``chassis power status`` from the host. Restarts this lab if it already runs.
        ``redfish``: each BMC also serves Redfish (see :meth:`redfish_endpoints`), ready once it
        answers an authenticated GET of its system from the host."""
        bad = [name for name in hosts if not _HOST_RE.match(name)]
        if not hosts or bad or len(hosts) > 200:  # 10.251.100.(10+i)
            raise LabError(f"need 1-200 host names of [A-Za-z0-9_.-]; bad: {bad}")
        for tool in ("ipmi_sim", "ipmitool", "ip", *([OPENSSL] if redfish else [])):
            if shutil.which(tool, path=DAEMON_PATH) is None:
                raise LabError(f"{tool} is not installed (apt-get install openipmi ipmitool iproute2 "
                               "openssl)")
        chassis_cmd = shlex.join([sys.executable, "-IS", str(CHASSIS_PY), "chassis",
                                  str(self.state_dir.resolve())])
        if re.search(r'["\\\n]', chassis_cmd):  # it goes into a quoted string of lan.conf
            raise LabError(f"state dir or interpreter path unusable in lan.conf: {chassis_cmd}")
        self.down()
        REGISTRY.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(REGISTRY, str(self.state_dir.resolve()))
        try:
            self._make_network(len(hosts))
            state = self._write_config(hosts, chassis_cmd, redfish)
            if redfish:
                self._make_certificates(state)
            self._start(state)
            self._wait_ready(state)
        except BaseException:
            self.down()
            raise
        return self.endpoints()

    def _make_network(self, count: int) -> None:
        taken = [line.split()[1] for line in _ip("-o", "-4", "addr", "show").splitlines()
                 if f" {SUBNET}." in line]
        if taken:
            raise LabError(f"{SUBNET}.0/24 is already used on this host (dev {taken[0]})")
        _ip("-batch", "-", stdin=f"netns add {NETNS}\n"
            f"link add {HOST_IF} type veth peer name {BMC_IF} netns {NETNS}\n"
            f"addr add {SUBNET}.1/24 dev {HOST_IF}\nlink set {HOST_IF} up\n")
        _ip("-n", NETNS, "-batch", "-", stdin="".join([
            "link set lo up\n",  # ipmi_sim listens on this namespace's loopback
            f"addr add {SUBNET}.2/24 dev {BMC_IF}\n",
            *(f"addr add {SUBNET}.{10 + i}/24 dev {BMC_IF}\n" for i in range(1, count + 1)),
            f"link set {BMC_IF} up\n",
            # Controllers ctl2..N of the Pacemaker lab (10.251.250.0/24) reach the BMCs
            # through the host too.
            f"route add 10.251.250.0/24 via {SUBNET}.1\n",
        ]))

    def _write_config(self, hosts: Mapping[str, PowerHooks], chassis_cmd: str,
                      redfish: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"netns": NETNS, "hosts": {}}
        for index, (name, hooks) in enumerate(hosts.items(), start=1):
            hdir = host_dir(self.state_dir, name)
            (hdir / "sim").mkdir(parents=True, exist_ok=True)
            for stale in ("chassis.log", "ipmi_sim.log", "redfish.log"):
                (hdir / stale).unlink(missing_ok=True)
            write_atomic(hdir / "hooks.json", json.dumps({"on": list(hooks.on), "off": list(hooks.off)}))
            write_atomic(hdir / "power", "1\n")
            write_atomic(hdir / "fault", "none 0\n")
            info = state["hosts"][name] = {
                "address": f"{SUBNET}.{10 + index}", "port": IPMI_PORT, "username": USERNAME,
                "password": _new_password(), "bad_password": _new_password(),
                "sim_port": SIM_PORT_BASE + index, "pid": 0}
            if redfish:  # read by lab/redfish_bmc.py, as the chassis script reads lan.conf
                info.update(redfish_port=REDFISH_PORT, redfish_pid=0,
                            system=str(uuid.uuid5(_SYSTEM_NAMESPACE, name)))
            # Only RMCP+ matters; IPMI 1.5 logins are limited to md5 so that no "none"/"straight"
            # path bypasses the password (badcreds must really fail).
            write_atomic(hdir / "lan.conf", f'name "{name}"\nset_working_mc 0x20\n  startlan 1\n'
                         f"    addr 127.0.0.1 {info['sim_port']}\n    priv_limit admin\n"
                         f"    allowed_auths_admin md5\n    guid {uuid.uuid4().hex}\n  endlan\n"
                         f'  chassis_control "{chassis_cmd} {name}"\n'
                         f'  user 2 true "{USERNAME}" "{info["password"]}" admin 10 md5\n', 0o600)
            write_atomic(hdir / "bmc.emu", "mc_setbmc 0x20\n"
                         "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n")
        write_atomic(self.state_file, json.dumps(state, indent=1), 0o600)
        return state

    def _make_certificates(self, state: dict[str, Any]) -> None:
        """A new lab CA, and a certificate signed by it for each BMC's address (EC P-256: each
        openssl run takes milliseconds). The keys are 0600, the certificates world-readable."""
        directory = self.state_dir / "redfish"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30")
        ca, ca_key = self.ca_file, directory / "ca.key"
        _openssl("req", "-x509", "-new", *curve, "-keyout", str(ca_key), "-out", str(ca),
                 "-subj", "/CN=openstack-ha lab BMC CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        for name, info in state["hosts"].items():
            _openssl("req", "-x509", "-new", *curve, "-keyout", str(directory / f"{name}.key"),
                     "-out", str(directory / f"{name}.pem"), "-CA", str(ca), "-CAkey", str(ca_key),
                     "-subj", f"/CN={info['address']}",
                     "-addext", f"subjectAltName=IP:{info['address']}",
                     "-addext", "basicConstraints=critical,CA:FALSE",
                     "-addext", "extendedKeyUsage=serverAuth")
        for cert in directory.glob("*.pem"):
            cert.chmod(0o644)

    def _start(self, state: dict[str, Any]) -> None:
        hostnet = os.open("/proc/self/ns/net", os.O_RDONLY)  # for the hooks, see HOSTNET_FD_ENV
        try:
            with _bmc_netns() as enter:
                for name, info in state["hosts"].items():
                    if "redfish_pid" not in info:
                        continue
                    # First: importing Flask and sushy-tools takes the longest. -I, not -IS:
                    # those live in the venv's site-packages.
                    info["redfish_pid"] = self._spawn(
                        [sys.executable, "-I", str(REDFISH_PY), str(self.state_dir.resolve()), name,
                         info["address"], str(info["redfish_port"])],
                        host_dir(self.state_dir, name), "redfish.log", enter,
                        {chassis.HOSTNET_FD_ENV: str(hostnet)}, (hostnet,))
                for name, info in state["hosts"].items():
                    # -p: no persistence, so a password changed by badcreds dies with the process.
                    info["pid"] = self._spawn(
                        ["ipmi_sim", "-n", "-p", "-c", "lan.conf", "-f", "bmc.emu", "-s", "sim"],
                        host_dir(self.state_dir, name), "ipmi_sim.log", enter,
                        {chassis.HOSTNET_FD_ENV: str(hostnet)}, (hostnet,))
                specs = [f"{n}={h['address']}:{h['port']}:{h['sim_port']}"
                         for n, h in state["hosts"].items()]
                state["relay_pid"] = self._spawn(
                    [sys.executable, "-IS", str(CHASSIS_PY), "relay", str(self.state_dir.resolve()),
                     *specs], self.state_dir, "relay.log", enter)
        finally:
            os.close(hostnet)
            write_atomic(self.state_file, json.dumps(state, indent=1), 0o600)

    def _spawn(self, argv: list[str], cwd: Path, log: str, enter: Callable[[], None],
               env: Mapping[str, str] | None = None, fds: tuple[int, ...] = ()) -> int:
        """Start a daemon in the BMC namespace. Own session: a Ctrl-C in the caller's terminal
        must not take the BMCs down with it."""
        with open(cwd / log, "ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={"PATH": DAEMON_PATH, **(env or {})},
                                    pass_fds=fds, preexec_fn=enter, start_new_session=True)
        self._children.append(proc)
        return proc.pid

    def _wait_ready(self, state: dict[str, Any], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        hosts = state["hosts"]
        want = {(h["address"], h["port"]) for h in hosts.values()} | {
            ("127.0.0.1", h["sim_port"]) for h in hosts.values()}
        # Every socket bound first (pacemaker-lab P2: never assume the bind worked). A process
        # that cannot bind exits or only logs it; both are caught here.
        while missing := want - udp_bound(state["relay_pid"]):
            if dead := [pid for pid in self._pids() if not pid_alive(pid)]:
                raise LabError(f"BMC process {dead[0]} exited; see the logs in {self.state_dir}")
            if time.monotonic() > deadline:
                raise LabError(f"nothing listens on {sorted(missing)} after {timeout}s")
            time.sleep(0.01)
        # Then the whole path, from the host, as a client sees it.
        procs = {n: _ipmitool(h["address"], h["port"], h["password"], "chassis", "power", "status")
                 for n, h in hosts.items()}
        self._wait_redfish(state, deadline + 15)  # while ipmitool runs
        for name, proc in procs.items():
            out = proc.communicate(timeout=30)[0]
            if "Chassis Power is on" not in out:
                raise LabError(f"BMC of {name} does not answer ({out.strip()}); "
                               f"see {host_dir(self.state_dir, name)}/ipmi_sim.log")

    def _wait_redfish(self, state: dict[str, Any], deadline: float) -> None:
        """Until each Redfish face answers an authenticated GET of its system, from the host."""
        waiting = {name: h for name, h in state["hosts"].items() if h.get("redfish_pid")}
        failure: dict[str, str] = {}
        while waiting:
            for name, h in list(waiting.items()):
                url = f"https://{h['address']}:{h['redfish_port']}/redfish/v1/Systems/{h['system']}"
                log = host_dir(self.state_dir, name) / "redfish.log"
                if not pid_alive(h["redfish_pid"]):
                    raise LabError(f"the Redfish face of {name} exited; see {log}")
                try:
                    status = _redfish_status(url, h["username"], h["password"], self.ca_file, 2)
                except OSError as exc:  # not listening yet (or TLS failing: said at the deadline)
                    failure[name] = str(exc)
                    continue
                if status != 200:
                    raise LabError(f"the Redfish face of {name} answers {status}; see {log}")
                del waiting[name]
            if not waiting:
                return
            if time.monotonic() > deadline:
                name = min(waiting)
                raise LabError(f"no Redfish answer from {sorted(waiting)} ({name}: {failure.get(name)}); "
                               f"see {host_dir(self.state_dir, name)}/redfish.log")
            time.sleep(0.05)

    # ------------------------------------------------------------------ down

    def _owner(self) -> Path | None:
        with contextlib.suppress(OSError):
            return Path(REGISTRY.read_text().strip())
        return None

    def down(self) -> None:
        """Stop every process of this lab and delete the namespace. Safe twice; refuses (by
        raising) to touch the namespace while another state dir's lab runs in it."""
        owner = self._owner()
        if owner not in (None, self.state_dir.resolve()) and BmcLab(owner).running():
            raise LabError(f"the BMC lab of {owner} runs; stop it with: "
                           f"python -m lab.bmc down --state-dir {owner}")
        # SIGKILL at once: with -p, ipmi_sim has nothing to save. Also whatever else lives in
        # the namespace: a chassis script asleep in "slow", leftovers of a lab whose state is gone.
        pids = [pid for pid in self._pids() if _is_bmc_process(pid)]
        if survivors := kill_until_gone(
                lambda: [pid for pid in {*pids, *netns_pids(NETNS)} if pid_alive(pid)], 5):
            raise LabError(f"processes {survivors} survive SIGKILL")
        for child in self._children:  # ours: reap them now rather than leave zombies
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._children.clear()
        # Deleting the host end removes both ends at once; left to the namespace teardown it
        # happens later, in a kernel work queue, and the next up() could find the name taken.
        if Path(f"/sys/class/net/{HOST_IF}").exists():
            _ip("link", "del", HOST_IF, check=False)
        if Path(f"/run/netns/{NETNS}").exists():
            _ip("netns", "del", NETNS)
        for secret in [self.state_file, *self.state_dir.glob("hosts/*/lan.conf"),
                       *self.state_dir.glob("redfish/*.key")]:
            secret.unlink(missing_ok=True)  # the logs stay, for the post-mortem
        REGISTRY.unlink(missing_ok=True)  # ours, or a dead lab's: the namespace is gone either way

    def status(self) -> dict[str, Any]:
        hosts = {}
        for name, info in self._state().get("hosts", {}).items():
            mode, seconds = read_fault(host_dir(self.state_dir, name))
            hosts[name] = {"address": info["address"], "port": info["port"], "pid": info["pid"],
                           "alive": pid_alive(info["pid"]), "power": self.power_state(name),
                           "fault": mode + (f" {seconds:g}" if mode in chassis.TIMED_MODES else "")}
            if info.get("redfish_pid"):
                hosts[name]["redfish"] = {
                    "url": f"https://{info['address']}:{info['redfish_port']}",
                    "system": f"/redfish/v1/Systems/{info['system']}", "pid": info["redfish_pid"],
                    "alive": pid_alive(info["redfish_pid"])}
        return {"state_dir": str(self.state_dir), "credentials": str(self.state_file),
                "up": self.running(), "hosts": hosts,
                **({"ca_file": str(self.ca_file)} if self.redfish_endpoints() else {})}


# ------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bmc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start one BMC per host (no power hooks)"),
                       ("down", "stop the BMCs; without --state-dir also the registered lab"),
                       ("status", "print the BMCs as JSON (no passwords)"),
                       ("fault", "set a BMC's fault mode")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--state-dir", type=Path, default=None,
                         help=f"default: {default_state_dir()} ($OPENSTACK_HA_LAB/bmc)")
        if name == "up":
            cmd.add_argument("--hosts", default="compute1", help="comma-separated (default: compute1)")
            cmd.add_argument("--redfish", action="store_true",
                             help="each BMC also serves Redfish (HTTPS, port 443, same address)")
        if name == "fault":
            cmd.add_argument("host")
            cmd.add_argument("mode", choices=chassis.MODES)
            cmd.add_argument("seconds", type=float, nargs="?", default=0.0)
    args = parser.parse_args(argv)
    lab = BmcLab(args.state_dir or default_state_dir())
    t0 = time.monotonic()
    try:
        if args.command == "up":
            eps = lab.up({name.strip(): PowerHooks() for name in args.hosts.split(",") if name.strip()},
                         redfish=args.redfish)
            print("\n".join(f"{e.host}: {e.address}:{e.port} user {e.username}" for e in eps.values()))
            for r in lab.redfish_endpoints().values():
                print(f"{r.host}: {r.url}{r.system} (CA {r.ca_file})")
            print(f"up in {time.monotonic() - t0:.2f}s; passwords in {lab.state_file}")
        elif args.command == "down":
            owner = lab._owner()
            if args.state_dir is None and owner is not None:
                BmcLab(owner).down()  # first: lab.down() refuses while another lab runs
            lab.down()
            print(f"down in {time.monotonic() - t0:.2f}s")
        elif args.command == "fault":
            lab.set_fault(args.host, args.mode, args.seconds)
            print(f"{args.host}: {args.mode}{f' {args.seconds:g}s' if args.seconds else ''}")
        else:
            info = lab.status()
            print(json.dumps(info, indent=2))
            return 0 if info["up"] else 3
    except (LabError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
