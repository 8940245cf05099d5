"""Where decisions are recorded: syslog (authpriv) and an optional audit file.

Syslog is written straight to the ``/dev/log`` socket instead of through
libc's ``openlog``: the module runs inside sshd and sudo, and ``openlog``
would change the ident and facility of the host process's own log lines.
When no syslog daemon listens the line is dropped silently (a PAM module has
nowhere else to complain); the audit file is the dependable record then.
"""

from __future__ import annotations

import _socket  # the C half of socket: see write_syslog
import os
import time

from pam_toopher.text import sanitize

# typing only for the type checker: importing it costs every login ~3 ms
# (pam_toopher/record.py, docs/pam.md "Speed").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional, Sequence, Tuple

    SyslogSink = Callable[[int, str], None]

__all__ = ["IDENT", "LOG_ERR", "LOG_WARNING", "LOG_NOTICE", "LOG_INFO", "LOG_DEBUG",
           "SyslogSink", "write_syslog", "format_fields", "AuditTrail"]

IDENT = "pam_toopher"
SYSLOG_SOCKET = "/dev/log"
LOG_AUTHPRIV = 10 << 3
LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 3, 4, 5, 6, 7
MAX_LINE = 2000

def write_syslog(severity: int, message: str) -> None:
    """Send one authpriv line to the local syslog daemon, if there is one."""
    packet = f"<{LOG_AUTHPRIV | severity}>{IDENT}[{os.getpid()}]: {message}"
    # _socket, not socket: the socket module's enum and selectors setup costs
    # ~3 ms per login, skipped ones included, for three calls it does not change.
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    except OSError:
        return
    try:
        sock.connect(SYSLOG_SOCKET)
        sock.send(packet.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        sock.close()


def _quote(value: object) -> str:
    """A field value as it appears in the audit line: bare when it is a
    plain token, double-quoted (with \\ and \" escaped) otherwise."""
    if value is None or value == "":
        return "-"
    text = sanitize(value, 400)
    if text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_fields(fields: Sequence[Tuple[str, object]]) -> str:
    """``key=value key="a value"`` with every value sanitized."""
    return " ".join(f"{key}={_quote(value)}" for key, value in fields)


class AuditTrail:
    """Writes the audit line of each decision to syslog and, when a path is
    known, appends it (with a UTC timestamp) to the audit file."""

    def __init__(self, syslog: SyslogSink = write_syslog, path: Optional[str] = None):
        self.syslog = syslog
        self.path = path

    def record(self, severity: int, line: str, details: Iterable[str] = (),
               path: Optional[str] = None) -> None:
        """One decision: ``line`` to syslog and the file, then any ``details``
        (a traceback) to syslog only, one line each."""
        line = sanitize(line, MAX_LINE)
        self.syslog(severity, line)
        for detail in details:
            self.syslog(LOG_ERR, sanitize(detail, MAX_LINE))
        target = self.path or path
        if target:
            self._append(target, line)

    def note(self, severity: int, message: str) -> None:
        """A diagnostic that is not a decision (debug output, a warning)."""
        self.syslog(severity, sanitize(message, MAX_LINE))

    def _append(self, path: str, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = f"{stamp} {IDENT}[{os.getpid()}]: {line}\n".encode("utf-8", "replace")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            self.syslog(LOG_WARNING, f"cannot append to audit file {sanitize(path)}: "
                                     f"{exc.strerror}")
