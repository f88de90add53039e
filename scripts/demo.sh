#!/usr/bin/env bash
# The main job, on Debian 12 as root: installs what is needed and runs the demo
# on the embedded lab, then tears the lab down. Today that is ComputeLiveness
# live in a real Pacemaker cluster; the full failover demo replaces it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_root
install_system_packages
install_python_env
cd "$REPO"
exec "$VENV/bin/python" -m lab.liveness_demo "$@"
