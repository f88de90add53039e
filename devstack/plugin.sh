#!/bin/bash
#
# devstack/plugin.sh: the devstack plugin of openstack-instance-ha.
#
#   [[local|localrc]]
#   enable_plugin openstack-instance-ha https://opendev.org/openstack/openstack-instance-ha
#   OPENSTACK_HA_ROLE=controller      # or compute; see devstack/settings for the rest
#
# stack.sh and unstack.sh/clean.sh source this file with the phase as arguments:
#
#   stack install       install_openstack_ha: the node's packages, the suite's venv, its agents
#   stack post-config   configure_openstack_ha: controller: the engine's configuration and
#                       configure-cluster.sh's settings; compute: pacemaker_remote enabled
#   stack extra         controller: start_openstack_ha_cluster: a one-controller cluster
#   unstack             stop_openstack_ha: the cluster (controller) or pacemaker_remote (compute)
#   clean               cleanup_openstack_ha: what this plugin and openstack-ha-install wrote
#
# and one step that is no devstack phase, run on the controller once every compute node has
# stacked and holds the cluster's /etc/pacemaker/authkey (devstack stacks the controller
# first, so no compute node is up during the controller's own phases):
#
#   openstack-ha join-computes   join_openstack_ha_computes: each compute node becomes a
#                       pacemaker_remote node of the cluster, then scripts/configure-cluster.sh
#
# run from the devstack directory as the stack user (devstack/README.rst):
#
#   source ./functions; source ./stackrc; source $DEST/openstack-instance-ha/devstack/settings
#   source $DEST/openstack-instance-ha/devstack/plugin.sh openstack-ha join-computes
#
# Secrets (the Keystone admin password, the hacluster password) go through stdin or a 0600
# file, never argv, and xtrace is off wherever one is in a variable.

# Save trace setting: the plugin's commands are traced into stack.sh's log, as masakari's are
_XTRACE_OPENSTACK_HA=$(set +o | grep xtrace)
set -o xtrace


# Functions
# ---------

function _openstack_ha_check_role {
    case "$OPENSTACK_HA_ROLE" in
        controller|compute) ;;
        *) die $LINENO "OPENSTACK_HA_ROLE must be controller or compute, not '$OPENSTACK_HA_ROLE'" ;;
    esac
}

# _openstack_ha_wait WHAT COMMAND...: run COMMAND until it succeeds, for at most
# OPENSTACK_HA_WAIT seconds; die naming WHAT after that.
function _openstack_ha_wait {
    local what=$1
    shift
    local deadline=$((SECONDS + OPENSTACK_HA_WAIT))
    until "$@"; do
        if [[ $SECONDS -ge $deadline ]]; then
            die $LINENO "openstack-ha: $what, still not after ${OPENSTACK_HA_WAIT}s (see crm_mon -1)"
        fi
        sleep 2
    done
}

# _openstack_ha_crm_mon_line PATTERN...: whether one line of crm_mon's XML matches every
# glob PATTERN (read whole, then matched: no pipe whose writer a grep -q could cut). Not
# traced: a wait would put the whole status into stack.sh's log at every poll.
function _openstack_ha_crm_mon_line {
    local xtrace xml line pattern matched found=1
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    if xml=$(sudo crm_mon -1 --output-as=xml 2>/dev/null); then
        while IFS= read -r line; do
            matched=1
            for pattern in "$@"; do
                # shellcheck disable=SC2053  # a glob on purpose
                [[ $line == $pattern ]] || { matched=0; break; }
            done
            if [[ $matched == 1 ]]; then
                found=0
                break
            fi
        done <<< "$xml"
    fi
    $xtrace
    return $found
}

function _openstack_ha_node_online {
    _openstack_ha_crm_mon_line "*<node name=\"$1\" *" '*online="true"*'
}

function _openstack_ha_resource_started {
    _openstack_ha_crm_mon_line "*<resource id=\"$1\" *" '*role="Started"*' '*failed="false"*'
}

# a remote node is online once its connection resource has started: crm_mon calls it online
# while the connection is still starting
function _openstack_ha_remote_online {
    _openstack_ha_node_online "$1" && _openstack_ha_resource_started "$1"
}

