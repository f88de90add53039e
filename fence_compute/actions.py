"""The whole fencing path of ``fence_nova``: what ``off``, ``on`` and the rest do.

``off``, each step verified, all under one deadline the agent owns:

1. power off through the BMC and poll until the BMC *reports* off (``power_driver=none``:
   another device of this topology level cut the power; the topology vouches for it).
   With ``kdump_wait``, first listen that long for the host's fence_kdump message
   (:mod:`fence_compute.kdump`): a host that says it runs its crash kernel is harmless, so it
   is not powered off (its crash dump is kept) and the message stands in for the power-off's
   confirmation, as a fence_kdump device does at a topology level;
2. Nova: force the host's nova-compute service down (by service id, microversion 2.53)
   and check the answer says so;
3. the ledger: disable the service with the suite's marker (evacuation requested) and
   mirror it to the node attribute ``evacuate=yes``.

With ``storage_fence=ceph``, between 1 and 2: blocklist every storage address of the host in
Ceph and read the blocklist back (:mod:`fence_compute.storage`); with ``power_driver=none`` it
is the only fence this device makes. Nova is touched only once every configured fence is
confirmed.

Keystone's password check and the reads are slow beside the power step, and independent of
it: while the brake is asked and the BMC powers the host off, a daemon thread builds the Nova
client and reads the host's service (Keystone authenticates on that read). Reads only; the
answer is used only once every configured fence is confirmed, and a fence that stops before
that neither waits for it nor reports its errors.

Exit 0 only when all steps were verified. Power not confirmed off: exit 1 and Nova is
never touched. Power off but Nova or Keystone unreachable: exit 1 with that reason; the
host stays off and a retry completes the remaining steps (each step is idempotent, so an
``off`` on a host already fenced this way repeats no work).

``record_only`` (fence_compute's option, see :class:`~fence_compute.fence_nova.RecordOnly`):
true leaves the power to another device of the topology level, as ``power_driver=none``
does, whatever the power options say (no BMC is ever reached); ``disabled`` makes every
action succeed at once having done nothing (:func:`_as_configured`). Every action first logs
the options it was given that have no effect (:func:`_log_options_without_effect`).

``on`` (unfencing) returns within seconds whatever the evacuation's state: while it is
pending it refuses (exit 1) without touching the power, so the host stays off; once it has
finished it powers the host on (``unfence_power=on``) and clears what Nova allows now. The
decision and the whole way back are :mod:`nova_evacuate.host_return`. With
``storage_fence=ceph`` the host's blocklist entries go first, and only while its BMC reports it
off (:func:`_unfence_storage`): a host that never went off keeps them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fence_compute.background import Background
from fence_compute.bmc_map import parse_bmc_map
from fence_compute.fence_nova import (
    RecordOnly,
    compat_only_options,
    owns_power,
    record_only,
    unused_options,
)
from fence_compute.ipmi import BmcCredentials, IpmiPower
from fence_compute.kdump import (
    KDUMP_PORT,
    KdumpError,
    KdumpSeen,
    listen_address,
    parse_addresses,
    resolve,
    wait_for_kdump,
)
from fence_compute.power import (
    DELEGATED,
    NoPowerDriver,
    PowerDriver,
    PowerError,
    PowerOutcome,
    power_confirmed,
)
from fence_compute.protocol import ExitCode, FenceError, Handler, Options, redact_text
from fence_compute.storage import DEFAULT_EXPIRE_SECONDS, CephBlocklist, StorageError, StorageOutcome
from nova_evacuate import brake, host_return, nova
from nova_evacuate.brake import HostView
from nova_evacuate.ledger import Ledger, LedgerError, pacemaker_mirror, parse_marker
from nova_evacuate.nova import ComputeService, ForceUpRefused, NovaError
from nova_evacuate.storage_map import parse_address, parse_storage_map
from openstack_ha import pacemaker, timeline, wake
from openstack_ha.pacemaker import PacemakerError

if TYPE_CHECKING:  # the client loads only where Consul is read
    from openstack_ha.consul_config import ConsulSettings

LOG = logging.getLogger(__name__)

# Time the Nova and ledger steps may take after the power step, within the deadline.
NOVA_BUDGET_SECONDS = 30.0
# Of that budget, what the storage fence (after the power step) leaves for Nova and the ledger.
NOVA_RESERVE_SECONDS = 10.0


@dataclass(frozen=True)
class Target:
    """The host to fence, as the cluster names it, and the deadlines of this action.

    ``power_deadline``: login + power wait + power timeout from the start (off: after its
    kdump_wait). ``deadline``: the whole action, the Nova steps included
    (NOVA_BUDGET_SECONDS more).
    """

    host: str
    power_deadline: float
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def storage_deadline(self) -> float:
        """The storage fence's share: the whole action but what Nova's steps need."""
        return self.deadline - NOVA_RESERVE_SECONDS


def _target(options: Options, host: str | None = None, *, first_wait: float = 0.0) -> Target:
    """``first_wait``: seconds the action waits before its power step (off's kdump_wait)."""
    host = host or options.text("plug")
    if not host:
        raise FenceError("no target host (plug, port or nodename)")
    power_deadline = time.monotonic() + first_wait + (
        (options.seconds("login_timeout") or 0)
        + (options.seconds("power_wait") or 0)
        + (options.seconds("power_timeout") or 0)
    )
    return Target(host, power_deadline, power_deadline + NOVA_BUDGET_SECONDS)


def _record(options: Options, event: str, host: str, *, at: float | None = None,
            **fields: str | int) -> None:
    """A timeline event whose texts hold no secret and no credential of ``auth_url``
    (``at``: when it happened, default now).

    A reason may quote Keystone's error, and keystoneauth's names the URL as written
    (``https://user:pass@keystone/v3``); the timeline is read by people and tools.
    """

    secrets = options.secret_values()
    timeline.record(event, host, at=at, **{
        k: redact_text(v, secrets) if isinstance(v, str) else v for k, v in fields.items()})


# --- power ---------------------------------------------------------------------------


def power_driver(options: Options, host: str) -> PowerDriver:
    """The driver for ``host``'s power, chosen per device by power_driver (one cluster may mix
    IPMI and Redfish devices); the BMC's address from ``ip`` or the host's bmc_map entry."""
    driver = options.text("power_driver")
    if driver == "none":
        return NoPowerDriver()

    # An unset ipport means the driver's port: 623 (UDP) for IPMI, 443 (HTTPS) for Redfish.
    address, port, scheme = options.text("ip"), options.number("ipport"), None
    if options.text("bmc_map"):
        bmc = parse_bmc_map(options.text("bmc_map") or "").get(host)
        if bmc is None:
            raise FenceError(f"{host} has no BMC in bmc_map")
        address, port, scheme = bmc.address, bmc.port or port, bmc.scheme
    if not address:
        raise FenceError(f"no BMC address for {host}: set ip or bmc_map")
    password = options.secret("bmc_password")
    username, secret = options.text("bmc_username") or "", password.reveal() if password else ""
    if driver == "redfish":
        from fence_compute.redfish import RedfishCredentials, RedfishPower, bmc_url

        ca_file = options.text("ssl_ca_file")
        verify: bool | str = False if options.flag("ssl_insecure") else ca_file or True
        try:
            creds = RedfishCredentials(
                url=bmc_url(address, port), username=username, password=secret,
                system=options.text("redfish_system"), auth=options.text("redfish_auth") or "auto",
                verify=verify,
            )
        except ValueError as exc:  # check_config refuses these first; never a traceback
            raise FenceError(f"Redfish BMC of {host}: {exc}") from None
        return RedfishPower(creds)
    if scheme is not None:  # check_config refuses this first
        raise FenceError(f"bmc_map entry for {host} is a Redfish URL but power_driver=ipmi")
    creds = BmcCredentials(address=address, port=port or 623, username=username, password=secret)
    return IpmiPower(creds, lanplus=options.flag("lanplus"), cipher=options.number("cipher"))


def _power(options: Options, target: Target, state: str) -> PowerOutcome:
    if record_only(options) is RecordOnly.YES:
        # Not even a driver: no BMC is reached, whatever power_driver, ip or bmc_map say.
        return PowerOutcome(False, False, f"record_only: power {state} is left to another"
                            " device of this topology level, not verified here", 0.0, DELEGATED)
    driver = power_driver(options, target.host)
    try:
        return power_confirmed(
            driver, state, target.power_deadline,
            power_wait=options.seconds("power_wait") or 0.0,
            attempts=options.number("retry_on") or 1,
            power_timeout=options.seconds("power_timeout"),
        )
    finally:
        driver.close(time.monotonic() + 2)


# --- the host's crash kernel (kdump) -------------------------------------------------------


def kdump_wait(options: Options) -> float:
    """Seconds off listens for the host's fence_kdump message before its power step; 0 for
    a device that cuts no power (check_config refuses kdump_wait there)."""
    return (options.seconds("kdump_wait") or 0.0) if owns_power(options) else 0.0


def kdump_addresses(options: Options, host: str) -> tuple[str, ...]:
    """The addresses the host's fence_kdump messages may come from: kdump_address, or what
    its name resolves to (as fence_kdump resolves its nodename)."""
    given = options.text("kdump_address")
    try:
        return parse_addresses(given) if given else resolve(host)
    except (KdumpError, ValueError) as exc:  # check_config refuses a malformed list first
        raise FenceError(f"{host}: kdump_address: {exc}" if given else f"{host}: {exc}") from None


def _kdump_seen(options: Options, target: Target) -> KdumpSeen | None:
    """With kdump_wait: the host's crash kernel said so in time (it is dumping, harmless),
    or None (no message: power it off). FenceError when the wait cannot be made."""
    wait = kdump_wait(options)
    if wait <= 0:
        return None
    addresses = kdump_addresses(options, target.host)
    port = options.number("kdump_port") or KDUMP_PORT
    LOG.info("%s: listening up to %gs on UDP port %d for a fence_kdump message from %s before"
             " powering it off", target.host, wait, port, ", ".join(addresses))
    try:
        seen = wait_for_kdump(addresses, listen_address(addresses), port, wait)
    except KdumpError as exc:
        raise FenceError(f"{target.host}: {exc}") from None
    if seen is None:
        LOG.info("%s: no fence_kdump message within %gs; powering it off", target.host, wait)
    return seen


def _crash_kernel_or_power_off(options: Options, target: Target) -> str | None:
    """Step 1 of off, recorded either way: the host is harmless, because its crash kernel
    said so (kdump_wait; its power is left on, so its dump is kept) or because its power-off
    is confirmed; how, for the messages that follow ("is powered off"). None, logged, when
    neither."""
    seen = _kdump_seen(options, target)
    if seen is not None:
        LOG.info("%s: fence_kdump message from %s after %.1fs: it runs its crash kernel; not"
                 " powering it off", target.host, seen.source, seen.elapsed)
        _record(options, "kdump_detected", target.host, source=seen.source,
                waited=f"{seen.elapsed:.1f}s")
        return "runs its crash kernel"
    outcome = _power(options, target, "off")
    if not outcome.may_proceed:
        LOG.error("%s: power-off not confirmed (%s); Nova left untouched", target.host, outcome.reason)
        _record(options, "fence_failed", target.host,
                reason=f"power-off not confirmed: {outcome.reason}")
        return None
    LOG.info("%s: %s", target.host, outcome.reason)
    _record(options, "power_off_confirmed", target.host, how=outcome.reason)
    return "is powered off"


# --- storage (Ceph's OSD blocklist) ------------------------------------------------------


def fences_storage(options: Options) -> bool:
    return options.text("storage_fence") == "ceph"


def storage_addresses(options: Options, host: str) -> tuple[str, ...]:
    """The host's storage addresses (storage_map, or storage_address for a one-host device)."""
    map_text = options.text("storage_map")
    try:
        if map_text:
            addresses = parse_storage_map(map_text).get(host)
            if addresses is None:
                raise FenceError(f"{host} has no storage address in storage_map")
            return addresses
        if options.text("storage_address"):
            return (parse_address(options.text("storage_address") or ""),)
    except ValueError as exc:  # check_config refuses this first; never a traceback
        raise FenceError(f"storage address of {host}: {exc}") from None
    raise FenceError(f"no storage address for {host}: set storage_address or storage_map")


def storage_blocklist(options: Options) -> CephBlocklist:
    """The Ceph blocklist this device fences with (a seam for tests)."""
    return CephBlocklist(
        conf=options.text("ceph_conf") or "", user=options.text("ceph_user") or "openstack-ha",
        keyring=options.text("ceph_keyring_file") or "",
        expire=options.number("blocklist_expire") or DEFAULT_EXPIRE_SECONDS,
    )


def _fence_storage(options: Options, target: Target, addresses: tuple[str, ...]) -> StorageOutcome:
    return storage_blocklist(options).fence(addresses, target.storage_deadline)


# --- Nova and the ledger ---------------------------------------------------------------


def _nova(options: Options, target: Target) -> nova.Nova:

    password = options.secret("password")
    timeout = max(min(10.0, target.remaining()), 1.0)
    token_cache = options.text("token_cache") or None
    if options.text("cloud"):
        # endpoint_type overrides the clouds.yaml entry's interface only when given: its
        # default (fence_compute's internalURL) is for explicit Keystone options.
        interface = options.text("endpoint_type") if options.is_set("endpoint_type") else None
        return nova.connect(cloud=options.text("cloud"), region_name=options.text("region_name"),
                            interface=interface, insecure=options.flag("insecure"),
                            timeout=timeout, token_cache=token_cache)
    return nova.connect(
        auth_url=options.text("auth_url"), username=options.text("username"),
        password=password.reveal() if password else None,
        project_name=options.text("tenant_name"),
        user_domain_name=options.text("user_domain") or "Default",
        project_domain_name=options.text("project_domain") or "Default",
        region_name=options.text("region_name"), interface=options.text("endpoint_type"),
        insecure=options.flag("insecure"), timeout=timeout, token_cache=token_cache,
    )


def _domain(options: Options) -> str | None:
    return options.text("domain") or options.text("compute_domain")


def _ledger(options: Options, client):
    return Ledger(client, pacemaker_mirror(), domain=_domain(options))


# off's Nova client and service record, read while the power is cut (see _read_nova).
NovaRead = Background[tuple[nova.Nova, ComputeService]]


def _read_nova(options: Options, target: Target) -> tuple[nova.Nova, ComputeService]:
    """The Nova client and the host's compute service record: what off reads while the
    power is cut (Keystone authenticates on this first request). Reads only."""

    client = _nova(options, target)
    return client, client.compute_service(target.host, _domain(options))


def _answer_of(nova_read: NovaRead, options: Options,
               target: Target) -> tuple[nova.Nova, ComputeService]:
    # Waited for up to the action's deadline, but at least a second, as _nova's timeouts.
    if not nova_read.wait(max(target.remaining(), 1.0)):
        raise NovaError("unreachable", f"authenticate and find compute service {target.host}:"
                        " no answer before the fence's deadline")
    try:
        return nova_read.result()
    except ImportError as exc:
        # The read loads keystoneauth while this thread loads the BMC's library, and
        # CPython's imports racing in two threads can fail spuriously (seen once on the
        # lab: "No module named 'socketserver'"; cpython gh-143650 and its relatives).
        # Read again here, where nothing else imports now.
        LOG.warning("%s: reading Nova failed to import (%s); reading it again",
                    target.host, exc)
        return _read_nova(options, target)


def _mark_failed_over(options: Options, target: Target, nova_read: NovaRead,
                      harmless: str = "is powered off") -> None:
    """Steps 2 and 3 of off: force down, verified, then the durable request. ``nova_read``:
    :func:`_read_nova`, started before the power-off; its errors surface here, after
    ``harmless`` (what step 1 established)."""

    try:
        client, service = _answer_of(nova_read, options, target)
        if service.forced_down:
            # Read before the power-off, while the host may still have been returning (the
            # worker clearing its force-down and marker): skipping the force-down, and the
            # marker the ledger keeps, need a record read now. Not forced down: the
            # force-down's answer is the record as it is now.
            service = client.compute_service(target.host, _domain(options))
        if not service.forced_down:
            service = client.force_down(service.id, True)
        if not service.forced_down:
            raise FenceError(f"Nova did not keep {target.host} forced down")
        _record(options, "forced_down", target.host)
        entry = _ledger(options, client).request(target.host, service=service)
        _record(options, "evacuation_requested", target.host, state=str(entry.state))
    except FenceError:
        raise
    except NovaError as exc:
        raise FenceError(f"{target.host} {harmless}, but Nova: {exc}") from None
    except Exception as exc:  # the pacemaker mirror, the ledger
        raise FenceError(f"{target.host} {harmless}, but {type(exc).__name__}: {exc}") from None
    LOG.info("%s: forced down, disabled, evacuation %s", target.host, entry.state)
    wake.nudge()  # a worker on this node scans at once; elsewhere its poll finds the request


# --- actions -----------------------------------------------------------------------------


def mass_failure(options: Options, target: str) -> str | None:
    """Why fencing must not happen now (too many compute nodes look down), or None: the
    brake (:mod:`nova_evacuate.brake`) over Pacemaker's view.

    A node this agent fenced and holds off while it is evacuated (its connection held, see
    :func:`_hold_connection`) is a failure already handled: Pacemaker starts nothing (the
    held node's connection neither) while a fence is pending, so a second failure refused
    because of the first would keep the first from ever returning. So is a node powered on
    after its evacuation and not back yet (returning, see :func:`_release_connection`):
    counted, it would refuse a second failure for the minutes a server takes to boot, and
    Pacemaker stops asking after ``stonith-max-attempts`` refusals.
    """

    percent = options.number("max_down_percent")
    if percent is None or percent >= 100:
        return None
    try:
        nodes = pacemaker.remote_nodes_down()
        # Which nodes are handled matters only for nodes other than the target (the target
        # always counts): a single failure, the common case, needs no second read.
        others_down = any(down for name, down in nodes.items() if name != target)
        held = pacemaker.handled_connections(time.time()) if others_down else set()
    except pacemaker.NoCluster:
        return None  # run by hand: nothing automatic to hold back
    except pacemaker.PacemakerError as exc:
        return f"cannot read the cluster's view of the compute nodes ({exc})"
    if not nodes:
        return None  # no pacemaker_remote node at all: the target is no compute node
    view = [HostView(name, is_down, handled=name in held) for name, is_down in nodes.items()]
    verdict = brake.mass_failure(view, target, percent / 100,
                                 limit=f"max_down_percent={percent}", what="compute nodes")
    return verdict.reason if verdict.engaged else None


# --- Consul's view of the host (consul_config, partition_policy, partition_hold) ----------

# A refused attempt lasts at least this long: Pacemaker asks again at once, and must go on
# asking (stonith-max-attempts) for the whole partition_hold.
MIN_REFUSAL_SECONDS = 5.0


def consul_settings(options: Options) -> ConsulSettings | None:
    """consul_config's settings (checked by check_config before every action), None when
    Consul is not read."""
    text = options.text("consul_config")
    if not text:
        return None
    from openstack_ha import consul_config

    return consul_config.load(text)


def partition_budget(settings: ConsulSettings | None) -> float:
    """The longest partition_refusal takes; 0 without consul_config."""
    return 0.0 if settings is None else max(settings.budget, MIN_REFUSAL_SECONDS)


@dataclass(frozen=True)
class PartitionCheck:
    """What Consul said of the host (``seen``: each network's view and the judge's reason,
    None without consul_config) and, when the fence must wait, why (``refusal``)."""

    refusal: str | None = None
    seen: str | None = None


def partition_refusal(options: Options, host: str,
                      settings: ConsulSettings | None) -> PartitionCheck:
    """Every network's Consul read (sampled) and judged by partition_policy
    (:mod:`openstack_ha.partition`), a refusal lasting at most partition_hold from the first
    one (:mod:`fence_compute.partition_hold`).

    A view that is unknown (Consul unreachable, a mixed window) never starts a refusal. Once
    one has started, only a sign of failure (a fence verdict) ends it before partition_hold:
    a link coming back, gossip rejoining, are no reason to fence a node refused before. A hold
    that cannot be kept refuses nothing: a refusal is never the default.
    """
    if settings is None:
        return PartitionCheck()
    from fence_compute import partition_hold
    from openstack_ha import consul, consul_config, partition

    began = time.monotonic()
    hold = options.seconds("partition_hold") or 0.0
    policy = partition.parse_policy(
        options.text("partition_policy") or consul_config.default_policy(settings.networks),
        settings.networks)
    views = consul.read_views(settings.clients(), host, settings.samples, settings.interval,
                              settings.settle)
    judgement = partition.judge(policy, views)
    reason = judgement.reason
    ongoing = (judgement.verdict is partition.Verdict.NO_OPINION
               and partition_hold.ongoing(host, time.time()))
    if ongoing:
        # A partition of this host was refused, and nothing since says it failed: the views
        # changing (a link back, gossip rejoining, a window that disagrees) make no fence
        # right. Pacemaker still wants one: it keeps a remote node unclean until then.
        reason = (f"{consul.views_text(views)}: nothing seen since its partition was refused"
                  " says it failed; refusing")
    elif judgement.verdict is not partition.Verdict.REFUSE:
        LOG.info("%s: consul: %s", host, reason)
        partition_hold.end(host)
        return PartitionCheck(seen=reason)
    try:
        first = partition_hold.refused(host, time.time())
    except partition_hold.HoldUnknown as exc:
        LOG.error("%s: consul: %s; but how long it has been refused cannot be kept (%s), so"
                  " the refusal could last for ever: fencing", host, reason, exc)
        return PartitionCheck(seen=f"{reason}; not refused: the hold cannot be kept")
    refused_for = time.time() - first
    if refused_for >= hold:
        LOG.warning("%s: consul: %s; refused for %.0fs, partition_hold=%gs is over: fencing",
                    host, reason, refused_for, hold)
        partition_hold.end(host)
        return PartitionCheck(seen=f"{reason}; partition_hold={hold:g}s is over")
    pause = began + MIN_REFUSAL_SECONDS - time.monotonic()
    if pause > 0:
        time.sleep(min(pause, hold - refused_for))
    return PartitionCheck(
        refusal=(f"partition refused: {reason}; {hold - refused_for:.0f}s left of"
                 f" partition_hold={hold:g}s (pcs stonith confirm {host}, once it is known"
                 " healthy, ends it without a fence)"),
        seen=reason)


def off(options: Options) -> int:
    consul = consul_settings(options)  # read once: the budget and the reading use it
    target = _target(options, first_wait=kdump_wait(options) + partition_budget(consul))
    started = time.time()
    # Keystone and the service read, while the brake is asked and the BMC cuts the power:
    # only _mark_failed_over, once every fence is confirmed, waits for the answer.
    nova_read = Background(functools.partial(_read_nova, options, target), "nova-read")
    refusal, repeated, consul_seen = mass_failure(options, target.host), "brake", {}
    if refusal is None:
        check = partition_refusal(options, target.host, consul)
        refusal, repeated = check.refusal, "partition"
        consul_seen = {"consul": check.seen} if check.seen else {}
    if refusal is not None:
        LOG.error("%s: %s; power and Nova left untouched", target.host, refusal)
        # Pacemaker retries a refused fence again and again while the refusal holds: the
        # timeline gets one attempt a minute per host, the next one counting those held back.
        held = timeline.admit_repeated(repeated, target.host)
        if held is not None:
            _record(options, "fence_start", target.host, at=started, by="fence_nova")
            _record(options, "fence_failed", target.host, reason=refusal,
                    **({"suppressed": held} if held else {}))
        return ExitCode.FAILURE
    _record(options, "fence_start", target.host, at=started, by="fence_nova", **consul_seen)
    try:
        # Known before anything is touched: a host without storage addresses fails at once.
        addresses = storage_addresses(options, target.host) if fences_storage(options) else ()
        harmless = _crash_kernel_or_power_off(options, target)
    except FenceError as exc:  # no power driver (not in bmc_map, say), storage address, or
        # no listening for the crash kernel (its port taken, the host's name unresolved)
        _record(options, "fence_failed", target.host, reason=str(exc))
        raise
    if harmless is None:
        return ExitCode.FAILURE
    if addresses:
        stored = _fence_storage(options, target, addresses)
        if not stored.confirmed:
            LOG.error("%s: storage fence not confirmed (%s); Nova left untouched", target.host,
                      stored.reason)
            _record(options, "fence_failed", target.host,
                    reason=f"storage fence not confirmed: {stored.reason}")
            return ExitCode.FAILURE
        LOG.info("%s: %s", target.host, stored.reason)
        _record(options, "storage_fenced", target.host, addresses=" ".join(addresses))
    # The host is harmless: its connection is held while Nova is told (two cluster writes
    # beside two Nova writes, not after them). Only a fence that succeeds keeps the hold.
    holding = Background(functools.partial(_hold_connection, target.host), "hold-connection")
    try:
        _mark_failed_over(options, target, nova_read, harmless)
    except FenceError as exc:
        _record(options, "fence_failed", target.host, reason=str(exc))
        _drop_hold(target, holding)
        raise
    _held(target, holding)
    return ExitCode.SUCCESS


def _hold_connection(host: str) -> bool:
    """While the host is off, Pacemaker must not retry its connection (each try blocks the
    cluster's transitions for the connection's start timeout). Advisory: the fence stands.
    Whether the hold was placed."""

    try:
        if pacemaker.hold_connection(host, int(time.time())):
            LOG.info("%s: its cluster connection is held until it is unfenced", host)
            return True
    except pacemaker.NoCluster:
        pass  # run by hand
    except pacemaker.PacemakerError as exc:
        LOG.warning("%s: its cluster connection is not held (%s): Pacemaker retries it while"
                    " the host is off", host, exc)
    return False


def _held(target: Target, holding: Background[bool]) -> bool:
    """Whether :func:`_hold_connection`, run beside Nova's part, placed the hold; waited
    for within the action's time."""
    if not holding.wait(max(target.remaining(), 1.0)):
        LOG.warning("%s: holding its cluster connection did not end before the fence's"
                    " deadline: Pacemaker may retry it while the host is off", target.host)
        return False
    try:
        return holding.result()
    except Exception as exc:  # advisory, as _hold_connection's own failures
        LOG.warning("%s: its cluster connection is not held (%s: %s)", target.host,
                    type(exc).__name__, exc)
        return False


def _drop_hold(target: Target, holding: Background[bool]) -> None:
    """The fence failed after the hold began: undo it, so that a failed fence leaves the
    connection as it found it (an operator's ``pcs stonith confirm`` then brings the node
    back as usual). A hold an earlier fence of this host placed goes too: Pacemaker then
    retries the connection of a host that is off, as without holds, slower but safe."""
    if not _held(target, holding):
        return
    try:
        pacemaker.drop_hold(target.host)
        LOG.info("%s: the fence failed: its cluster connection is no longer held", target.host)
    except pacemaker.PacemakerError as exc:
        LOG.warning("%s: the fence failed, and its cluster connection stays held (%s):"
                    " pcs resource meta %s target-role= %s= releases it", target.host, exc,
                    target.host, pacemaker.HOLD_META)


def on(options: Options) -> int:
    """Unfencing, short whatever the evacuation's state (no action waits on another's
    progress): the decision is :func:`nova_evacuate.host_return.next_step`.

    Pending evacuation: exit 1 at once, power untouched, so the host stays off and
    nothing that requires unfencing starts there; the NovaEvacuate worker asks Pacemaker
    to unfence it again once the ledger says done. Finished (or nothing of ours): power
    on (``unfence_power=on``), then clear what Nova allows now; the worker does the rest.
    """

    target = _target(options)
    if options.text("consul_config"):
        from fence_compute import partition_hold

        # Pacemaker unfences only a node it holds fenced, or whose fence an operator
        # confirmed (pcs stonith confirm, after a refused partition): a next partition of
        # this host is a new one, with a hold of its own.
        partition_hold.end(target.host)
    leave_disabled = options.flag("leave_disabled")
    try:
        client = _nova(options, target)
        service = client.compute_service(target.host, _domain(options))
        entry = parse_marker(service.disabled_reason)
    except (NovaError, LedgerError) as exc:
        raise FenceError(f"{target.host}: cannot read its evacuation from Nova ({exc});"
                         " not unfencing") from None
    step = host_return.next_step(
        host_return.HostState(entry, service.forced_down, service.state == "up"),
        leave_disabled=leave_disabled)
    if not step.may_power_on:
        LOG.error("%s: not unfencing: %s", target.host, step.why)
        _record(options, "unfence_refused", target.host, reason=step.why)
        return ExitCode.FAILURE
    if fences_storage(options) and not _unfence_storage(options, target):
        return ExitCode.FAILURE
    if options.text("unfence_power") == "keep-off":
        powered = _powered(options, target)
        LOG.info("%s: unfence_power=keep-off: power left %s", target.host,
                 "on" if powered else "off; power it on when it may serve again")
    else:
        outcome = _power(options, target, "on")
        if not outcome.may_proceed:
            LOG.error("%s: power-on not confirmed (%s)", target.host, outcome.reason)
            return ExitCode.FAILURE
        powered = True
    if powered:
        _release_connection(target.host)
    try:
        if step.clear_force_down:
            # Nova keeps it until the returning nova-compute has cleaned up its
            # evacuated instances; the worker clears it then (host_return, step 3).
            with contextlib.suppress(ForceUpRefused):
                service = client.force_down(service.id, False)
            step = host_return.next_step(
                host_return.HostState(entry, service.forced_down, service.state == "up"),
                leave_disabled=leave_disabled)
        if step.clear_marker:
            _ledger(options, client).clear(target.host, service=service)
            if step.enable:
                client.enable(service.id)
    except (NovaError, LedgerError, PacemakerError) as exc:
        # The host is powered on, its evacuation finished: the worker finishes the return.
        LOG.warning("%s: unfenced, but %s; the evacuation worker finishes the return",
                    target.host, exc)
    LOG.info("%s: unfenced (%s)", target.host, step.why)
    _record(options, "unfenced", target.host, state=step.why)
    return ExitCode.SUCCESS


def _unfence_storage(options: Options, target: Target) -> bool:
    """Remove the host's blocklist entries, before its power comes back; False, logged, when
    that is not confirmed or not safe, and the unfencing fails (it is asked again).

    Safe only while this device's BMC reports the host off: then none of the clients the
    entries shut out can still run. A host that is on was never powered off since its
    storage fence (level 2 fenced it, its BMC silent: a zombie whose guests may still run),
    and ``power_driver=none`` cannot tell: the entries stay until the host has been powered
    off (the device that owns its power unfences it then). With no entries there is nothing
    to do: a retry after the power-on, or a host fenced by power alone."""

    addresses = storage_addresses(options, target.host)
    blocklist = storage_blocklist(options)
    try:
        listed = [a for a, fenced in blocklist.state(addresses, target.storage_deadline).items()
                  if fenced]
    except StorageError as exc:
        return _storage_stays(options, target, f"blocklist unreadable: {exc}")
    if not listed:
        return True
    power = _bmc_power_state(options, target)
    if power != "off":
        return _storage_stays(options, target, (
            f"{_power_left_by(options)} cannot confirm it is off" if power is None
            else "it is on, so what its storage fence shut out may still run there")
            + "; it may write again only once powered off")
    outcome = blocklist.unfence(listed, target.storage_deadline)
    if not outcome.confirmed:
        return _storage_stays(options, target, f"blocklist entries not removed: {outcome.reason}")
    LOG.info("%s: %s", target.host, outcome.reason)
    _record(options, "storage_unfenced", target.host, addresses=" ".join(listed))
    return True


def _storage_stays(options: Options, target: Target, reason: str) -> bool:
    LOG.error("%s: not unfencing, its storage stays fenced: %s", target.host, reason)
    _record(options, "unfence_refused", target.host, reason=f"storage stays fenced: {reason}")
    return False


def _log_storage_state(options: Options, target: Target) -> None:
    """status: the blocklist state, for the operator's log only (status is about power)."""

    try:
        addresses = storage_addresses(options, target.host)
        listed = storage_blocklist(options).state(addresses, target.storage_deadline)
    except (FenceError, StorageError) as exc:
        LOG.warning("%s: blocklist state unknown (%s)", target.host, exc)
        return
    LOG.info("%s: storage %s", target.host, ", ".join(
        f"{address} {'blocklisted' if fenced else 'not blocklisted'}"
        for address, fenced in listed.items()))


def _power_left_by(options: Options) -> str:
    """The option that leaves the power to another device (when this one has none)."""
    return "record_only" if record_only(options) is RecordOnly.YES else "power_driver=none"


def _bmc_power_state(options: Options, target: Target) -> str | None:
    """"on" or "off" as the host's BMC says; None without a power driver (or with
    record_only, which reaches no BMC)."""

    if record_only(options) is RecordOnly.YES:
        return None
    driver = power_driver(options, target.host)
    if isinstance(driver, NoPowerDriver):
        return None
    try:
        return driver.power_state(target.power_deadline)
    except PowerError as exc:
        raise FenceError(f"{target.host}: {exc}") from None
    finally:
        driver.close(time.monotonic() + 2)


def _powered(options: Options, target: Target) -> bool:
    """Whether the host has power (without a power driver: assumed, since the other device
    of its topology level powers it on)."""
    return _bmc_power_state(options, target) != "off"


def _release_connection(host: str) -> None:
    """The host has power: Pacemaker may connect to it again (see :func:`_hold_connection`).
    A release that fails fails the unfencing, which is asked again: the host must rejoin.

    The released node is marked returning until it is back: Pacemaker unfences it again
    when it rejoins, and that unfencing (no hold left) removes the mark."""

    try:
        if pacemaker.release_connection(host):
            LOG.info("%s: its cluster connection is released; returning", host)
        elif pacemaker.end_return(host):
            LOG.info("%s: back in the cluster", host)
    except pacemaker.NoCluster:
        pass  # run by hand
    except pacemaker.PacemakerError as exc:
        raise FenceError(f"{host}: powered on, but its cluster connection is not released: {exc}"
                         ) from None


def reboot(options: Options) -> int:
    """Off, verified as for ``off``, and the host stays off.

    The power-on half of a reboot waits for the host's evacuation, as unfencing does
    (:mod:`nova_evacuate.host_return`): a host powered on while its instances are being
    rebuilt elsewhere would start them a second time. The NovaEvacuate worker asks
    Pacemaker to unfence it (power it on) once the evacuation is done.
    """
    if off(options) != ExitCode.SUCCESS:
        return ExitCode.FAILURE
    LOG.info("%s: fenced; it stays powered off until its evacuation is done, then it is"
             " unfenced", _target(options).host)
    return ExitCode.SUCCESS


def status(options: Options) -> int:
    """From the BMC: on 0, off 2, unknown 1; with power_driver=none or record_only, from
    Nova's service."""
    target = _target(options)
    if fences_storage(options):
        _log_storage_state(options, target)
    state = _bmc_power_state(options, target)
    if state is None:

        try:
            service = _nova(options, target).compute_service(target.host, _domain(options))
        except NovaError as exc:
            raise FenceError(f"{target.host}: Nova: {exc}") from None
        # fence_compute's reading: forced down or down means fenced ("off")
        is_off = service.forced_down or service.state == "down"
        return ExitCode.STATUS_OFF if is_off else ExitCode.SUCCESS
    return ExitCode.STATUS_OFF if state == "off" else ExitCode.SUCCESS


def list_hosts(options: Options) -> int:

    target = _target(options, host="-")
    try:
        hosts = _nova(options, target).compute_hosts()
    except NovaError as exc:
        raise FenceError(f"Nova: {exc}") from None
    domain = _domain(options)
    separator = options.text("separator") or ","  # fence-agents': name, separator, alias
    for host in sorted(hosts):
        short = host.split(".")[0]
        print(f"{short}{separator}" if not domain else f"{short}.{domain}{separator}")
    return ExitCode.SUCCESS


def monitor(options: Options) -> int:
    """Keystone and Nova answer; every configured BMC answers a status read (none with
    power_driver=none or record_only); with storage_fence=ceph, Ceph answers this key's
    ``osd blocklist ls``."""

    target = _target(options, host="-")
    try:
        _nova(options, target).ping()
    except NovaError as exc:
        raise FenceError(f"Nova: {exc}") from None
    if owns_power(options):
        bmc_map = options.text("bmc_map")
        hosts = list(parse_bmc_map(bmc_map)) if bmc_map else [options.text("plug") or "-"]
        for host in hosts:
            driver = power_driver(options, host)
            try:
                driver.power_state(target.power_deadline)
            except PowerError as exc:
                raise FenceError(f"{host}: {exc}") from None
            finally:
                driver.close(time.monotonic() + 2)
    if fences_storage(options):
        try:  # Ceph answers this key's read of the blocklist
            entries = storage_blocklist(options).entries(target.storage_deadline)
        except StorageError as exc:
            raise FenceError(f"Ceph: {exc}") from None
        LOG.info("Ceph answers; %d blocklist entries", len(entries))
    return ExitCode.SUCCESS


def validate_all(options: Options) -> int:
    """The configuration passed check_config; what remains is to say what it does not use."""
    return ExitCode.SUCCESS


# --- every action, as configured ---------------------------------------------------------

# Actions that run every minute or so (the device's monitor): their notes go to debug, or
# each would repeat all day; every other action says them at its level.
_FREQUENT = frozenset({"monitor"})
# Actions through which record_only=1 changes what is done to the host's power.
_POWER_ACTIONS = frozenset({"off", "reboot", "on", "status"})


def _log_options_without_effect(options: Options, action: str) -> None:
    """One line per option accepted for fence_compute compatibility only that was given a
    value of its own, and one line naming the options this configuration does not use:
    no option is read and silently ignored."""

    quiet = action in _FREQUENT
    for option, expected in compat_only_options(options):
        level = logging.DEBUG if quiet else logging.WARNING if expected else logging.INFO
        LOG.log(level, "option %s has no effect in fence_nova: %s", option.name,
                option.compat_only)
    if record_only(options) is RecordOnly.DISABLED:
        return  # nothing is used at all, and the action says so
    unused = unused_options(options)
    if unused:
        by_reason: dict[str, list[str]] = {}
        for name, why in unused.items():
            by_reason.setdefault(why, []).append(name)
        LOG.log(logging.DEBUG if quiet else logging.INFO,
                "options given but not used by this configuration: %s", "; ".join(
                    f"{', '.join(names)} ({why})" for why, names in by_reason.items()))


def _log_disabled(options: Options, action: str) -> None:
    """record_only=disabled: the one line that says nothing was done, and what the cluster
    makes of it."""

    if action in ("off", "reboot"):
        host = options.text("plug") or options.nodename or "the target"
        LOG.warning("%s: record_only=disabled: %s did nothing (no power action, nothing in"
                    " Nova, no evacuation requested) and reports success; the cluster treats"
                    " %s as fenced, which is safe only at a topology level where another"
                    " device powers it off", host, action, host)
    elif action == "validate-all":
        LOG.warning("record_only=disabled: every action of this device does nothing and"
                    " reports success; the cluster treats a host it fences as fenced, which is"
                    " safe only at a topology level where another device powers it off")
    else:
        LOG.log(logging.DEBUG if action in _FREQUENT else logging.WARNING,
                "record_only=disabled: %s did nothing and reports success", action)


def _as_configured(action: str, handler: Handler) -> Handler:
    """``handler`` as this device runs it: the options without effect logged first, then
    record_only honoured (fence_compute's meaning, see :class:`RecordOnly`)."""

    def run_action(options: Options) -> int:
        _log_options_without_effect(options, action)
        mode = record_only(options)
        if mode is RecordOnly.DISABLED:
            # As fence_compute: exit 0 at once. No BMC, no Nova, no ledger, no timeline.
            _log_disabled(options, action)
            return ExitCode.SUCCESS
        if mode is RecordOnly.YES and action in _POWER_ACTIONS:
            LOG.info("record_only: the host's power is left to another device of this"
                     " topology level; this device reaches no BMC")
        return handler(options)

    run_action.__name__ = run_action.__qualname__ = handler.__name__
    run_action.__doc__ = handler.__doc__
    return run_action


HANDLERS: dict[str, Handler] = {
    action: _as_configured(action, handler)
    for action, handler in {
        "off": off,
        "on": on,
        "reboot": reboot,
        "status": status,
        "list": list_hosts,
        "list-status": list_hosts,
        "monitor": monitor,
        "validate-all": validate_all,
    }.items()
}
