"""Validation: what was said (a ``_Raw``) into the typed :class:`Options` for one action.

:func:`build_options` types every value, fills in defaults and Pacemaker's
conventions (``nodename`` as the plug, ``disable_timeout`` under
pacemaker-fenced), checks required options, resolves secrets and runs the
agent's ``check``.  Every problem is one line naming the option, never showing a
secret's value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fence_compute.protocol.options import (
    PLUG_ACTIONS,
    FenceAgent,
    Options,
    Secret,
    Value,
    _convert,
)
from fence_compute.protocol.parsing import _describe_bad, _Raw
from fence_compute.protocol.secrets import _resolve_secret


@dataclass(frozen=True)
class _Parsed:
    options: Options | None
    errors: tuple[str, ...]
    # Secrets resolved from a _script or _file: redacted from the errors too.
    secrets: tuple[str, ...] = ()


def build_options(agent: FenceAgent, raw: _Raw, action: str) -> _Parsed:
    """Type, default, check and resolve secrets: the Options for ``action``."""
    errors = list(raw.errors)
    values: dict[str, Value] = {}
    for option in agent.parameters:
        if option.name in raw.values:
            given, _ = raw.values[option.name]
            value, problem = _convert(option, given)
            if problem:
                errors.append(_describe_bad(option, given, problem))
                continue
            values[option.name] = value
        else:
            values[option.name] = option.typed_default
    values["action"] = action
    given_names = set(raw.values)

    if "plug" in values and not values["plug"] and raw.nodename:
        # Pacemaker sends the target as port= (pcmk_host_argument) and as
        # nodename=; when there is no port/plug, the node name is the target.
        values["plug"] = raw.nodename
        given_names.add("plug")
    if agent.declares("verbose_level") and "verbose_level" not in raw.values:
        values["verbose_level"] = raw.verbose_count or (1 if values.get("verbose") else 0)
    if (
        agent.declares("disable_timeout")
        and "disable_timeout" not in raw.values
        # pacemaker-fenced sets exactly this (lower-case) name for its agents.
        and os.environ.get("PCMK_service") == "pacemaker-fenced"  # noqa: SIM112
    ):
        values["disable_timeout"] = True  # fence-agents' default under Pacemaker 2.0+

    for option in agent.parameters:
        if not option.required or option.name == "action":
            continue
        if option.name == "plug" and action not in PLUG_ACTIONS:
            continue
        if values.get(option.name) in (None, ""):
            also = ", ".join(f"'{n}'" for n in option.deprecated_names)
            hint = f" (also accepted as {also})" if also else ""
            errors.append(f"option '{option.name}' is required for action '{action}'{hint}")

    if errors:
        return _Parsed(None, tuple(errors))

    for option in agent.parameters:
        if option.secret:
            secret, problem = _resolve_secret(option, raw.values)
            if problem:
                errors.append(problem)
            values[option.name] = secret
            companions = (option.name, f"{option.name}_script", f"{option.name}_file")
            if any(name in raw.values for name in companions):
                given_names.add(option.name)
    resolved = tuple(v.reveal() for v in values.values() if isinstance(v, Secret) and v)
    if errors:
        return _Parsed(None, tuple(errors), resolved)

    options = Options(
        values,
        types={o.name: o.type for o in agent.parameters},
        given=given_names,
        nodename=raw.nodename,
        urls=[o.name for o in agent.parameters if o.url],
    )
    if agent.check is not None:
        errors.extend(agent.check(options))
    return _Parsed(None if errors else options, tuple(errors), options.secret_values())
