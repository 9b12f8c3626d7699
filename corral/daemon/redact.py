"""Redaction of values that look like secrets, in what corral writes for people.

What goes out is redacted at two choke points, so nothing needs to remember to: every log
record (``RedactingFilter``, message, fields and traceback) and every frame the control
socket sends (``status``, ``why``, ``events``, ``dead-letters``, command results). What counts
as a secret:

- the value of a key whose name contains one of the ``redact`` names (default ``password``,
  ``passwd``, ``secret``, ``token``, ``apikey``, ``credential``, ``dsn``; case, ``-`` and ``_``
  ignored), written ``key=value``, ``key: value``, ``'key': 'value'`` or ``"key": "value"``
  (as in actor args, exception messages and reprs); a bare value runs to a blank (``a,b`` is
  one value), a list or tuple value (``tokens=['a', 'b']``, ``password=(x)``) to its closing
  bracket;
- the password of a URL (``scheme://user:PASSWORD@host``, the user possibly empty);
- a bearer token (``Bearer TOKEN``).

Each becomes ``<redacted>``; the key, the user and the host stay, so the line still says
what it was about.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("MASK", "RedactingFilter", "Redactor")

MASK: Final = "<redacted>"


# Every pattern is linear in its input: a key match begins at a secret name and takes at most
# 64 more key characters; URLs begin only where a token begins; the rest is matched
# possessively (``++``, Python 3.11), so no input makes a pattern backtrack.
_CLOSE: Final = r"""(?:\\?["'])?[ \t]*+[:=][ \t]*+"""  # a key's closing quote, ":" or "="
_QUOTED_VALUE: Final = r"""(?:\\?)b?["'])((?!<redacted>)[^"'\\\n]++)"""  # up to the quote
_BARE_CHARS: Final = r"""[^\s"'\\,;&(){}\[\]<>]++"""
# up to a blank; "a,b" is one value, "a, b" two
_BARE_VALUE: Final = rf""")((?!<redacted>|b["']){_BARE_CHARS}(?:,{_BARE_CHARS})*+)"""
# a list or tuple: ['a', 'b'], (x); all of it up to its closing bracket (or the line's end)
_LIST_VALUE: Final = r""")[\[(]((?!<redacted>)[^\])\n]++)"""
_URL: Final = re.compile(  # scheme://user:PASSWORD@host, the user possibly empty
    r"""(?<![\w+.-])([a-zA-Z][\w+.-]*+://[^/\s:@"'\\]*+:)([^@\s/"'\\]++)@"""
)
_SCHEME: Final = re.compile(
    r"(?i)(?<![\w-])((?:bearer|basic)[ \t]++)((?!<redacted>)[\w.~+/-]++=*+)"
)


def _loose(name: str) -> str:
    """*name* matching with any ``-`` or ``_`` between its letters."""
    return "[-_]?".join(re.escape(c) for c in name)


class Redactor:
    """Replaces secret-looking values in text with ``MASK``."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = tuple(sorted({_squeeze(n) for n in names if n}))
        self._pairs: tuple[re.Pattern[str], ...] = ()
        if self._names:
            # From the name on, at most 64 more key characters: each attempt is bounded.
            key = rf"(?i)((?:{'|'.join(map(_loose, self._names))})[\w-]{{0,64}}+"
            self._pairs = (
                re.compile(key + _CLOSE + _QUOTED_VALUE),  # 'password': 'x', \"token\": \"x\"
                re.compile(key + _CLOSE + _LIST_VALUE),  # tokens=['a', 'b'], password=(x)
                re.compile(key + _CLOSE + _BARE_VALUE),  # password=x, token: x, secret=a,b
            )

    def __call__(self, text: str) -> str:
        lowered = text.lower()
        squeezed = lowered.replace("-", "").replace("_", "") if self._names else ""
        if any(name in squeezed for name in self._names):
            for pattern in self._pairs:
                text = pattern.sub(lambda m: m.group(0)[: m.start(2) - m.start(0)] + MASK, text)
        if "://" in text:
            text = _URL.sub(rf"\1{MASK}@", text)
        if "bearer" in lowered or "basic" in lowered:
            text = _SCHEME.sub(rf"\1{MASK}", text)
        return text

    def encoded(self, frame: bytes) -> bytes:
        """*frame* (UTF-8 JSON) with its secrets redacted; the result is still valid JSON,
        since the mask has neither a backslash nor a quote and no pattern takes a quote or a
        backslash but a list's whole content (whose escapes end before its bracket: valid
        JSON has no ``\\]`` or ``\\)``)."""
        text = frame.decode()
        redacted = self(text)
        return frame if redacted == text else redacted.encode()


def _squeeze(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "")


class RedactingFilter(logging.Filter):
    """Redacts a record's message, string fields and traceback before any handler sees it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = self.redact(message), None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {
                k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True
