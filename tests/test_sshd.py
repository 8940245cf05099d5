"""The module inside a real sshd, driven by a real OpenSSH client.

Each test starts its own sshd (tests/support/sshd.py) on a free loopback
port, run through a symlink named ``sshd-tphrXXXX`` so that its PAM service
is /etc/pam.d/sshd-tphrXXXX (made and removed here), never /etc/pam.d/sshd.
A throwaway local user logs in with ``ssh`` under pexpect while the test
plays the phone on the project's Toopher server.  Each test asserts what the
user saw, whether the command ran, and the one audit line.
"""

import time

import pexpect
import pytest

from tests.support.pam import PamService, toopher_line, unique_name
from tests.support.sshd import TestSshd
from tests.test_pam import pair, settings

AUTH_TIMEOUT = 3
LOGIN_GRACE_TIME = 20
PASSWORD_PROMPT = r"\) Password: "
# The one keypress sshd needs, before the push (sshd would hold a message back).
PUSH_PROMPT = (r"Toopher: press Enter to send a push to your phone, or type the 6-digit code "
               r"from your app: ")
PUSH_PROMPT_WITHOUT_CODE = r"Toopher: press Enter to send a push to your phone: "
# The phone has not answered within otp_prompt_after (1 s here).
CODE_PROMPT = r"Toopher: no answer from your phone yet\. Type the 6-digit code[^:]*: "
DENIED = "Permission denied"
PAM_FAIL_DELAY = 2  # pam_unix asks libpam to wait 2 s before reporting any failure


pytestmark = pytest.mark.usefixtures("root_only")
SERVER_TLS = True  # srv: the module believes only https (tests/conftest.py)


def password_stack(scene):
    """docs/pam.md, "sshd: password + push": common-auth, then the module."""
    return ["auth requisite pam_unix.so",
            toopher_line(scene.hook, scene.config_path),
            "account required pam_unix.so",
            "session required pam_permit.so"]


def key_stack(scene):
    """docs/pam.md, "sshd: key + push": only the second factor."""
    return [toopher_line(scene.hook, scene.config_path,
                         "[success=done ignore=ignore default=die]"),
            "auth required pam_permit.so",
            "account required pam_unix.so",
            "session required pam_permit.so"]


def start_sshd(scene, lines, methods="keyboard-interactive", **extra):
    """The PAM service sshd-tphrXXXX with ``lines``, and an sshd that uses it."""
    scene.service = PamService(lines, name=f"sshd-{unique_name()}")
    return TestSshd(scene.directory / "sshd", scene.service.name,
                    login_grace_time=LOGIN_GRACE_TIME, authentication_methods=methods,
                    extra=extra)


def marker():
    """A command whose output cannot appear unless the shell ran it."""
    word = unique_name("ran")
    return f"echo {word[:3]}''{word[3:]}", word


def requests_for(server, user):
    """How many authentication requests the server received for ``user``."""
    return server.query("SELECT COUNT(*) FROM auth_requests r JOIN users u "
                        "ON u.id = r.user_id WHERE u.name = ?", user)[0][0]


def password_then_push_prompt(sshd, scene, command):
    """``ssh`` in with the user's password; the client waits at the Toopher prompt."""
    child = sshd.ssh(scene.user.name, command)
    child.expect(PASSWORD_PROMPT)
    child.sendline(scene.user.password)
    child.expect(PUSH_PROMPT)
    return child


def finish(child):
    child.expect(pexpect.EOF)
    child.close()
    return child.before, child.exitstatus


def explain(scene, sshd, child=None):
    return (f"{scene.describe()}\nsshd log:\n{sshd.log()}"
            + (f"\nclient: {child.before!r}" if child is not None else ""))


# ------------------------------------------------------------- password + push

@pytest.mark.parametrize("otp_fallback", [True, False])
def test_enter_sends_the_push_and_the_approval_alone_logs_in(srv, scene, otp_fallback):
    pair(srv, scene.user.name)
    scene.write_config(**settings(srv, otp_fallback=otp_fallback, auth_timeout=10,
                                  otp_prompt_after=5))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = sshd.ssh(scene.user.name, command)
        child.expect(PASSWORD_PROMPT)
        child.sendline(scene.user.password)
        child.expect(PUSH_PROMPT if otp_fallback else PUSH_PROMPT_WITHOUT_CODE)
        assert srv.phone.pending_requests(scene.user.name) == []  # not sent yet
        child.sendline("")
        request = srv.phone.wait_for_request(scene.user.name, timeout=5)
        assert request["action"] == f"{scene.service.name} login from 127.0.0.1"
        time.sleep(0.5)  # the user takes out the phone
        srv.phone.approve(request["id"])
        approved = time.monotonic()
        child.expect(word)  # nothing typed after approving: the command runs
        ran = time.monotonic()
        output, status = finish(child)
    assert status == 0, explain(scene, sshd, child)
    assert ran - approved < 1.0, ran - approved
    audit = scene.audit()
    assert audit["outcome"] == "granted", audit
    assert (audit["user"], audit["service"], audit["rhost"]) == \
        (scene.user.name, scene.service.name, "127.0.0.1")
    assert audit["request"] == request["id"]


def test_denied_gets_no_shell(srv, scene):
    pair(srv, scene.user.name)
    srv.phone.set_rule(scene.user.name, "deny", delay=0.3)
    scene.write_config(**settings(srv))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = password_then_push_prompt(sshd, scene, command)
        child.sendline("")
        output, status = finish(child)
    assert status == 255 and DENIED in output, explain(scene, sshd, child)
    assert word not in output
    assert scene.audit()["outcome"] == "denied"
    assert "Accepted" not in sshd.log()


