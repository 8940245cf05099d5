"""OAuth 1.0a two-legged HMAC-SHA1 verification by the server.

The check value of toopher-api.md is computed twice, independently of the
server (oauthlib's client and a hand-rolled RFC 5849 signer), then the
server must accept exactly that request and refuse every altered one.
"""
import time
from urllib.parse import quote

import pytest
import requests
from oauthlib.oauth1 import Client
from requests_oauthlib import OAuth1

from pam_toopher.server.app import Api
from pam_toopher.server.store import Store
from tests.support.oauth_check import rfc5849_authorization
from tests.support.server import RunningServer, scratch_database

KEY, SECRET = "dpf43f3p2l4k3l03", "kd94hf93k423kf44"
NONCE, TIMESTAMP = "kllo9940pd9333jh", "1191242096"
URL = "http://127.0.0.1:8765/v1/authentication_requests/initiate"
BODY = "user_name=alice&terminal_name_extra=host1&action_name=SSH+login"
CHECK_SIGNATURE = "GQMjnYpXnUnKAE3RaHhQzH1SAVc="
FORM = "application/x-www-form-urlencoded"
UNAUTHORIZED = {"error_code": 401, "error_message": "Not a valid OAuth signed request"}


def _enc(text: str) -> str:
    return quote(text, safe="~")


CHECK_PARAMS = [("user_name", "alice"), ("terminal_name_extra", "host1"), ("action_name", "SSH login")]


def test_hand_rolled_signer_gives_the_check_value():
    _, signature = rfc5849_authorization("POST", URL, CHECK_PARAMS, KEY, SECRET, NONCE, TIMESTAMP)
    assert signature == CHECK_SIGNATURE


def test_oauthlib_client_gives_the_check_value():
    client = Client(KEY, client_secret=SECRET, nonce=NONCE, timestamp=TIMESTAMP)
    _, headers, _ = client.sign(URL, "POST", BODY, {"Content-Type": FORM})
    assert f'oauth_signature="{_enc(CHECK_SIGNATURE)}"' in headers["Authorization"]


@pytest.fixture
def check_api():
    """An in-process Api whose clock stands at the check value's timestamp."""
    with scratch_database() as target:  # PostgreSQL under TOOPHER_TEST_DATABASE
        store = Store(target)
        store.create_requester("check value", KEY, SECRET)
        yield Api(store, clock=lambda: float(TIMESTAMP))
        store.close()


def _send(api, authorization, body=BODY, host="127.0.0.1:8765",
          path="/v1/authentication_requests/initiate"):
    headers = {"Authorization": authorization, "Content-Type": FORM, "Host": host}
    return api.handle("POST", path, headers, body.encode(), f"http://{host}")


def _check_authorization():
    return rfc5849_authorization("POST", URL, CHECK_PARAMS, KEY, SECRET, NONCE, TIMESTAMP)[0]


def test_server_accepts_the_check_value_request(check_api):
    # Authenticated: the answer is about alice (unknown user), not about OAuth.
    assert _send(check_api, _check_authorization()) == (
        409, {"error_code": 705, "error_message": "No matching user exists"})


@pytest.mark.parametrize("change", [
    {"body": BODY.replace("alice", "mallory")},
    {"body": BODY + "&otp=123456"},
    {"host": "127.0.0.1:8766"},
    {"host": "localhost:8765"},
    {"path": "/v1/authentication_requests/initiate?x=1"},
    {"authorization": _check_authorization().replace("GQMj", "GQMk")},
    {"authorization": _check_authorization().replace(KEY, "dpf43f3p2l4k3l04")},
    {"authorization": _check_authorization().replace("HMAC-SHA1", "PLAINTEXT")},
    {"authorization": _check_authorization().replace('oauth_nonce="kllo9940pd9333jh", ', "")},
    {"authorization": ""},
], ids=["body", "extra-param", "port", "host", "query", "signature", "key", "method",
        "no-nonce", "unsigned"])
def test_server_refuses_tampered_check_value_requests(check_api, change):
    authorization = change.pop("authorization", _check_authorization())
    assert _send(check_api, authorization, **change) == (401, UNAUTHORIZED)


def test_server_refuses_the_check_value_outside_the_timestamp_window():
    store = Store(":memory:")
    store.create_requester("check value", KEY, SECRET)
    late = Api(store, clock=lambda: float(TIMESTAMP) + 301)
    assert _send(late, _check_authorization()) == (401, UNAUTHORIZED)
    in_window = Api(store, clock=lambda: float(TIMESTAMP) - 299)
    assert _send(in_window, _check_authorization())[0] == 409


def test_server_refuses_a_replayed_check_value_nonce(check_api):
    assert _send(check_api, _check_authorization())[0] == 409
    assert _send(check_api, _check_authorization()) == (401, UNAUTHORIZED)


# -- over a real socket, signed by requests_oauthlib --------------------------------

@pytest.fixture(scope="module")
def server():
    with RunningServer() as running:
        yield running


def _post(server, auth, data=None, url=None):
    return requests.post(url or f"{server.url}/users/create", data=data or {"name": "bob"},
                         auth=auth, timeout=10)


def _assert_refused(response):
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_correctly_signed_request_over_http(server):
    response = requests.get(f"{server.url}/users", params={"name": "nobody"},
                            auth=OAuth1(server.key, server.secret), timeout=10)
    assert (response.status_code, response.json()) == (200, [])


def test_wrong_secret_and_unknown_key_are_refused_alike(server):
    _assert_refused(_post(server, OAuth1(server.key, server.secret + "x")))
    _assert_refused(_post(server, OAuth1("unknownkey0123456789", server.secret)))


def test_tampered_body_is_refused(server):
    session = requests.Session()
    prepared = session.prepare_request(requests.Request(
        "POST", f"{server.url}/users/create", data={"name": "bob"},
        auth=OAuth1(server.key, server.secret)))
    prepared.body = "name=eve"
    prepared.headers["Content-Length"] = str(len(prepared.body))
    _assert_refused(session.send(prepared, timeout=10))
    assert server.query("SELECT name FROM users WHERE name = 'eve'") == []


def test_stale_and_future_timestamps_are_refused(server):
    for offset in (-3600, 3600):
        auth = OAuth1(server.key, server.secret, timestamp=str(int(time.time()) + offset))
        _assert_refused(_post(server, auth))


def test_replayed_nonce_is_refused(server):
    session = requests.Session()
    prepared = session.prepare_request(requests.Request(
        "GET", f"{server.url}/users", auth=OAuth1(server.key, server.secret)))
    assert session.send(prepared, timeout=10).status_code == 200
    _assert_refused(session.send(prepared, timeout=10))


def test_every_refusal_has_the_same_body(server):
    response = requests.get(f"{server.url}/users", timeout=10)
    _assert_refused(response)
