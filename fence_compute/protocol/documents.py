"""Documents: ``-o metadata``, the XML that Pacemaker and pcs read, and ``--help``.

Both are made from the declaration alone, and neither validates nor logs
anything.  :func:`metadata_xml` is laid out exactly as fence-agents prints it
(``resource-agents.xml`` is the golden copy); long descriptions go to
:func:`usage_text` only.
"""

from __future__ import annotations

import functools
import textwrap

from fence_compute.protocol.options import MAX_INTEGER, MAX_SECONDS, FenceAgent, Option


def _xml_escape(text: str, entities: dict[str, str] | None = None) -> str:
    """``&``, ``<`` and ``>`` escaped, then ``entities``: what ``xml.sax.saxutils.escape``
    does, written here because importing it loads urllib.request, http.client and email
    (about 18 ms), and every fence action imports this module."""
    text = text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
    for character, entity in (entities or {}).items():
        text = text.replace(character, entity)
    return text


def _attr(value: str) -> str:
    return _xml_escape(value, {'"': "&quot;", "'": "&apos;"})


# How metadata's shortdesc marks an option accepted for compatibility only (the
# metadata has no long description of a parameter: pcs shows this one).
COMPAT_ONLY_MARK = " (compatibility only: no effect)"


def _shortdesc(option: Option) -> str:
    return option.shortdesc + (COMPAT_ONLY_MARK if option.compat_only else "")


def _default_text(option: Option) -> str | None:
    if option.default is None or option.secret:
        return None
    if isinstance(option.default, bool):
        return "1" if option.default else "0"
    if isinstance(option.default, float) and option.default.is_integer():
        return str(int(option.default))
    return str(option.default)


def metadata_xml(agent: FenceAgent) -> str:
    """The ``-o metadata`` document, laid out exactly as fence-agents prints it.

    It validates against fence-agents' ``metadata.rng``; deprecated spellings
    are parameters of their own with ``deprecated="1"`` and the current one says
    ``obsoletes="<old>"``.  Parameters have no ``<longdesc>`` (the schema has
    none); the long descriptions are in ``--help``.  An option accepted for
    compatibility only says so at the end of its shortdesc.
    """
    lines = [
        '<?xml version="1.0" ?>',
        f'<resource-agent name="{_attr(agent.name)}" shortdesc="{_attr(agent.shortdesc)}" >',
        f"<longdesc>{_xml_escape(agent.longdesc)}</longdesc>",
        f"<vendor-url>{_xml_escape(agent.vendor_url)}</vendor-url>",
        "<parameters>",
    ]
    for option in agent.parameters:
        obsoletes = option.deprecated_names[0] if option.deprecated_names else None
        lines.extend(_parameter_xml(option, option.name, obsoletes=obsoletes))
        for old in option.deprecated_names:
            lines.extend(_parameter_xml(option, old, deprecated=True))
    lines.append("</parameters>")
    lines.append("<actions>")
    for action in agent.actions:
        if action.name == "on" or action.automatic:
            automatic = "1" if action.automatic else "0"
            lines.append(f'\t<action name="{_attr(action.name)}" automatic="{automatic}"/>')
        else:
            lines.append(f'\t<action name="{_attr(action.name)}" />')
    lines.append("</actions>")
    lines.append("</resource-agent>")
    return "\n".join(lines) + "\n"


def _parameter_xml(
    option: Option, name: str, *, deprecated: bool = False, obsoletes: str | None = None
) -> list[str]:
    info = ""
    if deprecated:
        info = ' deprecated="1"'
    elif obsoletes:
        info = f' obsoletes="{_attr(obsoletes)}"'
    required = "1" if option.required else "0"
    default = _default_text(option)
    default_attr = f'default="{_attr(default)}" ' if default is not None else ""
    lines = [
        f'\t<parameter name="{_attr(name)}" unique="0" required="{required}"{info}>',
        f'\t\t<getopt mixed="{_attr(option.getopt_mixed)}" />',
    ]
    if option.choices is not None:
        lines.append(f'\t\t<content type="select" {default_attr} >')
        lines.extend(f'\t\t\t<option value="{_attr(c)}" />' for c in option.choices)
        lines.append("\t\t</content>")
    else:
        lines.append(f'\t\t<content type="{option.type}" {default_attr} />')
    lines.append(f'\t\t<shortdesc lang="en">{_xml_escape(_shortdesc(option))}</shortdesc>')
    lines.append("\t</parameter>")
    return lines


def usage_text(agent: FenceAgent) -> str:
    """``--help``: every option with its flags, default and long description; an option
    accepted for compatibility only starts its description with why it has no effect."""
    wrap = functools.partial(
        textwrap.fill, width=79, initial_indent=" " * 8, subsequent_indent=" " * 8
    )
    out = [
        f"{agent.name}: {agent.shortdesc}",
        "",
        "Usage:",
        f"\t{agent.name} [options]",
        f"\techo -e 'action=off\\nplug=NODE\\n...' | {agent.name}",
        "",
        "Without command-line options, options are read from stdin, one key=value per line.",
        "Lines end at a newline; a line or argument holding any other control character",
        f"is refused as a whole. Numbers are ASCII decimals: integers up to {MAX_INTEGER},",
        f"seconds up to {MAX_SECONDS:g}.",
        "",
        "Options:",
    ]
    for option in agent.parameters:
        head = f"   {option.getopt_mixed:<34} {_shortdesc(option)}"
        out.append(head)
        notes = []
        if option.compat_only:
            notes.append(f"Accepted for compatibility only; it has no effect: {option.compat_only}.")
        if option.longdesc:
            notes.append(option.longdesc)
        default = _default_text(option)
        if default is not None:
            notes.append(f"Default: {default}.")
        if option.choices:
            notes.append("One of: " + ", ".join(option.choices) + ".")
        if option.deprecated_names:
            notes.append("Also accepted as: " + ", ".join(option.deprecated_names) + ".")
        if option.name == "plug":
            notes.append("Pacemaker's nodename= is used when no plug is given.")
        if notes:
            out.append(wrap(" ".join(notes)))
    out.append("")
    out.append("Actions: " + ", ".join(a.name for a in agent.actions))
    out.append("")
    out.append("Exit status: 0 success, 2 status is off, 1 any failure.")
    return "\n".join(out) + "\n"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("openstack-instance-ha")
    except metadata.PackageNotFoundError:
        return "unknown"
