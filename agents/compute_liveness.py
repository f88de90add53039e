"""ocf:openstack-ha:ComputeLiveness: is this compute node really able to serve?

Cloned onto every pacemaker_remote compute node. Its monitor runs the checks the
operator lists (see :mod:`agents.checks`) and publishes the outcome as a node
attribute, ``ok`` | ``degraded:<check>`` | ``failed:<check>``, visible in
``crm_mon -A`` and usable in location rules. A failed critical check fails the
monitor, so Pacemaker restarts the resource or fences the node, as the
operation's ``on-fail`` says.

``start`` runs the checks until they pass and gives up, failing, shortly before its
timeout. It does not look at this node's evacuation: a fenced node stays powered off
until its evacuation is done (fence_nova's unfencing refuses before that), and the
reference configuration's location rule on the ``evacuate`` node attribute keeps this
resource off a node whose evacuation is pending (see nova_evacuate/host_return.py).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from agents import checks as liveness_checks
from agents import ocf
from agents.ocf import Action, Agent, Context, OCFError, OCFExit, Parameter
from openstack_ha import pacemaker
from openstack_ha.secret_files import FileUnusable

LOG = logging.getLogger(__name__)

# How often start runs the checks again while they fail.
START_RETRY_SECONDS = 1.0
# Leave this much of start's timeout to report the failure before Pacemaker kills us.
START_MARGIN_SECONDS = 2.0


# A check that may take an hour is no liveness check; the monitor's timeout bounds them too.
MAX_CHECK_TIMEOUT = 3600


def _check_timeout(text: str) -> int:
    return ocf.parse_integer(text, minimum=1, maximum=MAX_CHECK_TIMEOUT)


def _consul_url(text: str) -> str:
    """The local Consul agent's address: ``scheme://host[:port]``, http or https."""
    if text == liveness_checks.DEFAULT_CONSUL_URL:
        return text  # known good: every monitor parses it, and need not import the client
    if "?" in text or "#" in text:
        # Consul takes ?token=: a refusal quoting the URL would show it
        raise ValueError("must be scheme://host[:port] only, without a query or fragment"
                         " (the URL is not shown; give the token in consul_token_file)")
    from openstack_ha.consul import ConsulClient

    ConsulClient(text)  # the client's own check: ValueError, one line, no user info shown
    return text


def _attribute_name(text: str) -> str:
    name = text.strip()
    if not name or not name.isprintable() or any(c.isspace() or c in "\"'=" for c in name):
        raise ValueError(f"'{text}' is not a usable node attribute name")
    return name


PARAMETERS = (
    Parameter(
        "checks",
        shortdesc="Checks that define 'alive' on this node, in order",
        longdesc=(
            "Entries separated by ';' or new lines, each '[critical|degraded] KIND:ARGUMENT' "
            "(critical when not said). Kinds: process:NAME (a process by name, also when run "
            "by an interpreter), cmdline:REGEX (a process whose command line matches), "
            "unit:NAME (a systemd unit is active), socket:PATH (a unix socket accepts a "
            "connection), tcp:HOST:PORT (a TCP endpoint accepts a connection), "
            "net:NAME=ADDRESS (ADDRESS on network NAME answers an ICMP echo), cmd:COMMAND "
            "(a command exits 0; run without a shell, so use a script for pipes or ';'), "
            "consul:service=NAME (the local Consul agent has checks for service NAME and none "
            "is critical; warning passes) or consul:check=ID (the same for one check by id; "
            "none registered, or the agent unreachable, fails). "
            "A failed critical check fails the monitor; a failed degraded check is only "
            "published. Checks stop at the first critical failure."
        ),
        default=liveness_checks.DEFAULT_CHECKS,
        parse=liveness_checks.parse_checks,
    ),
    Parameter(
        "check_timeout",
        shortdesc="Seconds each check may take",
        longdesc=(
            "A check that has no answer within this many seconds has failed. All checks "
            "together are also bounded by the monitor operation's timeout."
        ),
        content_type="integer",
        default="5",
        parse=_check_timeout,
    ),
    Parameter(
        "attribute",
        shortdesc="Node attribute that receives the outcome",
        longdesc=(
            "Transient node attribute set to 'ok', 'degraded:<check>' or 'failed:<check>' "
            "after every start and monitor. Stop removes it, except a failure, which stays "
            "until the next start so the operator sees which check broke. Use it in "
            "location rules or see it with 'crm_mon -A'."
        ),
        default="openstack-ha-liveness",
        parse=_attribute_name,
    ),
    Parameter(
        "consul_url",
        shortdesc="The local Consul agent, for consul: checks",
        longdesc=(
            "Address of the Consul agent whose checks (/v1/agent/checks) consul: entries "
            "read: http:// or https://, a host, an optional port, nothing else. Its token "
            "goes in consul_token_file, never in the URL."
        ),
        default=liveness_checks.DEFAULT_CONSUL_URL,
        parse=_consul_url,
    ),
    Parameter(
        "consul_token_file",
        shortdesc="File holding the Consul ACL token",
        longdesc=(
            "Absolute path of a file holding the ACL token (node:read, service:read) sent "
            "to the Consul agent, read again each time the consul: checks run (a rotated token "
            "is taken up). Empty: no token. A file that cannot "
            "be read on this node fails validate-all and start with OCF_ERR_INSTALLED; one "
            "that holds no usable token, with OCF_ERR_CONFIGURED."
        ),
        default="",
        parse=ocf.parse_optional_path,
    ),
    Parameter(
        "consul_ca_file",
        shortdesc="CA bundle for an https Consul agent",
        longdesc=(
            "Absolute path of the CA certificates an https consul_url's certificate is "
            "checked against. Empty: the system's."
        ),
        default="",
        parse=ocf.parse_optional_path,
    ),
)


