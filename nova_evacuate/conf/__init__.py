"""Configuration options of the evacuation engine, one module per group (Nova's pattern).

``register_opts(conf)`` registers every group; ``opts.list_opts`` feeds
``oslo-config-generator`` through the ``oslo.config.opts`` entry point.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from oslo_config import cfg, types

from nova_evacuate.conf import (
    cloud,
    consul,
    evacuation,
    instance_recovery,
    metrics,
    safety,
    storage,
)
from nova_evacuate.storage_map import parse_storage_map

_MODULES = (cloud, evacuation, safety, storage, instance_recovery, metrics, consul)

DEFAULT_CONFIG_FILE = "/etc/openstack-ha/openstack-ha.conf"


def register_opts(conf: cfg.ConfigOpts) -> None:
    for module in _MODULES:
        module.register_opts(conf)


class ConfigValueError(ValueError):
    """One option's value refused; the message is one line naming ``[group] option``."""


def load(config_files: list[str] | None = None) -> cfg.ConfigOpts:
    """Options from ``config_files`` (default: /etc/openstack-ha/openstack-ha.conf when it
    exists). Raises ``cfg.Error`` or :class:`ConfigValueError` (a ``ValueError``), each a
    one-line message, on bad files or values: every value is read and checked here (and
    ``[storage]`` as a whole: with rbd_pool set, its Ceph files must be readable), so a bad
    one stops the command before it acts, not mid-evacuation."""
    if config_files is None:
        config_files = [DEFAULT_CONFIG_FILE] if os.path.exists(DEFAULT_CONFIG_FILE) else []
    for path in config_files:
        if not os.path.isfile(path):
            raise cfg.ConfigFilesNotFoundError([path])
    conf = cfg.ConfigOpts()
    register_opts(conf)
    try:
        conf([], project="openstack-ha", default_config_files=config_files,
             default_config_dirs=[], use_env=False)
    except UnicodeDecodeError as exc:  # oslo's message does not say which file
        raise ConfigValueError(f"{', '.join(config_files)}: not UTF-8 text ({exc.reason} at"
                               f" byte {exc.start})") from None
    for module in _MODULES:
        for group, options in module.list_opts().items():
            for opt in options:
                check_value(f"[{group.name}] {opt.name}", opt, _read(conf, group.name, opt))
    storage.check_storage(conf)  # the options that only make sense together
    return conf


def _read(conf: cfg.ConfigOpts, group: str, opt: cfg.Opt) -> Any:
    try:
        return getattr(conf[group], opt.dest)
    except (cfg.Error, ValueError) as exc:
        # oslo's message names the source as a LocationInfo repr: keep only its reason
        reason = str(exc).rpartition(" is not valid: ")[2] or str(exc)
        raise ConfigValueError(f"[{group}] {opt.name}: {_one_line(reason)}") from None


def check_value(where: str, opt: cfg.Opt, value: Any) -> None:
    """Refuse what oslo.config lets through: NaN (no comparison with it is ever true, so
    ``min``/``max`` pass it and a brake compared against it never engages), infinities, an
    empty number (oslo reads ``option =`` as None), a number outside the option's range, and
    ``[evacuation]`` patterns and pairs the planner could not use."""
    if isinstance(opt.type, types.Integer | types.Float):
        _check_number(where, opt, value)
    elif opt.name == "exclude_names" and value:
        for pattern in value:
            try:
                re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as exc:
                raise ConfigValueError(f"{where}: {pattern!r} is not a regular expression:"
                                       f" {_one_line(str(exc))}") from None
    elif opt.name == "storage_map" and value:
        try:
            parse_storage_map(value)
        except ValueError as exc:
            raise ConfigValueError(f"{where}: {_one_line(str(exc))}") from None
    elif opt.name == "exclude_metadata" and value:
        for pair in value:
            key, equals, _ = pair.partition("=")
            if not equals or not key:
                raise ConfigValueError(f"{where}: {pair!r} is not key=value")


def _check_number(where: str, opt: cfg.Opt, value: Any) -> None:
    if value is None:
        raise ConfigValueError(f"{where}: empty; a number is needed (leave the option out for"
                               f" its default, {opt.default})")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigValueError(f"{where} = {value!r}: not a number")
    if not math.isfinite(value):
        raise ConfigValueError(f"{where} = {value}: not a finite number")
    low, high = opt.type.min, opt.type.max
    if low is not None and value < low:
        raise ConfigValueError(f"{where} = {value}: below its minimum {low}")
    if high is not None and value > high:
        raise ConfigValueError(f"{where} = {value}: above its maximum {high}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
