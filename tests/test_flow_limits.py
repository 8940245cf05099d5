"""The service's limits, as the flow sees them: a refusal, never an outage.

The server answers too many wrong codes (790) and too many pushes (791) with
a 403; the flow must deny with its own outcome and a clear message, whatever
``failmode`` says (tests/test_server_limits.py shows the server's side,
tests/test_pam.py the whole login through PAM).
"""
import pytest

from pam_toopher.audit import LOG_WARNING
from pam_toopher.errors import OtpLockedError, PushLimitedError, error_for_answer
from pam_toopher.flow import Outcome, retry_wait
from pam_toopher.server.errors import OTP_LOCKED, PUSH_LIMITED
from tests.test_flow import World


def refused(message, code, retry_after):
    return error_for_answer(403, {"error_code": code, "error_message": message,
                                  "retry_after": retry_after})


def test_the_client_knows_the_servers_codes():
    assert isinstance(refused("x", OTP_LOCKED, 60), OtpLockedError)
    assert isinstance(refused("x", PUSH_LIMITED, 60), PushLimitedError)
    assert refused("x", OTP_LOCKED, 60).retry_after == 60


@pytest.mark.parametrize("retry_after", ["60", -1, True, 1.5, None])
def test_a_strange_retry_after_is_not_believed(retry_after):
    assert refused("x", OTP_LOCKED, retry_after).retry_after is None


@pytest.mark.parametrize("seconds, said", [
    (60, "in 1 min"), (61, "in 2 min"), (1, "in 1 min"), (0, "in 1 min"), (None, "later")])
def test_retry_wait(seconds, said):
    assert retry_wait(seconds) == said


@pytest.mark.parametrize("failmode", ["safe", "secure"])
def test_too_many_pushes_is_a_denial_never_an_outage(failmode):
    world = World(answers=[""], failmode=failmode)
    world.api.error = refused("Too many push requests: 3 are waiting for an answer on the "
                              "phone (at most 3); try again in 95 s", PUSH_LIMITED, 95)
    decision = world.login()
    assert decision.outcome is Outcome.RATE_LIMITED
    assert world.api.call_names() == ["authenticate_by_user_name"]
    assert world.person.shown[-1] == ("error", "Toopher: too many login requests; answer those "
                                               "on your phone or try again in 2 min.")
    (severity, line), = world.syslog
    assert severity == LOG_WARNING and line.startswith("outcome=rate_limited ")
    assert "try again in 95 s (HTTP 403, error 791)" in line


@pytest.mark.parametrize("failmode", ["safe", "secure"])
def test_codes_locked_out_is_a_denial_for_our_request(failmode):
    world = World(answers=["123456"], failmode=failmode)
    world.api.phone = "never"

    def locked(request_id, otp):
        world.api.calls.append(("authenticate_with_otp", request_id, otp))
        raise refused("Too many wrong codes; try again in 240 s", OTP_LOCKED, 240)
    world.api.authenticate_with_otp = locked
    decision = world.login()
    assert decision.outcome is Outcome.OTP_LOCKED
    assert decision.request_id and decision.request_id == world.api.calls[-1][1]
    assert world.person.shown[-1] == ("error",
                                      "Toopher: too many wrong codes; try again in 4 min.")
    (severity, line), = world.syslog
    assert severity == LOG_WARNING and line.startswith("outcome=otp_locked ")
    assert f"request={decision.request_id}" in line
