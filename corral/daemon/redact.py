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
    from collections.abc import Callable, Iterable

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
# A list or tuple, ['a', 'b'] or (x), one level of brackets deep inside it ([['a'], ['b']]):
# its content up to its closing bracket (or the line's end). In a JSON frame it also ends
# where the JSON string holding it ends (an unescaped quote) or at an escaped newline, and an
# escape is taken whole, so that what is masked never crosses the frame's structure.
_ITEM: Final = r"""[^\[\]()\n]"""
_FRAME_ITEM: Final = r"""(?:[^\[\]()\n"\\]|\\[^n])"""


def _list_value(item: str) -> str:
    return rf""")[\[(]((?!<redacted>)(?:{item}|[\[(]{item}*+[\])])++)"""


_JSON_KEY_END: Final = re.compile(r"""(?<!\\)"[ \t]*+:[ \t]*+$""")  # a frame's own "key":
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
        self._frame_pairs: tuple[re.Pattern[str], ...] = ()
        if self._names:
            # From the name on, at most 64 more key characters: each attempt is bounded.
            key = rf"(?i)((?:{'|'.join(map(_loose, self._names))})[\w-]{{0,64}}+"
            quoted = re.compile(key + _CLOSE + _QUOTED_VALUE)  # 'password': 'x', \"token\": \"x\"
            bare = re.compile(key + _CLOSE + _BARE_VALUE)  # password=x, token: x, secret=a,b
            # tokens=['a', 'b'], password=(x)
            self._pairs = (quoted, re.compile(key + _CLOSE + _list_value(_ITEM)), bare)
            self._frame_pairs = (quoted, re.compile(key + _CLOSE + _list_value(_FRAME_ITEM)), bare)

    def __call__(self, text: str) -> str:
        return self._redact(text, self._pairs, _masked)

    def may_hold_secrets(self, text: str) -> bool:
        """Whether *text* has anything a pattern could mask (a redact name, a URL, a bearer
        or basic scheme): False means redacting it changes nothing."""
        lowered = text.lower()
        if "://" in text or "bearer" in lowered or "basic" in lowered:
            return True
        squeezed = lowered.replace("-", "").replace("_", "")
        return any(name in squeezed for name in self._names)

    def _redact(
        self,
        text: str,
        pairs: tuple[re.Pattern[str], ...],
        masked: Callable[[re.Match[str]], str],
    ) -> str:
        lowered = text.lower()
        squeezed = lowered.replace("-", "").replace("_", "") if self._names else ""
        if any(name in squeezed for name in self._names):
            for pattern in pairs:
                text = pattern.sub(masked, text)
        if "://" in text:
            text = _URL.sub(rf"\1{MASK}@", text)
        if "bearer" in lowered or "basic" in lowered:
            text = _SCHEME.sub(rf"\1{MASK}", text)
        return text

    def encoded(self, frame: bytes) -> bytes:
        """*frame* (UTF-8 JSON) with its secrets redacted; the result is still valid JSON:
        no mask crosses the end of a JSON string or splits an escape, and a bare value of the
        frame's own (``"token": 5``) becomes the string ``"<redacted>"``."""
        text = frame.decode()
        redacted = self._redact(text, self._frame_pairs, _frame_masked)
        return frame if redacted == text else redacted.encode()


def _masked(match: re.Match[str]) -> str:
    """The key part of *match*, then the mask for its value (group 2)."""
    return match.group(0)[: match.start(2) - match.start(0)] + MASK


def _frame_masked(match: re.Match[str]) -> str:
    """As ``_masked``, in a JSON frame: a value of the frame's own (``"token": 5``, not text
    inside a string) becomes a JSON string, and a list of its own keeps its structure."""
    key = match.group(0)[: match.start(2) - match.start(0)]
    if _JSON_KEY_END.search(key.rstrip("[(")):
        if key.endswith(("[", "(")):
            return match.group(0)  # the frame's own list: masking inside it breaks it
        return f'{key}"{MASK}"'
    return key + MASK


def _squeeze(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "")


class RedactingFilter(logging.Filter):
    """Redacts a record's message, string fields and traceback before any handler sees it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = message, None
        fields = getattr(record, "fields", None)
        texts = [v for v in fields.values() if isinstance(v, str)] if fields else []
        # One look at all the record's text first: most records hold nothing to redact.
        if self.redact.may_hold_secrets("\n".join((message, *texts))):
            record.msg = self.redact(message)
            if fields:
                record.fields = {
                    k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()
                }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True
