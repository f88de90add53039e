"""The half of the BMC lab that runs inside its network namespace (``lab/bmc.py`` starts it).

Standard library and the lab's own light helpers (lab/files.py, lab/namespaces.py) only, and
nothing imported up front that the chassis path does not need: ipmi_sim runs ``chassis`` once per
power request and waits for it.

``chassis STATE_DIR HOST get power`` / ``... set power 0|1`` / ``... set reset 1``
    The ``chassis_control`` program of HOST's ipmi_sim. ipmi_sim calls it through popen(), appends
    ``get power`` or ``set ITEM N`` and blocks until it exits: ipmi_sim is single-threaded, so while
    this runs that BMC answers nothing at all (fault ``slow`` relies on it). ``get`` prints
    ``power:0|1``. A non-zero exit makes ipmi_sim answer with completion code 0xff ("Unspecified
    error"); the script cannot pick another code. ``power cycle`` is ipmi_sim's own: "set power 0",
    then "set power 1" about 1 s later; ``power reset`` runs the off hook, then the on hook.

``relay STATE_DIR HOST=ADDRESS:PORT:SIM_PORT...``
    One UDP relay for every BMC: clients talk to ADDRESS:PORT, the relay forwards to the BMC's
    ipmi_sim on 127.0.0.1:SIM_PORT (this namespace's loopback, unreachable from the host). It
    implements the two faults ipmi_sim cannot: ``noreply`` and ``hang-after-login``.

Per-host files, in ``STATE_DIR/hosts/HOST/``: ``power`` ("0"/"1"), ``fault`` ("MODE SECONDS"),
``hooks.json`` ({"on": argv, "off": argv}), ``power.lock``, ``chassis.log``. The host's Redfish
face (lab/redfish_bmc.py), when the lab has one, shares them and switches power with
:func:`_switch` too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# ipmi_sim runs this file (python3 -IS .../lab/bmc_chassis.py), and -I leaves the checkout off
# sys.path: put it back, for the lab's own helpers.
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.files import write_atomic

MODES = ("none", "noreply", "hang-after-login", "stuck-on", "reject", "slow", "badcreds",
         # Redfish only (lab/redfish_bmc.py): here they are "none", as nothing below tests them.
         "conflict-when-off", "badrequest-when-off", "busy", "late-off")
TIMED_MODES = ("slow", "busy", "late-off")  # the modes that take SECONDS (> 0)
HOOK_TIMEOUT = 20.0
# lab/bmc.py opens the host's network namespace and lets ipmi_sim inherit it under this number:
# hooks must run on the host (they may talk to 127.0.0.1 services), not in the BMC namespace, and
# a process inside a namespace has no other way back (research/pacemaker-lab.md, pitfall P4).
HOSTNET_FD_ENV = "OHALAB_BMC_HOSTNET_FD"
# RMCP+ payload types 0x10-0x15: Open Session request/response and RAKP messages 1-4.
_SESSION_SETUP = range(0x10, 0x16)
_IDLE_PIPE = 60.0  # s; each ipmitool run is a new client (source port)


def host_dir(state_dir: Path, host: str) -> Path:
    return Path(state_dir) / "hosts" / host


def read_fault(hdir: Path) -> tuple[str, float]:
    """(mode, seconds); a missing or garbled file means healthy. Written by rename, so no lock."""
    try:
        mode, _, seconds = (hdir / "fault").read_text().strip().partition(" ")
        return (mode if mode in MODES else "none"), float(seconds or 0)
    except (OSError, ValueError):
        return "none", 0.0


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------- chassis


def _log(hdir: Path, text: str) -> None:
    with open(hdir / "chassis.log", "a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")


def _power(hdir: Path) -> int:
    try:
        return int((hdir / "power").read_text().strip() == "1")
    except OSError:
        return 1  # the lab starts every host powered on


def _run_hook(hdir: Path, argv: list[str]) -> bool:
    import subprocess

    from lab.namespaces import setns_preexec  # loads libc, before the fork below

    fd = os.environ.get(HOSTNET_FD_ENV)
    _log(hdir, f"hook: {argv}")
    with open(hdir / "chassis.log", "ab") as log:
        try:
            # close_fds (the default) keeps ipmi_sim's socket and the namespace fd out of the hook
            # and whatever daemon it starts: a leaked socket would outlive down().
            rc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False,
                timeout=HOOK_TIMEOUT, preexec_fn=setns_preexec(int(fd)) if fd else None,
            ).returncode
        except (OSError, subprocess.SubprocessError) as exc:
            log.write(f"hook failed: {exc}\n".encode())
            return False
    if rc != 0:
        _log(hdir, f"hook exited {rc}")
    return rc == 0


def _switch(hdir: Path, want: int) -> bool:
    """Run the hook, then record the new state. A real BMC does nothing for "off" when off; that
    also keeps a doubled "on" (a fence level with two devices sends two) from booting twice."""
    if _power(hdir) == want:
        _log(hdir, f"power {'on' if want else 'off'} (already)")
        return True
    argv = json.loads((hdir / "hooks.json").read_text())["on" if want else "off"]
    if argv and not _run_hook(hdir, argv):
        print("power hook failed, see chassis.log")
        return False  # the state stays: "off" must mean the host's processes are dead
    write_atomic(hdir / "power", f"{want}\n")
    _log(hdir, f"power {'on' if want else 'off'}")
    return True


def chassis(state_dir: Path, host: str, args: list[str]) -> int:
    hdir = host_dir(state_dir, host)
    mode, seconds = read_fault(hdir)
    if mode == "slow":
        time.sleep(seconds)
    if args == ["get", "power"]:
        print(f"power:{_power(hdir)}")
        return 0
    if args not in (["set", "power", "0"], ["set", "power", "1"], ["set", "reset", "1"]):
        _log(hdir, f"unsupported: {' '.join(args)}")
        print(f"unsupported chassis control: {' '.join(args)}")
        return 1
    reset, want = args[1] == "reset", int(args[2])
    if (reset or want == 0) and mode in ("stuck-on", "reject"):  # a hard reset cuts power too
        _log(hdir, f"{'reset' if reset else 'power off'} ignored ({mode})")
        if mode == "reject":
            print("refused (fault: reject)")
            return 1
        return 0
    with flocked(hdir / "power.lock"):
        if reset:  # off then on, for a host that is on; nothing for one that is off
            return 0 if not _power(hdir) or (_switch(hdir, 0) and _switch(hdir, 1)) else 1
        return 0 if _switch(hdir, want) else 1


# ----------------------------------------------------------------------------------- relay


def in_session(packet: bytes) -> bool:
    """True for an IPMI message sent inside an established session: what ``hang-after-login``
    drops. Pre-session traffic passes: ASF ping, Get Channel Authentication Capabilities and
    Get Channel Cipher Suites (session id 0), Open Session and RAKP 1-4."""
    if len(packet) < 10 or packet[3] != 0x07:  # RMCP class 7 = IPMI; class 6 is ASF (ping)
        return False
    if packet[4] == 0x06:  # auth type 6: IPMI 2.0 / RMCP+ session header
        payload = packet[5] & 0x3F
        if payload in _SESSION_SETUP:
            return False
        start = 12 if payload == 0x02 else 6  # OEM explicit payloads carry IANA + OEM id first
        return packet[start : start + 4] != b"\0\0\0\0"
    return packet[9:13] != b"\0\0\0\0"  # IPMI 1.5: auth type, sequence, session id


def relay(state_dir: Path, specs: list[str]) -> int:
    import resource

    # One socket per client for up to a minute: an ipmitool loop can pass 1024 of them.
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    sel = selectors.DefaultSelector()
    pipes: dict[tuple[int, tuple[str, int]], socket.socket] = {}
    used: dict[socket.socket, float] = {}
    for spec in specs:
        host, _, rest = spec.partition("=")
        address, port, sim_port = rest.rsplit(":", 2)
        front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        front.bind((address, int(port)))
        sel.register(front, selectors.EVENT_READ, (host_dir(state_dir, host), int(sim_port), None))
    print(f"relay ready: {' '.join(specs)}", flush=True)
    while True:
        for key, _ in sel.select(timeout=30):
            hdir, sim_port, client = key.data
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                packet, peer = sock.recvfrom(65535)
                mode = read_fault(hdir)[0]
                if mode == "noreply" or (
                    mode == "hang-after-login" and client is None and in_session(packet)
                ):
                    continue
                if client is not None:  # ipmi_sim's answer, back to the client it belongs to
                    front, addr = client
                    front.sendto(packet, addr)
                    continue
                # One upstream socket per client, so that answers find their way back.
                back = pipes.get((sock.fileno(), peer))
                if back is None:
                    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    back.connect(("127.0.0.1", sim_port))
                    pipes[(sock.fileno(), peer)] = back
                    sel.register(back, selectors.EVENT_READ, (hdir, sim_port, (sock, peer)))
                used[back] = time.monotonic()
                back.send(packet)
            except OSError as exc:  # ECONNREFUSED while an ipmi_sim restarts, and the like
                print(f"relay: {hdir.name}: {exc}", file=sys.stderr, flush=True)
        for (fileno, peer), back in list(pipes.items()):
            if time.monotonic() - used[back] > _IDLE_PIPE:
                sel.unregister(back)
                back.close()
                del pipes[(fileno, peer)], used[back]


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "chassis":
        return chassis(Path(argv[1]), argv[2], argv[3:])
    if len(argv) >= 3 and argv[0] == "relay":
        return relay(Path(argv[1]), argv[2:])
    print("usage: bmc_chassis.py chassis STATE_DIR HOST get|set ... | relay STATE_DIR SPEC...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
