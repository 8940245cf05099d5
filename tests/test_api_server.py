"""The Toopher client against the project's own Toopher-compatible server:
every endpoint, every error code and both documented flows, over real HTTP
with real signatures, the phone played by the simulator."""
import threading
import time
import uuid

import pytest

import pam_toopher as toopher
from pam_toopher.api import (MalformedResponseError, PairingDeactivatedError, TerminalUnknownError,
                             ToopherApi, ToopherApiError, ToopherTLSError,
                             ToopherUnavailableError, UserDisabledError, UserUnknownError)


@pytest.fixture
def server(srv):
    srv.phone.clear_faults()
    return srv


def api_for(server, **kwargs):
    kwargs.setdefault("timeout", (2.0, 5.0))
    kwargs.setdefault("retry_budget", 2.0)
    return ToopherApi(server.key, server.secret, server.url, **kwargs)


def unique(prefix="user"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def paired(server, api, user):
    """Pair ``user`` through the API, the phone accepting."""
    pairing = api.pair(server.phone.make_pairing_phrase(user), user)
    server.phone.accept_pairing(pairing.id)
    return pairing


def test_the_original_library_flow(server):
    """pair, approve on the phone, authenticate, approve, status granted."""
    user = unique("username@yourservice.com")
    api = toopher.ToopherApi(server.key, server.secret, server.url)
    pairing_status = api.pair(server.phone.make_pairing_phrase(user), user)
    assert pairing_status.pending and not pairing_status.enabled
    server.phone.accept_pairing(pairing_status.id)
    pairing_status = api.get_pairing_status(pairing_status.id)
    assert pairing_status.enabled and not pairing_status.pending
    assert pairing_status.user_name == user

    auth = api.authenticate(pairing_status.id, "my computer")
    assert auth.pending and not auth.granted and auth.terminal_name == "my computer"
    server.phone.approve(auth.id)
    auth_status = api.get_authentication_status(auth.id)
    assert auth_status.pending == False and auth_status.granted == True  # noqa: E712
    assert auth_status.id == auth.id and auth_status.user_name == user


def test_the_zero_storage_flow(server):
    """705 -> pair -> 706 -> create terminal -> request -> approve."""
    user, api = unique(), api_for(server)
    with pytest.raises(UserUnknownError) as caught:
        api.authenticate_by_user_name(user, "host-1", "ssh login")
    assert (caught.value.status, caught.value.error_code) == (409, 705)

    paired(server, api, user)
    with pytest.raises(TerminalUnknownError) as caught:
        api.authenticate_by_user_name(user, "host-1", "ssh login")
    assert caught.value.error_code == 706

    terminal = api.create_user_terminal(user, "Host One", "host-1")
    assert (terminal.name, terminal.requester_specified_id, terminal.user_name) == (
        "Host One", "host-1", user)
    assert api.get_user_terminal(terminal.id).id == terminal.id

    request = api.authenticate_by_user_name(user, "host-1", "ssh login", automation_allowed=False)
    assert request.terminal_name == "Host One" and request.action_name == "ssh login"
    server.phone.approve(request.id, reason="looks right")
    status = api.get_authentication_status(request.id)
    assert status.granted and not status.pending and status.reason == "looks right"


def test_a_denial_is_not_a_grant(server):
    user, api = unique(), api_for(server)
    pairing = paired(server, api, user)
    request = api.authenticate(pairing.id, "box")
    server.phone.deny(request.id, reason="not me")
    status = api.get_authentication_status(request.id)
    assert not status.pending and not status.granted and status.reason == "not me"


def test_a_deleted_pairing_answers_707(server):
    user, api = unique(), api_for(server)
    paired(server, api, user)
    api.create_user_terminal(user, "Host", "host-1")
    server.phone.delete_pairing(user)
    with pytest.raises(PairingDeactivatedError) as caught:
        api.authenticate_by_user_name(user, "host-1")
    assert caught.value.error_code == 707


def test_disabling_a_user_answers_704_and_enabling_restores(server):
    user, api = unique(), api_for(server)
    paired(server, api, user)
    api.create_user_terminal(user, "Host", "host-1")
    assert api.disable_user(user).toopher_authentication_enabled is False
    with pytest.raises(UserDisabledError) as caught:
        api.authenticate_by_user_name(user, "host-1")
    assert caught.value.error_code == 704
    assert api.enable_user(user).toopher_authentication_enabled is True
    assert api.authenticate_by_user_name(user, "host-1").pending


def test_users_create_get_find_and_reset(server):
    user, api = unique(), api_for(server)
    created = api.create_user(user)
    assert api.get_user(created.id).name == user
    assert api.find_user_by_name(user).id == created.id
    with pytest.raises(UserUnknownError):
        api.find_user_by_name(unique("nobody"))
    paired(server, api, user)
    api.reset_user(user)
    with pytest.raises(UserUnknownError):
        api.authenticate_by_user_name(user, "host-1")


def test_otp_right_and_wrong(server):
    user, api = unique(), api_for(server)
    pairing = paired(server, api, user)
    request = api.authenticate(pairing.id, "box")
    granted = api.authenticate_with_otp(request.id, server.phone.otp(user))
    assert granted.granted and not granted.pending

    wrong = "000000" if server.phone.otp(user) != "000000" else "111111"
    request = api.authenticate(pairing.id, "box")
    refused = api.authenticate_with_otp(request.id, wrong)
    assert not refused.granted and not refused.pending


def test_otp_on_initiate_resolves_at_once(server):
    user, api = unique(), api_for(server)
    pairing = paired(server, api, user)
    status = api.authenticate(pairing.id, "box", otp=server.phone.otp(user))
    assert status.granted and not status.pending


def test_sms_and_qr_pairings_follow_the_same_lifecycle(server):
    api = api_for(server)
    for pairing in (api.pair_sms("5555550100", unique()), api.pair_qr(unique())):
        assert pairing.pending and not pairing.enabled
        server.phone.accept_pairing(pairing.id)
        assert api.get_pairing_status(pairing.id).enabled


def test_a_refused_pairing_is_not_enabled(server):
    user, api = unique(), api_for(server)
    pairing = api.pair(server.phone.make_pairing_phrase(user), user)
    server.phone.refuse_pairing(pairing.id)
    status = api.get_pairing_status(pairing.id)
    assert not status.pending and not status.enabled


def test_send_pairing_reset_link(server):
    user, api = unique(), api_for(server)
    pairing = paired(server, api, user)
    assert isinstance(api.send_pairing_reset_link(pairing.id, "admin@example.org"), dict)


def test_long_poll_notices_the_phone_at_once(server):
    user, api = unique(), api_for(server)
    pairing = paired(server, api, user)
    request = api.authenticate(pairing.id, "box")
    approver = threading.Timer(0.5, server.phone.approve, args=(request.id,))
    approver.start()
    started = time.monotonic()
    status = api.get_authentication_status(request.id, long_poll=5)
    took = time.monotonic() - started
    approver.join()
    assert status.granted and 0.4 < took < 1.0


def test_unknown_ids_and_other_requesters_are_refused(server):
    api = api_for(server)
    with pytest.raises(ToopherApiError) as caught:
        api.get_authentication_status(str(uuid.uuid4()))
    assert caught.value.status == 404
    assert not isinstance(caught.value, ToopherUnavailableError)

    user = unique()
    pairing = paired(server, api, user)
    other = ToopherApi(*server.new_requester(unique("other")), server.url)
    with pytest.raises(ToopherApiError) as caught:
        other.get_pairing_status(pairing.id)
    assert caught.value.status in (403, 404)


def test_a_wrong_secret_is_refused_with_401_and_not_an_outage(server):
    api = ToopherApi(server.key, "wrong-secret", server.url)
    with pytest.raises(ToopherApiError) as caught:
        api.authenticate_by_user_name(unique(), "host-1")
    assert caught.value.status == 401
    assert caught.value.message == "Not a valid OAuth signed request"
    assert not isinstance(caught.value, ToopherUnavailableError)


@pytest.mark.parametrize("kind, error_class", [
    ("500", ToopherUnavailableError),
    ("503", ToopherUnavailableError),
    ("html", MalformedResponseError),
    ("truncate", ToopherUnavailableError),
])
def test_fault_switches_reach_the_client_as_their_error(server, kind, error_class):
    server.phone.fault(kind, count=1)
    with pytest.raises(error_class):
        api_for(server).authenticate_by_user_name(unique(), "host-1")


def test_429_from_the_server_is_retried_after_retry_after(server):
    user, api = unique(), api_for(server, retry_budget=5.0)
    server.phone.fault("429", count=1, seconds=1)
    started = time.monotonic()
    with pytest.raises(UserUnknownError):   # the retry got through to the real answer
        api.authenticate_by_user_name(user, "host-1")
    assert time.monotonic() - started >= 1.0


def test_a_slow_server_times_out_as_an_outage(server):
    server.phone.fault("slow", count=1, seconds=3)
    api = api_for(server, timeout=(1.0, 0.5), retry_budget=0)
    with pytest.raises(ToopherUnavailableError):
        api.authenticate_by_user_name(unique(), "host-1")


def test_over_https_with_the_right_ca_and_with_a_wrong_one(toopher_tls_server):
    server = toopher_tls_server
    user = unique()
    good = api_for(server, ca_bundle=server.ca_cert_path)
    with pytest.raises(UserUnknownError):
        good.authenticate_by_user_name(user, "host-1")
    bad = api_for(server, ca_bundle=server.untrusted_ca_cert_path)
    with pytest.raises(ToopherTLSError):
        bad.authenticate_by_user_name(user, "host-1")
