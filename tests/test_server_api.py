"""Every endpoint and lifecycle of the server, over real sockets, with an independent signer."""
import uuid

import pytest

from tests.support.server import RunningServer

UUID_LENGTH = 36


@pytest.fixture(scope="module")
def server():
    with RunningServer() as running:
        yield running


@pytest.fixture
def api(server):
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def name():
    """A user name of its own for each test (the server is shared by the module)."""
    return f"user-{uuid.uuid4().hex[:8]}"


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def error(response, status, code=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == (code or status)
    assert isinstance(body["error_message"], str) and body["error_message"]
    return body


def pair(server, api, name):
    pairing = ok(api.post("pairings/create", user_name=name,
                          pairing_phrase=server.phone.make_pairing_phrase(name)))
    server.phone.accept_pairing(pairing["id"])
    return pairing


def paired_with_terminal(server, api, name, identifier="host1"):
    pairing = pair(server, api, name)
    ok(api.post("user_terminals/create", user_name=name, name=f"{identifier} name",
                name_extra=identifier))
    return pairing


def initiate(api, name, identifier="host1", **extra):
    return api.post("authentication_requests/initiate", user_name=name,
                    terminal_name_extra=identifier, action_name="SSH login", **extra)


# -- pairings -------------------------------------------------------------------------

def test_pairing_lifecycle_accepted(server, api, name):
    phrase = server.phone.make_pairing_phrase(name)
    pairing = ok(api.post("pairings/create", user_name=name, pairing_phrase=phrase))
    assert len(pairing["id"]) == UUID_LENGTH and uuid.UUID(pairing["id"]).version == 4
    assert (pairing["pending"], pairing["enabled"]) == (True, False)
    assert pairing["user"]["name"] == name and pairing["user"]["toopher_authentication_enabled"]
    assert server.phone.pending_pairings(name) == [
        {"id": pairing["id"], "user": name, "requester": "test requester"}]
    server.phone.accept_pairing(pairing["id"])
    assert ok(api.get(f"pairings/{pairing['id']}")) == dict(pairing, pending=False, enabled=True)


def test_pairing_lifecycle_refused(server, api, name):
    pairing = ok(api.post("pairings/create", user_name=name,
                          pairing_token=server.phone.make_pairing_phrase(name)))
    server.phone.refuse_pairing(pairing["id"])
    assert ok(api.get(f"pairings/{pairing['id']}"))["enabled"] is False
    with pytest.raises(Exception, match="not pending"):
        server.phone.accept_pairing(pairing["id"])


def test_pairing_phrase_is_single_use_and_must_exist(server, api, name):
    error(api.post("pairings/create", user_name=name, pairing_phrase="no-such-phrase"), 400)
    phrase = server.phone.make_pairing_phrase(name)
    ok(api.post("pairings/create", user_name=name, pairing_phrase=phrase))
    error(api.post("pairings/create", user_name=name, pairing_phrase=phrase), 400)


@pytest.mark.parametrize("path, extra", [("pairings/create/sms", {"phone_number": "5551234"}),
                                         ("pairings/create/qr", {})])
def test_sms_and_qr_pairings_are_accepted_by_the_phone(server, api, name, path, extra):
    pairing = ok(api.post(path, user_name=name, **extra))
    assert pairing["pending"] is True
    assert server.phone.wait_for_pairing(name, 1)["id"] == pairing["id"]
    server.phone.accept_pairing(pairing["id"])
    assert ok(api.get(f"pairings/{pairing['id']}"))["enabled"] is True


def test_pairing_rule_accepts_new_pairings(server, api, name):
    server.phone.set_pairing_rule(name, "accept")
    pairing = ok(api.post("pairings/create/qr", user_name=name))
    polled = ok(api.get(f"pairings/{pairing['id']}", long_poll="2"))
    assert (polled["pending"], polled["enabled"]) == (False, True)


def test_send_reset_link(server, api, name):
    pairing = pair(server, api, name)
    assert ok(api.post(f"pairings/{pairing['id']}/send_reset_link", reset_email="a@b.c")) == {}
    error(api.post(f"pairings/{pairing['id']}/send_reset_link"), 400)


# -- authentication requests -------------------------------------------------------------

def test_zero_storage_chain(server, api, name):
    error(initiate(api, name), 409, 705)
    pair(server, api, name)
    error(initiate(api, name), 409, 706)
    terminal = ok(api.post("user_terminals/create", user_name=name, terminal_name="Build host",
                           requester_specified_id="host1"))
    assert terminal["name"] == "Build host" and terminal["requester_specified_id"] == "host1"
    request = ok(initiate(api, name))
    assert {k: request[k] for k in ("pending", "granted", "automated", "reason")} == {
        "pending": True, "granted": False, "automated": False, "reason": ""}
    assert request["terminal"] == terminal
    assert request["user"] == terminal["user"]
    assert request["action"]["name"] == "SSH login"
    shown = server.phone.wait_for_request(name, 1)
    assert shown == {"id": request["id"], "user": name, "terminal": "Build host",
                     "action": "SSH login", "requester": "test requester"}
    server.phone.approve(request["id"], reason="it is me")
    answered = ok(api.get(f"authentication_requests/{request['id']}"))
    assert answered == dict(request, pending=False, granted=True, reason="it is me",
                            reason_code=100)


def test_denied_request(server, api, name):
    paired_with_terminal(server, api, name)
    request = ok(initiate(api, name))
    server.phone.deny(request["id"])
    answered = ok(api.get(f"authentication_requests/{request['id']}"))
    assert (answered["pending"], answered["granted"]) == (False, False)
    with pytest.raises(Exception, match="not pending"):
        server.phone.approve(request["id"])
    with pytest.raises(Exception, match="No such"):
        server.phone.approve(str(uuid.uuid4()))


def test_707_after_the_phone_deletes_the_pairing(server, api, name):
    paired_with_terminal(server, api, name)
    server.phone.delete_pairing(name)
    error(initiate(api, name), 409, 707)
    pair(server, api, name)  # re-pairing makes the user usable again
    ok(initiate(api, name))


def test_704_when_the_requester_disabled_the_user(server, api, name):
    pairing = paired_with_terminal(server, api, name)
    user_id = pairing["user"]["id"]
    user = ok(api.post(f"users/{user_id}", toopher_authentication_enabled="False"))
    assert user["toopher_authentication_enabled"] is False
    error(initiate(api, name), 409, 704)
    error(api.post("authentication_requests/initiate", pairing_id=pairing["id"],
                   terminal_name="t"), 409, 704)
    ok(api.post(f"users/{user_id}", disable_toopher_auth="false"))
    ok(initiate(api, name))


def test_initiate_by_pairing_id_creates_the_terminal(server, api, name):
    pairing = pair(server, api, name)
    first = ok(api.post("authentication_requests/initiate", pairing_id=pairing["id"],
                        terminal_name="laptop", action="login", user_name=""))
    second = ok(api.post("authentication_requests/initiate", pairing_id=pairing["id"],
                         terminal_name="laptop", requester_specified_terminal_id=""))
    assert first["terminal"]["name"] == "laptop"
    assert first["terminal"]["id"] == second["terminal"]["id"]
    assert first["action"]["name"] == "login"
    third = ok(api.post("authentication_requests/initiate", pairing_id=pairing["id"],
                        terminal_name="desk", terminal_id="cookie-1"))
    assert third["terminal"]["requester_specified_id"] == "cookie-1"


def test_initiate_on_a_pending_pairing_is_refused(server, api, name):
    pairing = ok(api.post("pairings/create/qr", user_name=name))
    error(api.post("authentication_requests/initiate", pairing_id=pairing["id"],
                   terminal_name="t"), 409, 601)


@pytest.mark.parametrize("params", [
    {"terminal_name_extra": "host1"},
    {"pairing_id": "x", "user_name": "y", "terminal_name": "t"},
    {"user_name": "someone", "terminal_name_extra": "h", "automation_allowed": "maybe"},
])
def test_initiate_needs_exactly_one_of_pairing_id_and_user_name(api, params):
    error(api.post("authentication_requests/initiate", **params), 400)


def test_rules_answer_new_requests(server, api, name):
    paired_with_terminal(server, api, name)
    server.phone.set_rule(name, "deny", automated=True)
    denied = ok(api.get(f"authentication_requests/{ok(initiate(api, name))['id']}"))
    assert (denied["pending"], denied["granted"], denied["automated"]) == (False, False, True)
    # automation_allowed=false keeps the app's automatic answers out.
    held = ok(initiate(api, name, automation_allowed="FALSE"))
    assert ok(api.get(f"authentication_requests/{held['id']}"))["pending"] is True
    server.phone.set_rule(name, "approve")
    approved = ok(api.get(f"authentication_requests/{ok(initiate(api, name))['id']}"))
    assert (approved["granted"], approved["automated"]) == (True, False)
    server.phone.set_rule(name, "never")
    assert ok(initiate(api, name))["pending"] is True
    server.phone.clear_rule(name)


# -- OTP ---------------------------------------------------------------------------------

def test_otp_right_wrong_and_replayed(server, api, name):
    paired_with_terminal(server, api, name)
    code = server.phone.otp(name)
    assert len(code) == 6 and code.isdigit()
    good = ok(initiate(api, name, otp=code))
    assert (good["pending"], good["granted"], good["reason"]) == (False, True, "valid otp")
    replayed = ok(initiate(api, name, otp=code))
    assert (replayed["granted"], replayed["reason"]) == (False, "invalid otp")
    wrong = ok(initiate(api, name, otp=str((int(code) + 1) % 10 ** 6).zfill(6)))
    assert (wrong["pending"], wrong["granted"]) == (False, False)


def test_otp_auth_resolves_a_pending_request(server, api, name):
    paired_with_terminal(server, api, name)
    request = ok(initiate(api, name))
    answered = ok(api.post(f"authentication_requests/{request['id']}/otp_auth",
                           otp="12345"))
    assert (answered["pending"], answered["granted"], answered["reason"]) == (
        False, False, "invalid otp")
    error(api.post(f"authentication_requests/{request['id']}/otp_auth",
                   otp=server.phone.otp(name)), 400)
    request = ok(initiate(api, name))
    answered = ok(api.post(f"authentication_requests/{request['id']}/otp_auth",
                           otp=server.phone.otp(name)))
    assert (answered["granted"], answered["reason"]) == (True, "valid otp")


# -- users and terminals ----------------------------------------------------------------------

def test_users_create_find_get_update_reset(server, api, name):
    user = ok(api.post("users/create", name=name))
    assert user == {"id": user["id"], "name": name, "toopher_authentication_enabled": True}
    error(api.post("users/create", name=name), 409)
    assert ok(api.get("users", name=name)) == [user]
    assert ok(api.get("users", user_name=name)) == [user]
    assert ok(api.get("users", name="no-such-user-" + name)) == []
    assert ok(api.get(f"users/{user['id']}")) == user
    assert ok(api.post(f"users/{user['id']}", toopher_authentication_enabled="0")) == dict(
        user, toopher_authentication_enabled=False)
    assert ok(api.post(f"users/{user['id']}", disable_toopher_auth="False")) == user
    paired_with_terminal(server, api, name)
    assert ok(api.post("users/reset", name=name)) == {}
    error(initiate(api, name), 409, 705)
    error(api.post("users/reset", user_name="no-such-user-" + name), 404)


def test_terminals(server, api, name):
    error(api.post("user_terminals/create", user_name=name, name="t", name_extra="x"), 409, 705)
    pair(server, api, name)
    terminal = ok(api.post("user_terminals/create", user_name=name, name="t", name_extra="x"))
    assert ok(api.get(f"user_terminals/{terminal['id']}")) == terminal
    renamed = ok(api.post("user_terminals/create", user_name=name, name="t2", name_extra="x"))
    assert (renamed["id"], renamed["name"]) == (terminal["id"], "t2")
    error(api.post("user_terminals/create", user_name=name, name="t"), 400)


# -- isolation between requesters ------------------------------------------------------------

def test_requesters_see_only_their_own_objects(server, api, name):
    pairing = paired_with_terminal(server, api, name)
    request = ok(initiate(api, name))
    terminal_id = request["terminal"]["id"]
    other = server.client(*server.new_requester("other"))
    try:
        for path in (f"pairings/{pairing['id']}", f"authentication_requests/{request['id']}",
                     f"users/{pairing['user']['id']}", f"user_terminals/{terminal_id}"):
            error(other.get(path), 403)
        error(other.post(f"users/{pairing['user']['id']}", toopher_authentication_enabled="false"), 403)
        error(other.post("authentication_requests/initiate", pairing_id=pairing["id"],
                         terminal_name="t"), 403)
        error(other.post(f"authentication_requests/{request['id']}/otp_auth", otp="123456"), 403)
        assert ok(other.get("users", name=name)) == []
        error(initiate(other, name), 409, 705)
        for path in ("pairings", "authentication_requests", "users", "user_terminals"):
            error(other.get(f"{path}/{uuid.uuid4()}"), 404)
    finally:
        other.close()
    assert ok(api.get(f"users/{pairing['user']['id']}"))["toopher_authentication_enabled"]


def test_a_pairing_phrase_pairs_only_the_user_whose_phone_made_it(server, api, name):
    # A password holder of another account, typing this user's phrase at an
    # inline pairing, neither pairs with the phone nor uses the phrase up.
    phrase = server.phone.make_pairing_phrase(name)
    error(api.post("pairings/create", user_name=f"{name}-other", pairing_phrase=phrase), 400)
    assert server.phone.pending_pairings(f"{name}-other") == []
    ok(api.post("pairings/create", user_name=name, pairing_phrase=phrase))
