"""The login flow with a fake Toopher service, a fake person and a fake clock."""

import os
import pwd
import subprocess
import textwrap

import pytest

from pam_toopher import api as toopher
from pam_toopher.audit import LOG_ERR, LOG_INFO, LOG_WARNING, AuditTrail
from pam_toopher.config import Config, ConfigError, Secret
from pam_toopher.flow import (LONG_POLL_PER_CALL, Account, LoginRequest, Outcome,
                              describe_action, needs_second_factor, run,
                              wait_until_answered)
from tests.conftest import REPO_ROOT
from tests.support.fake_api import FakeClock, FakeConversation, FakeToopher, factory_for

SECRET = "TOP-s3cret-never-shown"
ME = pwd.getpwuid(os.getuid()).pw_name  # flow checks the account exists locally


def make_config(**overrides) -> Config:
    values = dict(path="/etc/test.conf", api_urls=("https://api.example.com/v1/",),
                  consumer_key="key", consumer_secret=Secret(SECRET), auth_timeout=60.0,
                  terminal_id="host-id", terminal_name="Host One")
    values.update(overrides)
    return Config(**values)


class World:
    """One login's surroundings: the fake service, person, clock and logs."""

    def __init__(self, answers=None, **config):
        self.clock = FakeClock()
        self.api = FakeToopher(self.clock)
        self.person = FakeConversation(answers=list(answers or []))
        self.config = make_config(**config)
        self.syslog = []
        self.request = LoginRequest(user=ME, service="sshd", rhost="203.0.113.5", tty="ssh")

    def login(self, **request_changes):
        self.request = self.request._replace(**request_changes)
        return run(self.request, self.person, config_path=self.config.path,
                   audit=AuditTrail(syslog=lambda sev, line: self.syslog.append((sev, line))),
                   api_factory=factory_for(self.api), clock=self.clock,
                   load=lambda path: self.config)

    def everything_said(self) -> str:
        return self.person.texts() + "\n" + "\n".join(line for _s, line in self.syslog)


# ----------------------------------------------------------------- policy

@pytest.mark.parametrize("users, groups, name, member_of, needed", [
    (("*",), ("*",), "alice", ("alice",), True),
    (("*", "!backup"), ("*",), "backup", ("backup",), False),
    (("!backup",), ("*",), "alice", ("alice",), True),           # negations only: everyone else
    (("a*",), ("*",), "bob", ("bob",), False),
    (("?ob",), ("*",), "bob", ("bob",), True),
    (("*",), ("admins",), "bob", ("bob", "staff"), False),
    (("*",), ("admins",), "bob", ("bob", "admins"), True),
    (("*",), ("admins", "!nopush"), "bob", ("admins", "nopush"), False),  # exclusion wins
    (("*",), ("adm*", "wheel"), "bob", ("bob", "wheel"), True),
    (("alice",), ("!nopush",), "alice", ("alice", "nopush"), False),
])
def test_policy(users, groups, name, member_of, needed):
    config = make_config(users=users, groups=groups)
    assert needs_second_factor(config, Account(name, member_of)) is needed


def test_skipped_user_is_ignored_without_calling_the_service():
    world = World(users=("*", f"!{ME}"))
    decision = world.login()
    assert decision.outcome is Outcome.SKIPPED
    assert world.api.calls == [] and world.person.shown == []


