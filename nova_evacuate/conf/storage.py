"""``[storage]``: the check, before each rebuild, that the failed host let go of the disk."""

from __future__ import annotations

import os
import stat

from oslo_config import cfg

from nova_evacuate.common_options import STORAGE_MAP

GROUP = cfg.OptGroup(
    "storage",
    title="Shared storage",
    help="""
Where instances' disks are RBD images on Ceph, the engine reads each image's watchers
before rebuilding its server, and refuses the server (FAILED, with the reason) while the
failed host's storage address still holds the image and Ceph has not blocklisted it. Off
while rbd_pool is unset.
""",
)

OPTS = [
    cfg.StrOpt(
        "rbd_pool",
        help="Ceph pool of the instances' disks (Nova's [libvirt] images_rbd_pool, e.g."
             " ``vms``); unset: no disk check.",
    ),
    cfg.StrOpt(
        "ceph_conf",
        default="/etc/ceph/ceph.conf",
        help="ceph.conf naming the monitors; with rbd_pool set it must exist and be readable"
             " (checked when the configuration is loaded).",
    ),
    cfg.StrOpt(
        "ceph_user",
        default="openstack-ha-evacuate",
        help="""
Ceph client name (without ``client.``) whose key reads the watchers and the blocklist.

It needs no more than ``mon 'profile rbd' osd 'profile rbd-read-only pool=<rbd_pool>'``.
""",
    ),
    cfg.StrOpt(
        "ceph_keyring_file",
        help="Keyring of ceph_user (readable by root only); unset: Ceph's default search path."
             " With rbd_pool set, a keyring named here must exist and be readable (checked"
             " when the configuration is loaded).",
    ),
    cfg.StrOpt(STORAGE_MAP.name, help=STORAGE_MAP.help),
    cfg.FloatOpt(
        "release_wait",
        default=45.0,
        min=0.0,
        max=600.0,
        help="""
Seconds a disk the failed host still holds is checked again (every 2 s) before its server
is refused.

Ceph keeps a dead client's watch until it times out (``osd_client_watch_timeout``, 30 s)
unless the client is blocklisted: after a power-only fence the failed host's watches linger
that long. With storage fencing they are gone at once and no server waits. A server is never
evacuated while its disk is held; only its refusal waits.
""",
    ),
    cfg.FloatOpt(
        "check_timeout",
        default=10.0,
        min=1.0,
        max=120.0,
        help="Seconds each Ceph read may take before the server is refused (fail closed).",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}


def check_storage(conf: cfg.ConfigOpts) -> None:
    """The group as a whole, after each value passed its own check: with the disk check on
    (rbd_pool set), the Ceph user and the files ``rbd`` and ``ceph`` will be given must be
    usable now. Otherwise every disk check would fail mid-evacuation and refuse every server
    (fail closed, but only found out after a host died). Raises ``ConfigValueError``, one
    line starting ``[storage] <option>:``; a file's contents are never read."""
    # imported here: the package imports this module before it defines the error
    from nova_evacuate.conf import ConfigValueError

    storage = conf[GROUP.name]
    if not storage.rbd_pool:
        return  # the disk check is off: Ceph is never called
    if not storage.ceph_conf:
        raise ConfigValueError("[storage] ceph_conf: empty; rbd_pool needs the ceph.conf"
                               " naming the monitors")
    user = storage.ceph_user or ""
    if not user or user.split() != [user] or not user.isprintable() or user.startswith("client."):
        raise ConfigValueError(f"[storage] ceph_user: {user!r} is not a Ceph user id (one word,"
                               " without 'client.')")
    for name in ("ceph_conf", "ceph_keyring_file"):
        path = storage[name]
        problem = _unreadable_file(path) if path else None
        if problem:
            raise ConfigValueError(f"[storage] {name}: {problem}")


def _unreadable_file(path: str) -> str | None:
    """Why ``path`` is not a regular file this process can read, or None when it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist"
    except ValueError:  # a NUL: no file can have that name
        return f"{path!r} is not a file path"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):  # checked before opening: a FIFO would block, a device act
        return f"{path} is not a regular file"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    return None
