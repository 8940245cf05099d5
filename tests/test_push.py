"""Web Push: a login through the module reaches the phone as an encrypted push.

The server runs as ``toopher-server serve --public-url http://localhost
--push-allow-http-loopback`` (the option lets it push to the fake push
service over plain http on 127.0.0.1, tests/support/push_service.py).  The
phone is a software passkey over real HTTP (what the page's JavaScript
sends); the page and service worker themselves run in Chromium below.  The
fake push service checks the VAPID token with PyJWT against the key the
phone subscribed with and decrypts the payload with http_ece and a key pair
only the test holds.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import requests

from pam_toopher.api import ToopherApi
from pam_toopher.server.devices import DeviceStore
from pam_toopher.server.errors import BadRequest
from pam_toopher.server.push import (
    private_address,
    PUSH_TTL,
    application_server_key,
    available,
    check_subject,
    default_subject,
    parse_subscription,
    payload,
)
from pam_toopher.server.store import Store
from tests.support.passkey import SoftPasskey
from tests.support.server import REPO_ROOT, RunningServer, privileged_port, server_command, \
    server_env
from tests.test_pam import pair, settings
from tests.test_phone_browser import enrol, phone  # noqa: F401 -- phone: a fixture
from tests.test_phone_web import Scene

pytest.importorskip("pywebpush", reason="tools/install-deps installs pywebpush")
from tests.support.push_service import FakePushService  # noqa: E402 -- needs http_ece

#: A push service that does not answer must not hold a login up: the push
#: call's own timeout is 5 s, so a login that waited for it would take longer.
LOGIN_BOUND = 4.0

P256DH = ("BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM")
AUTH = "tBHItJI5svbpez7KI4CCXg"


# -- pure parts ------------------------------------------------------------------------------

def subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc:def",
                 p256dh: Any = P256DH, auth: Any = AUTH) -> dict:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}}


def test_a_browsers_subscription_is_accepted():
    parsed = parse_subscription(subscription())
    assert parsed.info() == {"endpoint": "https://fcm.googleapis.com/fcm/send/abc:def",
                             "keys": {"p256dh": P256DH, "auth": AUTH}}
    assert parse_subscription(subscription("http://127.0.0.1:9/push/x"),
                              allow_http_loopback=True).endpoint == "http://127.0.0.1:9/push/x"


@pytest.mark.parametrize("value, why", [
    (subscription("http://fcm.googleapis.com/x"), "must be an https URL"),
    (subscription("http://127.0.0.1:9/x"), "must be an https URL"),        # without the option
    (subscription("ftp://push.example.com/x"), "must be an https URL"),
    (subscription("https://10.0.0.1/x"), "DNS name, not an IP address"),
    (subscription("https://[::1]:443/x"), "DNS name, not an IP address"),
    (subscription("https://user:pw@push.example.com/x"), "Malformed push endpoint"),
    (subscription("https://push.example.com:99999/x"), "invalid port"),
    (subscription("https://push.example.com/" + "a" * 2100), "at most 2048 characters"),
    (subscription("https://push.example.com/a b"), "malformed push endpoint"),
    (subscription(""), "malformed push endpoint"),
    (subscription(p256dh="AAAA"), "p256dh"),
    (subscription(p256dh=P256DH[:-3] + "AAA"), "p256dh"),                # not on the curve
    (subscription(auth="AAAA"), "auth"),
    (subscription(auth=None), "auth"),
    ({"endpoint": "https://push.example.com/x"}, "subscription.keys"),
    ("https://push.example.com/x", "Missing field: subscription"),
])
def test_a_bad_subscription_is_refused(value, why):
    with pytest.raises(BadRequest, match=f"(?i){why.replace('(', '.').replace(')', '.')}"):
        parse_subscription(value)


def test_push_is_off_without_pywebpush(monkeypatch):
    monkeypatch.setitem(sys.modules, "pywebpush", None)  # import pywebpush raises ImportError
    assert "pywebpush is not installed" in (available() or "")
    monkeypatch.undo()
    assert available() is None


def test_the_payload_names_only_the_request():
    assert json.loads(payload("request", "abc-1")) == {"kind": "request", "id": "abc-1"}


def test_vapid_subject():
    assert default_subject("https://2fa.example.com:8443") == "https://2fa.example.com"
    assert default_subject("http://localhost:8765") == "mailto:toopher-server@localhost"
    assert check_subject("mailto:admin@example.com") == "mailto:admin@example.com"
    assert check_subject("https://2fa.example.com/") == "https://2fa.example.com"
    for bad in ("admin@example.com", "mailto:nobody", "http://2fa.example.com",
                "https://2fa.example.com/path"):
        with pytest.raises(ValueError):
            check_subject(bad)


# -- the web app's endpoints, in process -------------------------------------------------------

@pytest.fixture
def app_scene(tmp_path):
    made = Scene(tmp_path)
    made.app.push_key = "the-servers-vapid-key"
    yield made
    made.close()


def test_the_phone_subscribes_and_unsubscribes(app_scene):
    app_scene.enrol()
    assert app_scene.browser.state()["push"] == {"key": "the-servers-vapid-key", "subscribed": False}
    status, answer = app_scene.browser.call("POST", "/app/api/push/subscribe",
                                        {"subscription": subscription()})
    assert (status, answer) == (200, {"subscribed": True})
    assert app_scene.browser.state()["push"]["subscribed"] is True
    [(device_id, stored)] = app_scene.devices.push_subscriptions(app_scene.user)
    assert stored.endpoint == subscription()["endpoint"]
    # A new subscription of the same phone replaces the old one.
    app_scene.browser.call("POST", "/app/api/push/subscribe",
                       {"subscription": subscription("https://push.example.net/2")})
    assert [s.endpoint for _, s in app_scene.devices.push_subscriptions(app_scene.user)] == \
        ["https://push.example.net/2"]
    status, answer = app_scene.browser.call("POST", "/app/api/push/unsubscribe")
    assert (status, answer) == (200, {"subscribed": False})
    assert app_scene.devices.push_subscriptions(app_scene.user) == []


def test_subscribing_needs_the_session_the_csrf_token_and_a_valid_subscription(app_scene):
    body = {"subscription": subscription()}
    status, _ = app_scene.browser.call("POST", "/app/api/push/subscribe", body)
    assert status == 401  # not enrolled
    app_scene.enrol()
    status, _ = app_scene.browser.call("POST", "/app/api/push/subscribe", body, csrf="wrong")
    assert status == 403
    status, _ = app_scene.browser.call("POST", "/app/api/push/subscribe", body,
                                   origin="https://evil.example")
    assert status == 403
    status, answer = app_scene.browser.call("POST", "/app/api/push/subscribe",
                                        {"subscription": subscription("http://10.1.1.1/x")})
    assert status == 400 and "https" in answer["error"]
    assert app_scene.count("push_subscriptions") == 0
    app_scene.app.push_key = None  # push is off on this server
    status, answer = app_scene.browser.call("POST", "/app/api/push/subscribe", body)
    assert status == 404 and "not enabled" in answer["error"]
    assert app_scene.browser.state()["push"] is None
    assert app_scene.count("push_subscriptions") == 0


def test_revoking_a_device_deletes_its_subscription(app_scene):
    app_scene.enrol()
    app_scene.browser.call("POST", "/app/api/push/subscribe", {"subscription": subscription()})
    [(device_id, _)] = app_scene.devices.push_subscriptions(app_scene.user)
    app_scene.devices.revoke(device_id)
    assert app_scene.count("push_subscriptions") == 0


# -- over HTTP, with the fake push service ---------------------------------------------------

class HttpPhone:
    """An enrolled phone over real HTTP: what the page's JavaScript sends."""

    def __init__(self, server: RunningServer, user: str):
        assert server.app_url is not None
        self.origin = server.app_url[:-len("/app/")]
        self.http = requests.Session()
        self.csrf = ""
        store = Store(server.db_path)
        try:
            token = DeviceStore(store).create_enrol_token(user)
        finally:
            store.close()
        self.key = SoftPasskey(self.origin, "localhost")
        options = self.post("/app/api/enrol/options", {"token": token})
        self.post("/app/api/enrol/complete", {
            "token": token, "challengeId": options["challengeId"],
            "credential": self.key.register(options["publicKey"])})
        self.state()

    def post(self, path: str, body: dict | None = None) -> Any:
        response = self.http.post(self.origin + path, json=body or {}, timeout=10, headers={
            "Origin": self.origin, "X-CSRF-Token": self.csrf})
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> dict:
        response = self.http.get(self.origin + "/app/api/state", timeout=10)
        assert response.status_code == 200, response.text
        state = response.json()
        self.csrf = state["csrf"]
        return state

    def subscribe(self, service: FakePushService) -> dict:
        made = service.subscribe()
        self.post("/app/api/push/subscribe", {"subscription": made})
        service.server_key = self.state()["push"]["key"]
        return made

    def approve(self, request_id: str) -> None:
        options = self.post(f"/app/api/requests/{request_id}/options")
        self.post(f"/app/api/requests/{request_id}/approve", {
            "challengeId": options["challengeId"],
            "credential": self.key.sign(options["publicKey"])})


