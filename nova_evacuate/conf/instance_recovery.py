"""``[instance_recovery]``: restarting opted-in servers that stop on a healthy host."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "instance_recovery",
    title="Instance recovery",
    help="""
Off by default. When enabled, the NovaEvacuate worker restarts the opted-in
servers that Nova found stopped behind its back on a host that is up (the
guest crashed, its hypervisor process died, or its watchdog action is
``poweroff``), and never a server someone stopped through the API. See
nova_evacuate/instance_recovery.py for how the two are told apart.
""",
)

OPTS = [
    cfg.BoolOpt(
        "enabled",
        default=False,
        help="""
Let the NovaEvacuate worker restart opted-in servers that stopped by
themselves.

Off: the worker never reads or starts a server for this (host evacuation is
unchanged either way).
""",
    ),
    cfg.StrOpt(
        "marker_key",
        default="ha:recover",
        # Nova's server metadata and flavor extra spec keys (nova/api/validation/
        # parameter_types.py ``metadata``), less the space: one key fits all three places
        regex=r"^[A-Za-z0-9_.:-]{1,255}$",
        help="""
Key that opts a server in, with a true value (``true``, ``1`` or ``yes``, in
any case).

A server is opted in when any of these has it: its metadata
(``openstack server set --property ha:recover=true SERVER``: a project may
opt in its own servers), the extra specs of the flavor it was booted with
(Nova keeps that snapshot: setting the key on a flavor reaches only the
servers booted or resized to it afterwards), or its image's properties.
All three are read with list calls: the servers' list carries their
metadata and flavor, and Glance lists the images with the property (read
only when a stopped server is not opted in by the other two).

Possible values:
* Letters, digits and ``_ . : -``, 1 to 255 characters.
""",
    ),
    cfg.IntOpt(
        "max_restarts_per_hour",
        default=3,
        min=1,
        max=60,
        help="""
Restarts of one server within any hour after which it is left stopped.

Once a server has been restarted this many times in the last 3600 seconds
and stops again, the worker leaves it SHUTOFF and the timeline records
``instance_recovery_gave_up``: a guest that keeps crashing needs its owner.
The count lives in the worker's memory: a restarted or moved worker starts
from zero, so a server may be restarted up to this many times again.
""",
    ),
    cfg.IntOpt(
        "interval",
        default=30,
        min=5,
        max=3600,
        help="""
Seconds between two scans for stopped servers.

Each scan costs one list of the compute services, one list of the servers
SHUTOFF and changed in the last hour, and one read of instance actions per
opted-in server that stopped since the previous scan. Nova notices a stopped
guest at a hypervisor lifecycle event (libvirt's arrives 15 s after the
guest stopped) or else at its own power-state sync (every
``sync_power_state_interval`` seconds on the computes, 600 by default): a
restart follows within that plus this interval.
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
