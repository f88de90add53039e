"""Which cloud a command talks to: one precedence for every command that connects.

The cloud (a clouds.yaml entry), first found wins:

1. ``--os-cloud NAME`` on the command line (``--cloud NAME`` is the same option, the name
   ``nova-evacuate`` has always used);
2. ``[cloud] cloud`` when a loaded configuration file sets it (``--config-file``, default
   ``/etc/openstack-ha/openstack-ha.conf`` when it exists); set to nothing, it is an error;
3. the ``OS_CLOUD`` environment variable, when set and not blank;
4. openstacksdk's cloud of the ``OS_*`` variables (``OS_AUTH_URL``, ``OS_USERNAME``,
   ``OS_PASSWORD``, ``OS_PROJECT_NAME``, ...: what an ``openrc`` file exports), when
   ``OS_AUTH_URL`` is set; its name is ``envvars`` (``OS_CLOUD_NAME`` renames it, and
   ``OS_CLOUD=envvars`` or ``--os-cloud envvars`` selects it too);
5. the default of ``[cloud] cloud``: ``openstack``.

The clouds.yaml, by the same rule: ``[cloud] clouds_yaml`` when a loaded configuration
file sets it (that file alone), else the file ``OS_CLIENT_CONFIG_FILE`` names (then, if it
does not exist, openstacksdk's search path, as openstacksdk reads it), else the search path
(the current directory, ``~/.config/openstack``, ``/etc/openstack``).

Why the configuration file beats the environment: a deployed file is what the cluster's
NovaEvacuate reads (Pacemaker gives it no ``OS_*`` variable), and a command run from an
operator's shell, where an ``openrc`` was sourced for another cloud, must talk to the same
cloud as the cluster rather than be redirected silently. Without a configuration file (or
one that leaves ``[cloud]`` out), a command behaves as the ``openstack`` client: ``OS_CLOUD``,
``OS_CLIENT_CONFIG_FILE`` and the ``OS_*`` variables apply. Unlike the ``openstack`` client,
``OS_*`` variables are never merged into a cloud named otherwise (a stray ``OS_PASSWORD``
does not change the clouds.yaml entry's password), and the ``OS_*`` cloud is chosen by
``OS_AUTH_URL`` rather than by any ``OS_*`` variable (openstacksdk would let an exported
``OS_CACERT`` alone replace the default cloud with one that cannot authenticate).

:func:`add_cloud_arguments` adds the options to a parser, :func:`select_cloud` (and
:func:`choose_cloud`, for a parsed command line) applies the order. Nothing here reads a
file or the network: ``conf`` is the loaded configuration (oslo.config's ``ConfigOpts``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from openstack_ha.timeline import terminal_text

ENV_CLOUD = "OS_CLOUD"
ENV_CLOUDS_YAML = "OS_CLIENT_CONFIG_FILE"
ENV_AUTH_URL = "OS_AUTH_URL"
ENV_CLOUD_NAME = "OS_CLOUD_NAME"  # openstacksdk's name for the cloud of the OS_* variables
SDK_ENV_CLOUD = "envvars"  # ... when OS_CLOUD_NAME is not set
MAX_CLOUD_NAME = 255
SEARCH_PATH = "openstacksdk's search path"
_SEARCHED = "the current directory, ~/.config/openstack and /etc/openstack"
_NAMES_SHOWN = 10  # a clouds.yaml's clouds listed in a message, at most


@dataclass(frozen=True)
class CloudChoice:
    """The cloud a command talks to, and where each part of the choice came from."""

    name: str
    source: str  # for messages: "--os-cloud", "[cloud] cloud in FILE", "OS_CLOUD", ...
    # The clouds.yaml named, or None for openstacksdk's search path; alone: that file only
    # ([cloud] clouds_yaml), else it first and then the search path (OS_CLIENT_CONFIG_FILE).
    clouds_yaml: str | None = None
    clouds_yaml_source: str = SEARCH_PATH
    clouds_yaml_alone: bool = False
    env_cloud: bool = False  # the cloud is openstacksdk's cloud of the OS_* variables


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


_DOUBLE_DASH = ("'--' cannot be a value here: argparse takes it for the end of the options"
                " (give an id, or another name)")


class StoreText(argparse.Action):
    """argparse's ``store`` for a text value, refusing ``--opt=--``: argparse drops a value
    of ``--`` and hands the action an empty list, which would reach the command as the
    option's value."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not isinstance(values, str):
            raise argparse.ArgumentError(self, _DOUBLE_DASH)
        setattr(namespace, self.dest, values)


class AppendText(argparse.Action):
    """argparse's ``append`` for text values, refusing ``--opt=--`` as `StoreText` does."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not isinstance(values, str):
            raise argparse.ArgumentError(self, _DOUBLE_DASH)
        # a new list each time: the default one is shared with the parser
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])


def add_cloud_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """``--os-cloud``/``--cloud`` (dest ``cloud``) and ``--config-file`` (dest
    ``config_files``, repeatable). ``defaults=False`` leaves an option out of the namespace
    when it is not given: for a subcommand's parser, so that the same options given before
    the subcommand are not overwritten by the subcommand's defaults (argparse copies every
    key of the subcommand's namespace over the main one)."""
    default: Any = None if defaults else argparse.SUPPRESS
    parser.add_argument("--os-cloud", "--cloud", dest="cloud", type=cloud_arg, metavar="NAME",
                        action=StoreText, default=default,
                        help="clouds.yaml entry; else [cloud] cloud of the configuration file,"
                             f" else {ENV_CLOUD}, else the OS_* variables when {ENV_AUTH_URL}"
                             " is set, else 'openstack'")
    parser.add_argument("--config-file", action=AppendText, dest="config_files", metavar="FILE",
                        default=default,
                        help="oslo.config file (default /etc/openstack-ha/openstack-ha.conf)")


