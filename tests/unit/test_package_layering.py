"""The packages depend one way (ARCHITECTURE.md): agents and fence_compute on
nova_evacuate, all three on openstack_ha, openstack_ha on none of them; and the
compute-node monitor loads no OpenStack library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"agents", "fence_compute", "nova_evacuate", "openstack_ha", "lab"}
MAY_USE = {
    "openstack_ha": set(),
    "nova_evacuate": {"openstack_ha"},
    "fence_compute": {"nova_evacuate", "openstack_ha"},
    "agents": {"nova_evacuate", "openstack_ha", "fence_compute"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(MAY_USE))
def test_each_package_imports_only_the_packages_below_it(package):
    wrong = {f"{path.relative_to(REPO)}: {sorted(used)}"
             for path in (REPO / package).rglob("*.py")
             if (used := imported_packages(path) - MAY_USE[package] - {package})}
    assert not wrong


def test_the_compute_node_monitor_loads_no_openstack_library_and_not_the_engine():
    code = ("import sys, agents.compute_liveness\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('openstack', 'keystoneauth1', 'oslo_config', 'oslo_log', 'pyghmi',"
            " 'nova_evacuate', 'fence_compute')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_fence_novas_nova_client_with_explicit_keystone_options_needs_no_openstacksdk():
    """openstacksdk takes about 0.2 s to import, a large part of a fence's half second:
    fence_nova's reference configuration (explicit Keystone options) goes through
    keystoneauth alone, from the connection to an answer (here: unreachable)."""
    code = ("import sys\n"
            "from nova_evacuate import nova\n"
            "client = nova.connect(auth_url='http://127.0.0.1:9/v3', username='u',"
            " password='pw', project_name='p', timeout=2)\n"
            "try:\n"
            "    client.compute_services()\n"
            "except nova.NovaError as exc:\n"
            "    print(exc.kind)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'openstack'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == ["unreachable", "[]"]
