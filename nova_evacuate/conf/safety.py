"""``[safety]``: when the engine refuses to act by itself."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "safety",
    title="Safety gates",
    help="Brakes that stop automatic evacuation when failure looks too wide to be real.",
)

OPTS = [
    cfg.FloatOpt(
        "max_down_fraction",
        default=0.5,
        min=0.0,
        max=1.0,
        help="""
Largest fraction of compute services that may be down or forced down for automatic action.

Above it, nothing is evacuated automatically: so many hosts failing at once is a
partition or a broken observer, not hardware. The engine reports it loudly and
waits for the operator (``nova-evacuate HOST --force``).
""",
    ),
    cfg.IntOpt(
        "max_down_per_aggregate",
        default=0,
        min=0,
        max=10000,
        help="Largest number of down hosts in one host aggregate for automatic action; 0: no limit.",
    ),
    cfg.IntOpt(
        "claim_expiry",
        default=300,
        min=30,
        max=86400,
        help="""
Seconds after which another engine may take over a claimed evacuation.

A claim is renewed while its engine works; an older one means that engine died
(for example with its controller).
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
