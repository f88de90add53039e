"""``[consul]``: Consul as a second health channel, one agent per network.

The defaults and bounds are `openstack_ha.consul_config.OPTIONS`'s, which also reads this
section from a file for fence_nova's ``consul_config``: one home for both.
"""

from oslo_config import cfg

from openstack_ha.consul_config import OPTIONS

GROUP = cfg.OptGroup(
    "consul",
    title="Consul, a second health channel",
    help="""
Off unless ``networks`` is set. One Consul datacenter (or one agent of it) per
network the compute nodes use: management, storage, tenant... Each gives its
view of a node: alive (its gossip member status is alive and its serfHealth
check passing), failed (member failed or left, serfHealth critical or absent)
or unknown (anything else: a mixed answer, Consul unreachable). fence_nova
reads this section (``consul_config=/etc/openstack-ha/openstack-ha.conf``) and
judges the views with its ``partition_policy`` before touching the power.
Nodes are named in Consul as the cluster names them.
""",
)


def _bounded(opt_class: type, name: str, help_text: str) -> cfg.Opt:
    bounds = OPTIONS[name]
    return opt_class(name, default=bounds.default, min=bounds.minimum, max=bounds.maximum,
                     help=help_text)


OPTS = [
    cfg.StrOpt(
        "networks",
        default=OPTIONS["networks"].default,
        help="""
Each network's Consul agent: ``name=URL`` pairs separated by commas, e.g.
``management=http://10.0.0.1:8500,storage=https://10.1.0.1:8501``. Names are a
lower-case letter then up to 31 of a-z, 0-9, ``_`` and ``-``; the default
partition policy knows ``management`` and ``storage``. Each URL is
``http(s)://host[:port]`` only: no path, no user info (the token goes in
``token_file``). Empty: Consul is not read.
""",
    ),
    cfg.StrOpt(
        "token_file",
        default=OPTIONS["token_file"].default,
        help="""
File holding the ACL token (its first line), sent in the ``X-Consul-Token``
header only; it needs ``node:read`` and ``service:read``. Keep the file
readable by root only. Empty: no token.
""",
    ),
    cfg.StrOpt(
        "ca_file",
        default=OPTIONS["ca_file"].default,
        help="""
CA bundle an https agent's certificate is verified against. Empty: the
system's trust store.
""",
    ),
    _bounded(cfg.FloatOpt, "timeout", """
Seconds one request to an agent may take, connecting and reading together. An
agent that does not answer in time gives an unknown view, never a failed one.
"""),
    _bounded(cfg.IntOpt, "samples", """
Readings of each network that must agree before its view counts (a mixed
window is unknown, as masakari-monitors learnt): ``samples`` readings,
``interval`` seconds apart. The networks are read at the same time.
"""),
    _bounded(cfg.FloatOpt, "interval", """
Seconds between two readings of one network.
"""),
    cfg.BoolOpt(
        "watch",
        default=OPTIONS["watch"].default == "true",
        help="""
The NovaEvacuate worker watches every compute node Pacemaker sees online
(``samples`` readings in a row, ``interval`` apart): one that Consul sees
failed on every network has its cluster connection failed at once
(``crm_resource --fail``), so Pacemaker fences it without waiting for the
connection's monitor to time out (a hang or every link cut). Not when more of
the nodes than ``[safety] max_down_fraction`` look failed: the controller more
likely lost its own networks. Its decisions go to the timeline
(``consul_down``, ``consul_refused``). fence_nova ignores this option.
""",
    ),
    _bounded(cfg.FloatOpt, "settle", """
Seconds a fence waits for Consul to notice anything while every network still
sees the node alive. The cluster often loses a node before gossip does (a
connection reset is seen at once; Consul's failure detection takes seconds),
and a view taken before Consul noticed says nothing: the first network that
sees the node other than alive ends the wait, then the samples are taken. A
node Consul still sees alive everywhere after it is fenced as without Consul.
So with Consul a crash is fenced once gossip has seen it (about 5 to 7 s with
serf's LAN timings), and a partition is judged on what Consul saw. 0: no wait
(refusals only when Consul was first). A fence waits up to settle + (samples -
1) x interval + 4 x timeout for Consul before its power step: add it to the
fence device's pcmk_off_timeout.
"""),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
