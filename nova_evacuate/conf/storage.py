"""``[storage]``: the check, before each rebuild, that the failed host let go of the disk."""

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
        help="ceph.conf naming the monitors.",
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
        help="Keyring of ceph_user (readable by root only); unset: Ceph's default search path.",
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
