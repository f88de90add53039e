#!/usr/bin/env bash
# The reference instance-HA configuration, typed the way an operator types it.
#
#   scripts/configure-cluster.sh SETTINGS_FILE      (or the variables in the environment)
#
# Run it on a controller once the compute nodes are pacemaker_remote nodes of the
# cluster (`pcs cluster node add-remote NODE`). The lab (python -m lab up --cluster) and
# the end-to-end tests run exactly this script. SETTINGS_FILE is a shell file setting:
#
#   COMPUTES            the compute nodes, as Pacemaker and Nova name them
#   BMC_ADDRESS_<node>, BMC_PORT_<node>, BMC_USERNAME_<node>, BMC_PASSWORD_FILE_<node>
#                       each node's BMC (a 0600 file holds the password); in the
#                       variable names a '-' of the node name is written '_'
#   BMC_DRIVER_<node>   ipmi (default: IPMI 2.0, port 623), redfish (HTTPS, port 443), or
#                       none: this device cuts no power (fence_nova power_driver=none, no BMC_*
#                       of the node read); a device that does must come before it in the node's
#                       level 1 (pcs stonith level clear NODE; pcs stonith level add 1 NODE
#                       POWER-DEVICE fence-nova-NODE), else nothing is powered off
#   BMC_CA_FILE_<node>  redfish: the CA that signed the BMC's certificate (default: the
#                       system's trust store; verification is never switched off here)
#   AUTH_URL, OS_USERNAME, OS_PROJECT, OS_PASSWORD_FILE   Keystone, for fence_nova
#   ENDPOINT_TYPE       which Nova endpoint fence_nova uses (default internal; public where the
#                       catalog has no internal one, as on a devstack)
#   ENGINE_CONFIG       the evacuation engine's oslo.config file (NovaEvacuate)
#   LIVENESS_CHECKS     what "alive" means on a compute node (ComputeLiveness checks=)
#   MAX_DOWN_PERCENT    the mass-failure brake (fence_nova max_down_percent, default 50)
#   UNFENCE_POWER       on | keep-off (fence_nova unfence_power, default on)
#   STORAGE_FENCE       ceph: also fence each node's storage (Ceph's OSD blocklist) after the
#                       power-off, and on its own as topology level 2 for a node whose BMC
#                       is dead: see scripts/configure-storage-fencing.sh for its settings
#   KDUMP_<node>        1: keep the node's crash dump. Its level 1 becomes fence-agents'
#                       fence_kdump (success once the node's kdump kernel reports with
#                       fence_kdump_send: a node that is dumping is harmless) followed by a
#                       fence_nova power_driver=none device for Nova's part; its usual
#                       fence_nova device (power off, then Nova) becomes level 2, for a node
#                       that never reports. The node's kdump.conf needs fence_kdump_nodes (the
#                       controllers) and, recommended, final_action poweroff. Not with
#                       BMC_DRIVER_<node>=none.
#   KDUMP_ADDRESS_<node>  the address the node's kdump kernel sends from, as fence_kdump's
#                       nodename (default: the node's name, which must then resolve to it on
#                       every controller)
#   KDUMP_TIMEOUT       seconds fence_kdump waits for the node's message (default 60): a node
#                       that failed without a crash waits this long longer for its power-off
#   CONSUL_CONFIG       Consul as a second health channel: fence_nova's consul_config (a file
#                       with a [consul] section, ENGINE_CONFIG's own for instance, or the
#                       options inline). Before powering a node off, fence_nova reads its
#                       view on each network and refuses when partition_policy says so
#                       (by default: only management lost, storage and the rest alive)
#   PARTITION_POLICY    fence_nova's partition_policy (default: its own)
#   PARTITION_HOLD      seconds a refusal lasts at most before the fence proceeds (default 300;
#                       Pacemaker keeps an unfenced remote node unclean, so a refusal can
#                       only delay the fence): stonith-max-attempts is raised so that
#                       Pacemaker goes on asking that long
#
# The controllers keep the fence devices they already have: fence_nova provides unfencing,
# and Pacemaker unfences every node that runs a fencing device with provides=unfencing, the
# controllers too, through their own devices ("on" of an IPMI device is harmless).
#
# Secrets stay in their files: only the paths go into the CIB.
set -euo pipefail
if [[ $# -ge 1 ]]; then
    # shellcheck disable=SC1090
    source "$1"
fi
: "${COMPUTES:?}"
: "${AUTH_URL:?}" "${OS_USERNAME:?}" "${OS_PROJECT:?}" "${OS_PASSWORD_FILE:?}" "${ENGINE_CONFIG:?}"
LIVENESS_CHECKS=${LIVENESS_CHECKS:-"process:nova-compute"}

# Fencing on. stonith-timeout well above corosync's token + consensus (1 s + 1.2 s in the
# lab; 3 s + 3.6 s by default) and above fence_nova's power-off and Nova steps. "off": the
# host is powered off and stays off until its evacuation has finished: fence_nova's "on"
# refuses before that (at once: no action waits), and the NovaEvacuate worker asks
# Pacemaker to unfence the node, which powers it on, once the evacuation is done.
pcs property set stonith-enabled=true stonith-timeout=60s stonith-action=off
# A device that provides unfencing makes every resource require unfencing by default, the
# controllers' too (where nothing unfences them): only the compute nodes' resources below
# ask for it.
pcs resource defaults update requires=fencing

# One fence_nova device per compute node (each BMC has its own credentials; with shared
# ones a single device with bmc_map= covers every node): power off through the node's BMC,
# confirm, force its nova-compute service down and record the evacuation request. It also
# unfences (provides=unfencing): "on" powers the node on only once its evacuation has
# finished (unfence_power=keep-off leaves it off for inspection).
# max_down_percent: with more of the compute nodes down than this, fencing refuses (a
# partition, not hardware).
KDUMP_TIMEOUT=${KDUMP_TIMEOUT:-60}
OFF_TIMEOUT=60
consul=()
if [[ -n "${CONSUL_CONFIG:-}" ]]; then
    PARTITION_HOLD=${PARTITION_HOLD:-300}
    consul=(consul_config="$CONSUL_CONFIG" partition_hold="$PARTITION_HOLD")
    if [[ -n "${PARTITION_POLICY:-}" ]]; then consul+=(partition_policy="$PARTITION_POLICY"); fi
    # The wait for Consul before the power step: settle 10 s + samples 2 s + 4 x timeout 2 s
    # with the [consul] defaults (fence_nova consul_config's help).
    OFF_TIMEOUT=80
    # Each refused attempt lasts at least 5 s and Pacemaker asks again at once; after
    # stonith-max-attempts failures it stops asking until its next transition (up to
    # cluster-recheck-interval, 15 min): keep it asking for the whole hold.
    pcs property set stonith-max-attempts=$((PARTITION_HOLD / 5 + 10))
fi
for node in $COMPUTES; do
    v=${node//-/_}
    address="BMC_ADDRESS_$v" port="BMC_PORT_$v" user="BMC_USERNAME_$v" secret="BMC_PASSWORD_FILE_$v"
    driver="BMC_DRIVER_$v" ca="BMC_CA_FILE_$v" kdump="KDUMP_$v" kdump_address="KDUMP_ADDRESS_$v"
    if [[ "${!kdump:-0}" == 1 && "${!driver:-ipmi}" == none ]]; then
        echo "$node: KDUMP_$v=1 needs a fence_nova device that powers the node off as its" \
             "level 2; BMC_DRIVER_$v=none has none" >&2
        exit 1
    fi
    # Storage fencing takes level 2 for the blocklist alone and fences storage from the
    # power device of level 1: a kdump level 1 has no such device. Not combined yet.
    if [[ "${!kdump:-0}" == 1 && "${STORAGE_FENCE:-none}" == ceph ]]; then
        echo "$node: KDUMP_$v=1 and STORAGE_FENCE=ceph cannot be combined yet (both need" \
             "topology level 2)" >&2
        exit 1
    fi
    # The BMC's protocol is chosen per device: IPMI and Redfish hosts mix in one cluster.
    case "${!driver:-ipmi}" in
    redfish)
        # ForceOff, then PowerState polled until the BMC reports Off; a session, not the
        # password in every request
        power=(power_driver=redfish ipport="${!port:-443}" redfish_auth=session)
        if [[ -n "${!ca:-}" ]]; then power+=(ssl_ca_file="${!ca}"); fi
        ;;
    none)
        # Another device of the same level cuts the power (fence_nova then does Nova and
        # the ledger only): no BMC of this node is read.
        power=(power_driver=none)
        ;;
    *)
        power=(power_driver=ipmi ipport="${!port:-623}" lanplus=1)
        ;;
    esac
    if [[ "${power[0]}" != power_driver=none ]]; then
        power+=(ip="${!address}" bmc_username="${!user}" bmc_password_file="${!secret}"
                login_timeout=5 power_timeout=20)
    fi
    nova=(auth_url="$AUTH_URL" username="$OS_USERNAME" password_file="$OS_PASSWORD_FILE"
          tenant_name="$OS_PROJECT" endpoint_type="${ENDPOINT_TYPE:-internal}"
          max_down_percent="${MAX_DOWN_PERCENT:-50}" unfence_power="${UNFENCE_POWER:-on}"
          "${consul[@]}")
    pcs stonith create "fence-nova-$node" fence_nova "${nova[@]}" "${power[@]}" \
        pcmk_host_list="$node" pcmk_off_timeout="${OFF_TIMEOUT}s" pcmk_on_timeout=60s \
        meta provides=unfencing
    if [[ "${!kdump:-0}" != 1 ]]; then
        # --force: pcs checks the node against the nodes it knows, and remote nodes made
        # without pcsd (as in the lab) are not among them
        pcs stonith level add 1 "$node" "fence-nova-$node" --force
        continue
    fi
    # KDUMP_<node>=1. Level 1: fence_kdump waits for the node's kdump kernel to report
    # (a node that is dumping runs none of its instances; the dump explains the failure),
    # then fence_nova without power does Nova's part, trusting the level as after a
    # power-off. Level 2, when no report comes in time: the usual device powers it off.
    # fence_kdump's own monitor looks for crashkernel= on the controller running it, so the
    # device's monitor only reads its metadata; one try (pcmk_off_retries=1), or a silent
    # node would wait twice. It cannot power on: unfencing skips it, and the node's
    # fence_nova devices (provides=unfencing) unfence it as usual.
    kdump_node=()
    if [[ -n "${!kdump_address:-}" ]]; then kdump_node=(nodename="${!kdump_address}"); fi
    pcs stonith create "fence-kdump-$node" fence_kdump "${kdump_node[@]}" \
        timeout="$KDUMP_TIMEOUT" pcmk_host_list="$node" pcmk_reboot_action=off \
        pcmk_off_timeout="$((KDUMP_TIMEOUT + 10))s" pcmk_off_retries=1 \
        pcmk_monitor_action=metadata
    pcs stonith create "fence-nova-kdump-$node" fence_nova "${nova[@]}" power_driver=none \
        pcmk_host_list="$node" pcmk_off_timeout="${OFF_TIMEOUT}s" pcmk_on_timeout=60s \
        meta provides=unfencing
    pcs stonith level add 1 "$node" "fence-kdump-$node" "fence-nova-kdump-$node" --force
    pcs stonith level add 2 "$node" "fence-nova-$node" --force