def _state_file(ctx: Context) -> str:
    rsc_tmp = ctx.environ.get("HA_RSCTMP") or "/run/resource-agents"
    return ocf.instance_file(rsc_tmp, "ComputeLiveness", ctx.resource, ".state")


def _tool_timeout(ctx: Context) -> float:
    """Time one Pacemaker tool call may take: at most 10 s, within the action's timeout."""
    return max(min(10.0, ctx.remaining()), 1.0)


def _node(ctx: Context) -> str:
    node = ctx.node_from_pacemaker
    if node:
        return node
    try:
        return pacemaker.local_node_name(timeout=_tool_timeout(ctx))
    except pacemaker.ToolMissing as exc:
        raise OCFError(OCFExit.ERR_INSTALLED, f"cannot tell this node's name: {exc}") from None
    except pacemaker.PacemakerError as exc:
        raise OCFError(OCFExit.ERR_GENERIC, f"cannot tell this node's name: {exc}") from None


def _read_state(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _write_state(path: str, published: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ocf.write_file(path, published + "\n")


def _consul_agent(ctx: Context) -> liveness_checks.ConsulAgent:
    return liveness_checks.ConsulAgent(
        ctx.params["consul_url"], ctx.params["consul_token_file"], ctx.params["consul_ca_file"]
    )


def _check_consul(ctx: Context) -> None:
    """The Consul token and CA files can be used, or the OCFError that says why.

    Only validate-all and start look (a monitor's consul: check fails on its own, and no
    other check with it). As for NovaEvacuate's configuration file, a file missing or
    unreadable on this node is OCF_ERR_INSTALLED (it concerns this node's instance of the
    clone); a file holding no usable token or certificates is OCF_ERR_CONFIGURED.
    """
    uses_consul = any(check.kind == "consul" for check in ctx.params["checks"])
    if not (uses_consul or ctx.params["consul_token_file"] or ctx.params["consul_ca_file"]):
        return  # nothing of Consul's is used or named: nothing to import or read
    try:
        _consul_agent(ctx).client(timeout=ctx.params["check_timeout"])
    except FileUnusable as exc:
        raise OCFError(OCFExit.ERR_INSTALLED, str(exc)) from None
    except ValueError as exc:
        raise OCFError(OCFExit.ERR_CONFIGURED, str(exc)) from None


def _assess(ctx: Context) -> liveness_checks.Verdict:
    prober = liveness_checks.Prober(timeout=ctx.params["check_timeout"], consul=_consul_agent(ctx))
    # keep a second for publishing the attribute after the checks
    deadline = time.monotonic() + max(ctx.remaining() - 1.0, 0.1)
    results = prober.run(ctx.params["checks"], deadline)
    return liveness_checks.verdict(results)


def _publish(ctx: Context, verdict: liveness_checks.Verdict, state: str) -> None:
    previous = _read_state(state)
    changed = previous != verdict.attribute
    # A probe follows a reconnect of the node, which clears its transient
    # attributes, so it always publishes; otherwise only changes are written,
    # and logged, so that a steady state costs no attrd call and no log line.
    if not (changed or ctx.is_probe or ctx.action == "start"):
        return
    node = _node(ctx)
    for result in verdict.failing:
        level = "critical" if result.check.critical else "degraded"
        LOG.warning("%s check %s failed: %s", level, result.check.label, result.detail)
    try:
        pacemaker.set_node_attribute(
            ctx.params["attribute"], verdict.attribute, node, timeout=_tool_timeout(ctx)
        )
    except pacemaker.PacemakerError as exc:
        raise OCFError(OCFExit.ERR_GENERIC, f"cannot publish liveness: {exc}") from None
    if previous is not None and changed:
        LOG.info("liveness of %s changed: %s -> %s", node, previous, verdict.attribute)
    _write_state(state, verdict.attribute)


def _result(verdict: liveness_checks.Verdict) -> OCFExit:
    if verdict.alive:
        return OCFExit.SUCCESS
    first = next(r for r in verdict.failing if r.check.critical)
    raise OCFError(OCFExit.ERR_GENERIC, f"critical check {first.check.label} failed: {first.detail}")


def start(ctx: Context) -> OCFExit:
    _check_consul(ctx)
    # The checks get until shortly before start's timeout to pass: a nova-compute that its
    # init system is restarting comes back in time; one that cannot fails the start (and
    # with op start on-fail=fence, fences the node).
    while not (verdict := _assess(ctx)).alive and \
            ctx.remaining() > START_MARGIN_SECONDS + START_RETRY_SECONDS + ctx.params["check_timeout"]:
        time.sleep(START_RETRY_SECONDS)
    _publish(ctx, verdict, _state_file(ctx))
    return _result(verdict)


def stop(ctx: Context) -> OCFExit:
    state = _state_file(ctx)
    published = _read_state(state)
    if published is None:
        return OCFExit.SUCCESS
    # A failure stays published: Pacemaker stops the resource right after it
    # fails, and the operator must still see which check broke.
    if not published.startswith("failed:"):
        try:
            pacemaker.delete_node_attribute(
                ctx.params["attribute"], _node(ctx), timeout=_tool_timeout(ctx)
            )
        except (pacemaker.PacemakerError, OCFError) as exc:
            # The attribute is advisory; a failed stop would get the node fenced.
            LOG.warning("could not remove attribute %s: %s", ctx.params["attribute"], exc)
    os.unlink(state)
    return OCFExit.SUCCESS


def monitor(ctx: Context) -> OCFExit:
    state = _state_file(ctx)
    if _read_state(state) is None:
        return OCFExit.NOT_RUNNING
    verdict = _assess(ctx)
    _publish(ctx, verdict, state)
    return _result(verdict)


def validate_all(ctx: Context) -> OCFExit:
    # Parameters were parsed and checked by ocf.run before we get here; the files they
    # name are read here.
    _check_consul(ctx)
    return OCFExit.SUCCESS


AGENT = Agent(
    name="ComputeLiveness",
    version="1.0",
    shortdesc="Tells Pacemaker whether an OpenStack compute node can serve instances",
    longdesc=(
        "Runs on pacemaker_remote compute nodes (as a clone) and checks what 'alive' means "
        "for this node: nova-compute, libvirt, Open vSwitch, the networks the operator names, "
        "the health checks the local Consul agent already runs. "
        "The outcome is published as a node attribute; a failed critical check fails the "
        "monitor so that Pacemaker recovers or fences the node as on-fail says. Start runs "
        "the checks until they pass and fails shortly before its timeout. It does not wait "
        "for the node's evacuation: a location rule on the node attribute 'evacuate' keeps "
        "it off a node whose evacuation is pending."
    ),
    parameters=PARAMETERS,
    actions=(
        Action("start", timeout=120, handler=start),
        Action("stop", timeout=20, handler=stop),
        Action("monitor", timeout=30, interval=10, depth=0, handler=monitor),
        Action("validate-all", timeout=10, handler=validate_all),
    ),
)


def main() -> None:
    sys.exit(ocf.run(AGENT, sys.argv[1:]))


if __name__ == "__main__":
    main()
