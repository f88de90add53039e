"""The lab's Nova virt driver: Nova's fake driver, plus a disk writer for every running server.

Installed into the lab venv as ``nova/virt/ohalab_guests.py``, with lab/rbd_guest.py beside it as
``nova/virt/ohalab_rbd_guest.py``, and chosen by ``compute_driver =
ohalab_guests.GuestFakeDriver``. While a server runs on this host, a writer (``rbd_guest.py
run``) holds its disk ``<pool>/<server uuid>_disk`` through librbd with the exclusive lock, as
QEMU would, and writes a record every half second naming this host. A server that lands here
(boot, evacuation, power-on) gets one; one stopped or deleted here loses it.

Each writer is a plain child of nova-compute, in its process group and session: a power cut of
the node (every process SIGKILLed) ends it, as it ends a guest, and so does a signal to
nova-compute's whole process group (the lab without nodes kills a compute that way). Like QEMU,
it outlives nova-compute itself: nothing here kills writers when nova-compute stops (no atexit,
no parent death signal, nothing in cleanup_host). A writer left by an earlier nova-compute is
found again through its pid file (verified against its command line), so destroying its server
still stops it. The disk itself is never removed: it stays in the pool, for a test to read.

A guest crashes when the lab asks (``Lab.crash_guest``: a file ``<uuid>.<host>.crash`` in
log_dir): the next time Nova reads its state (``get_info``), its writer is killed as the
guest's process would die, and the fake guest is SHUTDOWN from then on, behind Nova's back.
Nova's power-state sync (``sync_power_state_interval``) then finds an ACTIVE server whose
guest is off and stops it itself, as it does for a libvirt guest that died.

Options, group ``[ohalab_guests]``: ``ceph_conf``, ``ceph_user`` (default: the host name),
``ceph_keyring``, ``pool`` (vms), ``log_dir`` (default: ``<state_path>/ohalab_guests``),
``python`` (/usr/bin/python3, which has Debian's rados and rbd modules), ``guest_script``.
Writers start only when ``ceph_conf`` is set and ``ceph_keyring`` names a file: a lab without
Ceph has none, and runs the fake driver alone (with one warning). Per server and host, in
log_dir: ``<uuid>.<host>.jsonl`` (the writer's ack log), ``.out`` (its stdout and stderr) and
``.pid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import nova.conf
from nova.compute import power_state
from nova.virt import fake, hardware
from oslo_config import cfg
from oslo_log import log as logging

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

GROUP = "ohalab_guests"
OPTS = [
    cfg.StrOpt("ceph_conf", help="ceph.conf of the cluster holding the servers' disks"),
    cfg.StrOpt("ceph_user", help="Ceph user (without 'client.'); default: this host's name"),
    cfg.StrOpt("ceph_keyring", help="that user's keyring; no file here: no writers"),
    cfg.StrOpt("pool", default="vms", help="the pool of the disks, <server uuid>_disk"),
    cfg.StrOpt("log_dir", help="writers' logs and pid files; default: <state_path>/ohalab_guests"),
    cfg.StrOpt("python", default="/usr/bin/python3", help="an interpreter with rados and rbd"),
    cfg.StrOpt("guest_script", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "ohalab_rbd_guest.py")),
]
CONF.register_opts(OPTS, group=GROUP)

STOP_GRACE_SECONDS = 3.0


class GuestFakeDriver(fake.FakeDriverWithoutFakeNodes):
    """The fake driver, with a disk writer process for every server running here."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._writers: dict[str, subprocess.Popen] = {}  # server uuid -> its writer, our child
        self._warned = False

    # ------------------------------------------------------------------ Nova's calls

    def spawn(self, context, instance, image_meta, injected_files, admin_password, allocations,
              network_info=None, block_device_info=None, power_on=True, accel_info=None):
        super().spawn(context, instance, image_meta, injected_files, admin_password, allocations,
                      network_info=network_info, block_device_info=block_device_info,
                      power_on=power_on, accel_info=accel_info)
        if power_on:
            self._start_writer(instance.uuid)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        self._stop_writer(instance.uuid)
        super().destroy(context, instance, network_info, block_device_info=block_device_info,
                        destroy_disks=destroy_disks, destroy_secrets=destroy_secrets)

    def power_off(self, instance, timeout=0, retry_interval=0):
        self._stop_writer(instance.uuid)
        super().power_off(instance, timeout=timeout, retry_interval=retry_interval)

    def power_on(self, context, instance, network_info, block_device_info=None, accel_info=None,
                 share_info=None):
        super().power_on(context, instance, network_info, block_device_info=block_device_info,
                         accel_info=accel_info, share_info=share_info)
        self._start_writer(instance.uuid)

    def get_info(self, instance, use_cache=True):
        """As the fake driver, except for a guest the lab crashed (see the module's
        docstring): SHUTDOWN from the first read after the crash on."""
        info = super().get_info(instance, use_cache=use_cache)
        crash_file = self._paths(instance.uuid) + ".crash"
        if not os.path.exists(crash_file):
            return info
        with contextlib.suppress(FileNotFoundError):
            os.unlink(crash_file)  # one crash per request; none for a guest not running
        if info.state != power_state.RUNNING:
            return info
        self._kill_writer(instance.uuid)
        self.instances[instance.uuid].state = power_state.SHUTDOWN
        LOG.warning("guest %s crashed (the lab's crash_guest): its state is SHUTDOWN",
                    instance.uuid)
        return hardware.InstanceInfo(state=power_state.SHUTDOWN)

    def get_available_resource(self, nodename):
        self._reap()  # a periodic call (every minute): writers that died are not left as zombies
        return super().get_available_resource(nodename)

    # ------------------------------------------------------------------ writers

    def _enabled(self) -> bool:
        opts = CONF.ohalab_guests
        if opts.ceph_conf and opts.ceph_keyring and os.path.isfile(opts.ceph_keyring):
            return True
        if not self._warned:
            LOG.warning("[%s] ceph_conf or the keyring %r missing: servers run without a disk "
                        "writer", GROUP, opts.ceph_keyring)
            self._warned = True
        return False

    def _paths(self, uuid: str) -> str:
        """UUID's files on this host, without their suffix (.jsonl, .out, .pid)."""
        log_dir = CONF.ohalab_guests.log_dir or os.path.join(CONF.state_path, "ohalab_guests")
        return os.path.join(log_dir, f"{uuid}.{CONF.host}")

    def _start_writer(self, uuid: str) -> None:
        self._reap()
        if self._running(uuid) or not self._enabled():
            return
        opts = CONF.ohalab_guests
        base = self._paths(uuid)
        argv = [opts.python, "-I", opts.guest_script, "run", "--conf", opts.ceph_conf,
                "--id", opts.ceph_user or CONF.host, "--keyring", opts.ceph_keyring,
                "--pool", opts.pool, "--image", f"{uuid}_disk", "--host", CONF.host,
                "--log", base + ".jsonl"]
        try:
            os.makedirs(os.path.dirname(base), exist_ok=True)
            with open(base + ".out", "ab") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, close_fds=True, cwd="/")
        except OSError as exc:  # the server runs on without a writer, as with the fake driver
            LOG.error("disk writer for %s not started: %s", uuid, exc)
            return
        self._writers[uuid] = proc
        with open(base + ".pid", "w") as pid_file:  # for a later nova-compute (see _adopted_pid)
            pid_file.write(f"{proc.pid}\n")
        LOG.info("disk writer for %s started: pid %d", uuid, proc.pid)

    def _stop_writer(self, uuid: str) -> None:
        """SIGTERM UUID's writer, SIGKILL it after STOP_GRACE_SECONDS; return once it is gone."""
        proc = self._writers.pop(uuid, None)
        if proc is not None:
            proc.terminate()  # nothing, if it exited already
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif (pid := self._adopted_pid(uuid)) is not None:
            # Not our child: the node's init reaps it; we wait until it is no longer a writer.
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            _signal(pid, signal.SIGTERM)
            while self._adopted_pid(uuid) == pid:
                if time.monotonic() > deadline:
                    _signal(pid, signal.SIGKILL)
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._paths(uuid) + ".pid")

    def _kill_writer(self, uuid: str) -> None:
        """SIGKILL UUID's writer, as a guest's process dies in a crash (no grace period)."""
        proc = self._writers.pop(uuid, None)
        if proc is not None:
            proc.kill()
            proc.wait()
        elif (pid := self._adopted_pid(uuid)) is not None:
            _signal(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._paths(uuid) + ".pid")

    def _running(self, uuid: str) -> bool:
        proc = self._writers.get(uuid)
        return proc.poll() is None if proc is not None else self._adopted_pid(uuid) is not None

    def _adopted_pid(self, uuid: str) -> int | None:
        """The pid of UUID's writer started by an earlier nova-compute, still running: its pid
        file names it, and its command line is a writer of this disk (not a reused pid)."""
        try:
            with open(self._paths(uuid) + ".pid") as pid_file:
                pid = int(pid_file.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if b"run" in argv and f"{uuid}_disk".encode() in argv else None

    def _reap(self) -> None:
        """Forget (and reap) writers that exited: 3 is a write error, e.g. after a fence."""
        for uuid, proc in list(self._writers.items()):
            code = proc.poll()
            if code is not None:
                del self._writers[uuid]
                LOG.warning("disk writer for %s (pid %d) exited with %d", uuid, proc.pid, code)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
