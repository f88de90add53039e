"""Ports, paths and configuration files of the OpenStack lab (see :mod:`lab.openstack`).

Every file is rendered from the lab's parameters (state dir, bind host, port base, token lifetime)
on each ``up()``, so a changed parameter never leaves a stale file behind.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from lab.files import write_atomic

ADMIN_PASSWORD = "admin"
SERVICE_PASSWORD = "lab-service"
REGION = "RegionOne"
# Seconds between two runs of Nova's power-state sync on each compute (Nova's default: 600):
# a guest that dies behind Nova's back (Lab.crash_guest) is found and stopped within this.
SYNC_POWER_STATE_INTERVAL = 10
# The interface clouds.yaml selects. The catalog has public, internal and admin endpoints (all the
# same URLs); "internal" is what fence-agents' fence_compute uses by default (internalURL).
INTERFACE = "internal"

# Offsets from the port base: everything the lab listens on lies in [base, base + 99].
_OFFSETS = {
    "keystone": 0, "postgres": 32, "epmd": 69, "rabbitmq": 72, "rabbitmq-dist": 73,
    "nova-api": 74, "placement": 78, "glance": 92, "neutron": 96,
}


@dataclass(frozen=True)
class Layout:
    """Where everything of one lab lives, and on which ports it listens."""

    state_dir: Path
    bind_host: str = "127.0.0.1"
    port_base: int = 15000

    def port(self, name: str) -> int:
        return self.port_base + _OFFSETS[name]

    def url(self, name: str, path: str = "") -> str:
        return f"http://{self.bind_host}:{self.port(name)}{path}"

    @property
    def ports(self) -> dict[str, int]:
        return {name: self.port(name) for name in _OFFSETS}

    @property
    def etc(self) -> Path:
        return self.state_dir / "etc"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def compute_dir(self, host: str) -> Path:
        return self.state_dir / "computes" / host

    def compute_conf(self, host: str) -> Path:
        return self.etc / "nova" / f"compute-{host}.conf"

    def db_url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@{self.bind_host}:{self.port('postgres')}/{db}"

    @property
    def transport_url(self) -> str:
        return f"rabbit://guest:guest@{self.bind_host}:{self.port('rabbitmq')}/"


DATABASES = ("keystone", "placement", "glance", "nova_api", "nova_cell0", "nova_cell1")


def _authtoken(lay: Layout, user: str, extra: str = "") -> str:
    ks = lay.url("keystone")
    return f"""[keystone_authtoken]
www_authenticate_uri = {ks}
auth_url = {ks}
auth_type = password
username = {user}
password = {SERVICE_PASSWORD}
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = {REGION}
# With a valid service token (role "service") beside it, an expired user token is still
# accepted within keystone's [token] allow_expired_window: that is how nova-compute can reach
# Glance on behalf of a user whose token ran out during a long operation.
service_token_roles_required = true
{extra}"""


def keystone_conf(lay: Layout, token_expiration: int) -> str:
    keys = lay.state_dir / "keystone"
    return f"""[DEFAULT]
debug = false
[database]
connection = {lay.db_url("keystone")}
[token]
provider = fernet
expiration = {int(token_expiration)}
# allow_expired_window stays at its default (48 h): services presenting a service token may
# still use a user's expired token for that long.
[fernet_tokens]
key_repository = {keys / "fernet-keys"}
[fernet_receipts]
key_repository = {keys / "fernet-keys"}
[credential]
key_repository = {keys / "credential-keys"}
[cache]
# Without a cache a token validation costs ~450 SQL queries (~1 s); in-process is enough with
# one uWSGI worker.
enabled = true
backend = dogpile.cache.memory
[oslo_policy]
enforce_new_defaults = true
"""


def nova_conf(lay: Layout) -> str:
    ks = lay.url("keystone")
    return f"""[DEFAULT]
debug = false
transport_url = {lay.transport_url}
my_ip = {lay.bind_host}
state_path = {lay.state_dir / "nova"}
compute_driver = ohalab_guests.GuestFakeDriver
report_interval = 2
service_down_time = 10
periodic_fuzzy_delay = 0
heal_instance_info_cache_interval = -1
max_concurrent_builds = 50
[api_database]
connection = {lay.db_url("nova_api")}
[database]
connection = {lay.db_url("nova_cell1")}
[api]
auth_strategy = keystone
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 2
[filter_scheduler]
host_subset_size = 3
[quota]
instances = -1
cores = -1
ram = -1
[oslo_concurrency]
lock_path = {lay.state_dir / "nova" / "lock"}
[oslo_messaging_notifications]
driver = noop
[placement]
{_nova_service_user(ks)}region_name = {REGION}
endpoint_override = {lay.url("placement")}
[glance]
endpoint_override = {lay.url("glance")}
[neutron]
auth_type = admin_token
endpoint = {lay.url("neutron")}
token = admin
endpoint_override = {lay.url("neutron")}
[service_user]
send_service_user_token = true
{_nova_service_user(ks)}{_authtoken(lay, "nova")}"""


def _nova_service_user(keystone_url: str) -> str:
    """Password authentication as the service user nova (keystoneauth options)."""
    return f"""auth_type = password
auth_url = {keystone_url}
username = nova
password = {SERVICE_PASSWORD}
project_name = service
user_domain_name = Default
project_domain_name = Default
"""


def compute_conf(lay: Layout, host: str) -> str:
    d = lay.compute_dir(host)
    return f"""[DEFAULT]
