"""The module inside the real sudo, run as a throwaway user.

/etc/pam.d/sudo is never touched: a sudoers.d file of our own (checked with
visudo, removed afterwards) gives the test user ``Defaults:USER
pam_service=sudo-tphrXXXX``, a PAM service file of our own.  sudo runs as
that user on a pseudo-terminal (pexpect); the test plays the phone.
"""

import time

import pexpect
import pytest

from tests.support.pam import PamService, toopher_line, unique_name
from tests.support.sudo import SudoRule, spawn_sudo_as
from tests.test_pam import pair, settings

AUTH_TIMEOUT = 3
PAM_FAIL_DELAY = 2  # pam_unix delays every failed authentication by 2 s
PASSWORD = r"\[sudo\] password for \w+: "
WAITING = r"Toopher: approve the request on your phone \(waiting up to \d+ s[^)]*\)\.\.\."
CODE_PROMPT = r"Toopher: no answer from your phone yet\. Type the 6-digit code[^:]*: "
COMMAND = ["/usr/bin/id", "-u"]


pytestmark = pytest.mark.usefixtures("root_only")
SERVER_TLS = True  # srv: the module believes only https (tests/conftest.py)


def sudo_scene(scene, srv, passwd_tries=1, **options):
    """A paired user, the docs/pam.md sudo stack under a service of our own,
    and the sudoers rule that sends this user's sudo there."""
    pair(srv, scene.user.name)
    scene.write_config(**settings(srv, **options))
    scene.service = PamService(["auth requisite pam_unix.so",
                                toopher_line(scene.hook, scene.config_path),
                                "account required pam_unix.so",
                                "session required pam_permit.so"],
                               name=f"sudo-{unique_name()}")
    return SudoRule(scene.user.name, scene.service.name, ["/usr/bin/id"],
                    passwd_tries=passwd_tries)


def finish(child):
    child.expect(pexpect.EOF)
    child.close()
    return child.before, child.exitstatus


def explain(scene, child):
    return f"{scene.describe()}\nsudo: {child.before!r}"


def start(scene, command=COMMAND, **kwargs):
    child = spawn_sudo_as(scene.user.name, command, **kwargs)
    child.expect(PASSWORD)
    child.sendline(scene.user.password)
    return child


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_the_phone_decides_whether_the_command_runs(srv, scene, answer):
    with sudo_scene(scene, srv, otp_fallback=False):
        child = start(scene)
        child.expect(WAITING)
        request = srv.phone.wait_for_request(scene.user.name, timeout=2)
        # The phone sees what is being authorized.
        assert request["action"] == f"{scene.service.name}: -k -S /usr/bin/id -u"
        getattr(srv.phone, answer)(request["id"])
        output, status = finish(child)
    if answer == "approve":
        # id -u printed 0: the command ran as root.
        assert status == 0 and output.strip().splitlines()[-1] == "0", explain(scene, child)
        assert scene.audit()["outcome"] == "granted"
    else:
        assert status == 1, explain(scene, child)
        assert "Toopher: the request was denied" in output
        assert "\n0\r" not in output and not output.strip().endswith("0")
        assert scene.audit()["outcome"] == "denied"
    assert scene.audit()["request"] == request["id"]


def test_approval_alone_runs_the_command_within_a_second(srv, scene):
    """The default config: after the password, approving on the phone is all."""
    with sudo_scene(scene, srv, auth_timeout=20, otp_prompt_after=10):
        child = start(scene)
        child.expect(WAITING)
        assert "prompt for the code from your app comes in 10 s" in child.after
        request = srv.phone.wait_for_request(scene.user.name, timeout=2)
        time.sleep(0.5)  # the user takes out the phone
        srv.phone.approve(request["id"])
        approved = time.monotonic()
        child.expect(r"\r\n0\r\n")  # id -u ran as root; no key was pressed
        ran = time.monotonic()
        output, status = finish(child)
    assert status == 0, explain(scene, child)
    assert ran - approved <= 1.0, ran - approved
    assert scene.audit()["outcome"] == "granted"


