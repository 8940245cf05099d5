"""The pam_python hook: the only code that touches ``pamh``.

PAM line (the hook file, written by ``toopher-pam install-hook`` or shipped
by the .deb, imports this module; see hook_file.py)::

    auth required pam_python.so /lib/security/pam_toopher.py [config=PATH] [audit_log=PATH] [debug]

pam_python executes the hook file once per PAM handle, under Debian's
/usr/bin/python3 in isolated mode.  Everything that decides lives in ``flow``; this file
reads the PAM items one by one, adapts the PAM conversation, maps the
outcome to a PAM code and never lets an exception escape.

Never ``repr()``, ``str()`` or format ``pamh`` or any object it hands out
(messages, responses, their types): pam_python then crashes sshd or sudo.
Only plain ``str`` values read from it are logged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

from pam_toopher.audit import LOG_DEBUG, LOG_ERR, AuditTrail, format_fields, write_syslog
from pam_toopher.config import DEFAULT_PATH
from pam_toopher.flow import Interrupted, LoginRequest, Outcome, run
from pam_toopher.text import sanitize

# typing only for the type checker: importing it costs every login ~3 ms
# (pam_toopher/record.py, docs/pam.md "Speed").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, ContextManager, Iterator, List, Optional, Tuple
    from typing import NamedTuple as Record
else:
    from pam_toopher.record import Record

__all__ = ["pam_sm_authenticate", "pam_sm_setcred", "pam_sm_acct_mgmt",
           "pam_sm_open_session", "pam_sm_close_session", "pam_sm_chauthtok",
           "PAM_RESULT_NAMES"]

# The outcome table of docs/pam.md.  Stepping aside is PAM_IGNORE, never
# PAM_SUCCESS, so a skipped user cannot pass a "sufficient" line on our word.
PAM_RESULT_NAMES = {
    Outcome.GRANTED: "PAM_SUCCESS",
    Outcome.FAILED_OPEN: "PAM_SUCCESS",
    Outcome.DENIED: "PAM_AUTH_ERR",
    Outcome.TIMEOUT: "PAM_AUTH_ERR",
    Outcome.WRONG_OTP: "PAM_AUTH_ERR",
    Outcome.UNPAIRED_DENIED: "PAM_AUTH_ERR",
    Outcome.PAIRING_FAILED: "PAM_AUTH_ERR",
    Outcome.TLS_ERROR: "PAM_AUTH_ERR",
    Outcome.SKIPPED: "PAM_IGNORE",
    Outcome.DISABLED: "PAM_IGNORE",
    Outcome.UNPAIRED_ALLOWED: "PAM_IGNORE",
    Outcome.UNAVAILABLE: "PAM_AUTHINFO_UNAVAIL",
    Outcome.API_ERROR: "PAM_SERVICE_ERR",
    Outcome.CONFIG_ERROR: "PAM_SERVICE_ERR",
    Outcome.INTERNAL_ERROR: "PAM_SERVICE_ERR",
    Outcome.USER_UNKNOWN: "PAM_USER_UNKNOWN",
    Outcome.ABORTED: "PAM_AUTH_ERR",
    Outcome.OTP_LOCKED: "PAM_AUTH_ERR",
    Outcome.RATE_LIMITED: "PAM_AUTH_ERR",
}

SUDO_SERVICES = ("sudo", "sudo-i")
# Linux's ARG_MAX bound on the argument strings is 2 MiB by default (a
# quarter of the stack limit); a command longer than this is said to be.
MAX_COMMAND_BYTES = 4 * 1024 * 1024


class HookArguments(Record):
    config_path: str
    audit_log: Optional[str]
    debug: bool


class ArgumentError(ValueError):
    pass


def parse_arguments(argv: List[str]) -> HookArguments:
    """The module's arguments; argv[0] is the module's own path."""
    config_path, audit_log, debug = DEFAULT_PATH, None, False
    for argument in argv[1:]:
        name, equals, value = argument.partition("=")
        if name == "config" and equals and os.path.isabs(value):
            config_path = value
        elif name == "audit_log" and equals and os.path.isabs(value):
            audit_log = value
        elif argument == "debug":
            debug = True
        else:
            raise ArgumentError(f"unknown or invalid module argument {sanitize(argument, 80)!r} "
                                "(expected config=/abs/path, audit_log=/abs/path, debug)")
    return HookArguments(config_path, audit_log, debug)


# --------------------------------------------------------- reading pamh

def _escaped(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _read_item(pamh: Any, name: str) -> Tuple[Optional[str], bool]:
    """A PAM item as text, and whether it was valid UTF-8.  pam_python raises
    UnicodeDecodeError for other bytes; they are kept, escaped (``\\xff``),
    so that the login is still decided and recorded with what PAM said."""
    try:
        value = getattr(pamh, name, None)
    except UnicodeDecodeError as exc:
        return _escaped(exc.object) or None, False
    return (value if isinstance(value, str) and value else None), True


def _item(pamh: Any, name: str) -> Optional[str]:
    return _read_item(pamh, name)[0]


def _user(pamh: Any, prompt: Optional[str] = None) -> Tuple[Optional[str], bool]:
    """The user being authenticated (asked for, with libpam's default
    prompt when ``prompt`` is None, only if no earlier module set it), and
    whether the name was valid UTF-8."""
    user, valid = _read_item(pamh, "user")
    if user is None:
        try:
            user = pamh.get_user(prompt)
        except UnicodeDecodeError as exc:
            return _escaped(exc.object) or None, False
        except Exception:  # pamh.exception: no user could be obtained
            return None, True
    return (user if isinstance(user, str) and user else None), valid


def _process_name(path: str = "/proc/self/comm") -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _is_sudo(service: str) -> bool:
    """sudo under its own service names, or under the one a sudoers
    ``Defaults pam_service=...`` gives it (recognised by the process name)."""
    return service in SUDO_SERVICES or _process_name() == "sudo"


def read_sudo_command(service: str, path: str = "/proc/self/cmdline") -> Optional[str]:
    """The command line of the sudo process, for the phone to show: all of
    it, each word shell-quoted so that word boundaries show (the phone's text
    is shaped, and cut in the middle if need be, by describe_action).  sudo
    does not put SUDO_COMMAND in the PAM environment during auth."""
    if not _is_sudo(service):
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_COMMAND_BYTES + 1)
    except OSError:
        return None
    truncated = len(raw) > MAX_COMMAND_BYTES
    words = [_escaped(w) for w in raw[:MAX_COMMAND_BYTES].split(b"\0") if w]
    if len(words) < 2:
        return None
    import shlex  # sudo only

    command = shlex.join(words[1:])
    return command + " [the rest is longer than the kernel allows]" if truncated else command


def _info_held_back(service: str) -> bool:
    """sshd shows info messages only with the next prompt (see docs/pam.md);
    a service renamed by the admin is still recognised by the process name."""
    return service == "sshd" or _process_name().startswith("sshd")


# ------------------------------------------------------------- Ctrl-C

SIGACTION_BUFFER = 256  # >= sizeof(struct sigaction) on every Linux ABI; kept opaque


@contextmanager
def ctrl_c_cancels() -> Iterator[None]:
    """Inside sudo: let Ctrl-C end the wait for the phone, then give it back.

    sudo blocks SIGINT and SIGQUIT while PAM authenticates (seen in
    /proc/PID/status: SigBlk 0x6), so without this a Ctrl-C waits for the
    module.  Here, for the decision only, SIGINT is unblocked with a Python
    handler that raises :class:`Interrupted` (the flow refuses the login).
    On the way out, with SIGINT blocked again, sudo's own handler is put
    back byte for byte (libc sigaction into an opaque buffer: Python cannot
    reinstall a handler it did not install) and the mask restored; a Ctrl-C
    we took is re-raised, so it stays pending for sudo, which ends as it
    does on any Ctrl-C.  Anything unexpected: leave sudo's state alone.
    """
    import signal  # only sudo pays for these

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        saved = ctypes.create_string_buffer(SIGACTION_BUFFER)
        if libc.sigaction(signal.SIGINT, None, saved) != 0:
            raise OSError(ctypes.get_errno(), "sigaction")
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    except Exception:
        yield
        return
    state = {"armed": True, "seen": False}

    def on_sigint(signum: int, frame: Any) -> None:
        state["seen"] = True
        if state["armed"]:
            state["armed"] = False
            raise Interrupted()

    try:
        signal.signal(signal.SIGINT, on_sigint)  # ValueError outside the main thread
    except (ValueError, OSError):
        yield
        return
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        yield
    finally:
        state["armed"] = False  # first: from here on a Ctrl-C is only noted
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's table; SIGINT is blocked
        libc.sigaction(signal.SIGINT, saved, None)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if state["seen"]:
            import threading  # only after a Ctrl-C

            # To this thread, where sudo unblocks it: a process-wide kill could go
            # to another thread and never reach sudo.
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)


class PamConversation:
    """The flow's Conversation over ``pamh.conversation``."""

    def __init__(self, pamh: Any):
        self._pamh = pamh

    def _send(self, style: int, text: str) -> Optional[str]:
        pamh = self._pamh
        try:
            response = pamh.conversation(pamh.Message(style, text))
        except Exception:  # the application has no way to ask, or the user left
            return None
        answer = getattr(response, "resp", None)
        return answer if isinstance(answer, str) else None

    def info(self, text: str) -> None:
        self._send(self._pamh.PAM_TEXT_INFO, text)

    def error(self, text: str) -> None:
        self._send(self._pamh.PAM_ERROR_MSG, text)

    def prompt_echo_on(self, text: str) -> Optional[str]:
        return self._send(self._pamh.PAM_PROMPT_ECHO_ON, text)

    def prompt_echo_off(self, text: str) -> Optional[str]:
        return self._send(self._pamh.PAM_PROMPT_ECHO_OFF, text)


