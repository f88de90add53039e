#!/usr/bin/env bash
# Storage fencing for instance HA on Ceph, added to the reference configuration
# (scripts/configure-cluster.sh runs it when STORAGE_FENCE=ceph; it also adds it to a
# cluster configured before).
#
#   scripts/configure-storage-fencing.sh SETTINGS_FILE   (or the variables in the environment)
#
# SETTINGS_FILE is the same shell file as configure-cluster.sh's, with:
#
#   COMPUTES, AUTH_URL, OS_USERNAME, OS_PROJECT, OS_PASSWORD_FILE   as there
#   CEPH_CONF           ceph.conf naming the monitors, on every controller
#   CEPH_USER           the fence agent's Ceph client (without "client."), whose key needs
#                       only: mon 'allow r, allow command "osd blocklist"'
#   CEPH_KEYRING_FILE   its keyring (0600): only the path goes into the CIB
#   STORAGE_ADDRESS_<node>  the node's address on the storage network, as Ceph sees its
#                       clients ('+' between several); '-' of the node name written '_'
#
# Two topology levels per compute node:
#   level 1  fence-nova-<node>: power off through the BMC, confirmed, then blocklist the
#            node's storage addresses, confirmed (belt and braces: a power-off that the BMC
#            reports but that did not happen still cannot write);
#   level 2  fence-storage-<node>: the blocklist alone (power_driver=none), when level 1
#            fails because the BMC is dead or cut off: the node may still run, but no OSD
#            accepts its writes, so its instances are rebuilt safely.
# Unfencing stays with level 1, the device that can see the power: it removes the entries
# only while the BMC reports the node off, so a node fenced at level 2 (that never went off)
# keeps them until it has been powered off.
set -euo pipefail
if [[ $# -ge 1 ]]; then
    # shellcheck disable=SC1090
    source "$1"
fi
: "${COMPUTES:?}" "${AUTH_URL:?}" "${OS_USERNAME:?}" "${OS_PROJECT:?}" "${OS_PASSWORD_FILE:?}"
: "${CEPH_CONF:?}" "${CEPH_USER:?}" "${CEPH_KEYRING_FILE:?}"

for node in $COMPUTES; do
    v=${node//-/_}
    saddr="STORAGE_ADDRESS_$v"
    : "${!saddr:?STORAGE_ADDRESS_$v is not set}"
    storage=(storage_fence=ceph ceph_conf="$CEPH_CONF" ceph_user="$CEPH_USER"
             ceph_keyring_file="$CEPH_KEYRING_FILE" storage_map="$node=${!saddr}")
    pcs stonith update "fence-nova-$node" "${storage[@]}"
    pcs stonith create "fence-storage-$node" fence_nova power_driver=none "${storage[@]}" \
        auth_url="$AUTH_URL" username="$OS_USERNAME" password_file="$OS_PASSWORD_FILE" \
        tenant_name="$OS_PROJECT" endpoint_type=internal \
        max_down_percent="${MAX_DOWN_PERCENT:-50}" \
        pcmk_host_list="$node" pcmk_off_timeout=60s
    pcs stonith level add 2 "$node" "fence-storage-$node" --force
done