def test_offline_phone_the_code_and_action_with_arguments(srv, scene):
    """The phone does not answer: after otp_prompt_after (1 s) the code is
    asked for; and a command with arguments."""
    with sudo_scene(scene, srv):
        child = start(scene, command=["/usr/bin/id", "-un", "--zero"])
        child.expect(WAITING)
        child.expect(CODE_PROMPT)
        request = srv.phone.wait_for_request(scene.user.name, timeout=2)
        assert request["action"].endswith(": -k -S /usr/bin/id -un --zero")
        child.sendline(srv.phone.otp(scene.user.name))
        output, status = finish(child)
    assert status == 0 and "root" in output, explain(scene, child)
    assert scene.audit()["outcome"] == "granted"


def test_no_answer_ends_within_auth_timeout(srv, scene):
    with sudo_scene(scene, srv, otp_fallback=False):
        child = start(scene)
        child.expect(WAITING)
        started = time.monotonic()
        output, status = finish(child)
        took = time.monotonic() - started
    assert status == 1 and "no answer from your phone in time" in output, explain(scene, child)
    audit = scene.audit()
    assert audit["outcome"] == "timeout"
    assert float(audit["elapsed"].rstrip("s")) <= AUTH_TIMEOUT + 0.5, audit
    assert took <= AUTH_TIMEOUT + PAM_FAIL_DELAY + 1.0, took


@pytest.mark.parametrize("passwd_tries", [1, 3])
def test_ctrl_c_ends_the_wait_at_once_and_refuses(srv, scene, passwd_tries):
    """sudo blocks SIGINT during PAM; the module takes it for the wait only,
    refuses, and hands it back to sudo, which then gives up (no new try)."""
    with sudo_scene(scene, srv, passwd_tries=passwd_tries, auth_timeout=30,
                    otp_prompt_after=20):
        child = start(scene)
        child.expect(WAITING)
        srv.phone.wait_for_request(scene.user.name, timeout=2)
        started = time.monotonic()
        child.sendintr()  # Ctrl-C on sudo's terminal
        output, status = finish(child)
        took = time.monotonic() - started
    assert status != 0 and "Toopher: cancelled." in output, explain(scene, child)
    assert "password for" not in output  # not asked again, even with tries left
    assert took <= PAM_FAIL_DELAY + 1.5, took
    audit = scene.audit()
    assert audit["outcome"] == "aborted" and audit["reason"] == "cancelled with Ctrl-C", audit
    assert float(audit["elapsed"].rstrip("s")) < 2, audit


def test_sigint_to_the_sudo_process(srv, scene):
    """The same with kill -INT on sudo's pid (no terminal involved)."""
    import os
    import signal

    with sudo_scene(scene, srv, auth_timeout=30, otp_fallback=False):
        child = start(scene)
        child.expect(WAITING)
        srv.phone.wait_for_request(scene.user.name, timeout=2)
        os.kill(child.pid, signal.SIGINT)
        output, status = finish(child)
    assert status != 0 and "Toopher: cancelled." in output, explain(scene, child)
    assert scene.audit()["outcome"] == "aborted"


def test_approved_after_ctrl_c_elsewhere_sudo_still_works(srv, scene):
    """After a cancelled sudo, the next sudo of the same user is untouched."""
    with sudo_scene(scene, srv, auth_timeout=30, otp_fallback=False):
        child = start(scene)
        child.expect(WAITING)
        srv.phone.wait_for_request(scene.user.name, timeout=2)
        child.sendintr()
        finish(child)
        srv.phone.set_rule(scene.user.name, "approve", delay=0.2)
        child = start(scene)
        output, status = finish(child)
    assert status == 0 and output.strip().splitlines()[-1] == "0", explain(scene, child)
    assert [line["outcome"] for line in scene.audit_lines()] == ["aborted", "granted"]


def test_ctrl_c_at_the_code_prompt_refuses(srv, scene):
    """Ctrl-C also ends the prompt for the code (sudo reads it itself)."""
    with sudo_scene(scene, srv, auth_timeout=30, otp_prompt_after=1):
        child = start(scene)
        child.expect(CODE_PROMPT)
        started = time.monotonic()
        child.sendintr()
        output, status = finish(child)
        took = time.monotonic() - started
    assert status != 0, explain(scene, child)
    assert "password for" not in output
    assert took <= PAM_FAIL_DELAY + 1.5, took
    assert "Toopher: cancelled." in output
    audit = scene.audit()
    assert audit["outcome"] == "aborted" and audit["reason"] == "cancelled with Ctrl-C", audit