done

# What "alive" means on a compute node. A failed monitor restarts the resource; start
# waits (up to its timeout) for the checks to pass and fails otherwise, and a failed start
# fences the node: nova-compute that comes back by itself costs nothing, one that cannot
# costs the node. requires=unfencing: nothing starts on a node coming back from fencing
# before fence_nova has unfenced it, that is before its evacuation has finished.
pcs resource create liveness ocf:openstack-ha:ComputeLiveness checks="$LIVENESS_CHECKS" \
    op start timeout=30s on-fail=fence op monitor interval=10s timeout=30s \
    op stop timeout=20s meta requires=unfencing clone interleave=true
# resource-discovery=exclusive: probed and run only there (a probe needs unfencing too)
pcs constraint location liveness-clone rule resource-discovery=exclusive score=0 '#kind' eq remote
# Nothing of the compute node's runs while its evacuation is pending (evacuate=yes or
# node@epoch; "no" or absent once it is done): Pacemaker re-evaluates the attribute itself,
# so no start waits. Give every resource of the compute nodes (nova-compute, where Pacemaker
# manages it) the same rule.
pcs constraint location liveness-clone rule score=-INFINITY defined evacuate and evacuate ne no

if [[ "${STORAGE_FENCE:-none}" == ceph ]]; then
    "$(dirname "${BASH_SOURCE[0]}")/configure-storage-fencing.sh" "$@"
fi

# The evacuation engine: one copy, on the controllers.
pcs resource create nova-evacuate ocf:openstack-ha:NovaEvacuate config_file="$ENGINE_CONFIG" \
    op monitor interval=10s timeout=20s
pcs constraint location nova-evacuate rule score=-INFINITY '#kind' eq remote

# The cluster's side of the recovery timeline (detection, fencing results).
pcs alert create id=openstack-ha-timeline path=/usr/lib/openstack-ha/timeline_alert

# The controllers' own fence devices (see the top): Pacemaker asks to unfence every node that
# runs a device providing unfencing. For a member no device can unfence that step fails in
# each transition, and Pacemaker abandons the rest of the transition with it: a compute node
# back from its evacuation would rejoin only at the next unrelated change.
for member in $(crm_node --list 2>/dev/null | awk '$3 == "member" { print $2 }'); do
    if ! stonith_admin --list "$member" 2>/dev/null | grep -qv "fence devices\? found"; then
        echo "warning: no fence device targets $member, so Pacemaker cannot unfence it:" \
             "give it its own (its BMC's fence_ipmilan, pcmk_host_list=$member), or a" \
             "compute node's return may wait for cluster-recheck-interval" >&2
    fi
done
