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

PACKAGE_DIRECTORY = None

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