# ---------------------------------------------------------------- hooks

def pam_sm_authenticate(pamh: Any, flags: int, argv: List[str]) -> int:
    try:
        return _authenticate(pamh, argv)
    except Exception:
        # Last resort (the flow records its own errors): never pamh in here.
        import traceback

        for line in traceback.format_exc().splitlines():
            write_syslog(LOG_ERR, sanitize(line))
        return pamh.PAM_SERVICE_ERR


def _authenticate(pamh: Any, argv: List[str]) -> int:
    try:
        arguments = parse_arguments([a for a in argv if isinstance(a, str)])
    except ArgumentError as exc:
        write_syslog(LOG_ERR, format_fields([("outcome", Outcome.CONFIG_ERROR.value),
                                             ("service", _item(pamh, "service")),
                                             ("reason", str(exc))]))
        return pamh.PAM_SERVICE_ERR
    service = _item(pamh, "service") or "unknown"
    user, user_is_utf8 = _user(pamh, prompt=None)
    if user is None:
        write_syslog(LOG_ERR, format_fields([("outcome", Outcome.USER_UNKNOWN.value),
                                             ("service", service),
                                             ("reason", "PAM gave no user name")]))
        return pamh.PAM_USER_UNKNOWN
    request = LoginRequest(
        user=user, service=service, rhost=_item(pamh, "rhost"), tty=_item(pamh, "tty"),
        command=read_sudo_command(service),
        messages_deferred=_info_held_back(service),
        refused=None if user_is_utf8 else "the user name is not valid UTF-8")
    audit = AuditTrail(path=arguments.audit_log)
    if arguments.debug:
        audit.note(LOG_DEBUG, f"debug: authenticating user={sanitize(user)} "
                              f"service={sanitize(service)} config={arguments.config_path}")
    interruptible: Callable[[], ContextManager[Any]] = nullcontext
    if _is_sudo(service):
        interruptible = ctrl_c_cancels
    decision = run(request, PamConversation(pamh), config_path=arguments.config_path,
                   audit=audit, debug=arguments.debug, interruptible=interruptible)
    return getattr(pamh, PAM_RESULT_NAMES[decision.outcome])


def pam_sm_setcred(pamh: Any, flags: int, argv: List[str]) -> int:
    # No credentials to establish; success keeps "auth required" stacks whole.
    return pamh.PAM_SUCCESS


def pam_sm_acct_mgmt(pamh: Any, flags: int, argv: List[str]) -> int:
    # Account policy belongs to pam_unix and friends; only auth is ours.
    return pamh.PAM_IGNORE


def pam_sm_open_session(pamh: Any, flags: int, argv: List[str]) -> int:
    return pamh.PAM_IGNORE


def pam_sm_close_session(pamh: Any, flags: int, argv: List[str]) -> int:
    return pamh.PAM_IGNORE


def pam_sm_chauthtok(pamh: Any, flags: int, argv: List[str]) -> int:
    # Toopher has no password to change here.
    return pamh.PAM_IGNORE
