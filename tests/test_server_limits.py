"""The limits a password holder meets (limits.py), over real HTTP with an
independent signer: OTP lockout and reset, 100 concurrent guesses, push limits.

Every refusal must be a 403 with this server's own code -- never 429 or 5xx,
which a client treats as an outage (and ``failmode = safe`` lets in).
"""
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from pam_toopher.server import totp
from pam_toopher.server.errors import OTP_LOCKED, PUSH_LIMITED
from pam_toopher.server.limits import (PENDING_WINDOW, RATE_WINDOW, Limits, lockout_seconds,
                                      push_refusal)
from tests.support.server import RunningServer, server_command, server_env
from tests.test_server_api import error, initiate, ok, paired_with_terminal

# Pushes are limited too; the OTP tests need more pushes than that allows.
MANY_PUSHES = ["--max-pending", "1000", "--max-pushes-per-minute", "1000"]
GUESSES = 5


@pytest.fixture
def name():
    return f"user-{uuid.uuid4().hex[:8]}"


def wrong_code(server, name) -> str:
    """A 6-digit code valid at no step the server accepts now."""
    secret, = server.query("SELECT p.totp_secret FROM pairings p JOIN users u ON u.id = p.user_id"
                           " WHERE u.name = ? AND p.enabled = 1", name)[0]
    now = totp.step_at(time.time())
    valid = {totp.code_for_step(secret, step) for step in range(now - 2, now + 3)}
    return next(code for code in (f"{n:06d}" for n in range(1000)) if code not in valid)


def locked(response) -> int:
    """The lockout refusal; returns its retry_after (seconds)."""
    body = error(response, 403, OTP_LOCKED)
    assert "Too many wrong codes; try again in" in body["error_message"]
    assert body["error_message"].endswith(f" {body['retry_after']} s")
    return body["retry_after"]


def push_limited(response) -> int:
    body = error(response, 403, PUSH_LIMITED)
    assert body["error_message"].startswith("Too many push requests")
    return body["retry_after"]


def otp_auth(api, name, code):
    """A push, then the code for it (the module's way)."""
    request = ok(initiate(api, name))
    return api.post(f"authentication_requests/{request['id']}/otp_auth", otp=code)


# -- the decisions, pure -------------------------------------------------------------

def test_lockout_doubles_up_to_its_cap():
    limits = Limits(otp_lockout=60, otp_lockout_max=300)
    assert [lockout_seconds(n, limits) for n in range(5)] == [60, 120, 240, 300, 300]
    assert lockout_seconds(10 ** 6, limits) == 300


def test_push_refusal_counts_pending_and_recent_requests():
    limits, now = Limits(max_pending=3, max_per_minute=10), 1000.0
    assert push_refusal([(now - 5, True)] * 2, now, limits) is None
    refusal = push_refusal([(now - 30, True), (now - 20, True), (now - 5, True)], now, limits)
    assert (refusal.status, refusal.code, refusal.retry_after) == (403, PUSH_LIMITED, 90)
    # A pending request no module still waits for does not count.
    assert push_refusal([(now - PENDING_WINDOW - 1, True)] * 5, now, limits) is None
    answered = [(now - 50 + i, False) for i in range(10)]
    refusal = push_refusal(answered, now, limits)
    assert (refusal.code, refusal.retry_after) == (PUSH_LIMITED, 10)
    assert push_refusal(answered[1:] + [(now - RATE_WINDOW - 1, False)], now, limits) is None


@pytest.mark.parametrize("options", [
    dict(otp_max_failures=0), dict(max_pending=0), dict(max_per_minute=0),
    dict(otp_lockout=0), dict(otp_lockout=10, otp_lockout_max=5),
    dict(otp_lockout_max=float("inf")), dict(otp_lockout=float("nan"))])
def test_nonsense_limits_are_refused(options):
    with pytest.raises(ValueError):
        Limits(**options)


def test_serve_refuses_nonsense_limits_with_a_usage_error(tmp_path):
    completed = subprocess.run(server_command("serve", "--db", str(tmp_path / "db"), "--port", "0",
                                              "--otp-lockout", "0"),
                               env=server_env(), capture_output=True, text=True, timeout=30,
                               check=False)
    assert completed.returncode == 2
    assert "toopher-server: error: the OTP lockout must be" in completed.stderr


# -- OTP guessing ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_lockout():
    """Lockouts of 2 s, 4 s, then 4 s: short enough to wait for, long enough
    for a few calls on a busy machine."""
    with RunningServer(serve_args=MANY_PUSHES + ["--otp-max-failures", str(GUESSES),
                                                 "--otp-lockout", "2",
                                                 "--otp-lockout-max", "4"]) as running:
        yield running


