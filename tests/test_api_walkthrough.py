"""`python3 -m pam_toopher.demo`, the original library's walk-through, typed
at a real terminal (pexpect) against the project's server."""
import os
import sys

import pexpect

from tests.conftest import REPO_ROOT


def test_pair_then_approve_then_otp_then_deny(toopher_server):
    server = toopher_server
    phone = server.phone
    phone.set_pairing_rule("carol", "accept", delay=0.3)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TOOPHER_CONSUMER_SECRET=server.secret)
    child = pexpect.spawn(sys.executable, ["-m", "pam_toopher.demo", "--url", server.url,
                                           "--key", server.key],
                          env=env, encoding="utf-8", timeout=15)
    try:
        child.expect("User name to pair")
        child.sendline("carol")
        child.expect("Pairing phrase from the app")
        child.sendline(phone.make_pairing_phrase("carol"))
        child.expect("Paired carol")

        phone.set_rule("carol", "approve", delay=0.5)
        child.expect("Terminal name")
        child.sendline("laptop")
        child.expect("6-digit code")
        child.sendline("")
        child.expect("Granted")

        phone.set_rule("carol", "never")
        child.expect("Terminal name")
        child.sendline("laptop")
        child.expect("6-digit code")
        child.sendline(phone.otp("carol"))
        child.expect("Granted")

        phone.set_rule("carol", "deny")
        child.expect("Terminal name")
        child.sendline("laptop")
        child.expect("6-digit code")
        child.sendline("")
        child.expect("Denied")

        child.expect("Terminal name")
        child.sendline("")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert server.secret not in (child.before or "")
