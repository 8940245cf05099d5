"""The module through the real PAM library: pamtester, pam_unix, pam_python,
this checkout's hook, a real local user and the project's Toopher server.

Each row of the outcome table in docs/pam.md is one test, asserting both
what PAM answered and the audit line the module wrote.  Most tests use the
production-like stack (password by pam_unix, then this module, required).
There PAM_IGNORE cannot be seen (pam_unix's success stands), so the rows
that step aside are also run against a stack of this module alone, where
libpam answers PAM_PERM_DENIED when no module decided -- proof that the
module returned PAM_IGNORE and not PAM_SUCCESS.
"""

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pam_toopher.api import ToopherApi
from tests.support.pam import toopher_line, toopher_only
from tests.support.server import RunningServer

AUTH_TIMEOUT = 3
OTP_PROMPT_AFTER = 1  # a phone that has not answered in 1 s: ask for the code


pytestmark = pytest.mark.usefixtures("root_only")
# srv (tests/conftest.py) over https, verified with the CA toopher-server
# make-cert made: plain http to a port any local user can bind is refused.
SERVER_TLS = True


def settings(server, **options):
    values = dict(api_url=server.url, consumer_key=server.key, consumer_secret=server.secret,
                  ca_bundle=server.ca_cert_path, auth_timeout=AUTH_TIMEOUT, http_timeout=5,
                  otp_prompt_after=OTP_PROMPT_AFTER)
    values.update(options)
    return values


def pair(server, user: str) -> None:
    """Pair ``user`` the way an admin would (toopher-pam pair), phone accepting."""
    server.phone.set_pairing_rule(user, "accept")
    with ToopherApi(server.key, server.secret, server.url,
                    ca_bundle=server.ca_cert_path) as api:
        pairing = api.pair(server.phone.make_pairing_phrase(user), user)
        assert api.get_pairing_status(pairing.id, long_poll=5).enabled
    server.phone.clear_pairing_rule(user)


def ready(scene, server, rule="approve", delay=0.3, paired=True, **options):
    """A paired user whose phone answers by ``rule``, and the usual stack."""
    if paired:
        pair(server, scene.user.name)
    if rule:
        server.phone.set_rule(scene.user.name, rule, delay=delay)
    scene.write_config(**settings(server, **options))
    scene.install_service()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------- the phone

def test_approved(scene, srv):
    ready(scene, srv)
    result = scene.pamtester([scene.user.password])  # nothing to type after the password
    assert result.ok, result
    assert "approve the request on your phone" in result.stdout  # an info message
    audit = scene.audit()
    assert audit["outcome"] == "granted"
    assert (audit["user"], audit["service"], audit["rhost"]) == (
        scene.user.name, scene.service.name, "203.0.113.5")
    action, = srv.query("SELECT a.name FROM auth_requests r JOIN actions a ON a.id = r.action_id "
                        "WHERE r.id = ?", audit["request"])[0]
    assert action == f"{scene.service.name} login from 203.0.113.5"


def test_denied(scene, srv):
    ready(scene, srv, rule="deny")
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_AUTH_ERR"), result
    assert "the request was denied" in result.stderr
    assert scene.audit()["outcome"] == "denied"


