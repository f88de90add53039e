"""Which cloud a command talks to, chosen as the ``openstack`` client chooses it.

The cloud (a clouds.yaml entry), first found wins:

1. ``--os-cloud NAME`` on the command line (``--cloud NAME`` is the same option, the name
   ``nova-evacuate`` has always used);
2. the ``OS_CLOUD`` environment variable, when set and not empty;
3. ``[cloud] cloud`` of the configuration (``--config-file``, default
   ``/etc/openstack-ha/openstack-ha.conf`` when it exists; that option's own default is
   ``openstack``).

Which clouds.yaml holds it is openstacksdk's choice, as for every OpenStack client: the
first of these that exists, and only that one, is read: the file ``OS_CLIENT_CONFIG_FILE``
names, then ``[cloud] clouds_yaml`` when set, else its search path (the current
directory, ``~/.config/openstack``, ``/etc/openstack``). So, for both, the command line
beats the environment, which beats the configuration file.

:func:`add_cloud_arguments` adds the options to a parser, :func:`choose_cloud` applies the
order. Nothing here reads a file or the network: ``conf`` is the loaded configuration.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openstack_ha.timeline import terminal_text

ENV_CLOUD = "OS_CLOUD"
MAX_CLOUD_NAME = 255


@dataclass(frozen=True)
class CloudChoice:
    name: str
    source: str  # where it came from, for messages: "--os-cloud", "OS_CLOUD" or "[cloud] cloud"


def cloud_arg(text: str) -> str:
    """A cloud name from the command line: 1 to 255 printable characters, no whitespace
    (a clouds.yaml key as people write them; one token, so it reads unambiguously in a
    message)."""
    if not text or len(text) > MAX_CLOUD_NAME or terminal_text(text) != text \
            or text.split() != [text]:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not a cloud name (1 to {MAX_CLOUD_NAME} printable characters,"
            f" no spaces)")
    return text


def add_cloud_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """``--os-cloud``/``--cloud`` (dest ``cloud``) and ``--config-file`` (dest
    ``config_files``, repeatable). ``defaults=False`` leaves an option out of the namespace
    when it is not given: for a subcommand's parser, so that the same options given before
    the subcommand are not overwritten by the subcommand's defaults (argparse copies every
    key of the subcommand's namespace over the main one)."""
    default: Any = None if defaults else argparse.SUPPRESS
    parser.add_argument("--os-cloud", "--cloud", dest="cloud", type=cloud_arg, metavar="NAME",
                        default=default,
                        help=f"clouds.yaml entry (beats {ENV_CLOUD}, which beats [cloud] cloud)")
    parser.add_argument("--config-file", action="append", dest="config_files", metavar="FILE",
                        default=default,
                        help="oslo.config file (default /etc/openstack-ha/openstack-ha.conf)")


def choose_cloud(args: argparse.Namespace, conf: Any, environ: Mapping[str, str]) -> CloudChoice:
    """The cloud to use, in the order of the module's docstring. ``conf``: anything with
    ``conf.cloud.cloud`` (the loaded oslo.config options)."""
    given = getattr(args, "cloud", None)
    if given:
        return CloudChoice(given, "--os-cloud")
    from_env = (environ.get(ENV_CLOUD) or "").strip()
    if from_env:
        return CloudChoice(from_env, ENV_CLOUD)
    return CloudChoice(conf.cloud.cloud or "", "[cloud] cloud")


def cloud_name(args: argparse.Namespace, conf: Any, environ: Mapping[str, str]) -> str:
    """The name :func:`choose_cloud` chooses."""
    return choose_cloud(args, conf, environ).name
