"""The pam_python hook with a fake pamh: arguments, items, codes, no repr."""

import subprocess

import pytest

from pam_toopher import pam_hook
from pam_toopher.flow import Outcome
from tests.conftest import REPO_ROOT

CODES = {name: number for number, name in enumerate(
    ["PAM_SUCCESS", "PAM_AUTH_ERR", "PAM_IGNORE", "PAM_SERVICE_ERR", "PAM_AUTHINFO_UNAVAIL",
     "PAM_USER_UNKNOWN", "PAM_TEXT_INFO", "PAM_ERROR_MSG", "PAM_PROMPT_ECHO_ON",
     "PAM_PROMPT_ECHO_OFF"])}


class FakePamh:
    """Like pam_python's handle, including the trap: formatting it crashes."""

    def __init__(self, user="nobody-tphr-x", service="sshd", answers=()):
        for name, number in CODES.items():
            setattr(self, name, number)
        self.user, self.service, self.rhost, self.tty, self.ruser = user, service, None, None, None
        self.answers = list(answers)
        self.shown = []

    def __repr__(self):
        raise AssertionError("repr(pamh) segfaults sshd and sudo")

    __str__ = __repr__

    def get_user(self, prompt):
        return self.user

    class Message:
        def __init__(self, style, text):
            self.msg_style, self.msg = style, text

    class Response:
        def __init__(self, resp):
            self.resp, self.resp_retcode = resp, 0

    def conversation(self, message):
        self.shown.append((message.msg_style, message.msg))
        return self.Response(self.answers.pop(0) if self.answers else None)


def test_every_outcome_has_a_pam_code_and_bypasses_are_never_success():
    assert set(pam_hook.PAM_RESULT_NAMES) == set(Outcome)
    for outcome in (Outcome.SKIPPED, Outcome.DISABLED, Outcome.UNPAIRED_ALLOWED):
        assert pam_hook.PAM_RESULT_NAMES[outcome] == "PAM_IGNORE"
    allowing = {o for o, name in pam_hook.PAM_RESULT_NAMES.items() if name == "PAM_SUCCESS"}
    assert allowing == {Outcome.GRANTED, Outcome.FAILED_OPEN}
    for outcome in (Outcome.TLS_ERROR, Outcome.API_ERROR, Outcome.CONFIG_ERROR):
        assert pam_hook.PAM_RESULT_NAMES[outcome] != "PAM_SUCCESS"


def test_arguments():
    assert pam_hook.parse_arguments(["/x/hook.py"]) == ("/etc/security/toopher.conf", None,
                                                         False)
    assert pam_hook.parse_arguments(["/x/hook.py", "config=/etc/t.conf", "debug",
                                     "audit_log=/var/log/t.log"]) == (
        "/etc/t.conf", "/var/log/t.log", True)


@pytest.mark.parametrize("argument", ["conf=/etc/t.conf", "config=relative.conf", "config",
                                      "verbose", "debug=1"])
def test_an_unknown_argument_is_a_service_error(argument):
    pamh = FakePamh()
    assert pam_hook.pam_sm_authenticate(pamh, 0, ["/x/hook.py", argument]) == \
        CODES["PAM_SERVICE_ERR"]


def test_a_missing_config_is_a_service_error_and_the_user_is_told(tmp_path):
    pamh = FakePamh(user="root")
    code = pam_hook.pam_sm_authenticate(pamh, 0, ["/x/hook.py",
                                                  f"config={tmp_path}/missing.conf"])
    assert code == CODES["PAM_SERVICE_ERR"]
    assert pamh.shown == [(CODES["PAM_ERROR_MSG"],
                           "Toopher: the module is misconfigured; see the system log.")]


def test_other_hooks():
    pamh = FakePamh()
    assert pam_hook.pam_sm_setcred(pamh, 0, []) == CODES["PAM_SUCCESS"]
    for hook in (pam_hook.pam_sm_acct_mgmt, pam_hook.pam_sm_open_session,
                 pam_hook.pam_sm_close_session, pam_hook.pam_sm_chauthtok):
        assert hook(pamh, 0, []) == CODES["PAM_IGNORE"]