PUSH_SERVE_ARGS = ["--public-url", "http://localhost", "--push-allow-http-loopback"]


@pytest.fixture
def web():
    # Plain http on a privileged port: what the module believes (docs/pam.md).
    with RunningServer(serve_args=PUSH_SERVE_ARGS, port=privileged_port()) as server:
        yield server


@pytest.fixture
def service():
    with FakePushService() as made:
        yield made


def subscriptions(web: RunningServer) -> int:
    return web.query("SELECT COUNT(*) FROM push_subscriptions")[0][0]


def wait_for(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def api(web: RunningServer) -> ToopherApi:
    return ToopherApi(web.key, web.secret, web.url)


def paired(web: RunningServer, user: str) -> str:
    """The id of a pairing of ``user``, accepted at once by the simulator (so not pushed)."""
    web.phone.set_pairing_rule(user, "accept")
    with api(web) as client:
        pairing = client.pair(web.phone.make_pairing_phrase(user), user)
    web.phone.clear_pairing_rule(user)
    return pairing.id


def new_request(web: RunningServer, pairing_id: str, terminal: str = "web-1") -> str:
    with api(web) as client:
        return client.authenticate(pairing_id, terminal, action_name="sudo: /usr/bin/id").id


pam_only = pytest.mark.usefixtures("root_only")


@pam_only
def test_a_login_through_the_module_pushes_that_request_to_the_phone(web, service, scene):
    phone = HttpPhone(web, scene.user.name)
    phone.subscribe(service)
    pair(web, scene.user.name)  # (the simulator accepts at once: no push for that)
    scene.write_config(**settings(web, auth_timeout=30))
    scene.install_service()

    outcome: dict = {}
    login = threading.Thread(target=lambda: outcome.setdefault(
        "result", scene.pamtester([scene.user.password, ""], timeout=60)))
    login.start()
    try:
        message = service.next_message()
        assert message.problems == []
        [pending] = web.phone.pending_requests(scene.user.name)
        assert message.json() == {"kind": "request", "id": pending["id"]}
        assert message.claims["sub"] == "mailto:toopher-server@localhost"
        assert message.claims["aud"] == service.origin
        assert message.headers["ttl"] == str(PUSH_TTL)
        assert message.headers["urgency"] == "high"
        phone.approve(pending["id"])  # what the phone's user does on the page
    finally:
        login.join(60)
    result = outcome["result"]
    assert result.ok, f"{result}\n{web.log()}"
    assert scene.audit()["request"] == pending["id"]
    assert service.no_message(0.5)  # one push per device and request
    log = web.log()
    assert f"push: request {pending['id']} to device " in log and "(127.0.0.1): 201" in log
    assert "push notifications: on" in log


def test_a_pairing_is_pushed_too(web, service):
    phone = HttpPhone(web, "carol")
    phone.subscribe(service)
    with api(web) as client:
        pairing = client.pair(web.phone.make_pairing_phrase("carol"), "carol")
    message = service.next_message()
    assert message.problems == []
    assert message.json() == {"kind": "pairing", "id": pairing.id}
    assert [p["id"] for p in phone.state()["pairings"]] == [pairing.id]


def test_every_subscribed_device_of_the_user_and_no_other_gets_the_push(web, service):
    phones = [HttpPhone(web, "dave"), HttpPhone(web, "dave"), HttpPhone(web, "erin")]
    made = [phone.subscribe(service) for phone in phones]
    tokens = {sub["endpoint"].rsplit("/", 1)[-1] for sub in made[:2]}
    new_request(web, paired(web, "dave"))
    received = [service.next_message(), service.next_message()]
    assert {message.token for message in received} == tokens
    assert all(message.problems == [] for message in received)
    assert service.no_message(0.5)


@pytest.mark.parametrize("status", [404, 410])
def test_a_subscription_the_push_service_says_is_gone_is_removed(web, service, status):
    phone = HttpPhone(web, "frank")
    phone.subscribe(service)
    service.answer = status
    pairing_id = paired(web, "frank")
    new_request(web, pairing_id)
    assert service.next_message().problems == []
    wait_for(lambda: subscriptions(web) == 0, "the subscription to be removed")
    assert f": {status}, the subscription is gone; removed" in web.log()
    assert phone.state()["push"]["subscribed"] is False
    new_request(web, pairing_id, "web-2")
    assert service.no_message(1.0)


def test_other_failures_keep_the_subscription(web, service):
    phone = HttpPhone(web, "gina")
    phone.subscribe(service)
    service.answer = 500
    new_request(web, paired(web, "gina"))
    assert service.next_message().problems == []
    wait_for(lambda: "failed: 500" in web.log(), "the failure in the log")
    assert subscriptions(web) == 1


def test_a_revoked_device_gets_no_push(web, service):
    phone = HttpPhone(web, "hank")
    phone.subscribe(service)
    [device_id] = [row[0] for row in web.query("SELECT id FROM devices")]
    subprocess.run(server_command("device", "revoke", device_id, "--db", web.db_path),
                   cwd=REPO_ROOT, env=server_env(), check=True, capture_output=True, timeout=30)
    assert subscriptions(web) == 0
    new_request(web, paired(web, "hank"))
    assert service.no_message(1.0)


@pam_only
@pytest.mark.parametrize("failure", ["hang", "500", "refused"])
def test_a_hanging_or_failing_push_service_does_not_delay_or_fail_a_login(web, service, scene,
                                                                          failure):
    phone = HttpPhone(web, scene.user.name)
    made = phone.subscribe(service)
    if failure == "hang":
        service.hang()
    elif failure == "500":
        service.answer = 500
    else:  # nothing listens there
        closed = FakePushService()
        closed.close()
        made = dict(made, endpoint=f"{closed.origin}/push/gone")
        phone.post("/app/api/push/subscribe", {"subscription": made})
    pair(web, scene.user.name)
    web.phone.set_rule(scene.user.name, "approve", delay=0.3)  # pending when made: pushed
    scene.write_config(**settings(web, auth_timeout=30))
    scene.install_service()
    try:
        for _ in range(3):
            started = time.monotonic()
            result = scene.pamtester([scene.user.password, ""], timeout=60)
            elapsed = time.monotonic() - started
            assert result.ok, f"{result}\n{web.log()}"
            assert elapsed < LOGIN_BOUND, f"login took {elapsed:.2f} s with the push {failure}"
        if failure != "refused":
            assert service.next_message().problems == []  # the push was really attempted
        assert [line["outcome"] for line in scene.audit_lines()] == ["granted"] * 3
    finally:
        service.release()
    if failure == "hang":
        wait_for(lambda: "failed: ReadTimeout" in web.log() or ": 201" in web.log(),
                 "the hung push to end", timeout=20)
    else:
        wait_for(lambda: "failed:" in web.log(), "the failure in the log")


def test_the_vapid_key_is_made_once_kept_and_never_logged(tmp_path):
    with RunningServer(directory=str(tmp_path), serve_args=PUSH_SERVE_ARGS) as server:
        first = HttpPhone(server, "ivy").state()["push"]["key"]
        server.restart()
        assert HttpPhone(server, "ivy").state()["push"]["key"] == first
        [(pem,)] = server.query("SELECT value FROM web_settings WHERE name = ?",
                                "vapid_private_key")
        assert pem.startswith("-----BEGIN PRIVATE KEY-----")
        body = pem.splitlines()[1]
        assert body not in server.log() and first not in server.log()


def test_no_push_when_turned_off(tmp_path):
    with RunningServer(serve_args=[*PUSH_SERVE_ARGS, "--no-push"]) as server:
        phone = HttpPhone(server, "jack")
        assert phone.state()["push"] is None
        assert "push notifications: off, turned off (--no-push)" in server.log()
        response = phone.http.post(phone.origin + "/app/api/push/subscribe", timeout=10,
                                   json={"subscription": subscription()},
                                   headers={"Origin": phone.origin, "X-CSRF-Token": phone.csrf})
        assert response.status_code == 404


def test_a_bad_vapid_subject_is_a_usage_error(tmp_path):
    result = subprocess.run(server_command("serve", "--db", str(tmp_path / "t.db"), "--port", "0",
                                           *PUSH_SERVE_ARGS, "--vapid-subject", "admin"),
                            cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "--vapid-subject must be mailto:ADDRESS or https://HOST" in result.stderr


# -- the page and the service worker in Debian's Chromium ------------------------------------

# Chromium cannot reach a real push service here (subscribe() would wait for
# Google's forever): the page gets the fake push service's subscription
# instead, and the test keeps what the page asked for.
STUB_SUBSCRIBE = """
const made = arguments[0];
PushManager.prototype.getSubscription = async function () { return null; };
PushManager.prototype.subscribe = async function (options) {
  const key = new Uint8Array(options.applicationServerKey);
  window.__subscribeOptions = {
    userVisibleOnly: options.userVisibleOnly,
    key: btoa(String.fromCharCode(...key)).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, ""),
  };
  return { options: { applicationServerKey: key.buffer }, toJSON: () => made,
           unsubscribe: async () => true };
};
"""
GET_NOTIFICATIONS = """
const done = arguments[arguments.length - 1];
navigator.serviceWorker.ready
  .then((registration) => registration.getNotifications())
  .then((shown) => done(shown.map((n) => ({title: n.title, body: n.body, tag: n.tag}))))
  .catch((error) => done(String(error)));
"""


@pam_only
def test_the_page_subscribes_and_the_service_worker_shows_the_pushed_request(web, service, phone,
                                                                            tmp_path):
    enrol(web, phone, "kim")
    origin = web.app_url[:-len("/app/")]
    phone.driver.execute_cdp_cmd("Browser.grantPermissions",
                                 {"origin": origin, "permissions": ["notifications"]})
    made = service.subscribe()
    phone.driver.execute_script(STUB_SUBSCRIBE, made)
    phone.click("Enable notifications")
    phone.wait_text("status", "Notifications are on")
    [(pem,)] = web.query("SELECT value FROM web_settings WHERE name = 'vapid_private_key'")
    service.server_key = application_server_key(pem)
    assert phone.driver.execute_script("return window.__subscribeOptions") == {
        "userVisibleOnly": True, "key": service.server_key}
    assert web.query("SELECT endpoint, p256dh, auth FROM push_subscriptions") == [
        (made["endpoint"], made["keys"]["p256dh"], made["keys"]["auth"])]
    phone.wait(lambda: phone.button("Turn off notifications"), "the button to turn them off")

    # A login waits: the push service gets the push, and what it decrypts to,
    # delivered to the service worker (DevTools), shows the request.
    request_id = new_request(web, paired(web, "kim"), "db-2")
    message = service.next_message()
    assert message.problems == []
    assert message.json() == {"kind": "request", "id": request_id}
    phone.driver.execute_cdp_cmd("ServiceWorker.enable", {})
    # The first service worker registration of a fresh profile has id 0.  On a
    # busy machine a message delivered while the worker is still starting can
    # be lost, so it is delivered again (same tag: one notification) a few times.
    for attempt in range(3):
        phone.driver.execute_cdp_cmd("ServiceWorker.deliverPushMessage", {
            "origin": origin, "registrationId": "0", "data": message.payload.decode()})
        try:
            shown = phone.wait(lambda: phone.driver.execute_async_script(GET_NOTIFICATIONS),
                               "the notification")
            break
        except AssertionError:
            if attempt == 2:
                raise
    assert shown == [{"title": "Approve a login on db-2?", "body": "sudo: /usr/bin/id",
                      "tag": f"request-{request_id}"}]

    # Tapped, it opens the page on that request (the URL the worker opens), in
    # a new page or in the open one.
    second_id = new_request(web, paired(web, "kim"), "db-3")
    # The user's pending requests are shown together, newest first.
    phone.wait(lambda: [card.get_attribute("data-id") for card in phone.driver.find_elements(
        "css selector", "#requests > li")] == [second_id, request_id], "both requests, newest first")
    phone.open(f"{origin}/app/enrol")
    for request in (request_id, second_id):
        phone.open(f"{origin}/app/#request={request}")
        card = phone.card(request)
        phone.wait(lambda: "revealed" in (card.get_attribute("class") or ""),  # noqa: B023
                   "the request revealed")
        assert phone.driver.current_url == f"{origin}/app/"
    assert len(phone.driver.find_elements("css selector", ".card.revealed")) == 1

    # Turned off: the server forgets the subscription.
    phone.click("Turn off notifications")
    phone.wait_text("status", "Notifications are off")
    assert subscriptions(web) == 0


def test_private_address_names_a_loopback_or_private_endpoint():
    assert private_address("https://localhost:8443/push/x") in ("127.0.0.1", "::1")
    assert private_address("https://10.1.2.3/push/x") == "10.1.2.3"
    assert private_address("https://[::ffff:192.168.0.1]/push/x") == "192.168.0.1"
    assert private_address("https://no-such-name.invalid/push/x") is None


def test_a_subscription_on_a_private_address_gets_no_push_in_production():
    """An enrolled phone's session may subscribe with any https DNS name: the
    server must not POST to one that resolves into its own network."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(1.0)
    try:
        with RunningServer(serve_args=["--public-url", "http://localhost"]) as web, \
                FakePushService() as service:
            phone = HttpPhone(web, "ivan")
            made = service.subscribe()
            made["endpoint"] = f"https://localhost:{listener.getsockname()[1]}/push/internal"
            phone.post("/app/api/push/subscribe", {"subscription": made})
            new_request(web, paired(web, "ivan"))
            wait_for(lambda: "not a public address" in web.log(), "the refusal in the log")
            with pytest.raises(socket.timeout):
                listener.accept()[0].close()
    finally:
        listener.close()


def test_the_push_session_sends_nothing_to_a_private_address_it_connected_to():
    """DNS may answer differently at connect time than when the endpoint was
    checked: the address is checked again on the socket, before any byte."""
    from pam_toopher.server.push import push_session

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    received = []

    def serve():
        connection, _ = listener.accept()
        connection.settimeout(2.0)
        try:
            received.append(connection.recv(100))
        except OSError:
            received.append(b"")
        connection.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with push_session() as session:
            with pytest.raises(requests.exceptions.ConnectionError, match="not a public"):
                session.post(f"https://localhost:{listener.getsockname()[1]}/push/x",
                             data=b"secret", timeout=5)
        thread.join(5)
        assert received == [b""]
    finally:
        listener.close()


def test_a_push_service_trickling_its_answer_is_cut_at_the_deadline():
    """Timeouts bound each read: an endpoint sending a byte a second would
    hold a push worker for ever (four such pushes: no notification for anyone)."""
    from pam_toopher.server.push import push_session

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    stop = threading.Event()

    def trickle():
        connection, _ = listener.accept()
        with connection:
            for byte in b"HTTP/1.1 201 Created\r\n" * 100:
                if stop.wait(0.5):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        with push_session(allow_private=True, total=2.0) as session:
            with pytest.raises(requests.exceptions.RequestException):
                session.post(f"http://127.0.0.1:{listener.getsockname()[1]}/push/x",
                             data=b"x", timeout=(5, 5))
        assert time.monotonic() - started < 4.0
    finally:
        stop.set()
        listener.close()
