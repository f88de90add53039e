"""The fence-agents protocol, declared once and driven by data.

A fence agent is run by Pacemaker (``pacemaker-fenced``) with no arguments and
its parameters on stdin, one ``key=value`` per line, or by a person with argv
flags (``fence_nova -o status -n compute-1``).  It answers through its exit
code: 0 success, 2 for ``status`` when the target is off, 1 for every failure.
``-o metadata`` prints an XML description of its parameters and actions that
Pacemaker and pcs read.

This package is that protocol for any agent, compatible with ClusterLabs
fence-agents' ``fencing.py`` (same parameter names, deprecated aliases, XML
layout and exit codes), without its global, stringly typed option dict:

* :class:`Option`, :class:`FenceAction` and :class:`FenceAgent` declare an
  agent's interface as frozen data.  One table drives stdin parsing, argv
  parsing, ``metadata``, ``--help``, validation and ``validate-all``.
* :func:`run` parses (argv, or stdin when argv is empty), validates, resolves
  secrets and calls the agent's handler for the action.  Handlers receive a
  frozen, typed :class:`Options` and return an exit code; they signal a failure
  by raising :class:`FenceError`.  Nothing here calls ``sys.exit``.

Secret values (options declared ``secret=True``) never appear in a log line, an
exception text or an error message: they are held as :class:`Secret` and are
redacted from anything a handler raises.

No OpenStack library is imported here: ``metadata`` must stay fast.

The modules, each importing only those before it:

* :mod:`.redaction`: credentials in URLs and secret values shown as ``***``.
* :mod:`.options`: the declarations (``Option``, ``FenceAction``, ``FenceAgent``,
  ``STANDARD_OPTIONS``, ``Secret``, ``ExitCode``, ``FenceError``) and ``Options``.
* :mod:`.parsing`: stdin and argv into what was said, untyped.
* :mod:`.secrets`: a secret's value from itself, its ``_script`` or its ``_file``.
* :mod:`.validation`: what was said into the typed ``Options`` for one action.
* :mod:`.documents`: ``metadata`` and ``--help``.
* :mod:`.runner`: :func:`run`, one invocation from input to exit code.

Import from the package, not from the modules: the names below are its interface.
"""

from __future__ import annotations

# The names in __all__ are the interface.  Imported "as" themselves: limits the
# unit tests read (they replace the secret script's runner and timeout in
# ``protocol.secrets``, where they are used).
from fence_compute.protocol.documents import COMPAT_ONLY_MARK, metadata_xml, usage_text
from fence_compute.protocol.options import (
    DELAY_ACTIONS,
    FENCE_AGENTS_ALIASES,
    PLUG_ACTIONS,
    STANDARD_OPTIONS,
    ExitCode,
    FenceAction,
    FenceAgent,
    FenceError,
    Option,
    Options,
    OptionType,
    Secret,
)
from fence_compute.protocol.options import MAX_INTEGER as MAX_INTEGER
from fence_compute.protocol.options import MAX_SECONDS as MAX_SECONDS
from fence_compute.protocol.parsing import forbidden_character, show_value
from fence_compute.protocol.redaction import redact_text, redact_url, url_secrets
from fence_compute.protocol.runner import MAX_STDIN_BYTES as MAX_STDIN_BYTES
from fence_compute.protocol.runner import Handler, run

__all__ = [
    "COMPAT_ONLY_MARK",
    "DELAY_ACTIONS",
    "FENCE_AGENTS_ALIASES",
    "PLUG_ACTIONS",
    "STANDARD_OPTIONS",
    "ExitCode",
    "FenceAction",
    "FenceAgent",
    "FenceError",
    "Handler",
    "Option",
    "OptionType",
    "Options",
    "Secret",
    "forbidden_character",
    "metadata_xml",
    "redact_text",
    "redact_url",
    "run",
    "show_value",
    "url_secrets",
    "usage_text",
]