host = {host}
state_path = {d}
instances_path = {d / "instances"}
sync_power_state_interval = {SYNC_POWER_STATE_INTERVAL}
[api_database]
connection =
[database]
connection =
[oslo_concurrency]
lock_path = {d / "lock"}
[ohalab_guests]
ceph_conf = {d / "ceph" / "ceph.conf"}
ceph_user = {host}
ceph_keyring = {d / "ceph" / "keyring"}
pool = vms
log_dir = {d / "guests"}
"""


def placement_conf(lay: Layout) -> str:
    # Behind Keystone like the rest: the evacuation engine reads inventories and usages.
    return f"""[DEFAULT]
debug = false
[api]
auth_strategy = keystone
[placement_database]
connection = {lay.db_url("placement")}
{_authtoken(lay, "placement")}"""


def glance_conf(lay: Layout) -> str:
    g = lay.state_dir / "glance"
    return f"""[DEFAULT]
debug = false
enabled_backends = file:file
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = {g / "images"}/
[os_glance_staging_store]
filesystem_store_datadir = {g / "staging"}/
[os_glance_tasks_store]
filesystem_store_datadir = {g / "tasks"}/
[database]
connection = {lay.db_url("glance")}
[paste_deploy]
flavor = keystone
{_authtoken(lay, "glance")}"""


def clouds_yaml(lay: Layout) -> str:
    # JSON is YAML: no YAML library is needed to write it.
    return f"""clouds:
  lab:
    auth:
      auth_url: "{lay.url("keystone", "/v3")}"
      username: "admin"
      password: "{ADMIN_PASSWORD}"
      project_name: "admin"
      user_domain_name: "Default"
      project_domain_name: "Default"
    identity_api_version: 3
    region_name: "{REGION}"
    interface: "{INTERFACE}"
"""


def rabbitmq_conf(lay: Layout) -> str:
    return f"""listeners.tcp.default = {lay.bind_host}:{lay.port("rabbitmq")}
# guest may connect from any address: compute nodes in network namespaces are not loopback.
loopback_users = none
"""


def rabbitmq_env(lay: Layout) -> dict[str, str]:
    """Environment of a private RabbitMQ: own node name, ports (epmd included), dirs, config."""
    rabbit, etc = lay.state_dir / "rabbitmq", lay.etc / "rabbitmq"
    return {
        "HOME": str(rabbit), "RABBITMQ_MNESIA_BASE": str(rabbit / "mnesia"),
        "RABBITMQ_LOG_BASE": str(lay.log_dir / "rabbitmq"),
        "RABBITMQ_NODENAME": "rabbit@localhost", "RABBITMQ_NODE_IP_ADDRESS": lay.bind_host,
        "RABBITMQ_NODE_PORT": str(lay.port("rabbitmq")),
        "RABBITMQ_DIST_PORT": str(lay.port("rabbitmq-dist")),
        "RABBITMQ_CONFIG_FILE": str(etc / "rabbitmq.conf"),
        "RABBITMQ_CONF_ENV_FILE": str(etc / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(etc / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(rabbit / "rabbit.pid"),
        "ERL_CRASH_DUMP": str(lay.log_dir / "rabbitmq" / "erl_crash.dump"),
        "ERL_EPMD_ADDRESS": lay.bind_host, "ERL_EPMD_PORT": str(lay.port("epmd")),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
            f"-kernel inet_dist_use_interface {{{lay.bind_host.replace('.', ',')}}}",
    }


def write_keys(repo: Path) -> None:
    """What ``keystone-manage fernet_setup`` / ``credential_setup`` do (keys 0 = staged and
    1 = primary, each a url-safe base64 32-byte Fernet key), without its ~3 s start-up."""
    repo.mkdir(parents=True, exist_ok=True)
    os.chmod(repo, 0o700)
    for name in ("0", "1"):
        key = repo / name
        if not key.exists():
            write_atomic(key, base64.urlsafe_b64encode(os.urandom(32)), 0o600)


def render(lay: Layout, venv: Path, computes: list[str], token_expiration: int) -> None:
    """Write every configuration file of the lab into ``lay.etc``."""
    files = {
        "keystone/keystone.conf": keystone_conf(lay, token_expiration),
        "nova/nova.conf": nova_conf(lay),
        # The api-paste.ini nova ships, unmodified: authtoken + keystonecontext.
        "nova/api-paste.ini": (venv / "etc/nova/api-paste.ini").read_text(),
        "placement/placement.conf": placement_conf(lay),
        "glance/glance-api.conf": glance_conf(lay),
        "glance/glance-api-paste.ini": (venv / "etc/glance/glance-api-paste.ini").read_text(),
        "rabbitmq/rabbitmq.conf": rabbitmq_conf(lay),
        "rabbitmq/enabled_plugins": "[].\n",
        "rabbitmq/rabbitmq-env.conf": "",
    }
    for host in computes:
        files[f"nova/compute-{host}.conf"] = compute_conf(lay, host)
    for rel, text in files.items():
        path = lay.etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for sub in ("glance/images", "glance/staging", "glance/tasks", "nova/lock", "home", "rabbitmq"):
        (lay.state_dir / sub).mkdir(parents=True, exist_ok=True)
    for host in computes:
        (lay.compute_dir(host) / "instances").mkdir(parents=True, exist_ok=True)
    write_keys(lay.state_dir / "keystone/fernet-keys")
    write_keys(lay.state_dir / "keystone/credential-keys")
    write_atomic(lay.state_dir / "clouds.yaml", clouds_yaml(lay), 0o600)
