"""The stock NovaEvacuate agent's monitor loop, for benchmarks/mttr.py's stock configuration.

NovaEvacuate (openstack-resource-agents, shipped by RHEL as a patch, not packaged for Debian)
does this every 10 s in its monitor: read every node's ``evacuate`` attribute; for ``yes``
(or a claim older than 60 s) claim it (``<node>@<epoch>``), run ``fence_evacuate -o off -n
NODE``, then set ``no`` on success, or ``yes`` again so the next monitor retries. Same logic
here, with the options on stdin (no password in argv). Run with PYTHONPATH=benchmarks/py311shim.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import time

LINE = re.compile(r'name="evacuate"\s+host="(?P<host>[^"]*)"\s+value="(?P<value>[^"]*)"')


def attributes() -> dict[str, str]:
    done = subprocess.run(["attrd_updater", "-Q", "-A", "-n", "evacuate"], capture_output=True,
                          text=True, check=False)
    return {m["host"]: m["value"] for m in map(LINE.search, done.stdout.splitlines()) if m}


def set_attribute(host: str, value: str) -> None:
    subprocess.run(["attrd_updater", "-p", "-n", "evacuate", "-U", value, "-N", host],
                   capture_output=True, check=False)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--auth-url", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--interval", type=float, default=10.0)
    args = p.parse_args()
    with open(args.password_file) as f:
        password = f.read().strip()
    me = socket.gethostname()
    while True:
        for host, value in attributes().items():
            stale = "@" in value and time.time() - int(value.rsplit("@", 1)[1] or 0) > 60
            if value != "yes" and not stale:
                continue
            set_attribute(host, f"{me}@{int(time.time())}")
            options = (f"action=off\nplug={host}\nauth_url={args.auth_url}\n"
                       f"login={args.username}\npasswd={password}\ntenant_name={args.project}\n"
                       "no_shared_storage=1\n")
            started = time.time()
            done = subprocess.run(["/usr/sbin/fence_evacuate"], input=options, text=True,
                                  capture_output=True, env=os.environ, check=False)
            print(f"{time.strftime('%H:%M:%S')} fence_evacuate {host}: rc {done.returncode}"
                  f" in {time.time() - started:.1f}s {done.stderr.strip()[-200:]}",
                  file=sys.stderr, flush=True)
            set_attribute(host, "no" if done.returncode == 0 else "yes")
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
