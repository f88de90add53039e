#!/usr/bin/env bash
# Run the whole test suite on Debian 12 as root: installs Debian packages, the
# suite into a virtual environment, its agents into Pacemaker's directories, then
# runs pytest (unit, functional, and the cluster tests, which start and stop a
# real corosync + pacemaker + pacemaker_remote lab on loopback by themselves), then the
# end-to-end failover scenarios (tests/e2e) in a session of their own.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_root
install_system_packages
install_python_env
install_lab
cd "$REPO"
log "ruff"
"$VENV/bin/ruff" check .
log "pytest"
# Without the lab, cluster tests fail instead of being skipped.
OPENSTACK_HA_REQUIRE_LAB=1 "$VENV/bin/pytest" "$@"
# The end-to-end failover scenarios bring up the lab with its cluster: one lab per machine,
# so they run in a pytest session of their own (OPENSTACK_HA_SKIP_E2E=1 leaves them out).
if [[ "${OPENSTACK_HA_SKIP_E2E:-}" != 1 ]]; then
    log "pytest: end to end"
    OPENSTACK_HA_E2E=1 OPENSTACK_HA_REQUIRE_LAB=1 "$VENV/bin/pytest" tests/e2e "$@"
    # Three controllers: the evacuation outlives the controller that runs it, and a
    # partitioned controller does nothing on its own (a lab of its own, so a session too).
    log "pytest: end to end, three controllers"
    OPENSTACK_HA_E2E=1 OPENSTACK_HA_E2E_CONTROLLERS=3 OPENSTACK_HA_REQUIRE_LAB=1 \
        "$VENV/bin/pytest" tests/e2e/test_controllers.py "$@"
fi
