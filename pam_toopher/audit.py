"""Where decisions are recorded: syslog (authpriv) and an optional audit file.

Syslog is written straight to the ``/dev/log`` socket instead of through
libc's ``openlog``: the module runs inside sshd and sudo, and ``openlog``
would change the ident and facility of the host process's own log lines.
When no syslog daemon listens the line cannot go there; the audit file is
the record then.  A decision that reaches neither is not a decision the
admin can see, so the flow refuses it (see :meth:`AuditTrail.record`).

The audit file is written as root inside the login of a user who may be
hostile (issue 14): it is reached only through directories no other user can
change (pam_toopher.paths), opened without blocking and without following a
symlink (a FIFO or a link planted there cannot hang or redirect sudo), must
be a regular file of root's that others cannot write, and is appended to
whatever file-size limit (``ulimit -f``) the caller left to sudo.
"""

from __future__ import annotations

import _socket  # the C half of socket: see write_syslog
import errno
import os
import stat
import time
from contextlib import contextmanager

from pam_toopher.paths import UntrustedPathError, open_trusted, writable_by_others
from pam_toopher.text import sanitize

# typing only for the type checker: importing it costs every login ~3 ms
# (pam_toopher/record.py, docs/pam.md "Speed").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple

    # Returns False when the line surely did not get through (None: cannot tell).
    SyslogSink = Callable[[int, str], Optional[bool]]

__all__ = ["IDENT", "LOG_ERR", "LOG_WARNING", "LOG_NOTICE", "LOG_INFO", "LOG_DEBUG",
           "SyslogSink", "write_syslog", "format_fields", "AuditTrail", "AuditFileError",
           "append_to_audit_file", "audit_file_problem"]

IDENT = "pam_toopher"
SYSLOG_SOCKET = "/dev/log"
LOG_AUTHPRIV = 10 << 3
LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 3, 4, 5, 6, 7
MAX_LINE = 2000
# A syslog daemon that does not read its socket must not hold the login.
SYSLOG_SEND_TIMEOUT = 2.0


def write_syslog(severity: int, message: str) -> bool:
    """Send one authpriv line to the local syslog daemon; False when there
    is none (or it did not take the line)."""
    packet = f"<{LOG_AUTHPRIV | severity}>{IDENT}[{os.getpid()}]: {message}"
    # _socket, not socket: the socket module's enum and selectors setup costs
    # ~3 ms per login, skipped ones included, for three calls it does not change.
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        sock.settimeout(SYSLOG_SEND_TIMEOUT)
        sock.connect(SYSLOG_SOCKET)
        sock.send(packet.encode("utf-8", "replace"))
    except OSError:
        return False
    finally:
        sock.close()
    return True


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
               path: Optional[str] = None) -> bool:
        """One decision: ``line`` to syslog and the file, then any ``details``
        (a traceback) to syslog only, one line each.  False when the line
        reached neither syslog nor the audit file."""
        line = sanitize(line, MAX_LINE)
        recorded = self.syslog(severity, line) is not False
        for detail in details:
            self.syslog(LOG_ERR, sanitize(detail, MAX_LINE))
        target = self.path or path
        if target:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            data = f"{stamp} {IDENT}[{os.getpid()}]: {line}\n".encode("utf-8", "replace")
            try:
                append_to_audit_file(target, data)
                recorded = True
            except AuditFileError as exc:
                self.syslog(LOG_ERR, f"audit file {sanitize(target)} not written: {exc}")
        return recorded

    def note(self, severity: int, message: str) -> None:
        """A diagnostic that is not a decision (debug output, a warning)."""
        self.syslog(severity, sanitize(message, MAX_LINE))


# ------------------------------------------------------------- the audit file

class AuditFileError(Exception):
    """The audit file cannot be written safely; the message says why."""


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK  # O_NOFOLLOW, O_CLOEXEC: open_trusted


def _owners() -> frozenset:
    # The module runs as root; a developer's unprivileged run may use its own files.
    return frozenset({0, os.geteuid()})


def _open_audit_file(path: str, create: bool) -> int:
    """The audit file, opened for appending; refused unless it is a regular
    file of root's that group and others cannot write, in a safe directory."""
    try:
        fd, info = open_trusted(path, _APPEND | (os.O_CREAT if create else 0), 0o600,
                                owners=_owners())
    except UntrustedPathError as exc:
        raise AuditFileError(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads: open would have blocked
            raise AuditFileError("it is a FIFO, not a regular file") from None
        raise AuditFileError(exc.strerror or str(exc)) from None
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "it is not a regular file"
    elif info.st_uid not in _owners():
        problem = f"it is owned by uid {info.st_uid}, not root"
    elif writable_by_others(info):
        problem = (f"it is writable by group or others (mode "
                   f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
    if problem:
        os.close(fd)
        raise AuditFileError(problem)
    return fd


@contextmanager
def _file_size_limit_lifted() -> Iterator[int]:
    """Lift RLIMIT_FSIZE for the write (sudo keeps the caller's ``ulimit -f``;
    as root we may raise it), and put it back.  Yields the soft limit in
    force: a write past it would raise SIGXFSZ, so the caller checks first."""
    import resource

    saved = resource.getrlimit(resource.RLIMIT_FSIZE)
    unlimited = resource.RLIM_INFINITY
    if saved[0] == unlimited:
        yield unlimited
        return
    for wanted in ((unlimited, unlimited), (saved[1], saved[1])):  # root, or anyone
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, wanted)
            break
        except (ValueError, OSError):
            continue
    try:
        yield resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    finally:
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, saved)
        except (ValueError, OSError):
            pass


def append_to_audit_file(path: str, data: bytes) -> None:
    """Append ``data`` to the audit file (created 0600 if absent) or raise
    :class:`AuditFileError` saying why not."""
    fd = _open_audit_file(path, create=True)
    try:
        with _file_size_limit_lifted() as limit:
            import resource

            end = os.fstat(fd).st_size + len(data)
            if limit != resource.RLIM_INFINITY and end > limit:
                raise AuditFileError(f"the file size limit ({limit} bytes, ulimit -f) "
                                     "could not be lifted")
            written = os.write(fd, data)
        if written != len(data):
            raise AuditFileError(f"only {written} of {len(data)} bytes written")
    except OSError as exc:
        raise AuditFileError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def audit_file_problem(path: str) -> Optional[str]:
    """Why the module would not write the audit file at ``path`` (for
    ``toopher-pam check``), or None; creates nothing."""
    try:
        os.close(_open_audit_file(path, create=False))
    except AuditFileError as exc:
        if "No such file" in str(exc):
            return None  # created on the first login, if its directory is safe
        return str(exc)
    return None
