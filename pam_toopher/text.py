"""The one place where untrusted text is shaped to be shown or logged.

Text from the Toopher service (a denial reason), from the user (a user name,
a typed answer) or from the host (a sudo command line, a remote host name)
can carry terminal escape sequences or newlines that forge log lines, and
characters that render as nothing or as blank space (U+3164 HANGUL FILLER,
bidi controls, zero-width joiners, a run of 160 spaces) that hide what
follows -- on the phone, the approver would read ``sudo /bin/sh -c id -u``
while ``; touch /etc/...`` runs (issue 14).  So every such text passes through
:func:`sanitize` before it reaches the phone, a terminal, the syslog or the
audit file, and comes out as one line that hides nothing:

* control, format, private-use, unassigned and blank-rendering characters
  are written as escapes (``\\x1b``, ``\\n``, ``\\u3164``), never dropped;
* a run of more than :data:`MAX_PLAIN_SPACES` spaces is written with its
  count (``[160 spaces]``), never collapsed silently;
* a text too long for its place keeps its beginning *and* its end, with
  what was cut in between (``...[123 chars cut]...``): the end of a command
  or of a host name (its domain) is what an attacker would hide.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_PLAIN_SPACES", "sanitize"]

# Characters that draw nothing visible or can reorder or break the line:
# controls, format characters (bidi overrides, zero-width), surrogates,
# private use, unassigned, line/paragraph separators, and every space but
# the plain one (no-break, em, ideographic, ...).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
# Letters and symbols that render blank in common fonts.
_BLANK_RENDERING = frozenset({
    0x115F, 0x1160,          # Hangul choseong/jungseong fillers
    0x3164, 0xFFA0,          # Hangul filler, halfwidth Hangul filler
    0x2800,                  # Braille pattern blank
    0x180E,                  # Mongolian vowel separator
    0x17B4, 0x17B5,          # Khmer inherent vowels
    0x034F,                  # combining grapheme joiner
    0x1D159, 0x1D173, 0x1D174, 0x1D175, 0x1D176, 0x1D177, 0x1D178, 0x1D179, 0x1D17A,
})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
MAX_PLAIN_SPACES = 3
_SPACE_RUN = re.compile(f" {{{MAX_PLAIN_SPACES + 1},}}")
_CUT_MARK = "...[{} chars cut]..."
# What _visible writes as one piece: an escape, a counted run of spaces, a character.
_UNIT = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[nrt])| \[\d+ spaces\] |.",
                   re.DOTALL)
_MIN_LIMIT_FOR_MIDDLE_CUT = 32


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(ch: str, previous: str) -> bool:
    if ch == " ":
        return False
    if ord(ch) in _BLANK_RENDERING:
        return True
    category = unicodedata.category(ch)
    if category in _ESCAPED_CATEGORIES:
        return True
    # A combining mark with nothing visible to sit on renders as nothing
    # (or stacks invisibly): show it.
    return category.startswith("M") and (not previous or previous in " \\")


def _visible(text: str) -> str:
    out = []
    previous = ""
    for ch in text:
        out.append(_escape(ch) if _needs_escape(ch, previous) else ch)
        previous = out[-1][-1] if out[-1] else ""
    return _SPACE_RUN.sub(lambda run: f" [{len(run.group())} spaces] ", "".join(out))


def _cut_middle(text: str, limit: int) -> str:
    """At most ``limit`` characters: the beginning and the end of ``text``,
    with a mark of how much was cut between them.  An escape or a space count
    is kept whole or cut whole."""
    if len(text) <= limit:
        return text
    if limit < _MIN_LIMIT_FOR_MIDDLE_CUT:
        return (text[: max(limit - 3, 0)] + "...")[:max(limit, 0)]
    room = limit - len(_CUT_MARK.format(len(text)))  # the widest mark it can need
    units = _UNIT.findall(text)
    head: list[str] = []
    used = 0
    for unit in units:  # the beginning says what runs: ~3/5 of the room
        if used + len(unit) > (room * 3 + 4) // 5:
            break
        head.append(unit)
        used += len(unit)
    tail: list[str] = []
    for unit in reversed(units[len(head):]):  # the end, where it leads
        if used + len(unit) > room:
            break
        tail.append(unit)
        used += len(unit)
    kept_head, kept_tail = "".join(head), "".join(reversed(tail))
    return kept_head + _CUT_MARK.format(len(text) - used) + kept_tail


def sanitize(text: object, limit: int = 512) -> str:
    """``text`` as a single line of at most ``limit`` characters in which
    every character is visible: see the module's docstring."""
    return _cut_middle(_visible(str(text)), limit)
