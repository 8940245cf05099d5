"""The service's limits, as the flow sees them: a refusal, never an outage.

The server answers too many wrong codes (790) and too many pushes (791) with
a 403; the flow must deny with its own outcome and a clear message, whatever
``failmode`` says (tests/test_server_limits.py shows the server's side,
tests/test_pam.py the whole login through PAM).
"""
import pytest

from pam_toopher import api as toopher
from pam_toopher.audit import LOG_WARNING
from pam_toopher.flow import (OTP_LOCKED_CODE, PUSH_LIMITED_CODE, Outcome, refusal_outcome,
                              retry_wait)
from pam_toopher.server.errors import OTP_LOCKED, PUSH_LIMITED
from tests.test_flow import World


def refused(message, code):
    return toopher.ToopherApiError(message, status=403, error_code=code)


def test_the_module_knows_the_servers_codes():
    assert (OTP_LOCKED_CODE, PUSH_LIMITED_CODE) == (OTP_LOCKED, PUSH_LIMITED)


@pytest.mark.parametrize("code, outcome", [
    (790, Outcome.OTP_LOCKED), (791, Outcome.RATE_LIMITED),
    (None, None), (401, None), (403, None), (704, None), (429, None)])
def test_refusal_outcome(code, outcome):
    assert refusal_outcome(code) is outcome


@pytest.mark.parametrize("reason, said", [
    ("Too many wrong codes; try again in 60 s (HTTP 403, error 790)", "in 1 min"),
    ("Too many wrong codes; try again in 61 s (HTTP 403, error 790)", "in 2 min"),
    ("Too many push requests: ...; try again in 1 s", "in 1 min"),
    ("Too many wrong codes (HTTP 403, error 790)", "later"),
    ("try again in 5 minutes", "later"),
])
def test_retry_wait(reason, said):
    assert retry_wait(reason) == said


@pytest.mark.parametrize("failmode", ["safe", "secure"])
def test_too_many_pushes_is_a_denial_never_an_outage(failmode):
    world = World(answers=[""], failmode=failmode)
    world.api.error = refused("Too many push requests: 3 are waiting for an answer on the "
                              "phone (at most 3); try again in 95 s", PUSH_LIMITED_CODE)
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
        raise refused("Too many wrong codes; try again in 240 s", OTP_LOCKED_CODE)
    world.api.authenticate_with_otp = locked
    decision = world.login()
    assert decision.outcome is Outcome.OTP_LOCKED
    assert decision.request_id and decision.request_id == world.api.calls[-1][1]
    assert world.person.shown[-1] == ("error",
                                      "Toopher: too many wrong codes; try again in 4 min.")
    (severity, line), = world.syslog
    assert severity == LOG_WARNING and line.startswith("outcome=otp_locked ")
    assert f"request={decision.request_id}" in line
