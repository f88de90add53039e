"""``[evacuation]``: what is evacuated, in what order, and how fast."""

from oslo_config import cfg

from nova_evacuate.common_options import LEAVE_DISABLED

GROUP = cfg.OptGroup(
    "evacuation",
    title="Evacuation",
    help="Selection, ordering, concurrency and tracking of evacuated instances.",
)

OPTS = [
    cfg.BoolOpt(
        "instance_filtering",
        default=True,
        help="""
Evacuate only instances tagged evacuable, when any are tagged.

With fence_evacuate's semantics: an instance is selected when its image properties,
flavor extra specs or host aggregate metadata carry ``evacuable=true``; when nothing
at all is tagged, every instance is selected. False selects every instance.
""",
    ),
    cfg.ListOpt(
        "exclude_names",
        default=[],
        help="Regular expressions; an instance whose name matches one is never evacuated.",
    ),
    cfg.ListOpt(
        "exclude_metadata",
        default=[],
        help="""
Server metadata ``key=value`` pairs; an instance whose metadata has one is never evacuated.
""",
    ),
    cfg.StrOpt(
        "priority_key",
        default="ha:priority",
        help="""
Server metadata key holding an integer priority.

Higher priorities are evacuated in earlier phases; instances without the key have
priority 0. Each phase starts when the previous one has finished.
""",
    ),
    cfg.IntOpt(
        "max_concurrency",
        default=20,
        min=1,
        max=1000,
        help="""
Evacuations in flight at once, over all target hosts.

Nova queues what it cannot rebuild at once, so a bound too low leaves it idle: on the
lab, 50 instances took 31 s at 10 (4 per host) and 23 s at 20 (10 per host), against
20 s for fence_evacuate sending all of them (benchmarks/results/evacuate.md). Too
high, and the scheduler and conductor fall behind (and the healthy computes'
heartbeats with them, which can make them look down).
""",
    ),
    cfg.IntOpt(
        "per_host_concurrency",
        default=10,
        min=1,
        max=1000,
        help="""
Evacuations in flight at once towards one target host.

A server sent with no target (the scheduler's pick: ``capacity_check`` off,
or ``alongside`` before the capacity is read, or a retry) counts towards its
host once Nova names it; until then only ``max_concurrency`` bounds it.

Related options:
* ``max_concurrency``: the global bound, which also applies.
""",
    ),
    cfg.FloatOpt(
        "stagger",
        default=0.0,
        min=0.0,
        max=60.0,
        help="Seconds between two evacuation requests; 0 sends them as fast as the bounds allow.",
    ),
    cfg.IntOpt(
        "instance_timeout",
        default=600,
        min=10,
        max=86400,
        help="Seconds after which an evacuation still unfinished is reported as timed out.",
    ),
    cfg.FloatOpt(
        "poll_interval",
        default=2.0,
        min=0.2,
        max=60.0,
        help="Seconds between two reads of os-migrations while tracking evacuations.",
    ),
    cfg.IntOpt(
        "migration_retries",
        default=1,
        min=0,
        max=10,
        help="How often an instance whose evacuation migration failed is evacuated again.",
    ),
    cfg.IntOpt(
        "api_retries",
        default=3,
        min=0,
        max=20,
        help="How often a Nova API call that failed (5xx, connection error) is tried again.",
    ),
    cfg.StrOpt(
        "capacity_check",
        default="before",
        choices=[
            ("before", "plan every target from the capacity before the first evacuate"),
            ("alongside", "send the first evacuations while the capacity is read"),
            ("off", "never read the capacity: the scheduler places every instance"),
        ],
        help="""
When the surviving hosts' free capacity is read and used (two Placement
requests, in parallel with the other reads before the first evacuate).

``before``: read it, give each instance a target host and report a shortfall
(instances no surviving host has room for) before the first evacuate.

``alongside``: the first evacuations start at once with no target named
(Nova's scheduler places them) while the capacity is read; once it is back,
the instances not sent yet get targets from it, and the shortfall among them
is logged. What the instances already sent take is not known exactly: each
one's demand is taken off the host Nova chose when that is known, else not
counted. ``nova-evacuate --dry-run`` reads the capacity as ``before`` does.

``off``: no capacity read at all; Nova's scheduler places every instance and
no shortfall is reported (``--dry-run`` says the capacity was not checked).

Related options:
* ``reserved_hosts``, ``reserved_aggregate``: the spare hosts, targets first.
""",
    ),
    cfg.StrOpt(
        "lock_servers",
        default="when_needed",
        choices=[
            ("when_needed", "lock only the servers meant to end SHUTOFF, PAUSED or SUSPENDED"),
            ("always", "lock every server before its evacuation"),
        ],
        help="""
Which servers are locked before their evacuation request (and unlocked when it
ends), with the reason "openstack-ha: evacuating from HOST (was STATUS)".

The lock's reason is the only record of a server's status before the failure
that survives a state reset, a failed rebuild (Nova sets ERROR) or the rebuild
itself (REBUILD), so a run that resumes the evacuation of an engine that died
reads it there. It matters only for servers meant to come back SHUTOFF, PAUSED
or SUSPENDED: every other one comes back ACTIVE whatever a resumed run reads.

``when_needed``: lock those servers only. Each other server costs one Nova
request before its evacuation instead of two, and none after it: on the lab,
50 servers, 1.8 Nova requests per server instead of 3.7 and a makespan of
23.0 s instead of 25.7 s (medians of 3 runs, benchmarks/results/evacuate.md).

``always``: lock every server, which also keeps its owner from deleting or
changing it (non-admin users) from just before its evacuation until the engine
has checked the result; Nova itself refuses most actions while the rebuild
runs.

A server someone else locked is neither locked nor unlocked by the engine.
""",
    ),
    cfg.ListOpt(
        "reserved_hosts",
        default=[],
        help="Spare compute hosts, used first as evacuation targets.",
    ),
    cfg.StrOpt(
        "reserved_aggregate",
        help="Host aggregate whose hosts are spare hosts, used first as evacuation targets.",
    ),
    cfg.BoolOpt(LEAVE_DISABLED.name, default=LEAVE_DISABLED.default, help=LEAVE_DISABLED.help),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
