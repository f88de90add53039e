"""Redaction: credentials in URLs and secret values, shown as ``***``.

Pure, total string functions: :func:`redact_url` hides a URL's user info, query
string and fragment; :func:`url_secrets` lists those parts, and
:func:`redact_text` hides them, every secret value, and the user info of any URL
in free text such as an exception's message.  The other modules use these for
every message, log line and repr; this one imports none of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The user info of any URL in free text (an exception's message): always a credential.
_USERINFO_IN_TEXT_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]+@")


def _split_url(url: str) -> tuple[str, str | None, str, str | None, str | None]:
    """(``scheme://``, user info, host and path, query, fragment), by hand.

    urllib refuses some malformed URLs, and a redaction must never fail.  The user
    info runs to the *last* ``@``: a password holding ``/``, ``?`` or ``#`` (unencoded)
    is then still hidden, at the price of hiding too much of an odd URL.
    """
    match = _URL_SCHEME_RE.match(url)
    prefix = match.group() if match else ""
    rest = url[len(prefix) :]
    userinfo = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
    rest, hash_mark, fragment = rest.partition("#")
    rest, question_mark, query = rest.partition("?")
    return (
        prefix,
        userinfo,
        rest,
        query if question_mark else None,
        fragment if hash_mark else None,
    )


def redact_url(url: str) -> str:
    """``url`` with its user info, query string and fragment shown as ``***``.

    ``https://admin:pw@keystone:5000/v3?token=x`` gives ``https://***@keystone:5000/v3?***``.
    Pure, and total: any string gives a string.
    """
    prefix, userinfo, rest, query, fragment = _split_url(url)
    return (
        prefix
        + ("***@" if userinfo is not None else "")
        + rest
        + ("?***" if query else "?" if query is not None else "")
        + ("#***" if fragment else "#" if fragment is not None else "")
    )


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that :func:`redact_url` hides, to redact them from free text.

    The user info, its password alone, the query and the fragment, as written
    and percent-decoded (a library may print either).
    """
    _, userinfo, _, query, fragment = _split_url(url)
    parts = [userinfo, query, fragment]
    if userinfo and ":" in userinfo:
        parts.append(userinfo.partition(":")[2])
    found: list[str] = []
    for part in parts:
        if part:
            found.extend(dict.fromkeys((part, unquote(part))))
    return tuple(found)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and the user info of any URL in it, shown as ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO_IN_TEXT_RE.sub(r"\1***@", text)
