"""The one place where untrusted text is made safe to show or log.

Text from the Toopher service (a denial reason), from the user (a user name,
a typed answer) or from the host (a sudo command line, a remote host name)
can carry terminal escape sequences or newlines that forge log lines.  Every
such text passes through :func:`sanitize` before it reaches a terminal, the
syslog or the audit file.
"""

import unicodedata

__all__ = ["sanitize"]

# Bidirectional overrides and other format characters can make a log line
# read differently from what it contains; control characters can drive a
# terminal or split a log line.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
REPLACEMENT = "?"


def sanitize(text: object, limit: int = 512) -> str:
    """``text`` as a single printable line of at most ``limit`` characters.

    Unsafe characters become ``?`` (like pam_duo), so the log still shows
    that something was there; an overlong text ends with ``...``.
    """
    cleaned = "".join(REPLACEMENT if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch
                      for ch in str(text))
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 3, 0)] + "..."
    return cleaned
