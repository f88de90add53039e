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

DEFAULT_CONFIG_FILE = "/etc/openstack-ha/openstack-ha.conf"


def load(config_files: list[str] | None = None) -> cfg.ConfigOpts:
    """Options from ``config_files`` (default: /etc/openstack-ha/openstack-ha.conf when it
    exists). Raises ``cfg.Error`` (or ``SystemExit`` from oslo's own parser) on bad files."""
    import os

    if config_files is None:
        config_files = [DEFAULT_CONFIG_FILE] if os.path.exists(DEFAULT_CONFIG_FILE) else []
    for path in config_files:
        if not os.path.isfile(path):
            raise cfg.ConfigFilesNotFoundError([path])
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], project="openstack-ha", default_config_files=config_files, default_config_dirs=[],
         use_env=False)
    # Reading every option once turns a bad value into an error now, not mid-evacuation.
    for group in ("cloud", "evacuation", "safety"):
        for name in conf[group]:
            getattr(conf[group], name)
    return conf
