"""Keep credentials that users put in URLs out of everything emtbench writes.

A judge or model endpoint may carry credentials in its URL (``https://user:password@proxy/v1``, or
``?api_key=...``). lm-eval records ``--metadata`` and ``--model_args`` in every results file, so
emtbench hands lm-eval the redacted form and keeps the real URL in this process only
(:func:`hide_url` / :func:`reveal_url`); :func:`redact_text` scrubs any text that is about to be
written or logged.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
SECRET_QUERY_KEYS = frozenset(
    {"key", "api_key", "apikey", "api-key", "token", "access_token", "auth", "password", "secret", "sig"}
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s?#\"<>]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:" + "|".join(re.escape(k) for k in sorted(SECRET_QUERY_KEYS)) + r")=)[^&#\s\"'<>]+"
)
_hidden: dict[str, str] = {}
_lock = threading.Lock()


def redact_url(url: str) -> str:
    """``url`` with its user:password and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if not parts.scheme or not parts.netloc:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL credential in free text (error messages, configs) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def has_secret(text: str) -> bool:
    return redact_text(text) != text


def hide_url(url: str) -> str:
    """The redacted form of ``url``, remembered in this process so :func:`reveal_url` can undo it."""
    redacted = redact_url(url)
    if redacted != url:
        with _lock:
            _hidden[redacted] = url
    return redacted


def reveal_url(url: str | None) -> str | None:
    """The real URL behind a form :func:`hide_url` returned (any other URL comes back unchanged)."""
    if url is None:
        return None
    with _lock:
        return _hidden.get(url, url)