def test_a_conversation_that_raises_counts_as_no_answer():
    pamh = FakePamh()

    def broken(message):
        raise RuntimeError("conversation failed")
    pamh.conversation = broken
    assert pam_hook.PamConversation(pamh).prompt_echo_on("x") is None


def test_sudo_command_is_read_whole_and_quoted_word_by_word(tmp_path, monkeypatch):
    """Shaping (escapes, the middle cut) is describe_action's, on the whole
    command: a cut here hid what followed 160 spaces (issue 14, item 8)."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"sudo\0-S\0apt\0upgrade\x1b[31m\0")
    assert pam_hook.read_sudo_command("sudo", str(cmdline)) == "-S apt 'upgrade\x1b[31m'"
    assert pam_hook.read_sudo_command("sshd", str(cmdline)) is None
    command = b"/bin/sh\0-c\0id -u" + b" " * 160 + b"; touch /tmp/x\xff\0"
    cmdline.write_bytes(b"sudo\0" + command)
    assert pam_hook.read_sudo_command("sudo-i", str(cmdline)) == (
        "/bin/sh -c 'id -u" + " " * 160 + "; touch /tmp/x\\xff'")
    monkeypatch.setattr(pam_hook, "MAX_COMMAND_BYTES", 20)
    assert pam_hook.read_sudo_command("sudo", str(cmdline)) == (
        "/bin/sh -c 'id -' [the rest is longer than the kernel allows]")


def test_loading_the_hook_does_not_import_the_http_stack():
    script = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r});"
              "from pam_toopher.pam_hook import *;"
              "print(sorted(m for m in ('requests', 'urllib3', 'requests_oauthlib',"
              " 'pam_toopher.api', 'typing', 'dataclasses', 'socket', 'signal')"
              " if m in sys.modules))")
    result = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_sudo_is_recognised_under_a_pam_service_of_its_own(tmp_path, monkeypatch):
    """sudoers ``Defaults pam_service=...`` renames the service; the process name stays."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"sudo\0/usr/bin/id\0-u\0")
    monkeypatch.setattr(pam_hook, "_process_name", lambda path="": "sudo")
    assert pam_hook.read_sudo_command("sudo-custom", str(cmdline)) == "/usr/bin/id -u"
    monkeypatch.setattr(pam_hook, "_process_name", lambda path="": "pamtester")
    assert pam_hook.read_sudo_command("sudo-custom", str(cmdline)) is None


def test_ctrl_c_guard_raises_once_then_restores_the_signal_state():
    """In this (test) process: inside the guard SIGINT raises Interrupted;
    afterwards the previous handler and mask are back, and the Ctrl-C taken
    is handed back (pending while blocked, as sudo keeps it)."""
    import ctypes
    import os
    import platform
    import signal

    from pam_toopher.flow import Interrupted

    libc = ctypes.CDLL(None)

    def raw_sigaction() -> bytes:
        """The handler, the first 64 mask bits and (x86_64) flags and restorer:
        glibc fills the rest of the 128-byte sa_mask with whatever it had."""
        buffer = ctypes.create_string_buffer(pam_hook.SIGACTION_BUFFER)
        assert libc.sigaction(signal.SIGINT, None, buffer) == 0
        raw = buffer.raw
        return raw[:16] + (raw[136:152] if platform.machine() == "x86_64" else b"")

    # A host handler Python did not install itself shows in sigaction as
    # other than Python's trampoline: SIG_IGN here.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])  # as sudo does
    before = raw_sigaction()
    try:
        with pytest.raises(Interrupted):
            with pam_hook.ctrl_c_cancels():
                assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
                assert raw_sigaction() != before
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # let the handler run
                    pass
        assert raw_sigaction() == before  # the host's handler, byte for byte
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert signal.SIGINT in signal.sigpending()  # handed back to the host
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # drop the pending one
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, previous)