def test_no_answer_times_out(scene, srv):
    ready(scene, srv, rule="never")
    result = scene.pamtester([scene.user.password, ""], timeout=AUTH_TIMEOUT + 20)
    assert result.failed_with("PAM_AUTH_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "timeout"
    assert AUTH_TIMEOUT <= float(audit["elapsed"].rstrip("s")) < AUTH_TIMEOUT + 2


def test_valid_otp(scene, srv):
    """The phone is offline: after OTP_PROMPT_AFTER the code is asked for."""
    ready(scene, srv, rule="never")
    result = scene.pamtester([scene.user.password, srv.phone.otp(scene.user.name)])
    assert result.ok, result
    assert "no answer from your phone yet" in result.stderr  # the prompt
    assert scene.audit()["outcome"] == "granted"


def test_wrong_otp(scene, srv):
    ready(scene, srv, rule="never")
    good = srv.phone.otp(scene.user.name)
    wrong = f"{(int(good) + 1) % 1000000:06d}"
    result = scene.pamtester([scene.user.password, wrong])
    assert result.failed_with("PAM_AUTH_ERR"), result
    assert scene.audit()["outcome"] == "wrong_otp"


def test_wrong_password_sends_no_push(scene, srv):
    ready(scene, srv)
    result = scene.pamtester(["not the password", ""])
    assert result.failed_with("PAM_AUTH_ERR"), result
    assert scene.audit_lines() == []
    assert srv.query("SELECT count(*) FROM auth_requests r JOIN users u ON u.id = r.user_id "
                     "WHERE u.name = ?", scene.user.name) == [(0,)]


# -------------------------------------------------- pairing and terminals

def test_inline_pairing_then_approval(scene, srv):
    srv.phone.set_pairing_rule(scene.user.name, "accept", delay=0.3)
    ready(scene, srv, paired=False, unpaired="pair", auth_timeout=10)
    phrase = srv.phone.make_pairing_phrase(scene.user.name)
    result = scene.pamtester([scene.user.password, phrase, ""])
    assert result.ok, result
    assert "pairing phrase" in result.stderr
    assert scene.audit()["outcome"] == "granted"


def test_unpaired_denied_tells_how_to_pair(scene, srv):
    ready(scene, srv, paired=False, unpaired="deny")
    result = scene.pamtester([scene.user.password])
    assert result.failed_with("PAM_AUTH_ERR"), result
    assert f"toopher-pam pair {scene.user.name}" in result.stderr
    assert scene.audit()["outcome"] == "unpaired_denied"


def test_unknown_terminal_is_registered(scene, srv):
    terminal_id = f"term-{scene.user.name}"
    ready(scene, srv, terminal_id=terminal_id, terminal_name="Test Host")
    assert srv.query("SELECT count(*) FROM terminals WHERE identifier = ?",
                     terminal_id) == [(0,)]
    result = scene.pamtester([scene.user.password, ""])
    assert result.ok, result
    assert srv.query("SELECT name FROM terminals WHERE identifier = ?",
                     terminal_id) == [("Test Host",)]
    assert scene.audit()["outcome"] == "granted"


# ------------------------------------------------ the module steps aside

def _steps_aside(scene, outcome):
    """PAM_IGNORE: the password alone decides the usual stack, and a stack of
    this module alone is refused because nobody decided."""
    result = scene.pamtester([scene.user.password])
    assert result.ok, result
    scene.install_service(toopher_only(scene.hook, scene.config_path))
    alone = scene.pamtester([])
    assert alone.failed_with("PAM_PERM_DENIED"), alone
    assert [line["outcome"] for line in scene.audit_lines()] == [outcome, outcome]


def test_disabled_user_is_ignored(scene, srv):
    ready(scene, srv, rule=None)
    with ToopherApi(srv.key, srv.secret, srv.url, ca_bundle=srv.ca_cert_path) as api:
        api.set_toopher_enabled_for_user(scene.user.name, False)
    _steps_aside(scene, "disabled")


def test_skipped_user_is_ignored(scene, srv):
    ready(scene, srv, paired=False, rule=None, users=f"* !{scene.user.name}")
    _steps_aside(scene, "skipped")


def test_unpaired_allow_is_ignored(scene, srv):
    ready(scene, srv, paired=False, rule=None, unpaired="allow")
    _steps_aside(scene, "unpaired_allowed")


def test_user_not_local(scene, srv):
    ready(scene, srv, rule=None)
    scene.install_service(toopher_only(scene.hook, scene.config_path))
    result = scene.pamtester([], user="tphr-nobody-here")
    assert result.failed_with("PAM_USER_UNKNOWN"), result
    assert scene.audit()["outcome"] == "user_unknown"


# --------------------------------------------------- the service fails

@pytest.mark.parametrize("failmode, succeeds, code, outcome", [
    ("secure", False, "PAM_AUTHINFO_UNAVAIL", "unavailable"),
    ("safe", True, None, "failed_open"),
])
def test_service_down(scene, srv, failmode, succeeds, code, outcome):
    ready(scene, srv, rule=None, paired=False, failmode=failmode,
          api_url=f"https://127.0.0.1:{closed_port()}/v1")
    result = scene.pamtester([scene.user.password, ""])
    assert result.ok is succeeds and (succeeds or result.failed_with(code)), result
    assert scene.audit()["outcome"] == outcome


# ------------------------------------------ several service URLs (failover)

def test_a_dead_first_url_fails_over_and_the_phone_decides(scene, srv):
    dead = f"https://127.0.0.1:{closed_port()}/v1"
    ready(scene, srv, api_url=f"{dead} {srv.url}")
    result = scene.pamtester([scene.user.password, ""])
    assert result.ok, result
    audit = scene.audit()
    assert audit["outcome"] == "granted" and audit["reason"] == "approved by rule"
    assert audit["answered_by"] == srv.url + "/"        # not the first: said so


def test_the_first_url_answering_is_not_mentioned(scene, srv):
    ready(scene, srv, rule="deny", api_url=f"{srv.url} https://127.0.0.1:{closed_port()}/v1")
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_AUTH_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "denied" and "answered_by" not in audit


@pytest.mark.parametrize("failmode, succeeds, code, outcome", [
    ("secure", False, "PAM_AUTHINFO_UNAVAIL", "unavailable"),
    ("safe", True, None, "failed_open"),
])
def test_every_url_down_is_an_outage(scene, srv, failmode, succeeds, code, outcome):
    dead = [f"https://127.0.0.1:{closed_port()}/v1" for _ in range(2)]
    ready(scene, srv, rule=None, paired=False, failmode=failmode, api_url=" ".join(dead))
    result = scene.pamtester([scene.user.password, ""])
    assert result.ok is succeeds and (succeeds or result.failed_with(code)), result
    audit = scene.audit()
    assert audit["outcome"] == outcome
    assert audit["reason"].startswith("no service URL answered: ")
    assert all(url.rsplit("/", 1)[0] in audit["reason"] for url in dead)


class Twin(RunningServer):
    """A second instance of ``first``: the same database, certificate and
    requester, in its own process on its own port."""

    def __init__(self, first: RunningServer):
        super().__init__(directory=str(first.directory))   # no certificates made here
        self.tls, self._cert, self.ca_cert_path = True, first._cert, first.ca_cert_path
        self.key, self.secret = first.key, first.secret
        self.log_path = str(first.directory / "twin.log")


def test_the_instance_holding_the_wait_dies_and_the_other_one_answers(scene):
    """Two instances on one database; the push goes through the first, which
    is killed (SIGKILL) while the module waits on it: the wait goes on at the
    second, which sees the phone's answer."""
    with RunningServer(tls=True) as one, Twin(one) as two:
        ready(scene, one, rule=None, api_url=f"{one.url} {two.url}", auth_timeout=20)
        with ThreadPoolExecutor(max_workers=1) as pool:
            login = pool.submit(scene.pamtester, [scene.user.password, ""])
            request = one.phone.wait_for_request(scene.user.name)
            time.sleep(0.5)                          # the module is in its long poll
            one._process.kill()
            one._process.wait()
            two.phone.approve(request["id"], "approved after the failover")
            result = login.result(timeout=60)
    assert result.ok, result
    audit = scene.audit()
    assert (audit["outcome"], audit["request"]) == ("granted", request["id"])
    assert audit["reason"] == "approved after the failover"
    assert audit["answered_by"] == two.url + "/" and float(audit["elapsed"][:-1]) < 10


def test_a_first_url_failing_tls_never_fails_over_nor_open(scene, srv):
    # The next URL is fine, and failmode = safe: still refused, as tls_error.
    with RunningServer(tls=True) as other:     # its certificate is from another CA
        ready(scene, srv, rule="approve", failmode="safe", api_url=f"{other.url} {srv.url}")
        result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_AUTH_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "tls_error" and other.url.rsplit("/", 1)[0] in audit["reason"]
    assert srv.phone.pending_requests(scene.user.name) == []


@pytest.mark.parametrize("failmode", ["secure", "safe"])
def test_untrusted_certificate_never_fails_open(scene, srv, failmode):
    ready(scene, srv, rule=None, paired=False, failmode=failmode,
          ca_bundle=srv.untrusted_ca_cert_path)
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_AUTH_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "tls_error" and "did not verify" in audit["reason"]


def test_trusted_certificate(scene, srv):
    ready(scene, srv, ca_bundle=srv.ca_cert_path)
    result = scene.pamtester([scene.user.password, ""])
    assert result.ok, result
    assert scene.audit()["outcome"] == "granted"


def test_wrong_credentials_never_fail_open(scene, srv):
    ready(scene, srv, rule=None, failmode="safe", consumer_secret="not-the-secret")
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "api_error" and "401" in audit["reason"]
    assert "not-the-secret" not in scene.audit_path.read_text()


# ------------------------------------------------------ config faults

CONFIG_FAULTS = {
    "missing": (None, "no such file"),
    "insecure mode": ("mode", "must not be readable or writable by group or others"),
    "unknown key": ("colour = blue", "unknown key 'colour'"),
    "syntax error": ("just some words", "expected 'key = value'"),
    "bad value": ("otp_fallback = perhaps", "key 'otp_fallback' must be yes or no"),
}


@pytest.mark.parametrize("fault", CONFIG_FAULTS)
@pytest.mark.parametrize("failmode", ["secure", "safe"])
def test_config_faults_refuse_whatever_failmode(scene, srv, fault, failmode):
    extra, words = CONFIG_FAULTS[fault]
    path = scene.write_config(mode=0o644 if extra == "mode" else 0o600,
                              **settings(srv, failmode=failmode))
    if extra is None:
        path.unlink()
    elif extra != "mode":
        with open(path, "a") as handle:
            handle.write(extra + "\n")
    # The config cannot name the audit file when it cannot be read: the PAM
    # argument audit_log= can.
    scene.install_service(args=[f"audit_log={scene.audit_path}"])
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "config_error"
    assert str(path) in audit["reason"] and words in audit["reason"]


def test_unknown_module_argument_refuses(scene, srv):
    ready(scene, srv)
    scene.install_service(args=["conf=/etc/elsewhere"])
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result


# ------------------------------------- the key + push stack of docs/pam.md

@pytest.mark.parametrize("rule, options, succeeds, outcome", [
    ("approve", {}, True, "granted"),
    ("deny", {}, False, "denied"),
    (None, {"users": "!{user}"}, True, "skipped"),
])
def test_second_factor_only_stack(scene, srv, rule, options, succeeds, outcome):
    """sshd's keyboard-interactive step after a key: no password, the module
    decides, and a user it steps aside for passes on the key alone."""
    options = {k: v.format(user=scene.user.name) for k, v in options.items()}
    ready(scene, srv, rule=rule, paired=rule is not None, **options)
    scene.install_service([
        toopher_line(scene.hook, scene.config_path,
                     "[success=done ignore=ignore default=die]"),
        "auth required pam_permit.so",
        "account required pam_permit.so"])
    result = scene.pamtester([""])
    assert result.ok is succeeds and (succeeds or result.failed_with("PAM_AUTH_ERR")), result
    assert scene.audit()["outcome"] == outcome
