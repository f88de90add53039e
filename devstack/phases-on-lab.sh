#!/usr/bin/env bash
# The plugin's phases that apply outside a devstack, run for real against the lab's cluster
# (`python -m lab up --cluster`) in place of a devstack controller, as root:
#
#   stack install              the suite into its venv (pip), the agents into Pacemaker's
#                              directories (openstack-ha-install)
#   stack post-config          the controller's files: the engine's configuration, fence_nova's
#                              Keystone secret, configure-cluster.sh's cloud settings
#   openstack-ha join-computes the compute nodes (the lab's remote nodes already) and the
#                              reference configuration through scripts/configure-cluster.sh,
#                              with the lab's BMCs (OPENSTACK_HA_BMC_SETTINGS)
#
# Not run: `stack extra` (it makes the cluster, which the lab has made: its
# `pcs cluster destroy` would end the lab's) and a compute node's post-config (systemctl on
# pacemaker_remote: the lab runs its nodes' pacemaker-remoted itself).
#
# devstack's values come from the lab (Keystone's URL, the admin password, clouds.yaml, the
# compute nodes), the plugin's files go under the lab's state dir instead of
# /etc/openstack-ha, and devstack's functions are small stand-ins that act for real
# (iniset writes the file; install_package checks the package is there). Afterwards the
# suites run against the result as against any outside target (README: Tests against an
# existing cloud):
#
#   python -m lab up --cluster --redfish-hosts compute3
#   bash devstack/phases-on-lab.sh [STATE_DIR]
#   OPENSTACK_HA_TARGET=STATE_DIR/hosts.json OS_CLIENT_CONFIG_FILE=STATE_DIR/clouds.yaml \
#       OS_CLOUD=lab OPENSTACK_HA_E2E=1 pytest tests/e2e
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${1:-${OPENSTACK_HA_LAB:-/tmp/openstack-ha-lab}}
VENV=/opt/openstack-ha/venv
[[ $EUID == 0 ]] || { echo "phases-on-lab: run as root" >&2; exit 2; }
[[ -f "$STATE/cluster" && -f "$STATE/clouds.yaml" ]] || {
    echo "phases-on-lab: no lab with its cluster in $STATE (python -m lab up --cluster)" >&2
    exit 2
}

# What devstack would know, read from the lab: Keystone, the admin password, the nodes,
# and the BMC settings configure-cluster.sh takes (lab/failover.py writes them).
eval "$(PYTHONPATH="$REPO" "$VENV/bin/python" - "$STATE" <<'EOF'
import shlex, sys
from pathlib import Path

import yaml

from lab.failover import Deployment
from lab.stack import Lab

lab = Lab(Path(sys.argv[1]))
deployment = Deployment(lab)
auth = yaml.safe_load(lab.clouds_yaml.read_text())["clouds"]["lab"]["auth"]
bmc = Path(sys.argv[1]) / "devstack-bmc.settings"
bmc.write_text("".join(line + "\n" for line in deployment.write_settings().read_text()
                       .splitlines() if line.startswith("BMC_")))
bmc.chmod(0o600)
computes = " ".join(f"{h}={deployment.pcmk.node_address(deployment.pcmk._index(h))}"
                    for h in deployment.hosts)
for name, value in (("KEYSTONE_SERVICE_URI", auth["auth_url"]),
                    ("ADMIN_PASSWORD", auth["password"]),
                    ("OPENSTACK_HA_BMC_SETTINGS", str(bmc)),
                    ("OPENSTACK_HA_COMPUTES", computes)):
    print(f"{name}={shlex.quote(value)}")
EOF
)"
export OPENSTACK_HA_DIR=$REPO OPENSTACK_HA_VENV=$VENV OPENSTACK_HA_ROLE=controller
export OPENSTACK_HA_CONF_DIR=$STATE/devstack-etc OPENSTACK_HA_CLOUD=lab
export OPENSTACK_HA_CLOUDS_YAML=$STATE/clouds.yaml OPENSTACK_HA_COMPUTES OPENSTACK_HA_BMC_SETTINGS
export KEYSTONE_SERVICE_URI ADMIN_PASSWORD HOST_IP=10.251.0.1

# A `hostname` that answers the lab's controller name (ctl1), not this machine's
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
printf '#!/bin/sh\necho ctl1\n' > "$stubs/hostname"
chmod +x "$stubs/hostname"

run_phase() {
    PATH="$stubs:$PATH" bash -c '
        set -o errexit
        # devstack functions, acting for real
        function is_service_enabled { [[ "$1" == openstack-ha ]]; }
        function enable_service { :; }
        function is_ubuntu { return 0; }
        function install_package {
            local p; for p in "$@"; do
                dpkg -s "$p" >/dev/null 2>&1 || { echo "package $p is not installed" >&2; exit 3; }
            done
        }
        function iniset {
            [[ "$1" == -sudo ]] && shift
            "$OPENSTACK_HA_VENV/bin/python" - "$@" <<PY
import configparser, sys
path, section, option, value = sys.argv[1:5]
config = configparser.ConfigParser(interpolation=None)
config.read(path)
if not config.has_section(section):
    config.add_section(section)
config.set(section, option, value)
with open(path, "w") as out:
    config.write(out)
PY
        }
        function echo_summary { echo "== $*"; }
        function warn { echo "warn: $2" >&2; }
        function die { echo "die: $2" >&2; exit 3; }
        function sudo { "$@"; }
        source "'"$REPO"'/devstack/settings"
        source "'"$REPO"'/devstack/plugin.sh" "$@"
    ' phase "$@"
}

mkdir -p "$OPENSTACK_HA_CONF_DIR"
echo "== stack install"
run_phase stack install
echo "== stack post-config"
run_phase stack post-config
echo "== openstack-ha join-computes"
run_phase openstack-ha join-computes
echo "phases-on-lab: done; the cluster:"
crm_mon -1