def test_no_answer_is_refused_within_auth_timeout(srv, scene):
    pair(srv, scene.user.name)  # no rule: the phone never answers
    scene.write_config(**settings(srv))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = password_then_push_prompt(sshd, scene, command)
        started = time.monotonic()
        child.sendline("")
        child.expect(CODE_PROMPT)
        child.sendline("")  # keep waiting
        output, status = finish(child)
        took = time.monotonic() - started
    assert status == 255 and DENIED in output, explain(scene, sshd, child)
    assert word not in output
    audit = scene.audit()
    assert audit["outcome"] == "timeout", audit
    # The module's deadline runs from the push; libpam then adds pam_unix's
    # 2 s delay after a failure.  All of it well before LoginGraceTime.
    assert float(audit["elapsed"].rstrip("s")) <= AUTH_TIMEOUT + 0.5, audit
    assert took <= AUTH_TIMEOUT + PAM_FAIL_DELAY + 1.5 < LOGIN_GRACE_TIME, took


def test_offline_phone_the_code_is_asked_for_after_otp_prompt_after(srv, scene):
    pair(srv, scene.user.name)  # the phone is offline: it never answers
    scene.write_config(**settings(srv, auth_timeout=20))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = password_then_push_prompt(sshd, scene, command)
        child.sendline("")
        started = time.monotonic()
        child.expect(CODE_PROMPT)
        assert time.monotonic() - started < 3, explain(scene, sshd, child)
        child.sendline(srv.phone.otp(scene.user.name))
        output, status = finish(child)
    assert status == 0 and word in output, explain(scene, sshd, child)
    audit = scene.audit()
    assert audit["outcome"] == "granted" and audit["reason"] == "valid otp", audit


def test_otp_typed_at_the_prompt(srv, scene):
    pair(srv, scene.user.name)
    scene.write_config(**settings(srv))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = password_then_push_prompt(sshd, scene, command)
        child.sendline(srv.phone.otp(scene.user.name))
        output, status = finish(child)
    assert status == 0 and word in output, explain(scene, sshd, child)
    audit = scene.audit()
    assert audit["outcome"] == "granted" and audit["reason"] == "valid otp", audit  # the server's reason


def test_wrong_password_sends_no_push(srv, scene):
    pair(srv, scene.user.name)
    srv.phone.set_rule(scene.user.name, "approve")
    scene.write_config(**settings(srv))
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = sshd.ssh(scene.user.name, "true")
        child.expect(PASSWORD_PROMPT)
        child.sendline("not-the-password")
        output, status = finish(child)
    assert status == 255 and DENIED in output, explain(scene, sshd, child)
    assert "Toopher" not in output
    assert scene.audit_lines() == []
    assert requests_for(srv, scene.user.name) == 0


# ------------------------------------------------------------------ key + push

@pytest.mark.parametrize("answer, granted", [("approve", True), ("deny", False)])
def test_key_then_push(srv, scene, answer, granted):
    pair(srv, scene.user.name)
    srv.phone.set_rule(scene.user.name, answer, delay=0.3)
    scene.write_config(**settings(srv))
    command, word = marker()
    with start_sshd(scene, key_stack(scene), methods="publickey,keyboard-interactive") as sshd:
        key = sshd.authorize_key(scene.user.name)
        child = sshd.ssh(scene.user.name, command, key=key,
                         methods="publickey,keyboard-interactive")
        # No password: after the key, the first thing asked is the push prompt.
        index = child.expect([PUSH_PROMPT, PASSWORD_PROMPT, pexpect.EOF])
        assert index == 0, explain(scene, sshd, child)
        child.sendline("")
        output, status = finish(child)
    assert f"Partial publickey for {scene.user.name}" in sshd.log(), explain(scene, sshd, child)
    if granted:
        assert status == 0 and word in output, explain(scene, sshd, child)
        assert scene.audit()["outcome"] == "granted"
    else:
        assert status == 255 and DENIED in output and word not in output, \
            explain(scene, sshd, child)
        assert scene.audit()["outcome"] == "denied"


def test_key_alone_is_not_enough(srv, scene):
    """Without keyboard-interactive the key does not log in: the second step is required."""
    pair(srv, scene.user.name)
    scene.write_config(**settings(srv))
    with start_sshd(scene, key_stack(scene), methods="publickey,keyboard-interactive") as sshd:
        key = sshd.authorize_key(scene.user.name)
        child = sshd.ssh(scene.user.name, "true", key=key, methods="publickey")
        output, status = finish(child)
    assert status == 255 and DENIED in output, explain(scene, sshd, child)
    assert scene.audit_lines() == []


# ------------------------------------------------------------ inline pairing

def test_unpaired_user_pairs_inline_then_approves(srv, scene):
    scene.write_config(**settings(srv, unpaired="pair", auth_timeout=8))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        child = sshd.ssh(scene.user.name, command)
        child.expect(PASSWORD_PROMPT)
        child.sendline(scene.user.password)
        child.expect(PUSH_PROMPT)
        child.sendline("")
        child.expect(r"Enter the pairing phrase[^:]*: ")
        child.sendline(srv.phone.make_pairing_phrase(scene.user.name))
        child.expect(r"Toopher: accept the pairing on your phone, then press Enter: ")
        pairing = srv.phone.wait_for_pairing(scene.user.name, timeout=2)
        srv.phone.accept_pairing(pairing["id"])
        child.sendline("")
        request = srv.phone.wait_for_request(scene.user.name, timeout=2)
        srv.phone.approve(request["id"])  # the push follows the pairing: approving is all
        output, status = finish(child)
    assert status == 0 and word in output, explain(scene, sshd, child)
    assert scene.audit()["outcome"] == "granted"