def test_wrong_codes_lock_codes_out_for_longer_each_time_until_a_valid_one(quick_lockout, name):
    server, api = quick_lockout, quick_lockout.client()
    paired_with_terminal(server, api, name)
    wrong = wrong_code(server, name)
    # Both ways of sending a code share one count per pairing.
    for attempt in range(GUESSES):
        answer = ok(initiate(api, name, otp=wrong) if attempt % 2 else otp_auth(api, name, wrong))
        assert (answer["granted"], answer["reason"]) == (False, "invalid otp")
    assert locked(initiate(api, name, otp=wrong)) == 2
    # Locked: a right code is refused as well, without being checked.
    assert locked(initiate(api, name, otp=server.phone.otp(name))) in (1, 2)
    request = ok(initiate(api, name))
    assert locked(api.post(f"authentication_requests/{request['id']}/otp_auth",
                           otp=server.phone.otp(name))) in (1, 2)
    # The refused request is closed, not left waiting on the phone.
    closed = ok(api.get(f"authentication_requests/{request['id']}"))
    assert (closed["pending"], closed["granted"], closed["reason"]) == (
        False, False, "too many wrong codes")
    assert request["id"] not in [r["id"] for r in server.phone.pending_requests(name)]

    time.sleep(2.1)  # the first lockout ends: five more guesses, then twice as long
    for _ in range(GUESSES):
        assert ok(otp_auth(api, name, wrong))["reason"] == "invalid otp"
    assert locked(otp_auth(api, name, wrong)) == 4

    time.sleep(4.1)
    assert ok(initiate(api, name, otp=server.phone.otp(name)))["granted"] is True
    # The valid code reset both the count and the lockout's length.
    for _ in range(GUESSES):
        assert ok(initiate(api, name, otp=wrong))["reason"] == "invalid otp"
    assert locked(initiate(api, name, otp=wrong)) == 2

    log = server.log()
    assert f"limit: otp locked user='{name}' pairing=" in log
    assert "5 wrong codes, codes refused for 2 s (lockout 1)" in log
    assert "codes refused for 4 s (lockout 2)" in log
    assert f"limit: otp refused user='{name}' pairing=" in log
    assert "POST /v1/authentication_requests/initiate 403" in log
    api.close()


def test_the_lockout_is_per_pairing(quick_lockout, name):
    server, api = quick_lockout, quick_lockout.client()
    other = f"{name}-other"
    for user in (name, other):
        paired_with_terminal(server, api, user)
    for _ in range(GUESSES):
        ok(initiate(api, name, otp=wrong_code(server, name)))
    locked(initiate(api, name, otp=server.phone.otp(name)))
    assert ok(initiate(api, other, otp=server.phone.otp(other)))["granted"] is True
    api.close()


def test_100_concurrent_wrong_codes_get_at_most_n_checked(name):
    """100 signed calls at once for one pairing -- half otp_auth, half
    initiate otp=, spread over two server processes on one database: exactly
    N codes are checked, the rest refused (and then a right code too)."""
    with RunningServer(serve_args=MANY_PUSHES) as server, \
            RunningServer(directory=str(server.directory), serve_args=MANY_PUSHES) as twin:
        setup = server.client()
        paired_with_terminal(server, setup, name)
        wrong = wrong_code(server, name)
        pending = [ok(initiate(setup, name))["id"] for _ in range(50)]
        # The first instance's requester, on either instance.
        clients = [(server if index % 2 else twin).client(server.key, server.secret)
                   for index in range(100)]
        start = threading.Barrier(100)

        def guess(index):
            client = clients[index]
            start.wait(timeout=30)
            if index < 50:
                return client.post(f"authentication_requests/{pending[index]}/otp_auth",
                                   otp=wrong)
            return initiate(client, name, otp=wrong)

        with ThreadPoolExecutor(max_workers=100) as pool:
            responses = list(pool.map(guess, range(100)))
        checked = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 403
                   and r.json()["error_code"] == OTP_LOCKED]
        assert len(checked) + len(refused) == 100, [r.text for r in responses
                                                    if r not in checked + refused]
        assert all(r.json()["reason"] == "invalid otp" for r in checked)
        assert len(checked) == Limits().otp_max_failures, len(checked)
        assert 30 <= locked(initiate(setup, name, otp=server.phone.otp(name))) <= 60
        assert server.log().count("limit: otp locked") == 1  # both instances log there
        for client in clients + [setup]:
            client.close()


# -- push flooding ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_limits():
    with RunningServer() as running:  # 3 pending, 10 a minute
        yield running


def test_pending_pushes_are_limited_until_one_is_answered(default_limits, name):
    server, api = default_limits, default_limits.client()
    paired_with_terminal(server, api, name)
    first = [ok(initiate(api, name))["id"] for _ in range(3)]
    retry_after = push_limited(initiate(api, name))
    assert PENDING_WINDOW - 5 <= retry_after <= PENDING_WINDOW
    assert "3 are waiting for an answer on the phone (at most 3)" in \
        initiate(api, name).json()["error_message"]
    assert len(server.phone.pending_requests(name)) == 3  # refused ones were never made
    # A code is no push: it still works while pushes are refused.
    assert ok(initiate(api, name, otp=server.phone.otp(name)))["granted"] is True
    server.phone.deny(first[0])
    ok(initiate(api, name))
    assert f"limit: push refused user='{name}': Too many push requests" in server.log()
    api.close()


def test_pushes_per_minute_are_limited(default_limits, name):
    server, api = default_limits, default_limits.client()
    paired_with_terminal(server, api, name)
    server.phone.set_rule(name, "deny")  # answered at once: none stays pending
    for _ in range(10):
        assert ok(initiate(api, name))["pending"] is False
    retry_after = push_limited(initiate(api, name))
    assert RATE_WINDOW - 5 <= retry_after <= RATE_WINDOW
    # Other users are not affected.
    other = f"{name}-other"
    paired_with_terminal(server, api, other)
    ok(initiate(api, other))
    api.close()
