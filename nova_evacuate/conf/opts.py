"""Entry point for ``oslo-config-generator --namespace openstack_ha``."""

from nova_evacuate.conf import _MODULES


def list_opts():
    return [(group, opts) for module in _MODULES for group, opts in module.list_opts().items()]
