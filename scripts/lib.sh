# Shared by scripts/test.sh and scripts/demo.sh: install what the suite needs on
# Debian 12, as root. Idempotent; a second run only checks.

VENV=${OPENSTACK_HA_VENV:-/opt/openstack-ha/venv}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

APT_PACKAGES=(
    pacemaker pacemaker-cli-utils corosync pcs resource-agents fence-agents
    openipmi ipmitool libxml2-utils iproute2 util-linux procps shellcheck
    python3 python3-venv python3-pip
    ceph-mon ceph-mgr ceph-osd ceph-common python3-rados python3-rbd
    serf
    # serf: the lab's gossip pools, the stand-in for Consul (lab/consul.py)
)

log() { printf '%s %s\n' "$(date +%T)" "$*"; }

require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "run this as root: it installs packages and starts a cluster" >&2
        exit 1
    fi
}

install_system_packages() {
    install_debian_packages "${APT_PACKAGES[@]}"
}

install_debian_packages() {
    # Only what is missing; apt-get update only when something is.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

install_python_env() {
    # Debian's python3, not a user's interpreter: Pacemaker runs the agents as
    # root and ocf-tester as nobody, so the interpreter must be readable by all.
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV"
        /usr/bin/python3 -m venv "$VENV"
    fi
    log "installing openstack-instance-ha into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$REPO[test]"
    # the same version number never stops pip from taking the current code
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$REPO"
    "$VENV/bin/openstack-ha-install"
}

install_lab() {
    # The lab's own services (Keystone, Nova, PostgreSQL, RabbitMQ) run from a
    # separate environment pinned in lab/requirements.txt; no-op when current.
    log "installing the lab (Debian packages and $(basename "${OPENSTACK_HA_LAB_VENV:-lab-venv}"))"
    (cd "$REPO" && "$VENV/bin/python" -c \
        'from lab.openstack_setup import ensure_packages, ensure_venv; ensure_packages(); ensure_venv()')
}
