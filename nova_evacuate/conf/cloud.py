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

Set here, it beats the OS_CLOUD and OS_* environment variables: a command
run from a shell then talks to the same cloud as the cluster's
NovaEvacuate. Left out, the commands (nova-evacuate, openstack-ha-watchdog)
choose as the openstack client does: OS_CLOUD, else the OS_* variables
when OS_AUTH_URL is set, else this default. --os-cloud (--cloud) on a
command line beats them all.

Possible values:
* The name of a cloud in clouds.yaml, with admin rights on Nova.

Related options:
* ``clouds_yaml``: which clouds.yaml holds it.
""",
    ),
    cfg.StrOpt(
        "clouds_yaml",
        help="""
Path of the clouds.yaml to read, alone.

Set here, it beats the OS_CLIENT_CONFIG_FILE environment variable. Left
out, the clouds.yaml is the one OS_CLIENT_CONFIG_FILE names, else the
first found in openstacksdk's search path (the current directory,
~/.config/openstack, /etc/openstack).

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