# install_openstack_ha() - the node's packages, the suite's environment and its agents
function install_openstack_ha {
    if ! is_ubuntu; then
        die $LINENO "openstack-ha: this plugin installs Debian/Ubuntu packages only"
    fi
    if [[ "$OPENSTACK_HA_ROLE" == controller ]]; then
        install_package pacemaker corosync pcs fence-agents python3-venv
    else
        install_package pacemaker-remote resource-agents python3-venv
    fi
    if [[ ! -x "$OPENSTACK_HA_VENV/bin/python" ]]; then
        sudo "$OPENSTACK_HA_PYTHON" -m venv "$OPENSTACK_HA_VENV"
    fi
    # The release's upper constraints where devstack has them, as its own pip installs do
    local constraints=()
    if [[ -f "${REQUIREMENTS_DIR:-}/upper-constraints.txt" ]]; then
        constraints=(-c "$REQUIREMENTS_DIR/upper-constraints.txt")
    fi
    sudo "$OPENSTACK_HA_VENV/bin/pip" install -q --disable-pip-version-check \
        "${constraints[@]}" "$OPENSTACK_HA_DIR"
    # the same version number never stops pip from taking the current code (scripts/lib.sh)
    sudo "$OPENSTACK_HA_VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
        --force-reinstall "$OPENSTACK_HA_DIR"
    # the agents where Pacemaker looks for them: ComputeLiveness runs on the compute nodes,
    # fence_nova and NovaEvacuate on the controller
    sudo "$OPENSTACK_HA_VENV/bin/openstack-ha-install"
}

# configure_openstack_ha() - the files the node's part needs
function configure_openstack_ha {
    if [[ "$OPENSTACK_HA_ROLE" == compute ]]; then
        _configure_openstack_ha_remote
        return
    fi
    sudo install -d -m 0755 "$OPENSTACK_HA_CONF_DIR"

    # The engine's configuration: credentials stay in devstack's clouds.yaml (written later
    # in stack.sh, once Keystone runs). Made anew at each stack.
    sudo install -m 0644 /dev/null "$OPENSTACK_HA_CONF"
    iniset -sudo "$OPENSTACK_HA_CONF" cloud cloud "$OPENSTACK_HA_CLOUD"
    iniset -sudo "$OPENSTACK_HA_CONF" cloud clouds_yaml "$OPENSTACK_HA_CLOUDS_YAML"
    iniset -sudo "$OPENSTACK_HA_CONF" cloud interface "$OPENSTACK_HA_INTERFACE"

    # fence_nova's Keystone password (it takes no clouds.yaml from configure-cluster.sh):
    # a root 0600 file, filled through stdin
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    sudo install -m 0600 /dev/null "$OPENSTACK_HA_KEYSTONE_SECRET"
    printf '%s\n' "$ADMIN_PASSWORD" | sudo tee "$OPENSTACK_HA_KEYSTONE_SECRET" >/dev/null
    $xtrace

    # configure-cluster.sh's cloud settings (join-computes adds the compute nodes): the
    # values devstack knows now, paths and names only
    sudo install -m 0600 /dev/null "$OPENSTACK_HA_CLOUD_SETTINGS"
    {
        echo "# written by devstack/plugin.sh (stack post-config) for scripts/configure-cluster.sh"
        printf 'AUTH_URL=%q\n' "$KEYSTONE_SERVICE_URI"
        # devstack's admin, as in the clouds.yaml entry devstack-admin
        printf 'OS_USERNAME=%q\n' admin
        printf 'OS_PROJECT=%q\n' admin
        printf 'OS_PASSWORD_FILE=%q\n' "$OPENSTACK_HA_KEYSTONE_SECRET"
        printf 'ENDPOINT_TYPE=%q\n' "$OPENSTACK_HA_INTERFACE"
        printf 'ENGINE_CONFIG=%q\n' "$OPENSTACK_HA_CONF"
        printf 'MAX_DOWN_PERCENT=%q\n' "$OPENSTACK_HA_MAX_DOWN_PERCENT"
        printf 'LIVENESS_CHECKS=%q\n' "$OPENSTACK_HA_LIVENESS_CHECKS"
    } | sudo tee "$OPENSTACK_HA_CLOUD_SETTINGS" >/dev/null
}