def set_in_file(conf: Any, group: str, name: str) -> str | None:
    """The configuration file that sets ``[group] name``, or None when no loaded file does
    (the option is at its default). Asks oslo.config where the value came from rather than
    comparing it with the default: a file may well set the default value."""
    from oslo_config import cfg

    where = conf.get_location(name, group)
    if where is None or where.location is not cfg.Locations.user:
        return None
    return str(where.detail or "a configuration file")


def env_cloud_name(environ: Mapping[str, str]) -> str:
    """The name openstacksdk gives the cloud of the ``OS_*`` variables."""
    return environ.get(ENV_CLOUD_NAME) or SDK_ENV_CLOUD


def select_cloud(given: str | None, conf: Any, environ: Mapping[str, str]) -> CloudChoice:
    """The cloud to use, in the order of the module's docstring: ``given`` from the command
    line, ``conf`` the loaded configuration, ``environ`` the process environment. A name is
    empty only when a configuration file sets ``[cloud] cloud`` to nothing; the caller
    refuses it (:func:`nova_evacuate.nova.connect_to_cloud` does)."""
    env_key = env_cloud_name(environ)
    from_file = set_in_file(conf, "cloud", "cloud")
    from_env = (environ.get(ENV_CLOUD) or "").strip()
    if given:
        name, source = given, "--os-cloud"
    elif from_file is not None:
        name, source = conf.cloud.cloud or "", f"[cloud] cloud in {from_file}"
    elif from_env:
        name, source = from_env, ENV_CLOUD
    elif (environ.get(ENV_AUTH_URL) or "").strip():
        name, source = env_key, f"the OS_* variables ({ENV_AUTH_URL} is set)"
    else:
        name, source = conf.cloud.cloud or "", "the default of [cloud] cloud"
    path, path_source, alone = _clouds_yaml(conf, environ)
    return CloudChoice(name, source, path, path_source, alone, env_cloud=name == env_key)


def _clouds_yaml(conf: Any, environ: Mapping[str, str]) -> tuple[str | None, str, bool]:
    from_file = set_in_file(conf, "cloud", "clouds_yaml")
    if from_file is not None and conf.cloud.clouds_yaml:  # set to nothing: not set
        return conf.cloud.clouds_yaml, f"[cloud] clouds_yaml in {from_file}", True
    if environ.get(ENV_CLOUDS_YAML):  # openstacksdk takes any value that is not empty
        return environ[ENV_CLOUDS_YAML], ENV_CLOUDS_YAML, False
    return None, SEARCH_PATH, False


def choose_cloud(args: argparse.Namespace, conf: Any, environ: Mapping[str, str]) -> CloudChoice:
    """:func:`select_cloud` for a command line parsed with :func:`add_cloud_arguments`."""
    return select_cloud(getattr(args, "cloud", None), conf, environ)


def cloud_name(args: argparse.Namespace, conf: Any, environ: Mapping[str, str]) -> str:
    """The name :func:`choose_cloud` chooses."""
    return choose_cloud(args, conf, environ).name


def missing_cloud(choice: CloudChoice, read: str | None, names: Iterable[str],
                  exists: Callable[[str], bool] = os.path.exists) -> str:
    """Why ``choice`` is not a cloud of the clouds.yaml openstacksdk read (``read``, None when
    it read none; ``names``: its clouds), in one line that names where the cloud's name and
    the file came from: "cloud 'x' from OS_CLOUD: not in /path/clouds.yaml (its clouds: a,
    b)". Cloud names are no secret; a password never is in one."""
    head = f"cloud {choice.name!r} from {choice.source}"
    if choice.env_cloud:
        return (f"{head}: openstacksdk's cloud of the OS_* variables, and none of them is"
                f" set (set {ENV_AUTH_URL} and the others, as an openrc file does)")
    named = choice.clouds_yaml
    if not read:
        if not named:
            return f"{head}: no clouds.yaml found in {_SEARCHED}"
        why = "cannot be read as a clouds.yaml" if exists(named) else "does not exist"
        rest = "" if choice.clouds_yaml_alone else f", and none was found in {_SEARCHED}"
        return f"{head}: {named} ({choice.clouds_yaml_source}) {why}{rest}"
    listed = sorted(names)
    some = ", ".join(repr(n) for n in listed[:_NAMES_SHOWN]) + (
        ", ..." if len(listed) > _NAMES_SHOWN else "")
    text = f"{head}: not in {read} ({f'its clouds: {some}' if listed else 'it has no cloud'})"
    if named and read != named:
        why = "cannot be read as a clouds.yaml" if exists(named) else "does not exist"
        text += f"; {named} ({choice.clouds_yaml_source}) {why}"
    return text