def test_skipping_does_not_import_the_http_stack():
    # A fresh interpreter (the one pam_python embeds): decide() for a skipped
    # user must leave requests unimported, and the standard modules whose
    # import a skipped login need not pay (tools/bench-skip, docs/pam.md Speed).
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pam_toopher.config import Config, Secret
        from pam_toopher.flow import LoginRequest, Outcome, decide, SystemClock
        config = Config(path="x", api_urls=("https://x/",), consumer_key="k",
                        consumer_secret=Secret("s"), users=("!{ME}",))
        def no_api(config):
            raise AssertionError("the client must not be built")
        decision = decide(LoginRequest(user={ME!r}, service="sudo"), config, None, no_api,
                          SystemClock())
        assert decision.outcome is Outcome.SKIPPED, decision
        heavy = sorted(m for m in ("requests", "requests_oauthlib", "urllib3",
                                   "pam_toopher.api", "typing", "dataclasses", "inspect",
                                   "socket", "signal", "string") if m in sys.modules)
        print(heavy)
    """)
    result = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unknown_local_user():
    world = World()
    decision = world.login(user="no-such-user-tphr")
    assert decision.outcome is Outcome.USER_UNKNOWN
    assert world.api.calls == []


# ------------------------------------------------------- the push answered

def test_approved_on_the_phone_with_nothing_to_press():
    """Where messages show at once (sudo, su, login): told, then the approval
    alone logs in."""
    world = World(answers=[])
    decision = world.login()
    assert decision.outcome is Outcome.GRANTED
    assert decision.request_id
    assert [kind for kind, _text in world.person.shown] == ["info"]
    assert world.person.shown[0][1] == (
        "Toopher: approve the request on your phone (waiting up to 60 s; phone offline? "
        "a prompt for the code from your app comes in 15 s)...")
    name, user, terminal_id, action, kwargs = world.api.calls[0]
    assert (name, user, terminal_id) == ("authenticate_by_user_name", ME, "host-id")
    assert action == "sshd login from 203.0.113.5"
    assert kwargs == {"automation_allowed": False}
    assert world.api.closed


def test_otp_prompt_after_0_asks_at_once_as_before():
    world = World(answers=[""], otp_prompt_after=0)
    decision = world.login()
    assert decision.outcome is Outcome.GRANTED
    assert world.person.shown[0][0] == "prompt_echo_on"
    assert "approve the request on your phone, then press Enter" in world.person.shown[0][1]
    assert "6-digit code" in world.person.shown[0][1]


def test_no_answer_yet_asks_for_the_code_after_otp_prompt_after():
    world = World(answers=[" 123456 "])
    world.api.phone = "never"
    asked_at = []
    world.person.prompt_echo_on = lambda text: asked_at.append((world.clock.now(), text)) \
        or " 123456 "
    started = world.clock.now()
    decision = world.login()
    assert decision.outcome is Outcome.GRANTED and decision.reason == "valid otp"
    (when, text), = asked_at
    assert when - started == pytest.approx(15.0)
    assert text == ("Toopher: no answer from your phone yet. Type the 6-digit code from your "
                    "app, or press Enter to keep waiting: ")
    assert world.api.call_names() == ["authenticate_by_user_name", "get_authentication_status",
                                      "get_authentication_status", "authenticate_with_otp"]


def test_enter_at_the_code_prompt_keeps_waiting_for_the_phone():
    world = World(answers=[""])
    world.api.answer_after = 20.0
    started = world.clock.now()
    assert world.login().outcome is Outcome.GRANTED
    assert world.clock.now() - started == pytest.approx(20.0)


def test_sshd_offers_the_code_before_the_push_then_the_approval_alone_logs_in():
    world = World(answers=[""])
    pushed_when_asked = []
    world.person.prompt_echo_on = lambda text: pushed_when_asked.append(
        (text, list(world.api.call_names()))) or ""
    decision = world.login(messages_deferred=True)
    assert decision.outcome is Outcome.GRANTED
    (text, calls), = pushed_when_asked  # one prompt, before the push
    assert text == ("Toopher: press Enter to send a push to your phone, or type the 6-digit "
                    "code from your app: ")
    assert calls == []
    assert [kind for kind, _t in world.person.shown] == []  # nothing else: infos would wait


def test_sshd_code_typed_before_the_push():
    world = World(answers=["123456"])
    world.api.phone = "never"
    decision = world.login(messages_deferred=True)
    assert decision.outcome is Outcome.GRANTED
    assert world.api.call_names() == ["authenticate_by_user_name", "authenticate_with_otp"]


def test_sshd_anything_but_a_code_before_the_push_sends_no_push():
    world = World(answers=["yes"])
    assert world.login(messages_deferred=True).outcome is Outcome.WRONG_OTP
    assert world.api.calls == []


def test_sshd_the_wait_counts_from_the_push_not_from_the_prompt_before_it():
    world = World(answers=[], auth_timeout=20.0)
    world.api.phone = "never"
    asked_at = []

    def slow_reader(text):
        asked_at.append(world.clock.now() - started)
        world.clock.sleep(30.0)
        return ""
    world.person.prompt_echo_on = slow_reader
    started = world.clock.now()
    assert world.login(messages_deferred=True).outcome is Outcome.TIMEOUT
    # 30 s reading the first prompt; the push, then 15 s to the code prompt.
    assert asked_at == [0.0, pytest.approx(45.0)]
    # Enter 30 s later, past the 20 s wait: one last status check, then timeout.
    assert world.clock.now() - started == pytest.approx(75.0)


def test_the_first_status_check_does_not_wait_when_the_phone_already_answered():
    world = World(answers=[""], otp_prompt_after=0)
    world.api.answer_after = 2.0
    world.person.prompt_echo_on = lambda text: world.clock.sleep(5.0) or ""  # reading
    started = world.clock.now()
    assert world.login().outcome is Outcome.GRANTED
    assert world.clock.now() == started + 5.0
    assert world.api.call_names() == ["authenticate_by_user_name", "get_authentication_status"]


def test_without_otp_fallback_an_info_is_shown_before_the_wait_where_it_shows_at_once():
    world = World(otp_fallback=False)
    calls_when_told = []
    world.person.info = lambda text: calls_when_told.append((text, list(world.api.call_names())))
    decision = world.login(service="sudo", rhost=None, command="apt upgrade")
    assert decision.outcome is Outcome.GRANTED
    text, calls_before = calls_when_told[0]
    assert "approve the request on your phone" in text
    assert calls_before == ["authenticate_by_user_name"]
    assert world.api.calls[0][3] == "sudo: apt upgrade"


def test_without_otp_fallback_sshd_still_gets_a_prompt_because_infos_are_held_back():
    world = World(answers=[""], otp_fallback=False)
    decision = world.login(messages_deferred=True)
    assert decision.outcome is Outcome.GRANTED
    assert world.person.shown == [("prompt_echo_on",
                                   "Toopher: press Enter to send a push to your phone: ")]


def test_denied_with_the_reason_sanitized_everywhere():
    world = World(answers=[""])
    world.api.phone = "deny"
    world.api.reason = "not me\x1b[2J\nFAKE outcome=granted"
    decision = world.login()
    assert decision.outcome is Outcome.DENIED
    said = world.everything_said()
    assert "\x1b" not in said and r"not me\x1b[2J\nFAKE" in said
    assert len(world.syslog) == 1  # the newline did not split the audit line


def test_timeout_with_long_polls_that_never_pass_the_deadline():
    world = World(answers=[""], auth_timeout=25.0)
    world.api.phone = "never"
    started = world.clock.now()
    decision = world.login()
    assert decision.outcome is Outcome.TIMEOUT
    assert world.clock.now() - started == pytest.approx(25.0)
    polls = [c[2] for c in world.api.calls if c[0] == "get_authentication_status"]
    # Up to the code prompt at 15 s, then (Enter) on to the deadline.
    assert polls == [LONG_POLL_PER_CALL, 5.0, LONG_POLL_PER_CALL]
    assert "no answer from your phone" in world.person.texts()


def test_every_http_call_is_bounded_by_the_wait_plus_one_http_timeout():
    world = World(answers=[""], auth_timeout=30.0, http_timeout=7.0)
    started = world.clock.now()
    world.login()
    assert world.api.deadline == pytest.approx(started + 30.0 + 7.0)


def test_timeout_against_a_server_without_long_poll_paces_one_request_per_second():
    world = World(answers=[""], auth_timeout=10.0)
    world.api.phone = "never"
    world.api.long_poll_supported = False
    assert world.login().outcome is Outcome.TIMEOUT
    polls = world.api.call_names().count("get_authentication_status")
    assert 10 <= polls <= 11


def test_the_deadline_counts_from_the_push_not_from_the_enter_key():
    world = World(answers=[""], auth_timeout=20.0, otp_prompt_after=0)
    world.api.phone = "never"
    world.person.prompt_echo_on = lambda text: world.clock.sleep(15.0) or ""
    started = world.clock.now()
    assert world.login().outcome is Outcome.TIMEOUT
    assert world.clock.now() - started == pytest.approx(20.0)


def test_a_late_enter_still_gets_one_status_check():
    world = World(answers=[""], auth_timeout=5.0, otp_prompt_after=0)
    world.api.answer_after = 3.0
    world.person.prompt_echo_on = lambda text: world.clock.sleep(30.0) or ""
    assert world.login().outcome is Outcome.GRANTED


def test_a_late_otp_is_checked_not_taken_for_an_outage():
    world = World(answers=[], auth_timeout=5.0, http_timeout=5.0, failmode="safe",
                  otp_prompt_after=0)
    world.api.phone = "never"
    world.person.prompt_echo_on = lambda text: world.clock.sleep(40.0) or world.api.OTP
    decision = world.login()
    assert decision.outcome is Outcome.GRANTED, decision
    assert world.api.call_names()[-1] == "authenticate_with_otp"


@pytest.mark.parametrize("failmode", ["safe", "secure"])
def test_a_passed_deadline_is_a_timeout_never_a_fail_open(failmode):
    world = World(answers=[""], failmode=failmode)
    world.api.error = toopher.DeadlineExceededError("the deadline passed")
    decision = world.login()
    assert decision.outcome is Outcome.TIMEOUT, decision


def test_wait_until_answered_returns_the_pending_answer_at_the_deadline():
    clock = FakeClock()

    class Pending:
        pending = True

    asked = []
    result = wait_until_answered(lambda lp: asked.append(lp) or Pending, clock.now() + 2.5,
                                 clock)
    # The last check at the deadline still counts an answer given in time.
    assert result is Pending and asked == [2.5, 1.5, 0.5, None]


def test_an_answer_about_another_request_is_not_a_grant():
    world = World(answers=[""])
    world.api.wrong_id = True
    assert world.login().outcome is Outcome.API_ERROR


def test_an_automated_approval_is_refused_unless_allowed():
    world = World(answers=[""])
    world.api.automated = True
    assert world.login().outcome is Outcome.DENIED
    world = World(answers=[""], automation_allowed=True)
    world.api.automated = True
    assert world.login().outcome is Outcome.GRANTED
    assert world.api.calls[0][4] == {"automation_allowed": True}


# ------------------------------------------------------------------- OTP

def test_a_valid_otp_grants():
    world = World(answers=[" 123456 "])
    world.api.phone = "never"
    decision = world.login()
    assert decision.outcome is Outcome.GRANTED
    assert world.api.calls[-1][0] == "authenticate_with_otp"
    assert world.api.calls[-1][2] == "123456"


def test_a_wrong_otp_is_refused():
    world = World(answers=["654321"])
    world.api.phone = "never"
    assert world.login().outcome is Outcome.WRONG_OTP
    assert "not valid" in world.person.texts()


@pytest.mark.parametrize("answer", ["12345", "1234567", "abcdef", "yes", "١٢٣٤٥٦"])
def test_anything_else_typed_is_a_wrong_otp_without_asking_the_service(answer):
    world = World(answers=[answer])
    world.api.phone = "never"
    assert world.login().outcome is Outcome.WRONG_OTP
    assert "authenticate_with_otp" not in world.api.call_names()


def test_a_failed_conversation_falls_back_to_waiting_for_the_phone():
    world = World(answers=[None])
    world.api.answer_after = 20.0  # after the code prompt
    assert world.login().outcome is Outcome.GRANTED


# ------------------------------------------------- terminals and pairing

def test_an_unknown_terminal_is_registered_once_then_the_push_retried():
    world = World(answers=[""])
    world.api.terminal_known = False
    assert world.login().outcome is Outcome.GRANTED
    assert world.api.call_names()[:3] == ["authenticate_by_user_name", "create_user_terminal",
                                          "authenticate_by_user_name"]
    assert world.api.calls[1][1:] == (ME, "Host One", "host-id")


def test_a_terminal_still_unknown_after_registering_is_an_api_error():
    world = World(answers=[""])
    world.api.terminal_known = False
    world.api.create_user_terminal = lambda *args: None  # registers nothing
    assert world.login().outcome is Outcome.API_ERROR
    assert world.api.call_names().count("authenticate_by_user_name") == 2


def test_disabled_user_is_ignored():
    world = World()
    world.api.pairing = "disabled"
    assert world.login().outcome is Outcome.DISABLED


@pytest.mark.parametrize("state", ["unpaired", "deactivated"])
def test_unpaired_allow(state):
    world = World(unpaired="allow")
    world.api.pairing = state
    assert world.login().outcome is Outcome.UNPAIRED_ALLOWED


@pytest.mark.parametrize("state", ["unpaired", "deactivated"])
def test_unpaired_deny_tells_how_to_pair(state):
    world = World(unpaired="deny")
    world.api.pairing = state
    assert world.login().outcome is Outcome.UNPAIRED_DENIED
    assert f"toopher-pam pair {ME}" in world.person.texts()


@pytest.mark.parametrize("state", ["unpaired", "deactivated"])
def test_inline_pairing_then_approval(state):
    world = World(answers=["", "correct horse", ""], unpaired="pair", otp_fallback=False)
    world.api.pairing = state
    decision = world.login(messages_deferred=True)
    assert decision.outcome is Outcome.GRANTED
    assert world.api.call_names() == [
        "authenticate_by_user_name", "pair", "get_pairing_status",
        "authenticate_by_user_name", "get_authentication_status"]
    prompts = [text for kind, text in world.person.shown if kind == "prompt_echo_on"]
    assert "send a push" in prompts[0]
    assert "pairing phrase" in prompts[1]
    assert "accept the pairing on your phone" in prompts[2]


@pytest.mark.parametrize("answers, pairing_answer, outcome", [
    ([""], "accept", Outcome.UNPAIRED_DENIED),            # no phrase typed
    ([None], "accept", Outcome.UNPAIRED_DENIED),          # conversation failed
    (["wrong phrase"], "accept", Outcome.PAIRING_FAILED),
    (["correct horse"], "refuse", Outcome.PAIRING_FAILED),
    (["correct horse"], "never", Outcome.TIMEOUT),
])
def test_inline_pairing_that_does_not_complete(answers, pairing_answer, outcome):
    world = World(answers=answers, unpaired="pair", auth_timeout=12.0)
    world.api.pairing = "unpaired"
    world.api.pairing_answer = pairing_answer
    assert world.login().outcome is outcome
    assert "authenticate_with_otp" not in world.api.call_names()


# -------------------------------------------------------------- failures

@pytest.mark.parametrize("error, failmode, outcome, severity", [
    (toopher.ToopherUnavailableError("could not reach x"), "secure", Outcome.UNAVAILABLE,
     LOG_ERR),
    (toopher.ToopherUnavailableError("could not reach x"), "safe", Outcome.FAILED_OPEN,
     LOG_WARNING),
    (toopher.ToopherTLSError("certificate did not verify"), "safe", Outcome.TLS_ERROR, LOG_ERR),
    (toopher.ToopherTLSError("certificate did not verify"), "secure", Outcome.TLS_ERROR,
     LOG_ERR),
    (toopher.ToopherApiError("Not a valid OAuth signed request", status=401), "safe",
     Outcome.API_ERROR, LOG_ERR),
    (toopher.ToopherApiError("forbidden", status=403), "safe", Outcome.API_ERROR, LOG_ERR),
    (toopher.MalformedResponseError("not JSON"), "safe", Outcome.API_ERROR, LOG_ERR),
])
def test_service_failures_follow_failmode_only_for_outages(error, failmode, outcome, severity):
    world = World(failmode=failmode)
    world.api.error = error
    decision = world.login()
    assert decision.outcome is outcome
    assert [sev for sev, _line in world.syslog] == [severity]
    assert str(error) in world.syslog[0][1]


def test_an_outage_while_waiting_follows_failmode_too():
    world = World(answers=[""], failmode="secure")
    original = world.api.get_authentication_status

    def broken(*args, **kwargs):
        raise toopher.ToopherUnavailableError("timed out")
    world.api.get_authentication_status = broken
    decision = world.login()
    assert decision.outcome is Outcome.UNAVAILABLE and decision.request_id
    assert original  # the push itself went out


def test_a_config_error_refuses_and_is_audited():
    world = World()

    def broken_config(path):
        raise ConfigError(f"{path}, line 3: unknown key 'colour'")
    decision = run(world.request, world.person, config_path="/etc/x.conf",
                   audit=AuditTrail(syslog=lambda s, l: world.syslog.append((s, l))),
                   api_factory=factory_for(world.api), clock=world.clock, load=broken_config)
    assert decision.outcome is Outcome.CONFIG_ERROR
    assert world.syslog == [(LOG_ERR, f'outcome=config_error user={ME} service=sshd '
                             'rhost=203.0.113.5 tty=ssh request=- elapsed=0.00s '
                             'reason="/etc/x.conf, line 3: unknown key \'colour\'"')]
    assert "misconfigured" in world.person.texts()


def test_a_bug_is_an_internal_error_with_the_traceback_in_syslog():
    world = World()
    world.api.authenticate_by_user_name = lambda *a, **k: 1 / 0
    decision = world.login()
    assert decision.outcome is Outcome.INTERNAL_ERROR
    assert world.syslog[0][1].startswith("outcome=internal_error")
    assert any("ZeroDivisionError" in line for _sev, line in world.syslog[1:])
    assert "ZeroDivisionError" not in world.person.texts()  # the user sees no internals


# ----------------------------------------------------------------- audit

def test_exactly_one_audit_line_with_every_field(tmp_path):
    audit_file = tmp_path / "audit.log"
    world = World(answers=[""], audit_log=str(audit_file))
    world.api.answer_after = 1.25
    decision = world.login()
    assert len(world.syslog) == 1
    severity, line = world.syslog[0]
    assert severity == LOG_INFO
    assert line == (f"outcome=granted user={ME} service=sshd rhost=203.0.113.5 tty=ssh "
                    f"request={decision.request_id} elapsed=1.25s "
                    f'reason="approved on the phone"')
    written = audit_file.read_text().splitlines()
    assert len(written) == 1 and written[0].endswith(line)
    assert oct(audit_file.stat().st_mode & 0o777) == "0o600"


def test_the_audit_line_names_the_service_url_that_answered_when_not_the_first():
    world = World(answers=[""], api_urls=("https://a.example.com/v1/",
                                          "https://b.example.com/v1/"))
    world.api.answered_by = "https://b.example.com/v1/"   # the client failed over
    decision = world.login()
    assert (decision.outcome, decision.answered_by) == (Outcome.GRANTED,
                                                        "https://b.example.com/v1/")
    (_sev, line), = world.syslog
    assert line.endswith('reason="approved on the phone" answered_by=https://b.example.com/v1/')
    world = World(answers=[""])                            # the first answered: no field
    assert "answered_by" not in (world.login(), world.syslog[0][1])[1]


def test_control_characters_in_names_never_reach_the_log():
    world = World()
    decision = world.login(user="evil\x1b]0;owned\x07\nuser", rhost="a\rb")
    assert decision.outcome is Outcome.USER_UNKNOWN
    (_sev, line), = world.syslog
    assert "\x1b" not in line and "\n" not in line and "\r" not in line and "\x07" not in line
    assert r'user="evil\\x1b]0;owned\\x07\\nuser"' in line and r'rhost="a\\rb"' in line


@pytest.mark.parametrize("scenario", ["granted", "denied", "outage", "api_error", "bug",
                                      "unpaired"])
def test_the_secret_is_never_said(scenario):
    world = World(answers=[""])
    if scenario == "denied":
        world.api.phone = "deny"
    elif scenario == "outage":
        world.api.error = toopher.ToopherUnavailableError("down")
    elif scenario == "api_error":
        world.api.error = toopher.ToopherApiError("bad signature", status=401)
    elif scenario == "bug":
        world.api.authenticate_by_user_name = lambda *a, **k: 1 / 0
    elif scenario == "unpaired":
        world.api.pairing = "unpaired"
    world.login()
    assert SECRET not in world.everything_said()
    assert SECRET not in repr(world.config)


# ---------------------------------------------------------------- action

@pytest.mark.parametrize("request_fields, expected", [
    (dict(service="sshd", rhost="203.0.113.5"), "sshd login from 203.0.113.5"),
    (dict(service="login"), "login login"),
    (dict(service="sudo", command="apt upgrade"), "sudo: apt upgrade"),
    (dict(service="sudo", command="rm\x1b[8m -rf /"), r"sudo: rm\x1b[8m -rf /"),
])
def test_default_action(request_fields, expected):
    assert describe_action(make_config(), LoginRequest(user="alice", **request_fields)) \
        == expected


def test_action_template_and_length_cap():
    config = make_config(action="{user}@{host} via {service} ({command})")
    request = LoginRequest(user="alice", service="sudo", command="x" * 500)
    action = describe_action(config, request)
    assert action.startswith("alice@Host One via sudo (xxx") and len(action) == 200
    assert "xxx...[" in action and " chars cut]...xxx" in action and action.endswith("xxx)")


# ------------------------------------------------------------- Ctrl-C (sudo)

def test_an_interruption_during_the_wait_refuses_with_one_audit_line():
    from contextlib import contextmanager

    from pam_toopher.flow import Interrupted

    world = World(otp_fallback=False)
    entered = []

    @contextmanager
    def interruptible():
        entered.append(list(world.api.call_names()))
        yield

    def ctrl_c(text):
        raise Interrupted()

    world.person.info = ctrl_c  # Ctrl-C lands while the user is told to wait
    decision = run(world.request, world.person, config_path=world.config.path,
                   audit=AuditTrail(syslog=lambda sev, line: world.syslog.append((sev, line))),
                   api_factory=factory_for(world.api), clock=world.clock,
                   load=lambda path: world.config, interruptible=interruptible)
    assert entered == [[]]  # the guard wraps the decision, from before the push
    assert decision.outcome is Outcome.ABORTED
    assert decision.request_id  # the push had gone out
    assert world.api.closed
    assert [line for _s, line in world.syslog if "outcome=aborted" in line]
    assert len(world.syslog) == 1
    assert world.person.shown[-1] == ("error", "Toopher: cancelled.")


def test_no_code_prompt_is_promised_when_it_would_come_after_the_wait():
    """Inline pairing used most of auth_timeout: the user is not told of a
    prompt for the code that cannot come."""
    world = World(unpaired="pair", auth_timeout=20.0)
    world.api.pairing = "unpaired"
    world.person.prompt_echo_on = lambda text: world.clock.sleep(10.0) or "correct horse"
    assert world.login().outcome is Outcome.GRANTED
    infos = [text for kind, text in world.person.shown if kind == "info"]
    assert infos[-1].startswith("Toopher: approve the request on your phone (waiting up to 10 s)")


@pytest.mark.parametrize("error", [
    toopher.ToopherUnavailableError("api.example.com did not answer in time"),
    toopher.ToopherUnavailableError("server error", status=503),
    toopher.ToopherUnavailableError("could not reach x", not_processed=True),
])
def test_an_outage_while_a_typed_code_is_checked_never_fails_open(error):
    # A password holder picks the moment of each guess: a slow or failing
    # code check must not turn a wrong code into failed_open.
    world = World(answers=["654321"], failmode="safe")
    world.api.phone = "never"

    def broken(*args, **kwargs):
        raise error
    world.api.authenticate_with_otp = broken
    decision = world.login()
    assert decision.outcome is Outcome.UNAVAILABLE, decision
    assert decision.request_id


@pytest.mark.parametrize("broken_call", ["pair", "get_pairing_status"])
def test_an_outage_during_inline_pairing_never_fails_open(broken_call):
    # The service has just answered "not paired": a password holder who
    # meets (or causes) an outage while pairing must not get in on
    # failmode = safe with no second factor at all.
    world = World(answers=["correct horse"], unpaired="pair", failmode="safe")
    world.api.pairing = "unpaired"

    def broken(*args, **kwargs):
        raise toopher.ToopherUnavailableError("server error", status=503)
    setattr(world.api, broken_call, broken)
    decision = world.login()
    assert decision.outcome is Outcome.UNAVAILABLE, decision