# _configure_openstack_ha_remote() - pacemaker_remote on a compute node
function _configure_openstack_ha_remote {
    # The key is the cluster's: `pcs cluster setup` makes it on the controller during the
    # controller's stack, and a compute node cannot fetch it (the Zuul job copies it, by
    # hand: scp it, root:haclient 0640, then restart pacemaker_remote).
    sudo systemctl enable pacemaker_remote
    if sudo test -s "$OPENSTACK_HA_AUTHKEY"; then
        sudo systemctl restart pacemaker_remote
    else
        warn $LINENO "openstack-ha: no $OPENSTACK_HA_AUTHKEY yet: copy the controller's,\
 then systemctl restart pacemaker_remote, before join-computes on the controller"
    fi
}

# start_openstack_ha_cluster() - a one-controller cluster (corosync + pacemaker), no fencing
# until configure-cluster.sh defines the fence devices
function start_openstack_ha_cluster {
    local node
    node=$(hostname)
    sudo systemctl enable --now pcsd
    # The packages start a default cluster of their own (node1 on 127.0.0.1), and an earlier
    # stack leaves its CIB: both go (this also removes /etc/pacemaker/authkey, which the
    # setup below makes anew).
    sudo pcs cluster destroy --force
    # pcs talks to pcsd even for the local node: hacluster gets a password of its own, used
    # once for the token and not kept
    local xtrace password
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    password=$(openssl rand -hex 24)
    printf 'hacluster:%s\n' "$password" | sudo chpasswd
    printf '%s\n' "$password" | sudo pcs host auth "$node" addr="$HOST_IP" -u hacluster
    password=
    $xtrace
    sudo pcs cluster setup "$OPENSTACK_HA_CLUSTER_NAME" "$node" addr="$HOST_IP" \
        --start --wait="$OPENSTACK_HA_WAIT"
    _openstack_ha_wait "$node online in the cluster" _openstack_ha_node_online "$node"
    # Pacemaker starts nothing with stonith-enabled=true and no fence device, not even the
    # compute nodes' connections: configure-cluster.sh turns it on with the devices
    sudo pcs property set stonith-enabled=false
}

