"""The whole fencing path of ``fence_nova``: what ``off``, ``on`` and the rest do.

``off``, each step verified, all under one deadline the agent owns:

1. power off through the BMC and poll until the BMC *reports* off (``power_driver=none``:
   another device of this topology level cut the power; the topology vouches for it);
2. Nova: force the host's nova-compute service down (by service id, microversion 2.53)
   and check the answer says so;
3. the ledger: disable the service with the suite's marker (evacuation requested) and
   mirror it to the node attribute ``evacuate=yes``.

Exit 0 only when all three were verified. Power not confirmed off: exit 1 and Nova is
never touched. Power off but Nova or Keystone unreachable: exit 1 with that reason; the
host stays off and a retry completes the remaining steps (each step is idempotent, so an
``off`` on a host already fenced this way repeats no work).

``on`` (unfencing): power on when off, wait within the deadline until the ledger says the
host's evacuation finished, then clear force-down and, once Nova sees the returning
nova-compute up, remove the marker and enable the service (unless ``leave_disabled``);
if it does not report within a minute, the engine's host-return step does that part.
Nova refuses to clear force-down while the host's evacuation migrations are still
``done``; they become ``completed`` only once the returning nova-compute starts, which
Pacemaker allows only after unfencing, so that one refusal is accepted here: the marker
and the disable stay, and the engine's host-return step (:mod:`nova_evacuate.worker`)
clears all three later (DESIGN.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fence_compute import fence_nova
from fence_compute.power import (
    NoPowerDriver,
    PowerDriver,
    PowerOutcome,
    power_confirmed,
)
from fence_compute.protocol import ExitCode, FenceError, Options

LOG = logging.getLogger(__name__)

# Time the Nova and ledger steps may take after the power step, within the deadline.
NOVA_BUDGET_SECONDS = 30.0
# How often unfencing re-reads the ledger while the evacuation runs.
LEDGER_POLL_SECONDS = 2.0
# How long unfencing waits for the returning nova-compute to report before re-enabling.
REPORT_UP_SECONDS = 60.0


@dataclass(frozen=True)
class Target:
    """The host to fence, as the cluster names it, and the deadlines of this action.

    ``power_deadline``: login + power wait + power timeout from the start.
    ``wait_deadline``: unfencing waits for the evacuation until then, ``shell_timeout``
    more (fence_compute's 180 s by default); Pacemaker's own action timeout bounds it
    from outside. ``deadline``: the whole action, the Nova steps included.
    """

    host: str
    power_deadline: float
    wait_deadline: float
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _target(options: Options, unfencing: bool = False, host: str | None = None) -> Target:
    host = host or options.text("plug")
    if not host:
        raise FenceError("no target host (plug, port or nodename)")
    power_deadline = time.monotonic() + (
        (options.seconds("login_timeout") or 0)
        + (options.seconds("power_wait") or 0)
        + (options.seconds("power_timeout") or 0)
    )
    wait_deadline = power_deadline + ((options.seconds("shell_timeout") or 0) if unfencing else 0)
    return Target(host, power_deadline, wait_deadline, wait_deadline + NOVA_BUDGET_SECONDS)


# --- power ---------------------------------------------------------------------------


def power_driver(options: Options, host: str) -> PowerDriver:
    if options.text("power_driver") == "none":
        return NoPowerDriver()
    from fence_compute.ipmi import BmcCredentials, IpmiPower

    address, port = options.text("ip"), options.number("ipport") or 623
    if options.text("bmc_map"):
        bmc = fence_nova.parse_bmc_map(options.text("bmc_map") or "").get(host)
        if bmc is None:
            raise FenceError(f"{host} has no BMC in bmc_map")
        address, port = bmc.address, bmc.port or port
    if not address:
        raise FenceError(f"no BMC address for {host}: set ip or bmc_map")
    password = options.secret("bmc_password")
    creds = BmcCredentials(
        address=address, port=port, username=options.text("bmc_username") or "",
        password=password.reveal() if password else "",
    )
    return IpmiPower(creds, lanplus=options.flag("lanplus"), cipher=options.number("cipher"))


def _power(options: Options, target: Target, state: str) -> PowerOutcome:
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


# --- Nova and the ledger ---------------------------------------------------------------


def _nova(options: Options, target: Target):
    from nova_evacuate import nova

    password = options.secret("password")
    timeout = max(min(10.0, target.remaining()), 1.0)
    if options.text("cloud"):
        return nova.connect(cloud=options.text("cloud"), region_name=options.text("region_name"),
                            insecure=options.flag("insecure"), timeout=timeout)
    return nova.connect(
        auth_url=options.text("auth_url"), username=options.text("username"),
        password=password.reveal() if password else None,
        project_name=options.text("tenant_name"),
        user_domain_name=options.text("user_domain") or "Default",
        project_domain_name=options.text("project_domain") or "Default",
        region_name=options.text("region_name"), interface=options.text("endpoint_type"),
        insecure=options.flag("insecure"), timeout=timeout,
    )


def _domain(options: Options) -> str | None:
    return options.text("domain") or options.text("compute_domain")


def _ledger(options: Options, client):
    from nova_evacuate import pacemaker
    from nova_evacuate.ledger import AttributeMirror, Ledger

    mirror = AttributeMirror(
        set=pacemaker.set_node_attribute, delete=pacemaker.delete_node_attribute
    )
    return Ledger(client, mirror, domain=_domain(options))


def _mark_failed_over(options: Options, target: Target) -> None:
    """Steps 2 and 3 of off: force down, verified, then the durable request."""
    from nova_evacuate import timeline
    from nova_evacuate.nova import NovaError

    try:
        client = _nova(options, target)
        service = client.compute_service(target.host, _domain(options))
        if not service.forced_down:
            service = client.force_down(service.id, True)
        if not service.forced_down:
            raise FenceError(f"Nova did not keep {target.host} forced down")
        timeline.record("forced_down", target.host)
        entry = _ledger(options, client).request(target.host)
        timeline.record("evacuation_requested", target.host, state=str(entry.state))
    except FenceError:
        raise
    except NovaError as exc:
        raise FenceError(f"{target.host} is powered off, but Nova: {exc}") from None
    except Exception as exc:  # the pacemaker mirror, the ledger
        raise FenceError(f"{target.host} is powered off, but {type(exc).__name__}: {exc}") from None
    LOG.info("%s: forced down, disabled, evacuation %s", target.host, entry.state)


# --- actions -----------------------------------------------------------------------------


def mass_failure(options: Options) -> str | None:
    """Why fencing must not happen now (too many compute nodes look down), or None."""
    from nova_evacuate import pacemaker

    limit = options.number("max_down_percent")
    if limit is None or limit >= 100:
        return None
    try:
        nodes = pacemaker.remote_nodes_down()
    except pacemaker.NoCluster:
        return None  # run by hand: nothing automatic to hold back
    except pacemaker.PacemakerError as exc:
        return f"cannot read the cluster's view of the compute nodes ({exc})"
    down = sorted(name for name, is_down in nodes.items() if is_down)
    if nodes and len(down) * 100 > limit * len(nodes):
        return (f"{len(down)} of {len(nodes)} compute nodes look down ({', '.join(down)}),"
                f" more than max_down_percent={limit}: a partition or a broken observer,"
                " not fencing automatically")
    return None


def off(options: Options) -> int:
    from nova_evacuate import timeline

    target = _target(options)
    timeline.record("fence_start", target.host, by="fence_nova")
    refusal = mass_failure(options)
    if refusal is not None:
        LOG.error("%s: %s; power and Nova left untouched", target.host, refusal)
        timeline.record("fence_failed", target.host, reason=refusal)
        return ExitCode.FAILURE
    outcome = _power(options, target, "off")
    if not outcome.may_proceed:
        LOG.error("%s: power-off not confirmed (%s); Nova left untouched", target.host, outcome.reason)
        timeline.record("fence_failed", target.host, reason=f"power-off not confirmed: {outcome.reason}")
        return ExitCode.FAILURE
    LOG.info("%s: %s", target.host, outcome.reason)
    timeline.record("power_off_confirmed", target.host, how=outcome.reason)
    try:
        _mark_failed_over(options, target)
    except FenceError as exc:
        timeline.record("fence_failed", target.host, reason=str(exc))
        raise
    return ExitCode.SUCCESS


def on(options: Options) -> int:
    from nova_evacuate import timeline
    from nova_evacuate.ledger import evacuation_finished
    from nova_evacuate.nova import ForceUpRefused, NovaError

    target = _target(options, unfencing=True)
    outcome = _power(options, target, "on")
    if not outcome.may_proceed:
        LOG.error("%s: power-on not confirmed (%s)", target.host, outcome.reason)
        return ExitCode.FAILURE
    try:
        client = _nova(options, target)
        ledger = _ledger(options, client)
        while not evacuation_finished(entry := ledger.read(target.host)) and entry is not None:
            if time.monotonic() + LEDGER_POLL_SECONDS > target.wait_deadline:
                raise FenceError(
                    f"{target.host}: evacuation still {entry.state}; not re-enabling the host"
                )
            time.sleep(LEDGER_POLL_SECONDS)
        service = client.compute_service(target.host, _domain(options))
        try:
            if service.forced_down:
                service = client.force_down(service.id, False)
        except ForceUpRefused:
            # The marker (done or failed) stays and the service disabled: the engine's
            # host-return step clears force-down, the marker and the disable once the
            # returning nova-compute has cleaned up (Pacemaker starts it only after this).
            LOG.info("%s: unfenced; force-down stays until nova-compute cleans up its"
                     " evacuated instances, then the engine clears it and re-enables", target.host)
            timeline.record("unfenced", target.host, forced_down="kept until nova-compute is back")
            return ExitCode.SUCCESS
        # Enable only a service Nova sees up: enabling one it sees down leaves the
        # COMPUTE_STATUS_DISABLED trait in Placement until the compute's periodic sync.
        if not _reports_up(client, target, options):
            LOG.info("%s: unfenced; nova-compute does not report yet: the engine removes"
                     " the marker and re-enables the service once it does", target.host)
            timeline.record("unfenced", target.host, enabled="once nova-compute reports")
            return ExitCode.SUCCESS
        ledger.clear(target.host)
        if not options.flag("leave_disabled"):
            client.enable(service.id)
    except NovaError as exc:
        raise FenceError(f"{target.host}: Nova: {exc}") from None
    LOG.info("%s: unfenced%s", target.host, " (left disabled)" if options.flag("leave_disabled") else "")
    timeline.record("unfenced", target.host, enabled=not options.flag("leave_disabled"))
    return ExitCode.SUCCESS


def _reports_up(client, target: Target, options: Options) -> bool:
    """Wait (up to REPORT_UP_SECONDS, within the deadline) for Nova to see the service up."""
    until = min(time.monotonic() + REPORT_UP_SECONDS, target.deadline - 5)
    while True:
        if client.compute_service(target.host, _domain(options)).state == "up":
            return True
        if time.monotonic() + LEDGER_POLL_SECONDS > until:
            return False
        time.sleep(LEDGER_POLL_SECONDS)


def reboot(options: Options) -> int:
    """Off, verified as for ``off``, then power back on, and nothing more.

    The host may boot, but its service stays forced down and disabled: only
    unfencing (``on``) re-enables it, once its evacuation has finished. Waiting for
    the evacuation here would make the whole fence fail for Pacemaker.
    """
    if off(options) != ExitCode.SUCCESS:
        return ExitCode.FAILURE
    target = _target(options)
    outcome = _power(options, target, "on")
    if not outcome.may_proceed:
        LOG.error("%s: fenced, but power-on not confirmed (%s)", target.host, outcome.reason)
        return ExitCode.FAILURE
    LOG.info("%s: fenced and powered on; Nova keeps it disabled until its evacuation"
             " finishes and unfencing re-enables it", target.host)
    return ExitCode.SUCCESS


def status(options: Options) -> int:
    """From the BMC: on 0, off 2, unknown 1; with power_driver=none, from Nova's service."""
    target = _target(options)
    driver = power_driver(options, target.host)
    if isinstance(driver, NoPowerDriver):
        from nova_evacuate.nova import NovaError

        try:
            service = _nova(options, target).compute_service(target.host, _domain(options))
        except NovaError as exc:
            raise FenceError(f"{target.host}: Nova: {exc}") from None
        # fence_compute's reading: forced down or down means fenced ("off")
        is_off = service.forced_down or service.state == "down"
        return ExitCode.STATUS_OFF if is_off else ExitCode.SUCCESS
    from fence_compute.power import PowerError

    try:
        state = driver.power_state(target.power_deadline)
    except PowerError as exc:
        raise FenceError(f"{target.host}: {exc}") from None
    finally:
        driver.close(time.monotonic() + 2)
    return ExitCode.STATUS_OFF if state == "off" else ExitCode.SUCCESS


def list_hosts(options: Options) -> int:
    from nova_evacuate.nova import NovaError

    target = _target(options, host="-")
    try:
        hosts = _nova(options, target).compute_hosts()
    except NovaError as exc:
        raise FenceError(f"Nova: {exc}") from None
    domain = _domain(options)
    for host in sorted(hosts):
        short = host.split(".")[0]
        print(f"{short}," if not domain else f"{short}.{domain},")
    return ExitCode.SUCCESS


def monitor(options: Options) -> int:
    """Keystone and Nova answer; every configured BMC answers a status read."""
    from fence_compute.power import PowerError
    from nova_evacuate.nova import NovaError

    target = _target(options, host="-")
    try:
        _nova(options, target).ping()
    except NovaError as exc:
        raise FenceError(f"Nova: {exc}") from None
    if options.text("power_driver") != "none":
        bmc_map = options.text("bmc_map")
        hosts = list(fence_nova.parse_bmc_map(bmc_map)) if bmc_map else [options.text("plug") or "-"]
        for host in hosts:
            driver = power_driver(options, host)
            try:
                driver.power_state(target.power_deadline)
            except PowerError as exc:
                raise FenceError(f"{host}: {exc}") from None
            finally:
                driver.close(time.monotonic() + 2)
    return ExitCode.SUCCESS


HANDLERS = {
    "off": off,
    "on": on,
    "reboot": reboot,
    "status": status,
    "list": list_hosts,
    "list-status": list_hosts,
    "monitor": monitor,
}
