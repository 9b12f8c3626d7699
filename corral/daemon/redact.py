"""Redaction of values that look like secrets, in what corral writes for people.

What goes out is redacted at two choke points, so nothing needs to remember to: every log
record (``RedactingFilter``, message, fields and traceback) and every frame the control
socket sends (``status``, ``why``, ``events``, ``dead-letters``, command results). What counts
as a secret:

- the value of a key whose name contains one of the ``redact`` names (default ``password``,
  ``passwd``, ``secret``, ``token``, ``apikey``, ``credential``, ``dsn``; case, ``-`` and ``_``
  ignored), written ``key=value``, ``key: value``, ``'key': 'value'`` or ``"key": "value"``
  (as in actor args, exception messages and reprs);
- the password of a URL (``scheme://user:PASSWORD@host``);
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


def _loose(name: str) -> str:
    """*name* matching with any ``-`` or ``_`` between its letters."""
    letters = [re.escape(c) for c in name.lower() if c not in "-_"]
    return "[-_]?".join(letters)


class Redactor:
    """Replaces secret-looking values in text with ``MASK``."""

    def __init__(self, names: Iterable[str]) -> None:
        names = sorted({n.lower().replace("-", "").replace("_", "") for n in names if n})
        self._names = tuple(names)
        self._pairs: re.Pattern[str] | None = None
        if names:
            alternatives = "|".join(_loose(n) for n in names)
            self._pairs = re.compile(
                rf"(?i)([\w-]*(?:{alternatives})[\w-]*)"  # the key
                r"""(\\?["']?\s*[:=]\s*\\?["']?)"""  # its quotes and separator
                r"""((?!<redacted>)[^\s"'\\,;&)}\]]+)"""  # the value
            )
        self._url = re.compile(r"""(\b[a-zA-Z][\w+.-]*://[^/\s:@"']+:)([^@\s/"']+)(@)""")
        self._bearer = re.compile(r"(?i)(\bbearer\s+)((?!<redacted>)[\w.~+/-]+=*)")

    def __call__(self, text: str) -> str:
        lowered = text.lower()
        squeezed = lowered.replace("-", "").replace("_", "")
        if self._pairs is not None and any(n in squeezed for n in self._names):
            text = self._pairs.sub(rf"\1\2{MASK}", text)
        if "://" in text:
            text = self._url.sub(rf"\1{MASK}\3", text)
        if "bearer" in lowered:
            text = self._bearer.sub(rf"\1{MASK}", text)
        return text

    def encoded(self, frame: bytes) -> bytes:
        """*frame* (UTF-8 JSON) with its secrets redacted."""
        text = frame.decode()
        redacted = self(text)
        return frame if redacted == text else redacted.encode()


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