# join_openstack_ha_computes() - the compute nodes into the cluster, then the reference
# configuration. Once per stack (configure-cluster.sh creates, it does not update).
function join_openstack_ha_computes {
    if [[ -z "${OPENSTACK_HA_COMPUTES// /}" ]]; then
        die $LINENO "openstack-ha: OPENSTACK_HA_COMPUTES names no compute node to join"
    fi
    local entry name address names=()
    for entry in $OPENSTACK_HA_COMPUTES; do
        name=${entry%%=*}
        address=${entry#*=}
        # configure-cluster.sh names shell variables after the node (BMC_ADDRESS_<node>)
        if [[ ! $name =~ ^[A-Za-z0-9_-]+$ ]]; then
            die $LINENO "openstack-ha: '$name' cannot be a node of configure-cluster.sh\
 (letters, digits, '-' and '_' only: the short host name)"
        fi
        names+=("$name")
        # What `pcs cluster node add-remote` creates, less the key copy through the node's
        # pcsd, which the compute nodes do not run: the key is already there (see
        # _configure_openstack_ha_remote). --force: pcs asks for add-remote otherwise.
        # The connection's timings are the reference ones (README: how fast a failure is seen).
        if ! sudo pcs resource config "$name" >/dev/null 2>&1; then
            sudo pcs resource create "$name" ocf:pacemaker:remote server="$address" \
                reconnect_interval=10s op monitor interval=5s timeout=5s --force
        fi
    done
    for name in "${names[@]}"; do
        _openstack_ha_wait "compute node $name online (its pacemaker_remote and authkey)" \
            _openstack_ha_remote_online "$name"
    done

    if sudo pcs resource config nova-evacuate >/dev/null 2>&1; then
        echo "openstack-ha: the cluster is configured already; configure-cluster.sh not run again"
        return
    fi
    # The controller's own fence device, which every cluster has before instance HA is added
    # (configure-cluster.sh keeps it): Pacemaker unfences each node that runs a device with
    # provides=unfencing, fence_nova's, the controller included, through the controller's
    # device. A devstack controller has nothing that could cut its power: fence_dummy, which
    # only records on/off in a file. A real cluster has a real one here.
    local controller
    controller=$(hostname)
    sudo pcs stonith create "fence-$controller" fence_dummy type=file \
        status_file="$OPENSTACK_HA_CONF_DIR/fence_dummy-$controller.status" \
        pcmk_host_list="$controller"

    sudo install -m 0600 /dev/null "$OPENSTACK_HA_CLUSTER_SETTINGS"
    {
        echo "# written by devstack/plugin.sh (openstack-ha join-computes) for scripts/configure-cluster.sh"
        printf 'source %q\n' "$OPENSTACK_HA_CLOUD_SETTINGS"
        printf 'COMPUTES=%q\n' "${names[*]}"
        if [[ -n "$OPENSTACK_HA_BMC_SETTINGS" ]]; then
            printf 'source %q\n' "$OPENSTACK_HA_BMC_SETTINGS"
        else
            for name in "${names[@]}"; do
                printf 'BMC_DRIVER_%s=none\n' "${name//-/_}"
            done
        fi
    } | sudo tee "$OPENSTACK_HA_CLUSTER_SETTINGS" >/dev/null
    if [[ -z "$OPENSTACK_HA_BMC_SETTINGS" ]]; then
        warn $LINENO "openstack-ha: no OPENSTACK_HA_BMC_SETTINGS: fence_nova power_driver=none\
 on every compute node, which cuts NO power (Nova and the ledger only). A test bed only: put\
 a power device (fence_virt, fence_xvm, fence_ipmilan) before it in each node's level 1\
 (devstack/README.rst)"
    fi
    sudo bash "$OPENSTACK_HA_DIR/scripts/configure-cluster.sh" "$OPENSTACK_HA_CLUSTER_SETTINGS"
    _openstack_ha_wait "NovaEvacuate started" _openstack_ha_resource_started nova-evacuate
}

# stop_openstack_ha() - stop the node's part
function stop_openstack_ha {
    if [[ "$OPENSTACK_HA_ROLE" == compute ]]; then
        # a graceful stop: pacemaker_remoted asks the cluster to stop the node's resources
        # first, so the node is not fenced (unstack runs before devstack stops nova-compute)
        sudo systemctl stop pacemaker_remote || true
        return
    fi
    # Pacemaker stops every resource, NovaEvacuate and the compute nodes' connections
    # included. --force: stopping the only controller loses quorum, which pcs asks about.
    if sudo crm_mon -1 >/dev/null 2>&1; then
        sudo pcs cluster stop --force
    fi
}

# cleanup_openstack_ha() - remove what this plugin and openstack-ha-install wrote
function cleanup_openstack_ha {
    if [[ "$OPENSTACK_HA_ROLE" == controller ]]; then
        # the cluster's configuration and CIB, corosync's and pacemaker's keys
        if command -v pcs >/dev/null; then
            sudo pcs cluster destroy --force
        fi
    else
        sudo systemctl disable pacemaker_remote || true
    fi
    if [[ -x "$OPENSTACK_HA_VENV/bin/openstack-ha-install" ]]; then
        sudo "$OPENSTACK_HA_VENV/bin/openstack-ha-install" --uninstall
    fi
    sudo rm -rf "$OPENSTACK_HA_VENV" "$OPENSTACK_HA_CONF_DIR"
}


# Dispatcher
# ----------

if is_service_enabled openstack-ha; then
    _openstack_ha_check_role
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing openstack-instance-ha ($OPENSTACK_HA_ROLE)"
        install_openstack_ha
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring openstack-instance-ha ($OPENSTACK_HA_ROLE)"
        configure_openstack_ha
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        if [[ "$OPENSTACK_HA_ROLE" == controller ]]; then
            echo_summary "Starting the openstack-instance-ha cluster"
            start_openstack_ha_cluster
        fi
    elif [[ "$1" == "openstack-ha" && "$2" == "join-computes" ]]; then
        if [[ "$OPENSTACK_HA_ROLE" != controller ]]; then
            die $LINENO "openstack-ha: join-computes runs on the controller"
        fi
        echo_summary "Joining the compute nodes to the openstack-instance-ha cluster"
        join_openstack_ha_computes
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_openstack_ha
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_openstack_ha
    fi
fi

# Restore xtrace
$_XTRACE_OPENSTACK_HA

# Tell emacs to use shell-script-mode
## Local variables:
## mode: shell-script
## End:
