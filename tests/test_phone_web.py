"""The phone web app's server side: enrolment, sessions, passkey-signed answers, refusals.

In process (WebApp.handle, the function httpd calls) with a software passkey
(tests/support/passkey.py) whose registrations and assertions the server
verifies with python-fido2; a few tests go over real HTTP to check what the
socket side sends.  The browser tests are in test_phone_browser.py.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from contextlib import ExitStack
from typing import Any

import pyotp
import pytest
import requests

from pam_toopher.server.devices import (
    CHALLENGE_SECONDS,
    REQUEST_MAX_AGE,
    DeviceStore,
    secret_hash,
)
from pam_toopher.server.errors import BadRequest
from pam_toopher.server.store import Store
from pam_toopher.server.webapp import WebApp, csrf_token, parse_public_url
from pam_toopher.server.webauthn import bound_challenge, sign_count_ok
from tests.support.passkey import SoftPasskey, b64url, unb64url
from tests.support.server import (REPO_ROOT, RunningServer, default_database, scratch_database,
                                  server_command, server_env)

ORIGIN = "http://localhost:8765"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Browser:
    """What the page's JavaScript does, against WebApp.handle, with one cookie jar."""

    def __init__(self, app: WebApp, origin: str = ORIGIN):
        self.app, self.origin = app, origin
        self.cookie: str | None = None
        self.csrf = ""
        self.last_headers: list[tuple[str, str]] = []

    def call(self, method: str, path: str, body: Any = None, *, origin: str | None = None,
             content_type: str = "application/json", raw: bytes | None = None,
             csrf: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": content_type, "X-CSRF-Token": self.csrf if csrf is None
                   else csrf}
        if method == "POST":
            headers["Origin"] = self.origin if origin is None else origin
        if self.cookie:
            headers["Cookie"] = f"toopher_phone={self.cookie}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else b"")
        status, response_headers, content = self.app.handle(method, path, headers, data)
        self.last_headers = response_headers
        for name, value in response_headers:
            if name == "Set-Cookie":
                self.cookie = value.split(";")[0].split("=", 1)[1]
        try:
            return status, json.loads(content)
        except ValueError:
            return status, content

    def state(self) -> dict:
        status, state = self.call("GET", "/app/api/state")
        assert status == 200, state
        self.csrf = state["csrf"]
        return state

    def enrol(self, token: str, key: SoftPasskey) -> tuple[int, Any]:
        status, options = self.call("POST", "/app/api/enrol/options", {"token": token})
        assert status == 200, options
        return self.call("POST", "/app/api/enrol/complete", {
            "token": token, "challengeId": options["challengeId"],
            "credential": key.register(options["publicKey"])})

    def signed(self, kind: str, object_id: str, key: SoftPasskey, **sign: Any) -> dict:
        status, options = self.call("POST", f"/app/api/{kind}/{object_id}/options")
        assert status == 200, options
        return {"challengeId": options["challengeId"],
                "credential": key.sign(options["publicKey"], **sign)}

    def approve(self, request_id: str, key: SoftPasskey, **sign: Any) -> tuple[int, Any]:
        return self.call("POST", f"/app/api/requests/{request_id}/approve",
                         self.signed("requests", request_id, key, **sign))


class Scene:
    """A store with a requester, a paired user, an enrolled phone; on an SQLite
    file, or a fresh PostgreSQL database under TOOPHER_TEST_DATABASE=postgresql."""

    def __init__(self, tmp_path, user: str = "alice", origin: str = ORIGIN):
        self.clock = Clock()
        self._database = ExitStack()
        target = str(tmp_path / "toopher.db")
        if default_database() == "postgresql":
            target = self._database.enter_context(scratch_database())
        self.store = Store(target, clock=self.clock)
        self.app = WebApp(self.store, parse_public_url(origin))
        self.devices: DeviceStore = self.app.devices
        key, _ = self.store.create_requester("Acme SSH")
        self.requester_id = self.store.requester_by_key(key)["id"]
        self.user = user
        phrase = self.store.make_pairing_phrase(user)
        self.pairing_id = self.store.create_pairing(self.requester_id, user, "phrase",
                                                    phrase)["id"]
        self.store.answer_pairing(self.pairing_id, True)
        self.key = SoftPasskey(self.app.public.origin, self.app.public.rp_id)
        self.browser = Browser(self.app, self.app.public.origin)

    def enrol(self) -> None:
        status, answer = self.browser.enrol(self.devices.create_enrol_token(self.user), self.key)
        assert status == 200, answer
        self.browser.state()

    def request(self, terminal: str = "web-1", action: str = "sudo: /usr/bin/id") -> str:
        return self.store.initiate(self.requester_id, pairing_id=self.pairing_id,
                                   terminal_name=terminal, action_name=action)["id"]

    def request_row(self, request_id: str) -> dict:
        return self.store.get_request(self.requester_id, request_id)

    def close(self) -> None:
        self.store.close()
        self._database.close()

    def count(self, table: str) -> int:
        with self.store.transaction(write=False) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def scene(tmp_path):
    made = Scene(tmp_path)
    yield made
    made.close()


# -- pure parts ----------------------------------------------------------------------------

def test_bound_challenge_changes_with_every_field():
    nonce = b"n" * 32
    fields = {"answer": "approve", "request": "r1", "user": "alice", "terminal": "web-1",
              "action": "sudo: id", "requester": "Acme"}
    base = bound_challenge(nonce, fields)
    assert base[:32] == nonce and len(base) == 64
    for name, value in fields.items():
        assert bound_challenge(nonce, {**fields, name: value + "x"}) != base
    assert bound_challenge(b"m" * 32, fields) != base


def test_sign_count_must_grow_unless_the_authenticator_has_none():
    assert sign_count_ok(0, 0) and sign_count_ok(0, 1) and sign_count_ok(5, 6)
    assert not sign_count_ok(5, 5) and not sign_count_ok(5, 4) and not sign_count_ok(5, 0)


@pytest.mark.parametrize("url, origin, rp_id", [
    ("https://2fa.example.com", "https://2fa.example.com", "2fa.example.com"),
    ("https://2FA.example.com:8443/", "https://2fa.example.com:8443", "2fa.example.com"),
    ("https://2fa.example.com:443", "https://2fa.example.com", "2fa.example.com"),
    ("http://localhost:8765", "http://localhost:8765", "localhost"),
    ("http://localhost", "http://localhost:4321", "localhost"),  # the listening port
])
def test_public_url_accepted(url, origin, rp_id):
    public = parse_public_url(url, listening_port=4321)
    assert (public.origin, public.rp_id) == (origin, rp_id)


@pytest.mark.parametrize("url, why", [
    ("http://2fa.example.com", "https"),
    ("http://192.168.1.5:8765", "https"),
    ("https://192.168.1.5", "IP address"),
    ("https://[::1]:8443", "IP address"),
    ("https://2fa.example.com/toopher", "without a path"),
    ("ftp://2fa.example.com", "https"),
    ("2fa.example.com", "https"),
])
def test_public_url_refused(url, why):
    with pytest.raises(BadRequest, match=why):
        parse_public_url(url)


# -- enrolment -------------------------------------------------------------------------------

def test_enrolment_registers_a_passkey_and_sets_a_strict_cookie(scene):
    token = scene.devices.create_enrol_token("alice", "pixel")
    status, answer = scene.browser.enrol(token, scene.key)
    assert status == 200, answer
    cookie = dict(scene.browser.last_headers)["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/app/" in cookie
    assert "Secure" not in cookie  # http://localhost: browsers would drop a Secure cookie
    state = scene.browser.state()
    assert (state["user"], state["device"]) == ("alice", "pixel")
    [device] = scene.devices.list_devices("alice")
    assert device["name"] == "pixel" and device["revoked"] is None
    # Only the hash of the token is stored.
    with scene.store.transaction(write=False) as db:
        hashes = [row[0] for row in db.execute("SELECT token_hash FROM enrol_tokens")]
    assert hashes == [secret_hash(token)] and token not in hashes


def test_https_cookies_are_secure(tmp_path):
    made = Scene(tmp_path, origin="https://2fa.example.com")
    token = made.devices.create_enrol_token("alice")
    status, _ = made.browser.enrol(token, made.key)
    assert status == 200
    assert "Secure" in dict(made.browser.last_headers)["Set-Cookie"]
    made.close()


def test_an_enrolment_link_works_once(scene):
    token = scene.devices.create_enrol_token("alice")
    assert scene.browser.enrol(token, scene.key)[0] == 200
    browser = Browser(scene.app)
    status, answer = browser.call("POST", "/app/api/enrol/options", {"token": token})
    assert status == 400 and "already used" in answer["error"]
    assert scene.count("devices") == 1 and browser.cookie is None


def test_an_expired_enrolment_link_is_refused(scene):
    token = scene.devices.create_enrol_token("alice", seconds=60)
    status, options = scene.browser.call("POST", "/app/api/enrol/options", {"token": token})
    assert status == 200
    scene.clock.now += 61
    status, answer = scene.browser.call("POST", "/app/api/enrol/complete", {
        "token": token, "challengeId": options["challengeId"],
        "credential": scene.key.register(options["publicKey"])})
    assert status == 400 and "expired" in answer["error"]
    assert scene.count("devices") == 0 and scene.browser.cookie is None


@pytest.mark.parametrize("spoil, status, message", [
    ("origin", 400, "Invalid origin"),
    ("no-uv", 400, "User verification required"),
    ("challenge", 400, "Wrong challenge"),
    ("garbage", 400, "did not verify"),
    ("oversized", 400, "oversized"),
    ("not-base64", 400, "Not base64url"),
])
def test_a_bad_registration_stores_nothing(scene, spoil, status, message):
    token = scene.devices.create_enrol_token("alice")
    code, options = scene.browser.call("POST", "/app/api/enrol/options", {"token": token})
    public_key = options["publicKey"]
    if spoil == "challenge":
        public_key = {**public_key, "challenge": b64url(b"x" * 32)}
    if spoil == "no-uv":
        scene.key.user_verified = False
    credential = scene.key.register(public_key, origin="http://localhost:9999"
                                    if spoil == "origin" else None)
    if spoil == "garbage":
        credential["attestationObject"] = b64url(b"\xa3garbage")
    if spoil == "oversized":
        credential["attestationObject"] = "A" * 25_000
    if spoil == "not-base64":
        credential["clientDataJSON"] = "{}!"
    code, answer = scene.browser.call("POST", "/app/api/enrol/complete", {
        "token": token, "challengeId": options["challengeId"], "credential": credential})
    assert code == status and message.lower() in answer["error"].lower(), answer
    assert scene.count("devices") == 0 and scene.browser.cookie is None
    # The link still works for a proper registration.
    scene.key.user_verified = True
    assert scene.browser.enrol(token, scene.key)[0] == 200


def test_state_changing_calls_need_our_origin_json_and_the_csrf_token(scene):
    scene.enrol()
    request_id = scene.request()
    deny = f"/app/api/requests/{request_id}/deny"
    assert scene.browser.call("POST", deny, {}, origin="https://evil.example")[0] == 403
    assert scene.browser.call("POST", deny, {}, origin="")[0] == 403
    assert scene.browser.call("POST", deny, {}, csrf="")[0] == 403
    assert scene.browser.call("POST", deny, {}, csrf="0" * 64)[0] == 403
    assert scene.browser.call("POST", deny, raw=b"a=b",
                              content_type="application/x-www-form-urlencoded")[0] == 415
    assert scene.browser.call("POST", deny, raw=b"[1]")[0] == 400
    assert scene.browser.call("POST", deny, raw=b"\xff{")[0] == 400
    assert scene.browser.call("GET", deny)[0] == 405
    assert scene.request_row(request_id)["pending"]
    assert scene.browser.call("POST", deny, {})[0] == 200
    assert not scene.request_row(request_id)["granted"]


def test_without_a_session_nothing_is_shown_or_answered(scene):
    scene.enrol()
    request_id = scene.request()
    stranger = Browser(scene.app)
    assert stranger.call("GET", "/app/api/state")[0] == 401
    stranger.cookie = "forged"
    assert stranger.call("GET", "/app/api/state")[0] == 401
    stranger.csrf = csrf_token("forged")
    assert stranger.call("POST", f"/app/api/requests/{request_id}/deny", {})[0] == 401
    assert scene.request_row(request_id)["pending"]


# -- approving ----------------------------------------------------------------------------------

def test_pending_requests_are_listed_newest_first_with_what_they_are_for(scene):
    scene.enrol()
    first = scene.request("web-1", "ssh from 203.0.113.5")
    scene.clock.now += 3
    second = scene.request("db-2", "sudo: /usr/bin/apt upgrade")
    requests_shown = scene.browser.state()["requests"]
    assert [r["id"] for r in requests_shown] == [second, first]
    assert requests_shown[0]["terminal"] == "db-2"
    assert requests_shown[0]["action"] == "sudo: /usr/bin/apt upgrade"
    assert requests_shown[0]["requester"] == "Acme SSH"
    # Creation times are the database's clock (a trigger), ages the store's: about 3 s.
    assert requests_shown[1]["age"] >= 2


def test_the_pages_poll_writes_nothing(scene, monkeypatch):
    """A phone polls every second: that must take no write lock (nor wake long polls)."""
    scene.enrol()
    scene.request()
    phrase = scene.browser.call("POST", "/app/api/phrase", {})[1]["phrase"]
    scene.store.create_pairing(scene.requester_id, "alice", "phrase", phrase)
    writes = []
    transaction = scene.store._tx

    def spy(write=True, quiet=False):
        if write:
            writes.append(quiet)
        return transaction(write=write, quiet=quiet)

    monkeypatch.setattr(scene.store, "_tx", spy)
    for _ in range(3):
        state = scene.browser.state()
    assert len(state["requests"]) == 1 and len(state["pairings"]) == 1
    assert writes == []


def test_a_due_simulator_rule_answers_before_the_phone(scene):
    scene.enrol()
    scene.store.set_rule("alice", "deny", delay=5)
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    scene.clock.now += 6
    assert scene.browser.state()["requests"] == []
    status, _ = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve", signed)
    assert status == 409
    row = scene.request_row(request_id)
    assert not row["granted"] and row["reason"] == "denied by rule"


def test_approving_needs_a_verified_assertion_bound_to_that_request(scene):
    scene.enrol()
    request_id = scene.request()
    status, answer = scene.browser.approve(request_id, scene.key)
    assert status == 200, answer
    row = scene.request_row(request_id)
    assert row["granted"] and not row["pending"] and row["reason_code"] == 100
    [audit] = scene.devices.answers("alice")
    assert (audit["answer"], audit["kind"], audit["id"], audit["action"]) == \
        ("approve", "request", request_id, "sudo: /usr/bin/id")
    client_data = json.loads(unb64url(audit["assertion"]["clientDataJSON"]))
    assert client_data["type"] == "webauthn.get" and client_data["origin"] == ORIGIN


def test_a_replayed_assertion_is_refused(scene):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    url = f"/app/api/requests/{request_id}/approve"
    assert scene.browser.call("POST", url, signed)[0] == 200
    status, answer = scene.browser.call("POST", url, signed)
    assert status == 400 and "already used" in answer["error"]
    assert len(scene.devices.answers()) == 1


def test_an_expired_challenge_is_refused(scene):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    scene.clock.now += CHALLENGE_SECONDS + 1
    status, answer = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve", signed)
    assert status == 400 and "expired" in answer["error"]
    assert scene.request_row(request_id)["pending"] and scene.devices.answers() == []


def test_an_assertion_for_one_request_never_answers_another(scene):
    scene.enrol()
    first, second = scene.request(action="sudo: id"), scene.request(action="sudo: rm -rf /")
    signed = scene.browser.signed("requests", first, scene.key)
    # The challenge id of the first request, offered for the second: refused.
    status, _ = scene.browser.call("POST", f"/app/api/requests/{second}/approve", signed)
    assert status == 400
    # Its own challenge id, with the first request's signature: wrong challenge.
    other = scene.browser.signed("requests", second, scene.key)
    other["credential"] = signed["credential"]
    status, answer = scene.browser.call("POST", f"/app/api/requests/{second}/approve", other)
    assert status == 400 and "challenge" in answer["error"].lower()
    assert scene.request_row(second)["pending"] and scene.request_row(first)["pending"]


def test_a_request_changed_after_the_prompt_is_not_approved(scene):
    """The challenge is rebuilt from the record: a renamed terminal no longer matches."""
    scene.enrol()
    request_id = scene.request(terminal="web-1")
    signed = scene.browser.signed("requests", request_id, scene.key)
    with scene.store.transaction() as db:
        db.execute("UPDATE terminals SET name = 'elsewhere'")
    status, answer = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve", signed)
    assert status == 400 and "Wrong challenge" in answer["error"]
    assert scene.request_row(request_id)["pending"]


@pytest.mark.parametrize("spoil, message", [
    ("no-uv", "user verified flag not set"),
    ("no-up", "User Present flag not set"),
    ("origin", "Invalid origin"),
    ("rp-id", "Wrong RP ID hash"),
    ("signature", "Invalid signature"),
    ("credential", "Unknown credential"),
    ("truncated", "did not verify"),
])
def test_a_bad_assertion_answers_nothing(scene, spoil, message):
    scene.enrol()
    request_id = scene.request()
    scene.key.user_verified = spoil != "no-uv"
    scene.key.user_present = spoil != "no-up"
    signed = scene.browser.signed("requests", request_id, scene.key,
                                  origin="https://evil.example" if spoil == "origin" else None,
                                  rp_id="evil.example" if spoil == "rp-id" else None)
    credential = signed["credential"]
    if spoil == "signature":
        sig = bytearray(unb64url(credential["signature"]))
        sig[-1] ^= 1
        credential["signature"] = b64url(bytes(sig))
    if spoil == "credential":
        credential["credentialId"] = b64url(b"\x01" * 32)
    if spoil == "truncated":
        credential["authenticatorData"] = credential["authenticatorData"][:20]
    status, answer = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve",
                                        signed)
    assert status == 400 and message.lower() in answer["error"].lower(), answer
    assert scene.request_row(request_id)["pending"]
    assert scene.devices.answers() == []
    # The phone can still approve properly afterwards.
    scene.key.user_verified = scene.key.user_present = True
    assert scene.browser.approve(request_id, scene.key)[0] == 200


@pytest.mark.parametrize("field, value", [
    ("signature", "A" * 5000),
    ("clientDataJSON", "A" * 50_000),
    ("authenticatorData", ""),
    ("credentialId", None),
    ("signature", 12),
], ids=["long-signature", "huge-client-data", "empty-auth-data", "no-credential-id",
        "number-signature"])
def test_malformed_assertion_fields_are_refused(scene, field, value):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    signed["credential"][field] = value
    status, answer = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve",
                                        signed)
    assert status in (400, 413) and answer["error"], answer
    assert scene.request_row(request_id)["pending"]


def test_a_sign_count_going_backwards_is_refused(scene):
    scene.enrol()
    first, second = scene.request(), scene.request()
    assert scene.browser.approve(first, scene.key)[0] == 200
    scene.key.counter = 0  # a clone of the key, with its own counter
    status, answer = scene.browser.approve(second, scene.key)
    assert status == 401 and "counter" in answer["error"]
    assert scene.request_row(second)["pending"]


def test_deny_needs_only_the_session_and_an_answer_stays(scene):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    status, _ = scene.browser.call("POST", f"/app/api/requests/{request_id}/deny", {})
    assert status == 200
    status, answer = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve",
                                        signed)
    assert status == 409 and "already answered" in answer["error"]
    row = scene.request_row(request_id)
    assert not row["granted"] and not row["pending"]
    assert [a["answer"] for a in scene.devices.answers()] == ["deny"]
    assert scene.devices.answers()[0]["assertion"] is None


def test_an_otp_answer_is_not_overwritten_by_the_phone(scene):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    scene.store.otp_auth(scene.requester_id, request_id, "000000")  # wrong code: denied
    status, _ = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve", signed)
    assert status == 409
    assert not scene.request_row(request_id)["granted"]


def test_old_requests_are_neither_shown_nor_approvable(scene):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    scene.clock.now += REQUEST_MAX_AGE + 1
    assert scene.browser.state()["requests"] == []
    status, _ = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve", signed)
    assert status in (400, 409) and scene.request_row(request_id)["pending"]


def test_another_users_request_is_not_shown_or_answerable(scene, tmp_path):
    scene.enrol()
    phrase = scene.store.make_pairing_phrase("bob")
    pairing = scene.store.create_pairing(scene.requester_id, "bob", "phrase", phrase)["id"]
    scene.store.answer_pairing(pairing, True)
    bobs = scene.store.initiate(scene.requester_id, pairing_id=pairing, terminal_name="t",
                                action_name="sudo: id")["id"]
    assert scene.browser.state()["requests"] == []
    assert scene.browser.call("POST", f"/app/api/requests/{bobs}/options")[0] == 404
    assert scene.browser.call("POST", f"/app/api/requests/{bobs}/deny", {})[0] == 404
    assert scene.store.get_request(scene.requester_id, bobs)["pending"]


def test_another_users_pairing_is_not_shown_or_answerable(scene):
    # A password holder of bob pairing inline: alice's phone, enrolled and
    # signed in, can neither see nor accept (nor refuse) bob's pairing.
    scene.enrol()
    bobs = scene.store.create_pairing(scene.requester_id, "bob", "phrase",
                                      scene.store.make_pairing_phrase("bob"))["id"]
    assert scene.browser.state()["pairings"] == []
    assert scene.browser.call("POST", f"/app/api/pairings/{bobs}/options")[0] == 404
    signed = scene.browser.signed("requests", scene.request(), scene.key)
    assert scene.browser.call("POST", f"/app/api/pairings/{bobs}/accept", signed)[0] in (400, 404)
    assert scene.browser.call("POST", f"/app/api/pairings/{bobs}/refuse", {})[0] == 404
    assert scene.store.get_pairing(scene.requester_id, bobs)["pending"]


def test_a_revoked_phone_can_do_nothing(scene):
    scene.enrol()
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    [device] = scene.devices.list_devices("alice")
    scene.devices.revoke(device["id"])
    assert scene.browser.call("GET", "/app/api/state")[0] == 401
    status, _ = scene.browser.call("POST", f"/app/api/requests/{request_id}/approve", signed)
    assert status == 401
    assert scene.request_row(request_id)["pending"]


# -- pairing -------------------------------------------------------------------------------------

def test_pairing_by_phrase_accepted_with_a_passkey_shows_the_totp_secret_once(scene):
    scene.enrol()
    status, answer = scene.browser.call("POST", "/app/api/phrase", {})
    assert status == 200 and re.fullmatch(r"[a-z]+-[a-z]+-\d{3}", answer["phrase"])
    pairing = scene.store.create_pairing(scene.requester_id, "alice", "phrase", answer["phrase"])
    assert [p["id"] for p in scene.browser.state()["pairings"]] == [pairing["id"]]
    signed = scene.browser.signed("pairings", pairing["id"], scene.key)
    status, answer = scene.browser.call("POST", f"/app/api/pairings/{pairing['id']}/accept",
                                        signed)
    assert status == 200, answer
    assert scene.store.get_pairing(scene.requester_id, pairing["id"])["enabled"]
    uri = answer["otpauth"]
    assert uri.startswith("otpauth://totp/Acme%20SSH:alice?") and "algorithm=SHA1" in uri
    assert "digits=6" in uri and "period=30" in uri
    assert answer["qr"].startswith("data:image/svg+xml")
    # An authenticator app's code (pyotp, independent of the server's totp.py) works.
    totp = pyotp.parse_uri(uri)
    request_id = scene.store.initiate(scene.requester_id, pairing_id=pairing["id"],
                                      terminal_name="t", otp=totp.at(scene.clock.now))["id"]
    assert scene.store.get_request(scene.requester_id, request_id)["granted"]
    # Once: the same assertion (or any call) cannot show it again.
    assert scene.browser.call("POST", f"/app/api/pairings/{pairing['id']}/accept",
                              signed)[0] in (400, 409)
    assert scene.browser.state()["pairings"] == []


def test_a_pairing_cannot_be_accepted_without_user_verification(scene):
    scene.enrol()
    phrase = scene.browser.call("POST", "/app/api/phrase", {})[1]["phrase"]
    pairing = scene.store.create_pairing(scene.requester_id, "alice", "phrase", phrase)
    scene.key.user_verified = False
    signed = scene.browser.signed("pairings", pairing["id"], scene.key)
    status, _ = scene.browser.call("POST", f"/app/api/pairings/{pairing['id']}/accept", signed)
    assert status == 400
    assert scene.store.get_pairing(scene.requester_id, pairing["id"])["pending"]
    assert scene.browser.call("POST", f"/app/api/pairings/{pairing['id']}/refuse", {})[0] == 200
    got = scene.store.get_pairing(scene.requester_id, pairing["id"])
    assert not got["pending"] and not got["enabled"]


def test_a_request_approval_does_not_accept_a_pairing(scene):
    """The word signed ("approve" vs "accept") and the kind of object are bound."""
    scene.enrol()
    phrase = scene.browser.call("POST", "/app/api/phrase", {})[1]["phrase"]
    pairing = scene.store.create_pairing(scene.requester_id, "alice", "phrase", phrase)
    request_id = scene.request()
    signed = scene.browser.signed("requests", request_id, scene.key)
    status, _ = scene.browser.call("POST", f"/app/api/pairings/{pairing['id']}/accept", signed)
    assert status == 400
    assert scene.store.get_pairing(scene.requester_id, pairing["id"])["pending"]


# -- over real HTTP ----------------------------------------------------------------------------

@pytest.fixture
def web_server(tmp_path):
    server = RunningServer(str(tmp_path), serve_args=["--public-url", "http://localhost"])
    with server:
        yield server


def test_the_server_serves_the_page_with_a_strict_policy(web_server):
    base = web_server.app_url
    page = requests.get(base, timeout=10)
    assert page.status_code == 200 and "<script" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<style" not in page.text and " style=" not in page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)  # no inline script
    assert not re.search(r"\bon[a-z]+=", page.text)  # no inline event handlers
    assert not re.search(r"https?://", page.text)  # nothing from elsewhere
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css"),
                       ("sw.js", "javascript"), ("manifest.webmanifest", "manifest+json")):
        answer = requests.get(base + name, timeout=10)
        assert answer.status_code == 200 and kind in answer.headers["Content-Type"]
    assert requests.get(base + "../v1/users", timeout=10).status_code == 401  # still the API
    assert requests.get(base + "nothing-here", timeout=10).status_code == 404


def test_bad_input_over_http_gets_a_4xx_and_the_server_keeps_serving(web_server):
    base = web_server.app_url
    origin = base.rsplit("/app/", 1)[0]
    post = base + "api/enrol/complete"
    headers = {"Origin": origin, "Content-Type": "application/json"}
    assert requests.post(post, data=b"{" * 10_000, headers=headers, timeout=10).status_code == 400
    assert requests.post(post, data=b"x" * 70_000, headers=headers,
                         timeout=10).status_code == 413
    assert requests.post(post, json={"token": "nope", "challengeId": "x", "credential": {}},
                         headers={"Origin": origin}, timeout=10).status_code == 400
    assert requests.post(post, json={}, headers={"Origin": "http://evil.example"},
                         timeout=10).status_code == 403
    assert requests.get(base, timeout=10).status_code == 200
    assert web_server.query("SELECT COUNT(*) FROM devices") == [(0,)]


def test_device_commands(web_server):
    db = ["--db", web_server.db_path]

    def run(*args):
        return subprocess.run(server_command(*args, *db), cwd=REPO_ROOT, env=server_env(),
                              capture_output=True, text=True, timeout=30, check=False)

    enrolled = run("device", "enroll", "alice", "--name", "work phone")
    assert enrolled.returncode == 0, enrolled.stderr
    lines = enrolled.stdout.splitlines()
    link = next(line for line in lines if line.startswith("http"))
    assert re.fullmatch(re.escape(web_server.app_url) + r"enrol#[\w-]{40,}", link)
    assert any("▀" in line or "█" in line for line in lines)  # the terminal QR code
    token = link.split("#", 1)[1]
    assert web_server.query("SELECT token_hash FROM enrol_tokens") == [(secret_hash(token),)]

    key = SoftPasskey(web_server.app_url.rsplit("/app/", 1)[0], "localhost")
    session = requests.Session()
    headers = {"Origin": key.origin}
    options = session.post(web_server.app_url + "api/enrol/options", json={"token": token},
                           headers=headers, timeout=10).json()
    done = session.post(web_server.app_url + "api/enrol/complete", headers=headers, timeout=10,
                        json={"token": token, "challengeId": options["challengeId"],
                              "credential": key.register(options["publicKey"])})
    assert done.status_code == 200, done.text
    assert session.get(web_server.app_url + "api/state", timeout=10).json()["user"] == "alice"

    listed = run("device", "list", "alice")
    assert listed.returncode == 0 and "name='work phone'" in listed.stdout
    assert "active" in listed.stdout
    device_id = listed.stdout.split()[0]
    assert run("device", "revoke", device_id).returncode == 0
    assert "revoked=" in run("device", "list").stdout
    assert session.get(web_server.app_url + "api/state", timeout=10).status_code == 401
    again = run("device", "revoke", device_id)
    assert again.returncode == 1 and "already revoked" in again.stderr
    unknown = run("device", "revoke", "nope")
    assert unknown.returncode == 1 and "No such device" in unknown.stderr
    assert run("answers").returncode == 0


def test_serve_refuses_a_public_url_browsers_would_not_accept(tmp_path):
    result = subprocess.run(server_command("serve", "--db", str(tmp_path / "t.db"), "--port", "0",
                                           "--public-url", "http://192.168.1.5:8765"),
                            cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and "must be https" in result.stderr


# -- two instances on one PostgreSQL ----------------------------------------------------------

#: What a load balancer in front of both instances would be; never connected to.
SHARED_ORIGIN = "http://localhost:9443"


@pytest.fixture
def web_instances():
    """Instances A and B of the web app on one fresh PostgreSQL database, one public URL."""
    args = ["--public-url", SHARED_ORIGIN]
    with RunningServer(database="postgresql", serve_args=args) as first, \
            RunningServer(directory=str(first.directory), database="postgresql",
                          serve_args=args) as second:
        assert first.db_path == second.db_path and first.db_path.startswith("postgresql://")
        yield first, second


def _app(instance: RunningServer) -> str:
    # localhost: the phone's cookie (host-only, any port) reaches both instances.
    return f"http://localhost:{instance.port}/app/api/"


def test_two_instances_share_enrolments_and_use_each_challenge_once(web_instances):
    first, second = web_instances
    store = Store(first.db_path)
    try:
        devices = DeviceStore(store)
        token = devices.create_enrol_token("alice", "shared phone")
        requester_id = store.requester_by_key(first.key)["id"]
        pairing = store.create_pairing(requester_id, "alice", "phrase",
                                       store.make_pairing_phrase("alice"))
        store.answer_pairing(pairing["id"], True)
        key = SoftPasskey(SHARED_ORIGIN, "localhost")
        phone = requests.Session()
        headers = {"Origin": SHARED_ORIGIN}

        # An enrolment started on B, another on A with the same link: A
        # completes it, B's completion is refused, and B refuses the link.
        started_on_b = phone.post(_app(second) + "enrol/options", json={"token": token},
                                  headers=headers, timeout=10).json()
        options = phone.post(_app(first) + "enrol/options", json={"token": token},
                             headers=headers, timeout=10).json()
        done = phone.post(_app(first) + "enrol/complete", headers=headers, timeout=10,
                          json={"token": token, "challengeId": options["challengeId"],
                                "credential": key.register(options["publicKey"])})
        assert done.status_code == 200, done.text
        late = requests.post(_app(second) + "enrol/complete", headers=headers, timeout=10,
                             json={"token": token, "challengeId": started_on_b["challengeId"],
                                   "credential": SoftPasskey(SHARED_ORIGIN, "localhost").register(
                                       started_on_b["publicKey"])})
        assert late.status_code == 400 and "already used" in late.json()["error"]
        again = requests.post(_app(second) + "enrol/options", json={"token": token},
                              headers=headers, timeout=10)
        assert again.status_code == 400
        assert [device["name"] for device in devices.list_devices("alice")] == ["shared phone"]

        # B knows the session A made; a challenge from A is answered on B, once.
        state = phone.get(_app(second) + "state", timeout=10).json()
        assert state["user"] == "alice"
        request_id = store.initiate(requester_id, pairing_id=pairing["id"],
                                    terminal_name="web-1", action_name="sudo: id")["id"]
        assert [item["id"] for item in
                phone.get(_app(second) + "state", timeout=10).json()["requests"]] == [request_id]
        headers["X-CSRF-Token"] = state["csrf"]
        issued = phone.post(_app(first) + f"requests/{request_id}/options", json={},
                            headers=headers, timeout=10)
        assert issued.status_code == 200, issued.text
        options = issued.json()
        signed = {"challengeId": options["challengeId"],
                  "credential": key.sign(options["publicKey"])}
        answers = [phone.post(_app(instance) + f"requests/{request_id}/approve", json=signed,
                              headers=headers, timeout=10)
                   for instance in (second, first, second)]
        assert [answer.status_code for answer in answers][0] == 200, answers[0].text
        assert all(answer.status_code in (400, 409) for answer in answers[1:])
        assert store.get_request(requester_id, request_id)["granted"]
        assert len(devices.answers("alice")) == 1
    finally:
        store.close()
