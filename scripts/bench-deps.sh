#!/usr/bin/env bash
# Install what the stock fence-agents need to run against the lab, for
# benchmarks/fence_off.py (Debian 12, as root). Idempotent: a second run only checks.
#
# fence-agents 4.12.1 only *Suggests* its OpenStack clients, so fence_compute fails
# with "No module named 'novaclient'" (then 'keystoneclient') until these are in.
# Its Python 3.11 crash (inspect.getargspec) is worked around at run time by
# benchmarks/py311shim (PYTHONPATH), not here: /usr/sbin stays untouched.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PACKAGES=(fence-agents ipmitool python3-novaclient python3-keystoneclient strace)
require_root
install_debian_packages "${PACKAGES[@]}"
/usr/bin/python3 -c 'import novaclient, keystoneclient' \
    || { echo "python3-novaclient/python3-keystoneclient not importable" >&2; exit 1; }
dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}"
