"""What the OpenStack lab needs on the machine: Debian packages and the lab's own virtualenv.

The lab's services (nova, placement, keystone, glance) run from a virtualenv of their own,
``/opt/openstack-ha/lab-venv`` by default ($OPENSTACK_HA_LAB_VENV), built with Debian's
``/usr/bin/python3 -m venv`` from ``lab/requirements.txt``: the suite's runtime environment never
gets nova's dependency tree, and the lab never gets the suite's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

LOG = logging.getLogger(__name__)

REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
DEFAULT_VENV = Path("/opt/openstack-ha/lab-venv")
STAMP = ".lab-requirements.sha256"

# Debian packages: the lab runs its own PostgreSQL and RabbitMQ on its own ports; uWSGI and
# psycopg2 are built or installed into the venv.
PACKAGES = (
    "postgresql", "rabbitmq-server", "erlang-base", "python3-venv", "python3-dev",
    "build-essential",
)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


class SetupError(RuntimeError):
    pass


def venv_dir() -> Path:
    return Path(os.environ.get("OPENSTACK_HA_LAB_VENV") or DEFAULT_VENV)


def _missing(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not proc.stdout.endswith(" installed"):
            missing.append(pkg)
    return missing


def ensure_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Install the Debian packages the lab needs if any is missing; return what was installed.

    Debian starts PostgreSQL and RabbitMQ on their default ports when it installs them. The lab
    runs its own instances instead, so the install runs under a policy-rc.d that forbids starting
    services (``exit 101``), as in a container build.
    """
    missing = _missing(packages)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise SetupError(f"packages missing and not root to install them: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    created_policy = not POLICY_RC_D.exists()
    if created_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# openstack-ha lab: start no service on install\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        LOG.info("apt-get install %s", " ".join(missing))
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True,
                       timeout=600)
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            env=env, capture_output=True, text=True, timeout=1200, check=False,
        )
        if proc.returncode != 0:
            raise SetupError(f"apt-get install failed: {proc.stderr.strip()[-400:]}")
    finally:
        if created_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    return missing


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def ensure_venv(venv: Path | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """Create or update the lab venv; a no-op when its stamp matches the requirements' hash.

    A changed requirements file rebuilds the venv from scratch, so a package dropped from the
    list does not linger.
    """
    venv = venv or venv_dir()
    stamp = venv / STAMP
    digest = requirements_hash(requirements)
    with contextlib.suppress(FileNotFoundError):
        if stamp.read_text().strip() == digest and (venv / "bin/nova-compute").exists():
            return venv
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    LOG.info("building the lab venv %s from %s (about a minute)", venv, requirements)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=300)
    log = venv / "pip-install.log"
    with open(log, "w") as out:
        proc = subprocess.run(
            [str(venv / "bin/pip"), "install", "--no-input", "--no-deps", "-r", str(requirements)],
            stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    if proc.returncode != 0:
        raise SetupError(f"pip install into {venv} failed (see {log})")
    stamp.write_text(digest + "\n")
    LOG.info("lab venv ready in %.0fs", time.monotonic() - t0)
    return venv


# The lab's virt driver (lab/nova_guest_driver.py: the fake driver, plus a process per guest
# that holds its RBD disk) and that process's program, where Nova loads drivers from
# (``compute_driver = ohalab_guests.GuestFakeDriver`` is ``nova.virt.ohalab_guests``).
GUEST_DRIVER_FILES = {"nova_guest_driver.py": "ohalab_guests.py",
                      "rbd_guest.py": "ohalab_rbd_guest.py"}


def install_guest_driver(venv: Path) -> None:
    """Copy the lab's virt driver into the lab venv's Nova; idempotent (the venv is reused
    across labs, and a changed driver is copied again)."""
    found = sorted(venv.glob("lib/python3*/site-packages/nova/virt"))
    if not found:
        raise SetupError(f"no nova/virt in {venv}: is it the lab venv?")
    here = Path(__file__).resolve().parent
    for source, name in GUEST_DRIVER_FILES.items():
        text = (here / source).read_text()
        target = found[-1] / name
        if not target.exists() or target.read_text() != text:
            tmp = target.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(target)

