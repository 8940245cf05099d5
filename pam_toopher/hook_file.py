"""The file pam_python runs (``/lib/security/pam_toopher.py``): write it, check it.

pam_python executes a *file* under Debian's /usr/bin/python3 in isolated
mode, and that interpreter's ``sys.path`` depends on the host process:
inside sshd there is no PATH, ``sys.prefix`` is ``/`` and only
``/lib/python3.11`` and ``/lib/python3/dist-packages`` are searched, so a
package pip put into ``/usr/local/lib/python3.11/dist-packages`` is not
found there (while it is from pamtester or sudo).  So the hook file names
the directory the package was installed into, and -- should the import
still fail -- defines every ``pam_sm_*`` hook to log the reason to syslog
(authpriv) and refuse with PAM_SERVICE_ERR, so the admin learns why
instead of reading "Error in service module".

* :func:`render_hook` -- the file's text; the .deb ships ``render_hook(None)``
  (its package is in /usr/lib/python3/dist-packages, which sshd sees).
* :func:`install_hook` -- ``toopher-pam install-hook [PATH]``: the text naming
  the directory this interpreter imported the package from, written
  atomically, after checking that root alone can change that directory.
* :func:`check_hook` -- ``toopher-pam check``: executes the hook file the way
  pam_python does inside sshd (/usr/bin/python3, ``-I``, empty environment,
  no PATH, cwd ``/``) and reports whether the module and the HTTP stack a
  login needs import there.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from typing import Dict, NamedTuple, Optional

__all__ = ["DEFAULT_HOOK_PATH", "PAM_PYTHON_INTERPRETER", "HookError", "HookReport",
           "check_hook", "insecure_reason", "install_hook", "package_parent", "render_hook",
           "write_file_atomically"]

DEFAULT_HOOK_PATH = "/lib/security/pam_toopher.py"
# The interpreter Debian's libpam-python embeds.
PAM_PYTHON_INTERPRETER = "/usr/bin/python3"
CHECK_TIMEOUT = 30.0
_MARKER = "@PACKAGE_DIRECTORY@"

_TEMPLATE = '''\
# pam_toopher: the file pam_python runs
#
#   auth required pam_python.so /lib/security/pam_toopher.py [config=PATH] [audit_log=PATH] [debug]
#
# Written by "toopher-pam install-hook" (the Debian package ships one too);
# "toopher-pam check" tells whether it loads the way sshd runs it.
# pam_python executes this file for every PAM handle under /usr/bin/python3
# in isolated mode.  Inside sshd that interpreter has no PATH and searches
# only /lib/python3.11 and /lib/python3/dist-packages, so the directory the
# package was installed into is named here.  If the import fails anyway,
# every hook writes the reason to syslog (authpriv) and refuses
# (PAM_SERVICE_ERR): fail closed, and say why.
import sys

PACKAGE_DIRECTORY = @PACKAGE_DIRECTORY@

if PACKAGE_DIRECTORY and PACKAGE_DIRECTORY not in sys.path:
    # Where site would put it: after the standard library, before the other
    # package directories (so a stale copy elsewhere cannot win).
    _at = [i for i, p in enumerate(sys.path) if p.endswith("-packages")]
    sys.path.insert(_at[0] if _at else len(sys.path), PACKAGE_DIRECTORY)

try:
    from pam_toopher.pam_hook import *  # noqa: F401,F403
except Exception as _error:
    PAM_TOOPHER_LOAD_ERROR = (
        "cannot import pam_toopher (%s: %s); sys.path=%s; every login through %s is "
        "refused; run: toopher-pam check" % (type(_error).__name__, _error, sys.path,
                                             __file__ if "__file__" in globals() else "the hook"))

    def _log(text):
        # Straight to /dev/log (authpriv.err), as the module's audit lines go:
        # openlog would change the host process's own ident and facility.
        import os
        import socket

        line = "".join(c if c.isprintable() else "?" for c in text)[:1900]
        packet = "<%d>pam_toopher[%d]: %s" % (10 << 3 | 3, os.getpid(), line)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect("/dev/log")
                sock.send(packet.encode("utf-8", "replace"))
        except OSError:
            pass

    def _refuse(pamh, flags, argv):
        # Never format pamh or anything it hands out: that crashes sshd/sudo.
        user, service = getattr(pamh, "user", None), getattr(pamh, "service", None)
        _log("outcome=internal_error user=%s service=%s reason=%s" % (
            user if isinstance(user, str) else "-",
            service if isinstance(service, str) else "-", PAM_TOOPHER_LOAD_ERROR))
        return pamh.PAM_SERVICE_ERR

    def pam_sm_authenticate(pamh, flags, argv):
        try:
            pamh.conversation(pamh.Message(
                pamh.PAM_ERROR_MSG, "Toopher: the module cannot be loaded; see the system log."))
        except Exception:
            pass
        return _refuse(pamh, flags, argv)

    pam_sm_setcred = pam_sm_acct_mgmt = pam_sm_open_session = _refuse
    pam_sm_close_session = pam_sm_chauthtok = _refuse
'''


class HookError(Exception):
    """The hook file cannot be written or does not load; says why."""


def render_hook(package_directory: Optional[str]) -> str:
    """The hook file's text; ``package_directory`` is the directory holding
    the ``pam_toopher`` package, or None where sshd's interpreter finds it
    anyway (the .deb)."""
    if package_directory is not None and not os.path.isabs(package_directory):
        raise ValueError("the package directory must be an absolute path")
    return _TEMPLATE.replace(_MARKER, repr(package_directory))


def package_parent() -> str:
    """The directory this interpreter imported ``pam_toopher`` from."""
    import pam_toopher

    return os.path.dirname(os.path.dirname(os.path.abspath(pam_toopher.__file__)))


def insecure_reason(path: str) -> Optional[str]:
    """None when only root can change ``path`` and every directory above it
    (owned by root, not writable by group or others; an ancestor with the
    sticky bit, such as /tmp, is fine: others cannot move root's entries);
    otherwise why not.  Code imported from such a path runs as root in
    every login."""
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for depth in range(1, len(parts) + 1):
        current = os.sep + os.path.join(*parts[1:depth]) if depth > 1 else os.sep
        try:
            info = os.stat(current)
        except OSError as exc:
            return f"{current}: {exc.strerror}"
        if info.st_uid != 0:
            return f"{current} is owned by uid {info.st_uid}, not root"
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky = info.st_mode & stat.S_ISVTX
        if writable and not (sticky and current != path):
            return (f"{current} is writable by group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o})")
    return None


def write_file_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` in one rename: a login that starts
    meanwhile reads the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, staged = tempfile.mkstemp(prefix=".pam_toopher.", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staged, mode)
        os.rename(staged, path)
    except BaseException:
        try:
            os.unlink(staged)
        except FileNotFoundError:
            pass
        raise


def install_hook(path: str = DEFAULT_HOOK_PATH, directory: Optional[str] = None) -> str:
    """Write the hook file at ``path`` naming ``directory`` (by default the
    one this interpreter imported the package from); returns that directory."""
    directory = os.path.abspath(directory or package_parent())
    for checked in (directory, os.path.join(directory, "pam_toopher")):
        why = insecure_reason(checked)
        if why is not None:
            raise HookError(f"refusing to make every login import code from {directory}: "
                            f"{why}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise HookError(f"{os.path.dirname(os.path.abspath(path))}: no such directory")
    try:
        write_file_atomically(path, render_hook(directory))
    except OSError as exc:
        raise HookError(f"{path}: cannot write: {exc.strerror}") from None
    return directory


# Run by check_hook in an interpreter set up as sshd's: execute the hook file
# as pam_python does, then report on one JSON line what was loaded.
_PROBE = r'''
import json, sys
path = sys.argv[1]
report = {"sys_path": sys.path, "prefix": sys.prefix}
namespace = {"__name__": "pam_toopher_hook", "__file__": path, "__builtins__": __builtins__}
try:
    with open(path) as handle:
        exec(compile(handle.read(), path, "exec"), namespace)
except BaseException as exc:
    report["error"] = "executing it raised %s: %s" % (type(exc).__name__, exc)
else:
    hook = namespace.get("pam_sm_authenticate")
    if "PAM_TOOPHER_LOAD_ERROR" in namespace:
        report["error"] = namespace["PAM_TOOPHER_LOAD_ERROR"]
    elif getattr(hook, "__module__", None) != "pam_toopher.pam_hook":
        report["error"] = "it defines no pam_sm_authenticate from pam_toopher.pam_hook"
    else:
        report["module"] = sys.modules["pam_toopher"].__file__
        try:
            import pam_toopher.api  # what a login that needs the second factor imports
        except Exception as exc:
            report["error"] = "the HTTP stack does not import: %s: %s" % (
                type(exc).__name__, exc)
print(json.dumps(report))
'''


class HookReport(NamedTuple):
    module: str        # the pam_toopher/__init__.py that sshd's interpreter loads
    sys_path: list


def check_hook(path: str = DEFAULT_HOOK_PATH,
               interpreter: str = PAM_PYTHON_INTERPRETER) -> HookReport:
    """Load the hook file as pam_python does inside sshd; HookError says why not.

    sshd gives its PAM process no environment to speak of and no PATH, and
    pam_python names no program: the interpreter then finds its prefix from
    the working directory (``/``).  Running ``python3`` (argv[0] without a
    directory) with ``-I``, an empty environment and cwd ``/`` reproduces
    that ``sys.path`` exactly (seen: prefix ``/``, /lib/python3.11,
    /lib/python3/dist-packages)."""
    if not os.path.isfile(path):
        raise HookError(f"{path}: no such file; run: toopher-pam install-hook {path}")
    no_environment: Dict[str, str] = {}
    try:
        completed = subprocess.run(["python3", "-I", "-c", _PROBE, path],
                                   check=False, executable=interpreter, env=no_environment, cwd="/",
                                   capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HookError(f"cannot run {interpreter}: {exc}") from None
    try:
        report = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise HookError(f"{path}: {interpreter} failed as sshd runs it: "
                        f"{completed.stderr.strip()[-500:] or 'no output'}") from None
    if "error" in report:
        raise HookError(f"{path} does not load as sshd runs it: {report['error']}")
    return HookReport(report["module"], report["sys_path"])
