"""The service's limits through the real PAM library (pamtester, pam_unix,
pam_python, this checkout's hook) against the project's server with its
default limits: beyond them a login is denied -- with ``failmode = safe``
too, never failed open (the server refuses with a 403, not 429 or 5xx)."""

import pytest

from pam_toopher.api import ToopherApi
from tests.test_pam import pair, settings

pytestmark = pytest.mark.usefixtures("root_only")
SERVER_TLS = True  # srv: the module believes only https (tests/conftest.py)


def paired_scene(scene, srv, rule, **options):
    """A paired user, a named terminal, and the usual stack with failmode = safe."""
    terminal = f"host-{scene.user.name}"
    pair(srv, scene.user.name)
    if rule:
        srv.phone.set_rule(scene.user.name, rule)
    with ToopherApi(srv.key, srv.secret, srv.url, ca_bundle=srv.ca_cert_path) as api:
        api.create_user_terminal(scene.user.name, "Test Host", terminal)
    scene.write_config(**settings(srv, failmode="safe", terminal_id=terminal, **options))
    scene.install_service()
    return terminal


@pytest.mark.parametrize("rule, earlier_pushes, why", [
    ("never", 3, "3 are waiting for an answer on the phone (at most 3)"),   # max pending
    ("deny", 10, "10 in the last minute (at most 10)"),                     # per minute
])
def test_too_many_pushes_is_denied_even_with_failmode_safe(scene, srv, rule, earlier_pushes,
                                                           why):
    terminal = paired_scene(scene, srv, rule)
    with ToopherApi(srv.key, srv.secret, srv.url, ca_bundle=srv.ca_cert_path) as api:  # an attacker's earlier logins
        for _ in range(earlier_pushes):
            api.authenticate_by_user_name(scene.user.name, terminal, action_name="flood")
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_AUTH_ERR"), result
    assert "Toopher: too many login requests; answer those on your phone or try again in " \
        in result.stderr, result
    audit = scene.audit()
    assert audit["outcome"] == "rate_limited", audit
    assert why in audit["reason"] and "error 791" in audit["reason"]
    assert len(srv.phone.pending_requests(scene.user.name)) == (
        earlier_pushes if rule == "never" else 0)  # no push was sent for the refused login
    assert f"limit: push refused user='{scene.user.name}'" in srv.log()


def test_wrong_codes_lock_codes_out_even_the_right_one(scene, srv):
    paired_scene(scene, srv, "never")
    good = srv.phone.otp(scene.user.name)
    wrong = f"{(int(good) + 500000) % 1000000:06d}"
    for _ in range(5):
        result = scene.pamtester([scene.user.password, wrong])
        assert result.failed_with("PAM_AUTH_ERR"), result
        assert "Toopher: that code is not valid." in result.stderr
    result = scene.pamtester([scene.user.password, srv.phone.otp(scene.user.name)])
    assert result.failed_with("PAM_AUTH_ERR"), result
    assert "Toopher: too many wrong codes; try again in 1 min." in result.stderr, result
    outcomes = [line["outcome"] for line in scene.audit_lines()]
    assert outcomes == ["wrong_otp"] * 5 + ["otp_locked"]
    last = scene.audit_lines()[-1]
    assert "error 790" in last["reason"] and last["request"] != "-"
    # The refused login's push is closed, not left on the phone.
    assert srv.phone.pending_requests(scene.user.name) == []
    assert f"limit: otp locked user='{scene.user.name}'" in srv.log()
