"""``fence_nova``: the fence agent of instance HA, its declared interface.

``FENCE_NOVA`` declares every parameter and action (the metadata Pacemaker and
pcs read).  It keeps the name, aliases and meaning of every parameter of
fence-agents' ``fence_compute``, so an existing ``pcs stonith`` configuration
moves over unchanged, and adds the cloud (clouds.yaml) and power-driver (BMC)
parameters: IPMI (``power_driver=ipmi``, pyghmi) or Redfish (``power_driver=redfish``,
sushy), chosen per device.  :func:`check_config` is the cross-option validation run for
``validate-all`` and before every action.

The fencing sequence itself (what ``off``, ``on`` and the rest do) is in
:mod:`fence_compute.actions`, loaded only for those actions.

Importing this module must stay cheap (no openstacksdk, keystoneauth1, pyghmi
or sushy): Pacemaker runs ``metadata`` and ``validate-all`` often.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sys
from dataclasses import replace

from fence_compute.bmc_map import BmcAddress, parse_bmc_map
from fence_compute.kdump import KDUMP_PORT, parse_addresses
from fence_compute.protocol import (
    STANDARD_OPTIONS,
    FenceAction,
    FenceAgent,
    Option,
    Options,
    run,
    show_value,
)
from fence_compute.storage import DEFAULT_EXPIRE_SECONDS
from nova_evacuate.common_options import DOMAIN, LEAVE_DISABLED, STORAGE_MAP
from nova_evacuate.storage_map import parse_address, parse_storage_map
from nova_evacuate.token_cache import DEFAULT_DIR as TOKEN_CACHE_DIR

LOG = logging.getLogger(__name__)

_STD = STANDARD_OPTIONS

# Keystone interface names fence_compute passed to novaclient, and the short
# ones keystoneauth and openstacksdk use.
_ENDPOINT_TYPES = ("publicURL", "internalURL", "adminURL", "public", "internal", "admin")


class RecordOnly(enum.Enum):
    """The meaning of fence_compute's ``record_only``.

    fence_compute reads it as a string: ``2``/``disabled`` make the agent exit 0
    without doing anything (every action but metadata, --help and validate-all).
    Any other value changed nothing there (power was always another device's:
    fence_compute only ever did Nova's part). In fence_nova, which can also cut the
    power, a true value keeps that meaning: no power action, only Nova and the
    ledger, the power-off being another device's at the same topology level; false
    does the whole job.
    """

    NO = "no"
    YES = "yes"
    DISABLED = "disabled"

    @classmethod
    def parse(cls, value: str | None) -> RecordOnly:
        word = (value or "").strip().lower()
        if word in ("", "0", "no", "off", "false"):
            return cls.NO
        if word in ("1", "yes", "on", "true"):
            return cls.YES
        if word in ("2", "disabled"):
            return cls.DISABLED
        raise ValueError("must be a boolean (1/yes/on/true, 0/no/off/false) or 2/disabled")


def record_only(options: Options) -> RecordOnly:
    """The device's record_only mode (check_config has refused any other value)."""
    return RecordOnly.parse(options.text("record_only"))


def owns_power(options: Options) -> bool:
    """Whether this device drives the host's power itself: a power driver, and no
    record_only (which leaves the power to another device of the topology level)."""
    return options.text("power_driver") != "none" and record_only(options) is RecordOnly.NO


# Options that only some configurations use (see unused_options).
_BMC_OPTIONS = ("ip", "ipport", "bmc_map", "bmc_username", "bmc_password", "lanplus", "cipher",
                "redfish_system", "redfish_auth", "ssl_insecure", "ssl_ca_file", "retry_on",
                "unfence_power")
_REDFISH_ONLY = ("redfish_system", "redfish_auth", "ssl_insecure", "ssl_ca_file")
_IPMI_ONLY = ("lanplus", "cipher")
_KEYSTONE_OPTIONS = ("auth_url", "username", "password", "tenant_name", "user_domain",
                     "project_domain")
_CEPH_OPTIONS = ("ceph_conf", "ceph_user", "ceph_keyring_file", "storage_map",
                 "storage_address", "blocklist_expire")
_KDUMP_OPTIONS = ("kdump_port", "kdump_address")
_PARTITION_OPTIONS = ("partition_policy", "partition_hold")
# The longest kdump_wait: a crash kernel that has not spoken by then is not coming.
MAX_KDUMP_WAIT = 3600.0
DEFAULT_PARTITION_HOLD = 300
MAX_PARTITION_HOLD = 3600.0


def unused_options(options: Options) -> dict[str, str]:
    """Options given to this device that its configuration does not use, each with why
    (another option decides); fence_nova logs them rather than ignore them silently.
    Reads only through ``get`` and ``is_set`` (see tests/unit/test_fence_nova_options.py).
    """
    unused: dict[str, str] = {}

    def given(names: tuple[str, ...], why: str) -> None:
        for name in names:
            if options.is_set(name):
                unused.setdefault(name, why)

    mode, driver = _record_only_or_no(options), options.get("power_driver")
    if mode is RecordOnly.YES:
        given(("power_driver", *_BMC_OPTIONS),
              "record_only leaves the power to another device of this topology level")
    elif driver == "none":
        given(_BMC_OPTIONS, "power_driver=none leaves the power to another device of this"
                            " topology level")
    elif driver == "ipmi":
        given(_REDFISH_ONLY, "power_driver=ipmi")
    elif driver == "redfish":
        given(_IPMI_ONLY, "power_driver=redfish")
    if options.get("cloud"):
        given(_KEYSTONE_OPTIONS, "cloud is given: its clouds.yaml entry holds the credentials")
    if options.get("storage_fence") != "ceph":
        given(_CEPH_OPTIONS, "storage_fence is not ceph")
    if not options.get("kdump_wait"):
        given(_KDUMP_OPTIONS, "kdump_wait is 0: off waits for no fence_kdump message")
    if not options.get("consul_config"):
        given(_PARTITION_OPTIONS, "consul_config is not set: Consul is not read")
    return unused


def compat_only_options(options: Options) -> list[tuple[Option, bool]]:
    """The options accepted for fence_compute compatibility only that this device was given
    a value other than their default for, each with whether that value changes what an
    operator expects of the recovery (then worth a warning). Reads as unused_options."""
    return [
        (option, option.name in _EXPECTATION_CHANGING)
        for option in _OPTIONS
        if option.compat_only and options.is_set(option.name)
        and options.get(option.name) != option.typed_default
    ]


def _record_only_or_no(options: Options) -> RecordOnly:
    value = options.get("record_only")
    try:
        return RecordOnly.parse(value if isinstance(value, str) else None)
    except ValueError:  # reported by check_config
        return RecordOnly.NO


def _got(value: str) -> str:
    """`` (got 'value')`` for an error line, or nothing when the value must not be shown."""
    shown = show_value(value)
    return f" (got {shown})" if shown is not None else " (its value starts with '-' and is not shown)"


def check_config(options: Options) -> list[str]:
    """Cross-option rules; one line per problem, naming options, never secrets."""
    errors: list[str] = []

    try:
        RecordOnly.parse(options.text("record_only"))
    except ValueError as exc:
        errors.append(f"option 'record_only' {exc}{_got(options.text('record_only') or '')}")

    endpoint = options.text("endpoint_type") or ""
    if endpoint.lower() not in {e.lower() for e in _ENDPOINT_TYPES}:
        errors.append(
            f"option 'endpoint_type' must be one of {', '.join(_ENDPOINT_TYPES)}{_got(endpoint)}"
        )

    domain, compute_domain = options.text("domain"), options.text("compute_domain")
    if domain and compute_domain and domain != compute_domain:
        errors.append(
            "options 'domain' and 'compute_domain' (its deprecated spelling) disagree;"
            " set only 'domain'"
        )

    if not options.text("cloud"):
        missing = [n for n in ("auth_url", "username") if not options.text(n)]
        if options.secret("password") is None:
            missing.append("a password (password, password_script or password_file)")
        if missing:
            errors.append(
                "Nova credentials: give either 'cloud' (a clouds.yaml entry) or 'auth_url',"
                " 'username' and a password; missing: " + ", ".join(missing)
            )

    bmc_map: dict[str, BmcAddress] = {}
    bmc_map_text = options.text("bmc_map")
    if bmc_map_text is not None:
        try:
            bmc_map = parse_bmc_map(bmc_map_text)
        except ValueError as exc:
            errors.append(f"option 'bmc_map': {exc}")

    port = options.number("ipport")
    if port is not None and not 1 <= port <= 65535:
        errors.append(f"option 'ipport' must be between 1 and 65535 (got {port})")

    # Power options are required and cross-checked only when this device drives the power:
    # record_only leaves it to another device (a fence_compute configuration has no BMC).
    driver = options.text("power_driver") if _record_only_or_no(options) is RecordOnly.NO else None
    if driver == "ipmi":
        from fence_compute.ipmi import config_errors  # cheap: pyghmi loads on first use

        errors.extend(config_errors(options.flag("lanplus"), options.number("cipher")))
        errors.extend(
            f"bmc_map entry for {host} is a Redfish URL but power_driver=ipmi"
            for host, bmc in bmc_map.items() if bmc.scheme is not None
        )
    elif driver == "redfish":
        errors.extend(_redfish_errors(options))
    if driver in ("ipmi", "redfish"):
        has_ip, has_map = bool(options.text("ip")), bool(bmc_map_text)
        if not has_ip and not has_map:
            errors.append(
                f"power_driver={driver} needs the BMC address: 'ip' (one device per host) or"
                " 'bmc_map' (host=address[:port],...)"
            )
        elif has_ip and has_map:
            errors.append("give either 'ip' or 'bmc_map', not both: which BMC to use is ambiguous")
        if options.secret("bmc_password") is None:
            errors.append(
                f"power_driver={driver} needs a BMC password: 'bmc_password_script',"
                " 'bmc_password_file' or 'bmc_password'"
            )
    errors.extend(_storage_errors(options))
    errors.extend(_kdump_errors(options))
    errors.extend(_partition_errors(options))
    return errors


def _seconds_beyond(options: Options, name: str, maximum: float) -> list[str]:
    """The error line of a seconds option above its bound, if it is."""
    value = options.seconds(name) or 0.0
    if value > maximum:
        return [f"option '{name}' must be at most {maximum:g} seconds (got {value:g})"]
    return []


def _partition_errors(options: Options) -> list[str]:
    """consul_config loads (its token file read, its CA file usable) and partition_policy
    parses over its networks; partition_hold within its bound."""
    errors = _seconds_beyond(options, "partition_hold", MAX_PARTITION_HOLD)
    text = options.text("consul_config")
    if not text:
        return errors
    # Only here: the client loads http.client and ssl, which no configuration without
    # Consul pays for.
    from openstack_ha import consul_config, partition

    try:
        settings = consul_config.load(text)
    except ValueError as exc:
        return [*errors, f"option 'consul_config': {exc}"]
    policy = options.text("partition_policy") or consul_config.default_policy(settings.networks)
    try:
        partition.parse_policy(policy, settings.networks)
    except ValueError as exc:
        errors.append(f"option 'partition_policy': {exc}")
    return errors


def _kdump_errors(options: Options) -> list[str]:
    """kdump_wait within its bound and only where this device cuts the power; the port and
    the addresses well formed whatever kdump_wait says (a malformed one is an error before it
    is ever used)."""
    errors = _seconds_beyond(options, "kdump_wait", MAX_KDUMP_WAIT)
    wait = options.seconds("kdump_wait") or 0.0
    port = options.number("kdump_port")
    if port is not None and not 1 <= port <= 65535:
        errors.append(f"option 'kdump_port' must be between 1 and 65535 (got {port})")
    address = options.text("kdump_address")
    if address is not None:
        try:
            parse_addresses(address)
        except ValueError as exc:
            errors.append(f"option 'kdump_address' {exc}")
        if options.text("bmc_map"):
            errors.append("option 'kdump_address' holds one host's addresses and bmc_map makes"
                          " this device fence many: leave kdump_address unset (each host's"
                          " name is resolved) or give each host a device of its own")
    mode = _record_only_or_no(options)
    if wait > 0 and (mode is RecordOnly.YES or options.text("power_driver") == "none"):
        # Another device of this topology level cuts the power, before this one runs: a wait
        # here would save no dump. The level's own fence_kdump device is the way there.
        left_by = "record_only" if mode is RecordOnly.YES else "power_driver=none"
        errors.append(f"option 'kdump_wait' needs a device that powers the host off; with"
                      f" {left_by} another device of the topology level does, before this one"
                      " runs: put fence_kdump first in that level instead")
    return errors


def _redfish_errors(options: Options) -> list[str]:
    """power_driver=redfish: a user, the system's path, and one way of checking the BMC's
    certificate. lanplus and cipher do not apply (they keep their defaults, unread)."""
    from fence_compute.redfish import system_path  # cheap: sushy loads on first use

    errors: list[str] = []
    if not options.text("bmc_username"):
        errors.append("power_driver=redfish needs 'bmc_username' (Redfish has no anonymous login)")
    system = options.text("redfish_system")
    if system is not None:
        try:
            system_path(system)
        except ValueError as exc:
            errors.append(f"option 'redfish_system' {exc}{_got(system)}")
    if "://" in (options.text("ip") or ""):
        errors.append("option 'ip' is the BMC's address, not a URL (a URL goes in bmc_map;"
                      " the port in ipport)")
    ca_file = options.text("ssl_ca_file")
    if options.flag("ssl_insecure") and ca_file is not None:
        errors.append("give either 'ssl_insecure' or 'ssl_ca_file', not both: whether the BMC's"
                      " certificate is verified is ambiguous")
    elif ca_file is not None and not _readable(ca_file):
        errors.append(f"option 'ssl_ca_file' must be a readable file{_got(ca_file)}")
    return errors


def _readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _storage_errors(options: Options) -> list[str]:
    """storage_fence=ceph: the conf, the keyring file and the target's addresses. The maps are
    parsed whatever storage_fence says: a malformed one is an error before it is ever used."""
    errors: list[str] = []
    storage_map: dict[str, tuple[str, ...]] | None = None
    map_text, address_text = options.text("storage_map"), options.text("storage_address")
    if map_text is not None:
        try:
            storage_map = parse_storage_map(map_text)
        except ValueError as exc:
            errors.append(f"option 'storage_map': {exc}")
    if address_text is not None:
        try:
            parse_address(address_text)
        except ValueError as exc:
            errors.append(f"option 'storage_address': {exc}")
    expire = options.number("blocklist_expire")
    if expire is not None and expire <= 0:
        errors.append(f"option 'blocklist_expire' must be a positive number of seconds (got {expire})")
    if options.text("storage_fence") != "ceph":
        return errors
    for name in ("ceph_conf", "ceph_keyring_file"):
        path = options.text(name)
        if not path:
            errors.append(f"storage_fence=ceph needs '{name}' (a file path)")
        elif not _readable(path):
            errors.append(f"option '{name}': {path} is not a readable file")
    user = options.text("ceph_user") or ""
    if not user or any(c.isspace() for c in user) or user.startswith("client."):
        errors.append("option 'ceph_user' must be a Ceph user id without 'client.' (got"
                      f" {show_value(user)})")
    if map_text is None and address_text is None:
        errors.append("storage_fence=ceph needs the host's storage addresses: 'storage_map'"
                      " (host=address[+address],...) or 'storage_address' (one host)")
    elif map_text is not None and address_text is not None:
        errors.append("give either 'storage_address' or 'storage_map', not both: which"
                      " addresses to blocklist is ambiguous")
    elif storage_map is not None:
        plug = options.text("plug")
        if plug and plug not in storage_map:
            errors.append(f"option 'storage_map' has no storage address for {plug}")
    return errors


_OPTIONS = (
    # Nova / Keystone: fence_compute's names, plus cloud.
    Option(
        "cloud",
        "Name of the clouds.yaml entry with the Nova credentials",
        getopt="--cloud=[name]",
        longdesc=(
            "Entry in clouds.yaml (searched as openstacksdk does: OS_CLIENT_CONFIG_FILE,"
            " ./clouds.yaml, ~/.config/openstack, /etc/openstack) holding the Keystone"
            " credentials of an account allowed to force down and disable compute services."
            " Either cloud, or auth_url with username and a password, is required."
        ),
    ),
    Option(
        "auth_url",
        "Keystone Admin Auth URL",
        getopt="-k, --auth-url=[url]",
        longdesc=(
            "Keystone identity endpoint, used when no cloud is given. Credentials written"
            " in it (user:password@, a query string) are never shown in logs or the timeline."
        ),
        url=True,
    ),
    replace(
        _STD["username"],
        shortdesc="Login name",
        longdesc="Keystone user name, used with auth_url.",
    ),
    replace(
        _STD["password"],
        shortdesc="Login password or passphrase",
        longdesc=(
            "Keystone password of username. Prefer password_script or password_file:"
            " a password given here is stored in the CIB and visible on a command line."
        ),
    ),
    Option(
        "tenant_name",
        "Keystone Admin Tenant or v3 Project",
        getopt="-t, --tenant-name=[name]",
        longdesc="Keystone v2 tenant or v3 project to scope the token to.",
    ),
    Option(
        "user_domain",
        "Keystone v3 User Domain",
        default="Default",
        getopt="-u, --user-domain=[name]",
        deprecated_names=("user-domain",),
    ),
    Option(
        "project_domain",
        "Keystone v3 Project Domain",
        default="Default",
        getopt="-P, --project-domain=[name]",
        deprecated_names=("project-domain",),
    ),
    Option("region_name", "Region Name", getopt="--region-name=[region]"),
    Option(
        "endpoint_type",
        "Nova Endpoint type",
        default="internalURL",
        getopt="-e, --endpoint-type=[endpoint]",
        longdesc="Which Nova endpoint to use: publicURL, internalURL or adminURL.",
    ),
    Option(
        "insecure",
        "Allow Insecure TLS Requests",
        "boolean",
        getopt="--insecure",
        longdesc="Do not verify the TLS certificates of Keystone and Nova.",
    ),
    Option(
        "token_cache",
        "Directory where the Keystone token is kept between runs",
        default=TOKEN_CACHE_DIR,
        getopt="--token-cache=[directory]",
        longdesc=(
            "A Keystone token still valid from an earlier run (the device's monitor, every"
            " minute by default) spares off Keystone's password check; Keystone's answer"
            " to a revoked token makes it authenticate again. The directory is made 0700"
            " and each token file 0600; one with another owner or wider permissions is"
            " ignored. Empty: authenticate with the password every time."
        ),
    ),
    # The target and how its name maps to Nova.
    replace(
        _STD["plug"],
        shortdesc="Physical plug number on device, UUID or identification of machine",
        longdesc=(
            "The host to fence: its Pacemaker node name, which is also its Nova compute host"
            " name (after applying domain). Pacemaker passes it as port=."
        ),
    ),
    Option(
        DOMAIN.name,
        DOMAIN.summary,
        getopt="-d, --domain=[string]",
        longdesc=DOMAIN.help,
    ),
    Option(
        "compute_domain",
        "Replaced by domain",
        getopt="--compute-domain=[string]",
        deprecated_names=("compute-domain",),
        longdesc="Deprecated spelling of domain, used when domain is not set.",
    ),
    # What fencing does in Nova.
    Option(
        "record_only",
        "Only record the target as needing evacuation",
        default="False",
        getopt="-r, --record-only=[value]",
        longdesc=(
            "fence_compute's meaning. False: this device powers the host off itself"
            " (power_driver). True (1, yes): no power action at all, whatever power_driver,"
            " ip or bmc_map say: off and reboot force the host down in Nova and request its"
            " evacuation, trusting that another device of the same topology level powered"
            " it off (as power_driver=none; the mass-failure brake and storage_fence still"
            " apply); on does not power it on; status reads Nova. 2 or disabled: every"
            " action but metadata and validate-all does nothing and succeeds. The cluster"
            " will then treat the host as fenced: use it only at a topology level where"
            " another device powers the host off."
        ),
    ),
    Option(
        "instance_filtering",
        "Allow instances to be evacuated",
        "boolean",
        default=True,
        getopt="--instance-filtering",
        compat_only=(
            "fence_nova does not choose which instances are evacuated; the evacuation"
            " engine does, by its own option [evacuation] instance_filtering (in"
            " NovaEvacuate's config_file)"
        ),
    ),
    Option(
        "no_shared_storage",
        "Disable functionality for dealing with shared storage",
        "boolean",
        default=False,
        getopt="--no-shared-storage",
        compat_only=(
            "from microversion 2.14 on (the evacuation engine uses a later one) Nova finds"
            " out itself whether an instance's disk is on shared storage; there is nothing"
            " to set"
        ),
    ),
    Option(
        LEAVE_DISABLED.name,
        LEAVE_DISABLED.summary,
        "boolean",
        default=LEAVE_DISABLED.default,
        getopt="--leave-disabled",
        longdesc=LEAVE_DISABLED.help,
    ),
    Option(
        "unfence_power",
        "Power the host on when it is unfenced",
        default="on",
        getopt="--unfence-power=[on|keep-off]",
        choices=("on", "keep-off"),
        longdesc=(
            "Unfencing (on) never powers on a host whose evacuation is still pending: it"
            " refuses at once, and the evacuation engine asks Pacemaker to unfence the host"
            " once the evacuation is done. on: then power it on through its BMC."
            " keep-off: leave it off for inspection; the operator powers it on"
            " (ipmitool chassis power on) when it may serve again."
        ),
    ),
    Option(
        "max_down_percent",
        "Refuse to fence when more compute nodes than this look down",
        "integer",
        default=50,
        getopt="--max-down-percent=[percent]",
        longdesc=(
            "Mass-failure brake: when more than this percentage of the cluster's"
            " pacemaker_remote nodes are offline or unclean (the target included), off and"
            " reboot refuse and exit 1 without touching power or Nova: so many hosts failing"
            " at once is a partition or a broken observer, not hardware. 100 turns the"
            " brake off. Without a running cluster (fence_nova run by hand) it does not"
            " apply."
        ),
    ),
    # How the host's power is cut.
    Option(
        "power_driver",
        "How to power the host off",
        default="ipmi",
        getopt="--power-driver=[driver]",
        choices=("ipmi", "redfish", "none"),
        longdesc=(
            "ipmi: power off through the host's BMC (IPMI 2.0) and poll until it reports off."
            " redfish: power off through the BMC's Redfish service over HTTPS"
            " (ComputerSystem.Reset ForceOff) and poll until the system's PowerState is Off."
            " none: do not touch power; only for a topology level where another device"
            " (fence_ipmilan, say) powers the host off. The choice is per device: one"
            " cluster may mix IPMI and Redfish devices."
        ),
    ),
    replace(
        _STD["ip"],
        shortdesc="IP address or hostname of the BMC",
        longdesc="BMC address when the device fences one host; for many hosts use bmc_map.",
    ),
    replace(
        _STD["ipport"],
        getopt="--ipport=[port]",
        shortdesc="Port of the BMC (ipmi: UDP 623, redfish: HTTPS 443)",
        longdesc=(
            "Port of the BMC at ip, and of bmc_map entries that name none. Unset: the"
            " driver's own, 623 (UDP) with power_driver=ipmi, 443 (HTTPS) with redfish."
        ),
    ),
    Option(
        "bmc_username",
        "BMC user name",
        getopt="--bmc-username=[name]",
        longdesc=(
            "BMC user allowed to change the host's power: an IPMI user with that privilege,"
            " or a Redfish account with ConfigureComponents (a Redfish Operator)."
        ),
    ),
    Option(
        "bmc_password",
        "BMC password",
        getopt="--bmc-password=[password]",
        secret=True,
        longdesc=(
            "Password of bmc_username, for IPMI and Redfish alike. Prefer bmc_password_script"
            " or bmc_password_file: a password given here is stored in the CIB."
        ),
    ),
    Option(
        "lanplus",
        "Use IPMI 2.0 (lanplus)",
        "boolean",
        default=True,
        getopt="--lanplus",
    ),
    Option(
        "cipher",
        "IPMI cipher suite",
        "integer",
        default=3,
        getopt="--cipher=[suite]",
        longdesc="Cipher suite id, as ipmitool -C.",
    ),
    Option(
        "bmc_map",
        "BMC address of each host: host=address[:port][,host=...]",
        getopt="--bmc-map=[map]",
        longdesc=(
            "For one device fencing many hosts: each host's BMC address and optional port."
            " IPv6 addresses take a port in brackets ([fd00::11]:623). Each host may appear"
            " once. With power_driver=redfish an entry may be a URL,"
            " host=https://address[:port] (no path, no user:password@); http:// is refused,"
            " as it would send the BMC password in clear text."
        ),
    ),
    Option(
        "redfish_system",
        "Redfish path or id of the host's system",
        getopt="--redfish-system=[path]",
        longdesc=(
            "The ComputerSystem to power off: its path (/redfish/v1/Systems/1) or its id (1,"
            " System.Embedded.1). Unset: the one system the BMC lists under"
            " /redfish/v1/Systems; a BMC listing several needs it. With bmc_map, it applies"
            " to every host."
        ),
    ),
    Option(
        "redfish_auth",
        "How to log in to the Redfish service",
        default="auto",
        getopt="--redfish-auth=[session|basic|auto]",
        choices=("session", "basic", "auto"),
        longdesc=(
            "session: create a Redfish session (X-Auth-Token) and delete it at the end."
            " basic: send HTTP basic authentication with every request. auto: a session,"
            " or basic when the BMC offers no session service."
        ),
    ),
    Option(
        "ssl_insecure",
        "Do not verify the BMC's TLS certificate",
        "boolean",
        default=False,
        getopt="--ssl-insecure",
        longdesc=(
            "Redfish: accept any certificate from the BMC. Prefer ssl_ca_file: without"
            " verification, whoever answers at the BMC's address receives its password."
            " (insecure is Keystone's and Nova's.)"
        ),
    ),
    Option(
        "ssl_ca_file",
        "CA bundle that signs the BMC's TLS certificate",
        getopt="--ssl-ca-file=[path]",
        longdesc=(
            "Redfish: the PEM file of the CA (or the BMC's self-signed certificate) to"
            " verify the BMC against. Unset: the system's trust store."
        ),
    ),
    # The host's crash kernel (kdump): a host that is dumping is harmless.
    Option(
        "kdump_wait",
        "Seconds to wait for the host's fence_kdump message before powering it off",
        "second",
        default=0,
        getopt="--kdump-wait=[seconds]",
        longdesc=(
            "off (and reboot) first listen this long for a fence_kdump message from the host"
            " (fence_kdump_send, run by its kdump crash kernel). One arrives: the host runs"
            " its crash kernel and is harmless, so it is not powered off (its crash dump is"
            " kept) and the rest follows as after a confirmed power-off: storage fence if"
            " configured, force-down, disable, evacuation request. None by then: the host"
            " is powered off as usual. 0: no wait; at most 3600. Only for a device that"
            " powers the host off (an error with power_driver=none or record_only: there,"
            " put fence_kdump first in the topology level). The wait comes before the power"
            " step: the device's pcmk_off_timeout must exceed kdump_wait + login_timeout +"
            " power_wait + power_timeout + 30 s (Nova's steps), or Pacemaker kills the agent"
            " first. Nothing else on the node running the device may listen on kdump_port"
            " meanwhile (a fence_kdump device, another fence_nova waiting): off then fails."
        ),
    ),
    Option(
        "kdump_port",
        "UDP port the host's fence_kdump messages are sent to",
        "integer",
        default=KDUMP_PORT,
        getopt="--kdump-port=[port]",
        longdesc="fence_kdump_send's -p and fence_kdump's ipport; used with kdump_wait.",
    ),
    Option(
        "kdump_address",
        "Addresses the host's fence_kdump messages come from",
        getopt="--kdump-address=[addresses]",
        longdesc=(
            "IP addresses, separated by commas, from which the host's crash kernel sends"
            " (its address on the network towards this node); a message from any other"
            " address is ignored. Unset: every address the host's name (plug) resolves to"
            " (getaddrinfo), as fence_kdump resolves its nodename. For a device that fences"
            " one host; used with kdump_wait."
        ),
    ),
    # Storage fencing (Ceph's OSD blocklist).
    Option(
        "storage_fence",
        "How to fence the host's storage",
        default="none",
        getopt="--storage-fence=[none|ceph]",
        choices=("none", "ceph"),
        longdesc=(
            "ceph: off blocklists every storage address of the host in Ceph's OSD map and"
            " confirms each by reading the blocklist back, after the power-off is confirmed"
            " (or, with power_driver=none, as the only fence); nothing in Nova changes unless"
            " it is confirmed. on removes the entries only once the host's evacuation is done"
            " and while its BMC reports it off, then powers it on; a host that is on (never"
            " powered off since its storage fence) or a device without power driver keeps"
            " them. none: no storage fencing."
        ),
    ),
    Option(
        "ceph_conf",
        "Path of the Ceph configuration file",
        getopt="--ceph-conf=[path]",
        longdesc="ceph.conf naming the cluster's monitors; needed with storage_fence=ceph.",
    ),
    Option(
        "ceph_user",
        "Ceph user id of the fence agent",
        default="openstack-ha",
        getopt="--ceph-user=[id]",
        longdesc=(
            "Ceph user (without 'client.'); its key needs only"
            " mon 'allow r, allow command \"osd blocklist\"'."
        ),
    ),
    Option(
        "ceph_keyring_file",
        "Path of the keyring of ceph_user",
        getopt="--ceph-keyring-file=[path]",
        longdesc=(
            "Keyring file (readable by root only) holding ceph_user's key. The key itself is"
            " never a parameter: it would be stored in the CIB."
        ),
    ),
    Option(
        STORAGE_MAP.name,
        STORAGE_MAP.summary,
        getopt="--storage-map=[map]",
        longdesc=STORAGE_MAP.help,
    ),
    Option(
        "storage_address",
        "Storage address of the host, for a device fencing one host",
        getopt="--storage-address=[address]",
        longdesc="The host's storage address (an IP literal); for many hosts use storage_map.",
    ),
    Option(
        "blocklist_expire",
        "Seconds a blocklist entry lasts",
        "integer",
        default=DEFAULT_EXPIRE_SECONDS,
        getopt="--blocklist-expire=[seconds]",
        longdesc=(
            "Expiry of each blocklist entry (default one year). Ceph's own default, one hour,"
            " would let a stale writer back in while it may still be alive; unfencing removes"
            " the entries anyway."
        ),
    ),
    Option(
        "consul_config",
        "Consul agents that give each network's view of the host (a file, or inline)",
        getopt="--consul-config=[path|options]",
        longdesc=(
            "Consul as a second health channel: a path (starting with /) to a file with a"
            " [consul] section (openstack-ha.conf's own, see its sample), or the same options"
            " inline as key=value pairs separated by spaces, e.g. 'networks=management="
            "http://10.0.0.1:8500,storage=http://10.1.0.1:8500 samples=3 interval=1'."
            " Options: networks (name=agent URL, one Consul datacenter or agent per"
            " network), token_file, ca_file, timeout, samples, interval, settle (and watch,"
            " which only the NovaEvacuate worker reads). Before touching the power, off reads"
            " the host's gossip membership and serfHealth on every network (after up to"
            " settle seconds for Consul to notice anything, samples readings, interval apart;"
            " a mixed or unreadable window is no view) and judges them with partition_policy."
            " A refusal exits 1 with each network's view;"
            " a view that is unknown never starts a refusal nor causes a fence (once a refusal"
            " has started, only a sign of failure or partition_hold ends it). The host is"
            " named in Consul as the cluster names it. Unset: Consul is not read."
        ),
    ),
    Option(
        "partition_policy",
        "Which networks lost mean fence, and which mean refuse",
        getopt="--partition-policy=[rules]",
        longdesc=(
            "Rules 'networks=action' separated by ';', networks being names of consul_config's"
            " networks joined by '+', or '*' for all; action fence or refuse. refuse matches"
            " when exactly those networks see the host failed and every other network sees it"
            " alive; fence when those networks see it failed, whatever the others say. Unset:"
            " 'storage=fence; *=fence; management=refuse' (rules naming a network not"
            " configured left out): the host is fenced when failed on storage or on every"
            " network, and the fence refused when only management is lost while storage and"
            " the other networks see it alive."
        ),
    ),
    Option(
        "partition_hold",
        "Seconds a refusal by partition_policy lasts before the fence proceeds",
        "second",
        default=DEFAULT_PARTITION_HOLD,
        getopt="--partition-hold=[seconds]",
        longdesc=(
            "Pacemaker keeps a remote node whose connection failed unclean until a fence of it"
            " succeeds, even once its connection is back; so a refusal can only delay the"
            " fence. This bounds the delay: from the first refused attempt, refusals go on at"
            " most this long (each attempt lasting at least 5 s), then the fence proceeds. An"
            " operator who knows the host is healthy may end the hold sooner with 'pcs stonith"
            " confirm HOST' (the host then rejoins with its instances, nothing moved). Pacemaker"
            " must go on asking meanwhile: stonith-max-attempts above partition_hold / 5 + 10"
            " (configure-cluster.sh sets it). 0 turns refusals into log lines only; at most"
            " 3600."
        ),
    ),
    # fence-agents' standard options, as fence_compute lists them.
    _STD["delay"],
    _STD["login_timeout"],
    _STD["power_timeout"],
    _STD["power_wait"],
    replace(
        _STD["shell_timeout"],
        default=180,
        compat_only=(
            "fence_nova opens no shell and waits for no prompt; login_timeout, power_wait"
            " and power_timeout bound the power step"
        ),
    ),
    replace(
        _STD["stonith_status_sleep"],
        compat_only=(
            "fence_nova reads the BMC's power state 0.05 s after the power command, then"
            " at doubling intervals up to 0.25 s while it waits for the power to change,"
            " to confirm a power-off sooner"
        ),
    ),
    _STD["retry_on"],
    replace(
        _STD["disable_timeout"],
        compat_only=(
            "fence_nova always keeps its own deadline (login_timeout + power_wait +"
            " power_timeout for the power, then 30 s for Nova), so that it answers before"
            " Pacemaker's timeout"
        ),
    ),
    _STD["separator"],
    replace(
        _STD["plug_separator"],
        compat_only="fence_nova fences one host per action: plug names one host",
    ),
    _STD["quiet"],
    _STD["verbose"],
    _STD["verbose_level"],
    _STD["debug_file"],
)

# Compatibility-only options whose value an operator expects to change the recovery: when
# given a value other than their default, a warning (the others: an informational line).
_EXPECTATION_CHANGING = frozenset({"instance_filtering", "no_shared_storage"})

FENCE_NOVA = FenceAgent(
    name="fence_nova",
    shortdesc="Fence agent for OpenStack compute hosts: power off, mark down in Nova, evacuate",
    longdesc=(
        "Fences an OpenStack compute host for instance high availability: powers it off"
        " through its BMC (IPMI or Redfish) and verifies that it is off, forces its nova-compute service down"
        " and disables it, and records that its instances need evacuation; it succeeds only"
        " when all of this is confirmed. As an unfencing device (on), it refuses at once"
        " while the host's evacuation is pending, so the host stays off; once the"
        " evacuation has finished it powers the host on and clears what Nova allows."
        " It accepts every parameter of fence_compute; those that have no effect here say"
        " so, and are logged when given."
    ),
    options=_OPTIONS,
    actions=(
        FenceAction("on", automatic=True),
        FenceAction("off"),
        FenceAction("reboot"),
        FenceAction("status"),
        FenceAction("monitor"),
        FenceAction("list"),
        FenceAction("list-status"),
        FenceAction("metadata"),
        FenceAction("validate-all"),
    ),
    default_action="off",
    check=check_config,
)
AGENT = FENCE_NOVA  # the name agents.catalog looks for


def main() -> None:
    # Imported here, not at the top: the fencing path imports this module's
    # declaration, and metadata must not pay for the fencing path's imports.
    from fence_compute.actions import HANDLERS

    exit_at_once(run(FENCE_NOVA, HANDLERS, sys.argv[1:], sys.stdin))


def exit_at_once(code: int) -> None:
    """End the process with ``code``, without the interpreter's teardown.

    Unloading what a fence loaded (keystoneauth, requests, cryptography, the BMC's library)
    takes about 20 ms of every fence, and Pacemaker waits for the exit. Nothing is left to
    do at exit: every file the agent writes (timeline, token cache, partition hold) is closed
    as it is written, the log and the output are flushed here, and the threads left are
    daemon threads, which a normal exit abandons too.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # the reader gone, the stream closed
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
