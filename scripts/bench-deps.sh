#!/usr/bin/env bash
# Install what the stock fence-agents need to run against the lab, for
# benchmarks/fence_off.py (Debian 12, as root). Idempotent: a second run only checks.
#
# fence-agents 4.12.1 only *Suggests* its OpenStack clients, so fence_compute fails
# with "No module named 'novaclient'" (then 'keystoneclient') until these are in.
# Its Python 3.11 crash (inspect.getargspec) is worked around at run time by
# benchmarks/py311shim (PYTHONPATH), not here: /usr/sbin stays untouched.
set -euo pipefail
PACKAGES=(fence-agents ipmitool python3-novaclient python3-keystoneclient strace)
if [ "$(id -u)" != 0 ]; then
    echo "run this as root: it installs Debian packages" >&2
    exit 1
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
/usr/bin/python3 -c 'import novaclient, keystoneclient' \
    || { echo "python3-novaclient/python3-keystoneclient not importable" >&2; exit 1; }
dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}"
