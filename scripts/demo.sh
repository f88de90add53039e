#!/usr/bin/env bash
# The main job, on Debian 12 as root: installs what is needed and runs the failover
# demo on the embedded lab (a compute node dies in a real Pacemaker cluster and its
# instances come back by themselves), then tears the lab down. Arguments go to
# python -m lab.demo (--instances N, --keep).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_root
install_system_packages
install_python_env
install_lab
cd "$REPO"
exec "$VENV/bin/python" -m lab.demo "$@"
