"""Configuration options of the evacuation engine, one module per group (Nova's pattern).

``register_opts(conf)`` registers every group; ``opts.list_opts`` feeds
``oslo-config-generator`` through the ``oslo.config.opts`` entry point.
"""

from oslo_config import cfg

from nova_evacuate.conf import cloud, evacuation, safety

_MODULES = (cloud, evacuation, safety)


def register_opts(conf: cfg.ConfigOpts) -> None:
    for module in _MODULES:
        module.register_opts(conf)
