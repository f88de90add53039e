"""``[cloud]``: how the engine reaches Keystone and Nova."""

from oslo_config import cfg

from nova_evacuate.common_options import DOMAIN

GROUP = cfg.OptGroup(
    "cloud",
    title="Cloud connection",
    help="Which cloud the engine talks to. Credentials live in clouds.yaml, never here.",
)

OPTS = [
    cfg.StrOpt(
        "cloud",
        default="openstack",
        help="""
Name of the clouds.yaml entry to use.

clouds.yaml is searched where openstacksdk searches it (the OS_CLIENT_CONFIG_FILE
environment variable, the current directory, ~/.config/openstack, /etc/openstack).

Possible values:
* The name of a cloud in clouds.yaml, with admin rights on Nova.
""",
    ),
    cfg.StrOpt(
        "clouds_yaml",
        help="""
Path of the clouds.yaml to read instead of openstacksdk's search path.

Keep it readable by root only: it holds the password.
""",
    ),
    cfg.StrOpt(DOMAIN.name, help=DOMAIN.help),
    cfg.StrOpt(
        "region_name",
        help="Region of the Nova endpoint; unset means the one in clouds.yaml.",
    ),
    cfg.StrOpt(
        "interface",
        default="internal",
        choices=[
            ("public", "the endpoint users reach"),
            ("internal", "the endpoint on the cloud's internal network"),
            ("admin", "the admin endpoint, where a deployment still has one"),
        ],
        help="Which endpoint of the service catalog to use for Nova and Placement.",
    ),
    cfg.IntOpt(
        "api_timeout",
        default=30,
        min=1,
        max=3600,
        help="""
Seconds one Nova, Placement or Keystone request may take before it counts as failed.

Related options:
* ``[evacuation] api_retries``: how often a failed request is tried again.
""",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
