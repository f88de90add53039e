"""``openstack-ha-install``: put the suite's agents where Pacemaker looks for them.

Each agent becomes a thin executable, ``/usr/lib/ocf/resource.d/openstack-ha/<Agent>``
or ``/usr/sbin/fence_<name>``, whose interpreter is the Python of the environment
this command runs from, so the agents use exactly the libraries installed with
them. Idempotent; ``--root`` installs under another tree (tests, packagers);
``--uninstall`` removes only files this command wrote. A file it did not write is
never replaced, so fence-agents' ``fence_compute`` is safe whatever happens.
"""

from __future__ import annotations

import argparse
import grp
import os
import sys
from pathlib import Path

from agents.catalog import OCF_DIR, SHIPPED, ShippedAgent

MARKER = "# managed by openstack-ha-install: do not edit, rerun the command instead"
# Names that belong to fence-agents and must never be written, whatever the catalog says.
FOREIGN = frozenset({"fence_compute", "fence_evacuate", "fence_ipmilan"})


class InstallError(Exception):
    pass


def launcher(agent: ShippedAgent, python: str) -> str:
    # -I: isolated mode, so PYTHONPATH or a user's site-packages cannot change
    # what Pacemaker runs as root.
    return (
        f"#!{python} -I\n"
        f"{MARKER}\n"
        f"# {agent.kind} agent {agent.name} from {sys.prefix}\n"
        f"from {agent.module} import main\n"
        "raise SystemExit(main())\n"
    )


def _is_ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def install(root: Path, python: str) -> list[str]:
    report = []
    for agent in SHIPPED:
        if agent.name in FOREIGN:
            raise InstallError(f"refusing to install over fence-agents' {agent.name}")
        target = root / agent.path
        content = launcher(agent, python)
        if target.exists() or target.is_symlink():
            if not _is_ours(target):
                raise InstallError(f"{target} exists and was not installed by openstack-ha-install")
            if target.read_text(encoding="utf-8") == content:
                report.append(f"unchanged {target}")
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, target)
        report.append(f"installed {target}")
    report.append(_timeline_dir(root))
    return report


def _timeline_dir(root: Path) -> str:
    """The timeline's directory: the agents write as root, the alert agent as hacluster."""
    directory = root / "var/log/openstack-ha"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        gid = grp.getgrnam("haclient").gr_gid
    except KeyError:
        return f"created {directory} (no group haclient: the alert agent cannot write there)"
    if os.geteuid() == 0:
        os.chown(directory, 0, gid)
    # the cluster's group may read and write it, nobody else may even list it: the
    # timeline holds server names and failure reasons
    directory.chmod(0o2770)
    return f"ready {directory}"


def uninstall(root: Path) -> list[str]:
    report = []
    for agent in SHIPPED:
        target = root / agent.path
        if target.exists() and _is_ours(target):
            target.unlink()
            report.append(f"removed {target}")
        elif target.exists():
            report.append(f"left {target} (not installed by openstack-ha-install)")
    provider_dir = root / OCF_DIR
    if provider_dir.is_dir() and not any(provider_dir.iterdir()):
        provider_dir.rmdir()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="openstack-ha-install", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/", help="install under this directory (default /)")
    parser.add_argument("--uninstall", action="store_true", help="remove the installed agents")
    parser.add_argument(
        "--python", default=sys.executable,
        help="interpreter the agents run with (default: this environment's)",
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        lines = uninstall(root) if args.uninstall else install(root, args.python)
    except (InstallError, OSError) as exc:
        print(f"openstack-ha-install: {exc}", file=sys.stderr)
        sys.exit(1)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
