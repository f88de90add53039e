"""``[metrics]``: the NovaEvacuate worker's Prometheus endpoint."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "metrics",
    title="Prometheus metrics",
    help="""
Off by default. When enabled, the NovaEvacuate worker serves Prometheus
metrics over HTTP at ``/metrics``: recoveries by outcome, the durations of
detection, fencing, evacuation and MTTR, instances evacuated, failed and
skipped, fence outcomes by reason, hosts per ledger state, whether the
mass-failure brake is engaged and the worker's last successful scan. See
nova_evacuate/metrics.py for each metric.
""",
)

OPTS = [
    cfg.BoolOpt(
        "enabled",
        default=False,
        help="Serve Prometheus metrics from the NovaEvacuate worker.",
    ),
    cfg.IPOpt(
        "listen_address",
        default="127.0.0.1",
        help="""
Address the metrics endpoint listens on.

The endpoint has no authentication and names the hosts that failed, so it
listens on loopback unless told otherwise: set the controller's management
address (or ``0.0.0.0`` / ``::``) for a Prometheus on another host, and keep
the port behind the management network's firewall.
""",
    ),
    cfg.PortOpt(
        "port",
        default=9464,
        min=1,  # 0 would be a port chosen at random: no Prometheus could find it
        help="""
TCP port of the metrics endpoint.

Prometheus' list of exporter ports (9100-9999) is full, so this takes the port
applications without an allocation of their own conventionally use for their
Prometheus endpoint (the OpenTelemetry SDKs' Prometheus exporter default). It
is no OpenStack service's port; change it where something else on the
controller already serves there.
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
